"""Training windows from displacement sequences: data set, ROI cache, augmentation, splits.

Axis order follows the store: displacement ``(seq, frame, depth, lateral)``. A *window* is the
``(frame, window_px, window_px)`` block centred on a pixel of the region of interest (ROI); each
epoch draws one random centre per sequence ([SWEI] Sec. II-C; the ``quick`` training profile may
draw several). Windows are z-normalised per window and augmented as in [SWEI]: depth/lateral flips,
90 degree rotations (square windows only), Gaussian blur and random erasing.

To keep training fed, :class:`WindowCache` reads the ROI plus a half-window margin of every
sequence once into one float32 array in memory. A batch is then built in chunks of about 2 MiB
(two threads by default): one copy per window from a strided view that already holds its flips
and quarter turns, the blur as two small matrix products per window (OpenBLAS held to one thread),
the z-score in float32 NumPy, erasing; the result does not depend on the chunking or the threads.
``bench/cnn_loader.py`` measures windows per second against reading each window from the Zarr
store (issue 13: >= 5000 augmented 33 px windows/s on 2 cores). Memory is
``n_seq * frames * (roi_h + w - 1) * (roi_w + w - 1) * 4`` bytes: about 4.6 MB per sequence for
the 121 x 181 ROI and a 33 px window.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage
import torch
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from analysis.swei_cnn.dense import zscore_windows_inplace

#: 0-based push locations never used for training ([SWEI]: pushes 1 and 7).
EXCLUDED_TRAINING_PUSHES: tuple[int, ...] = (0, 6)
#: Region of interest for window centres, (depth, lateral) pixels ([SWEI]: 121 x 181 px).
DEFAULT_ROI_PX: tuple[int, int] = (121, 181)


@dataclass
class SweiTrainingSet:
    """Displacement sequences with their Young's-modulus targets and acquisition indices.

    Attributes
    ----------
    displacement : array_like, shape (seq, frame, depth, lateral), float32
        Axial displacement (NumPy or Zarr array; read lazily, one sequence at a time).
    youngs_modulus_kpa : ndarray, shape (seq,), float32
        Target of homogeneous sequences (label of the phantom's gelatin concentration); for
        sequences with ``uses_map`` the background modulus (informational).
    push_index, position_index, phantom_index : ndarray, shape (seq,), int
        0-based push location (0..6), probe position and phantom of each sequence.
    gelatin_percent : ndarray, shape (seq,), float
        Gelatin concentration (% by weight) of the phantom (background for inclusion phantoms).
    uses_map : ndarray, shape (seq,), bool
        Whether the target is per pixel (inclusion phantoms); then ``modulus_maps_kpa[s]`` holds it.
    modulus_maps_kpa : array_like, shape (seq, depth, lateral), float32, optional
        Per-pixel target maps; only rows with ``uses_map`` are read.
    keys : list of str
        Record keys (``"{phantom_id}/pos{p:03d}/push{k}"``).
    source : str
        Where the data came from (store path), recorded in model cards.
    """

    displacement: Any
    youngs_modulus_kpa: NDArray[np.float32]
    push_index: NDArray[np.integer]
    position_index: NDArray[np.integer]
    phantom_index: NDArray[np.integer]
    gelatin_percent: NDArray[np.floating]
    uses_map: NDArray[np.bool_] | None = None
    modulus_maps_kpa: Any = None
    keys: list[str] = field(default_factory=list)
    source: str = "in-memory"

    def __post_init__(self) -> None:
        shape = tuple(np.shape(self.displacement))
        if len(shape) != 4:
            raise ValueError(f"displacement must be (seq, frame, depth, lateral), got {shape}")
        n = shape[0]
        self.youngs_modulus_kpa = np.asarray(self.youngs_modulus_kpa, dtype=np.float32)
        self.push_index = np.asarray(self.push_index)
        self.position_index = np.asarray(self.position_index)
        self.phantom_index = np.asarray(self.phantom_index)
        self.gelatin_percent = np.asarray(self.gelatin_percent, dtype=np.float64)
        self.uses_map = (np.zeros(n, dtype=bool) if self.uses_map is None
                         else np.asarray(self.uses_map, dtype=bool))
        for name in ("youngs_modulus_kpa", "push_index", "position_index", "phantom_index",
                     "gelatin_percent", "uses_map"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like the displacement's seq "
                                 f"axis, got {getattr(self, name).shape}")
        if self.uses_map.any():
            if self.modulus_maps_kpa is None:
                raise ValueError("uses_map is set for some sequences but modulus_maps_kpa is None")
            if tuple(np.shape(self.modulus_maps_kpa)) != (n, shape[2], shape[3]):
                raise ValueError(f"modulus_maps_kpa must be shaped ({n}, {shape[2]}, {shape[3]}),"
                                 f" got {np.shape(self.modulus_maps_kpa)}")
        if not self.keys:
            self.keys = [f"seq{i}" for i in range(n)]

    def __len__(self) -> int:
        return int(np.shape(self.displacement)[0])

    @property
    def frames(self) -> int:
        return int(np.shape(self.displacement)[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        """(depth, lateral) pixels."""
        shape = np.shape(self.displacement)
        return int(shape[2]), int(shape[3])

    def target_map_kpa(self, seq: int) -> NDArray[np.float32]:
        """Per-pixel truth of one sequence, (depth, lateral) kPa (constant if homogeneous)."""
        if self.uses_map[seq]:
            return np.asarray(self.modulus_maps_kpa[seq], dtype=np.float32)
        return np.full(self.image_shape, self.youngs_modulus_kpa[seq], dtype=np.float32)


# -- splits ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Sequence indices for training, validation and test, plus a JSON-able description."""

    train: NDArray[np.intp]
    validation: NDArray[np.intp]
    test: NDArray[np.intp]
    description: dict[str, Any]


def _units(data: SweiTrainingSet, seqs: NDArray[np.intp]) -> list[tuple[int, int]]:
    """Sorted unique (phantom, position) pairs of ``seqs``: the unit that is split."""
    pairs = {(int(data.phantom_index[s]), int(data.position_index[s])) for s in seqs}
    return sorted(pairs)


def _seqs_of(data: SweiTrainingSet, units: set[tuple[int, int]], candidates: NDArray[np.intp],
             exclude_pushes: Sequence[int] = ()) -> NDArray[np.intp]:
    keep = [s for s in candidates
            if (int(data.phantom_index[s]), int(data.position_index[s])) in units
            and int(data.push_index[s]) not in exclude_pushes]
    return np.asarray(keep, dtype=np.intp)


def position_fold_split(
    data: SweiTrainingSet, *, fold: int, n_folds: int = 4, seed: int = 0,
    excluded_training_pushes: Sequence[int] = EXCLUDED_TRAINING_PUSHES,
) -> Split:
    """k-fold cross-validation over probe positions, per concentration ([SWEI]).

    Within each gelatin concentration the probe positions (phantom, position) are shuffled
    (seeded) and cut into ``n_folds`` groups; fold ``f`` holds out group ``f``, half of it for
    validation and half for test, and trains on the rest (80 positions, 4 folds: 60 / 10 / 10).
    Pushes in ``excluded_training_pushes`` never enter training (they stay in validation and test).
    Inclusion-phantom sequences are left out of all three sets.
    """
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    homogeneous = np.flatnonzero(~data.uses_map)
    train: set[tuple[int, int]] = set()
    val: set[tuple[int, int]] = set()
    test: set[tuple[int, int]] = set()
    for c in np.unique(data.gelatin_percent[homogeneous]):
        units = _units(data, homogeneous[data.gelatin_percent[homogeneous] == c])
        if len(units) < 2 * n_folds:
            raise ValueError(f"{c} % gelatin has {len(units)} probe positions; {n_folds}-fold "
                             f"splits need at least {2 * n_folds}")
        rng = np.random.default_rng([seed, round(float(c) * 100)])
        order = [units[i] for i in rng.permutation(len(units))]
        groups = np.array_split(np.arange(len(order)), n_folds)
        held = groups[fold]
        half = (len(held) + 1) // 2
        val |= {order[i] for i in held[:half]}
        test |= {order[i] for i in held[half:]}
        train |= {order[i] for g, idx in enumerate(groups) if g != fold for i in idx}
    return Split(
        train=_seqs_of(data, train, homogeneous, excluded_training_pushes),
        validation=_seqs_of(data, val, homogeneous),
        test=_seqs_of(data, test, homogeneous),
        description={"kind": "positions", "fold": fold, "n_folds": n_folds, "seed": seed,
                     "excluded_training_pushes": list(excluded_training_pushes)},
    )


def concentration_split(
    data: SweiTrainingSet, *, held_out_percent: float, seed: int = 0,
    excluded_training_pushes: Sequence[int] = EXCLUDED_TRAINING_PUSHES,
) -> Split:
    """Leave one gelatin concentration out ([SWEI]: folds over 7.5 %, 10 %, 12.5 %, 15 %).

    All sequences of ``held_out_percent`` are split by probe position, 50 % validation and 50 %
    test (seeded); every other concentration trains (minus the excluded pushes). The smallest and
    largest concentrations cannot be held out: the regression would extrapolate.
    """
    homogeneous = np.flatnonzero(~data.uses_map)
    concentrations = np.unique(data.gelatin_percent[homogeneous])
    if not np.any(np.isclose(concentrations, held_out_percent)):
        raise ValueError(f"no homogeneous sequences at {held_out_percent} % gelatin; have "
                         f"{concentrations.tolist()} %")
    if np.isclose(held_out_percent, concentrations.min()) or np.isclose(
            held_out_percent, concentrations.max()):
        raise ValueError(f"{held_out_percent} % is a boundary concentration of "
                         f"{concentrations.tolist()} %; holding it out means extrapolating")
    held_mask = np.isclose(data.gelatin_percent[homogeneous], held_out_percent)
    units = _units(data, homogeneous[held_mask])
    rng = np.random.default_rng([seed, round(held_out_percent * 100)])
    order = [units[i] for i in rng.permutation(len(units))]
    half = (len(order) + 1) // 2
    keep = homogeneous[~held_mask]
    train = np.asarray([s for s in keep
                        if int(data.push_index[s]) not in excluded_training_pushes], dtype=np.intp)
    return Split(
        train=train,
        validation=_seqs_of(data, set(order[:half]), homogeneous),
        test=_seqs_of(data, set(order[half:]), homogeneous),
        description={"kind": "concentration", "held_out_percent": held_out_percent,
                     "seed": seed, "excluded_training_pushes": list(excluded_training_pushes)},
    )


# -- augmentation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """Random augmentation of training windows ([SWEI]); probabilities per window.

    ``flip_probability`` applies to depth and lateral flips independently; ``rotate`` draws
    0-3 quarter turns (square windows only); blur is a spatial Gaussian (per frame) with a sigma
    uniform in ``blur_sigma_px``; erasing sets a rectangle covering ``erase_area`` (fraction of
    the window, aspect ratio in ``erase_aspect``) to zero in every frame after normalisation.
    """

    flip_probability: float = 0.5
    rotate: bool = True
    blur_probability: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.5, 1.5)
    erase_probability: float = 0.2
    erase_area: tuple[float, float] = (0.02, 0.15)
    erase_aspect: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        for name in ("flip_probability", "blur_probability", "erase_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def none(cls) -> Augmentation:
        return cls(flip_probability=0.0, rotate=False, blur_probability=0.0,
                   erase_probability=0.0)


@dataclass(frozen=True)
class WindowDraw:
    """Random choices for a set of windows (one row per window, in batch order).

    ``seq`` indexes the cache's sequences; ``row``, ``col`` are the centre relative to the ROI's
    top-left pixel; ``erase`` is (top, left, height, width) in window pixels, height 0 = none.
    """

    seq: NDArray[np.intp]
    row: NDArray[np.intp]
    col: NDArray[np.intp]
    flip_depth: NDArray[np.bool_]
    flip_lateral: NDArray[np.bool_]
    quarter_turns: NDArray[np.intp]
    blur_sigma_px: NDArray[np.float64]
    erase: NDArray[np.intp]

    def __len__(self) -> int:
        return len(self.seq)

    def subset(self, index: slice | NDArray[np.intp]) -> WindowDraw:
        return WindowDraw(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


#: Windows a loader thread takes at a time: about this many bytes, so that a chunk stays in the
#: core's cache from the copy through the blur, the z-score and erasing.
_CHUNK_BYTES = 2**21
_BLAS_LIMIT_LOCK = threading.Lock()


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the enclosed NumPy BLAS calls on one thread each (the setting is process-wide;
    restored after; one holder at a time, so nested or concurrent holders cannot leave it set).

    The loader's matrix products are small: OpenBLAS's own threads only add hand-offs, and on a
    loaded 2-core machine (or beside the training's torch threads) they stall it by 10-30x.
    """
    with _BLAS_LIMIT_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _blur_matrices(sigma_px: NDArray[np.float64], size: int) -> NDArray[np.float32]:
    """1-D Gaussian blurs along an axis of ``size`` pixels, one matrix per sigma.

    ``mats[i] @ x`` blurs the first axis of ``x`` like ``scipy.ndimage.gaussian_filter1d(x,
    sigma_px[i], axis=0, mode="nearest")``: kernel truncated at ``int(4 sigma + 0.5)`` pixels,
    edge values repeated (the repeated taps are folded into the edge columns of the matrix).

    Parameters
    ----------
    sigma_px : ndarray, shape (m,), float
        Standard deviations, pixels (> 0).
    size : int
        Length of the blurred axis, pixels.

    Returns
    -------
    mats : ndarray, shape (m, size, size), float32
    """
    radius = (4.0 * sigma_px + 0.5).astype(np.intp)
    taps = np.arange(-int(radius.max()), int(radius.max()) + 1)
    kernel = np.exp(-0.5 * (taps / sigma_px[:, None]) ** 2)
    kernel[np.abs(taps) > radius[:, None]] = 0.0  # each sigma keeps its own truncation
    kernel /= kernel.sum(axis=1, keepdims=True)
    source = np.clip(np.arange(size)[:, None] + taps, 0, size - 1)  # (size, taps): pixel read
    mats = np.zeros((len(sigma_px), size, size))
    np.add.at(mats, (np.arange(len(sigma_px))[:, None, None], np.arange(size)[None, :, None],
                     source[None]), kernel[:, None, :])
    return mats.astype(np.float32)


def _blur_windows(windows: NDArray[np.float32], sigma_px: NDArray[np.float64]
                  ) -> NDArray[np.float32]:
    """Spatial Gaussian blur of every frame of each window, one sigma per window.

    Same result as ``scipy.ndimage.gaussian_filter(windows[i], (0, s, s), mode="nearest")``
    per window (to float32 rounding), as two batched matrix products (BLAS): ``B x B^T`` per
    frame with the window's blur matrix ``B`` (:func:`_blur_matrices`). Call it inside
    :func:`_single_threaded_blas`.

    Parameters
    ----------
    windows : ndarray, shape (m, frame, h, w), float32
    sigma_px : ndarray, shape (m,), float
        Blur sigma of each window, pixels (> 0).

    Returns
    -------
    blurred : ndarray, shape (m, frame, h, w), float32
    """
    m, frames, h, w = windows.shape
    rows = _blur_matrices(sigma_px, h)
    cols = rows if w == h else _blur_matrices(sigma_px, w)
    lateral = np.matmul(windows.reshape(m, frames * h, w), cols.transpose(0, 2, 1))
    return np.matmul(rows[:, None], lateral.reshape(m, frames, h, w))


class WindowCache:
    """ROI (+ half-window margin) of selected sequences, held in memory as one float32 array.

    Parameters
    ----------
    data : SweiTrainingSet
        Source sequences.
    indices : sequence of int
        Sequences to cache (e.g. a split's training set).
    window_px : int
        Window side (odd).
    roi_px : (int, int)
        ROI of window centres, (depth, lateral) pixels; shrunk to what fits when the image is
        too small for the ROI plus the half-window margin.
    roi_centre_px : (int, int), optional
        ROI centre pixel; default the image centre.
    threads : int, optional
        Threads that build a batch (chunks of windows; NumPy releases the GIL while copying and
        computing); default 2, or 1 on a one-CPU machine. The batch does not depend on it.
    """

    def __init__(self, data: SweiTrainingSet, indices: Sequence[int] | NDArray[np.intp], *,
                 window_px: int, roi_px: tuple[int, int] = DEFAULT_ROI_PX,
                 roi_centre_px: tuple[int, int] | None = None,
                 threads: int | None = None) -> None:
        if window_px < 1 or window_px % 2 == 0:
            raise ValueError(f"window_px must be odd and >= 1, got {window_px}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self.indices = np.asarray(indices, dtype=np.intp)
        if self.indices.size == 0:
            raise ValueError("no sequences to cache (empty split?)")
        self.window_px = window_px
        half = window_px // 2
        h, w = data.image_shape
        cy, cx = roi_centre_px if roi_centre_px is not None else (h // 2, w // 2)
        # allowed centres: inside the requested ROI and far enough from the border
        r0 = max(half, cy - roi_px[0] // 2)
        r1 = min(h - half, cy - roi_px[0] // 2 + roi_px[0])
        c0 = max(half, cx - roi_px[1] // 2)
        c1 = min(w - half, cx - roi_px[1] // 2 + roi_px[1])
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"no window centre fits: image {h} x {w} px, window {window_px} px, "
                             f"ROI {roi_px} around {(cy, cx)}")
        self.roi = (r0, r1, c0, c1)  # centre range [r0, r1) x [c0, c1) in image pixels
        rows = slice(r0 - half, r1 + half)
        cols = slice(c0 - half, c1 + half)
        n = len(self.indices)
        self.windows_source = np.empty((n, data.frames, r1 - r0 + 2 * half, c1 - c0 + 2 * half),
                                       dtype=np.float32)
        self.targets = np.empty((n, r1 - r0, c1 - c0), dtype=np.float32)
        digest = hashlib.sha256()
        for i, s in enumerate(self.indices):
            self.windows_source[i] = np.asarray(data.displacement[int(s), :, rows, cols],
                                                dtype=np.float32)
            if data.uses_map[s]:
                self.targets[i] = np.asarray(data.modulus_maps_kpa[int(s), r0:r1, c0:c1])
            else:
                self.targets[i] = data.youngs_modulus_kpa[s]
            digest.update(self.windows_source[i].tobytes())
            digest.update(self.targets[i].tobytes())
        self.data_hash = digest.hexdigest()
        # Centres inside inclusions (target differs from the sequence's background, its most
        # common value), in the background, and in the background's border band (within half a
        # window of an inclusion pixel: windows that straddle an interface): flat indices into
        # the centre range, per cached sequence.
        self.inside: list[NDArray[np.intp]] = []
        self.outside: list[NDArray[np.intp]] = []
        self.border: list[NDArray[np.intp]] = []
        empty = np.empty(0, dtype=np.intp)
        for i, s in enumerate(self.indices):
            if not data.uses_map[s]:
                self.inside.append(empty)
                self.outside.append(empty)
                self.border.append(empty)
                continue
            flat = self.targets[i].ravel()
            values, counts = np.unique(flat, return_counts=True)
            is_background = self.targets[i] == values[np.argmax(counts)]
            self.inside.append(np.flatnonzero(~is_background))
            self.outside.append(np.flatnonzero(is_background))
            near = (scipy.ndimage.distance_transform_edt(is_background) <= half
                    if not is_background.all() else np.zeros_like(is_background))
            self.border.append(np.flatnonzero(is_background & near))

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        return int(self.windows_source.nbytes + self.targets.nbytes)

    def draw(self, rng: np.random.Generator, *, windows_per_sequence: int = 1,
             augmentation: Augmentation | None = None,
             inside_fraction: float | None = None,
             border_fraction: float | None = None) -> WindowDraw:
        """Random windows for one epoch: each cached sequence ``windows_per_sequence`` times,
        shuffled, with uniform centres in the ROI and the augmentation's random choices.

        ``inside_fraction`` stratifies the centres of sequences with per-pixel targets: each of
        their windows is centred inside an inclusion with this probability (uniformly among the
        inclusion pixels of the centre range) and in the background otherwise; sequences whose
        centre range holds no inclusion pixel, and homogeneous ones, draw uniformly. None draws
        every centre uniformly. ``border_fraction`` (with ``inside_fraction``) takes that share
        of those windows from the background's border band (within half a window of an
        inclusion, :attr:`border`), so interfaces are learnt from windows that straddle them;
        the rest of the background windows are drawn uniformly over the whole background.
        """
        if inside_fraction is not None and not 0.0 <= inside_fraction <= 1.0:
            raise ValueError(f"inside_fraction must be in [0, 1] or None, got {inside_fraction}")
        if border_fraction is not None:
            if inside_fraction is None:
                raise ValueError("border_fraction needs inside_fraction (the strata go together)")
            if not 0.0 <= border_fraction <= 1.0 - inside_fraction:
                raise ValueError(f"border_fraction must be in [0, 1 - inside_fraction = "
                                 f"{1.0 - inside_fraction:g}], got {border_fraction}")
        aug = augmentation if augmentation is not None else Augmentation.none()
        n = len(self) * windows_per_sequence
        seq = rng.permutation(np.repeat(np.arange(len(self)), windows_per_sequence))
        r0, r1, c0, c1 = self.roi
        k = self.window_px
        row = rng.integers(0, r1 - r0, n)
        col = rng.integers(0, c1 - c0, n)
        if inside_fraction is not None:
            stratum = rng.random(n)
            pick = rng.random(n)
            for i in np.flatnonzero([self.inside[s].size > 0 for s in seq]):
                if stratum[i] < inside_fraction:
                    pool = self.inside[seq[i]]
                elif border_fraction and stratum[i] < inside_fraction + border_fraction:
                    pool = self.border[seq[i]]
                else:
                    pool = self.outside[seq[i]]
                if pool.size:
                    row[i], col[i] = divmod(int(pool[int(pick[i] * pool.size)]), c1 - c0)
        flip_depth = rng.random(n) < aug.flip_probability
        flip_lateral = rng.random(n) < aug.flip_probability
        turns = rng.integers(0, 4, n) if aug.rotate else np.zeros(n, dtype=np.intp)
        blur = np.where(rng.random(n) < aug.blur_probability,
                        rng.uniform(*aug.blur_sigma_px, n), 0.0)
        area = rng.uniform(*aug.erase_area, n) * k * k
        aspect = np.exp(rng.uniform(*np.log(aug.erase_aspect), n))
        eh = np.clip(np.round(np.sqrt(area * aspect)), 1, k).astype(np.intp)
        ew = np.clip(np.round(np.sqrt(area / aspect)), 1, k).astype(np.intp)
        top = (rng.random(n) * (k - eh + 1)).astype(np.intp)
        left = (rng.random(n) * (k - ew + 1)).astype(np.intp)
        erase = np.stack([top, left, eh, ew], axis=1)
        erase[rng.random(n) >= aug.erase_probability, 2] = 0
        return WindowDraw(seq.astype(np.intp), row, col, flip_depth, flip_lateral,
                          turns.astype(np.intp), blur, erase)

    def _fill(self, out: NDArray[np.float32], draw: WindowDraw, part: slice) -> None:
        """Windows ``part`` of ``draw`` into ``out[part]``: copy (flips and quarter turns as
        strides), blur, z-score, erase; a chunk small enough to stay in the core's cache."""
        k = self.window_px
        # np.rot90(x, t) after the flips, as strides: t odd transposes, t = 2, 3 reverse depth
        # and t = 1, 2 reverse lateral
        for i, s, r, c, flip_d, flip_l, turns in zip(
                range(len(draw))[part], draw.seq[part].tolist(), draw.row[part].tolist(),
                draw.col[part].tolist(), draw.flip_depth[part].tolist(),
                draw.flip_lateral[part].tolist(), (draw.quarter_turns[part] % 4).tolist(),
                strict=True):
            step_d = -1 if flip_d != (turns in (2, 3)) else 1
            step_l = -1 if flip_l != (turns in (1, 2)) else 1
            window = self.windows_source[s, :, r : r + k, c : c + k][:, ::step_d, ::step_l]
            out[i] = window.transpose(0, 2, 1) if turns % 2 else window
        windows = out[part]
        sigma = draw.blur_sigma_px[part]
        blurred = np.flatnonzero(sigma > 0)
        if blurred.size:
            windows[blurred] = _blur_windows(windows[blurred], sigma[blurred])
        zscore_windows_inplace(windows)
        for i in np.flatnonzero(draw.erase[part, 2] > 0):
            top, left, eh, ew = draw.erase[part][i]
            windows[i, :, top : top + eh, left : left + ew] = 0.0

    def batch(self, draw: WindowDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows and targets for ``draw``.

        Returns
        -------
        windows : Tensor, shape (n, 1, frame, window_px, window_px), float32
            Augmented, z-normalised windows.
        youngs_modulus_kpa : Tensor, shape (n,), float32
            Target at each window centre.
        """
        k = self.window_px
        out = np.empty((len(draw), self.windows_source.shape[1], k, k), dtype=np.float32)
        chunk = max(1, _CHUNK_BYTES // out[:1].nbytes) if len(out) else 1
        starts = range(0, len(draw), chunk)
        with _single_threaded_blas():
            if self.threads > 1 and len(starts) > 1:
                with ThreadPoolExecutor(min(self.threads, len(starts))) as pool:
                    for _ in pool.map(lambda a: self._fill(out, draw, slice(a, a + chunk)),
                                      starts):
                        pass  # re-raises a worker's error here
            else:
                for a in starts:
                    self._fill(out, draw, slice(a, a + chunk))
        targets = self.targets[draw.seq, draw.row, draw.col]
        return torch.from_numpy(out).unsqueeze(1), torch.from_numpy(targets.astype(np.float32))
