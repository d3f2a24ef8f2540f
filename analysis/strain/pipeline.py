"""Strain elastography pipeline: coarse displacement (DP or CNN) + GLUE + LSQ (+ Kalman) strain.

``coarse="dp"`` is GLUE as published (Hashemi & Rivaz 2017); ``coarse="cnn"`` is GLUENet (Kibria
& Rivaz 2018). :func:`analysis.strain.runners.run_strain` applies the pipeline to the
``compression`` table of a session store.

Quasi-static strain is relative (see :mod:`analysis.strain.lsq`): images are compared by
structure (NCC, MSSIM after normalisation by the applied strain) and by SNR/CNR, not by value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analysis.metrics import cnr, mssim, snr
from analysis.strain._checks import check_frames
from analysis.strain.bandpass import bandpass_rf
from analysis.strain.dp import dp_displacement
from analysis.strain.glue import GlueSolver, glue
from analysis.strain.lsq import kalman_strain, lsq_strain

__all__ = [
    "CoarseMethod",
    "StrainResult",
    "dp_lateral_search",
    "estimate_strain",
]

CoarseMethod = Literal["dp", "cnn"]


@dataclass(frozen=True)
class StrainResult:
    """Displacement and strain of one pre/post pair, on the full frame grid.

    Attributes
    ----------
    axial_displacement, lateral_displacement : ndarray, shape (depth_sample, line), float32
        GLUE displacement (samples, lines); NaN in the cropped border.
    axial_strain : ndarray, shape (depth_sample, line), float32
        LSQ strain (Kalman-smoothed across lines if requested); NaN where undefined. Negative
        under compression; relative.
    coarse_axial, coarse_lateral : ndarray, shape (depth_sample, line), float32
        The coarse (DP or CNN) estimate GLUE started from.
    valid : tuple of slice
        Region where ``axial_strain`` is finite.
    coarse : str
        ``"dp"`` or ``"cnn"``.
    seconds : dict
        Wall time of each stage (``bandpass``, ``coarse``, ``glue``, ``strain``).
    """

    axial_displacement: NDArray[np.float32]
    lateral_displacement: NDArray[np.float32]
    axial_strain: NDArray[np.float32]
    coarse_axial: NDArray[np.float32]
    coarse_lateral: NDArray[np.float32]
    valid: tuple[slice, slice]
    coarse: str
    seconds: dict[str, float] = field(default_factory=dict)


def dp_lateral_search(n_lines: int, *, max_strain: float, lateral_ratio: float = 1.0) -> int:
    """Half-width (lines) of the DP lateral search that covers the edges of the frame.

    Under compression the tissue expands sideways from the centre of the block: with the frame
    centred on it, a line ``k`` lines from the centre moves by about
    ``k * lateral_ratio * strain`` lines, where ``lateral_ratio = -eps_lateral / eps_axial``
    (``nu / (1 - nu)`` ~ 0.98 for nearly incompressible gelatin in plane strain between
    frictionless plates, 1.0 default as the upper bound). The edge lines (``k = n_lines / 2``)
    set the range; one line of slack is added.

    Examples
    --------
    >>> dp_lateral_search(250, max_strain=0.08)
    11
    """
    if n_lines < 1:
        raise ValueError(f"n_lines must be >= 1, got {n_lines}")
    if not (np.isfinite(lateral_ratio) and lateral_ratio >= 0):
        raise ValueError(f"lateral_ratio must be >= 0, got {lateral_ratio}")
    return math.ceil(0.5 * n_lines * lateral_ratio * max_strain) + 1


def estimate_strain(
    rf_pre: ArrayLike,
    rf_post: ArrayLike,
    *,
    coarse: CoarseMethod = "dp",
    model: Any = None,
    sampling_frequency: float | None = None,
    center_frequency: float | None = None,
    bandpass: bool | None = None,
    bandpass_fractional_bandwidth: float = 1.0,
    max_strain: float = 0.08,
    dp_lateral_range: tuple[int, int] | None = None,
    dp_weight: float = 0.1,
    dp_block: int = 4,
    dp_line_step: int = 8,
    alpha1: float = 5.0,
    alpha2: float = 1.0,
    beta1: float = 5.0,
    beta2: float = 1.0,
    glue_iterations: int = 1,
    crop_samples: int = 10,
    crop_lines: int = 2,
    solver: GlueSolver = "cg-twolevel",
    strain_window: int = 41,
    kalman_noise: float | None = None,
) -> StrainResult:
    """Axial strain of a pre/post RF pair: coarse estimate, GLUE refinement, LSQ derivative.

    Parameters
    ----------
    rf_pre, rf_post : array_like, shape (depth_sample, line), real
        RF frames (same shape, finite).
    coarse : {"dp", "cnn"}
        Coarse estimator: dynamic programming (GLUE) or the flow CNN (GLUENet).
    model : FlowCNN, optional
        Trained network; required for ``coarse="cnn"``.
    sampling_frequency, center_frequency : float, optional
        RF sampling rate and transducer centre frequency (Hz). When both are given the frames
        are band-passed first (see ``bandpass``).
    bandpass : bool, optional
        Zero-phase band-pass of both frames around the centre frequency
        (:func:`analysis.strain.bandpass.bandpass_rf`) before DP/CNN and GLUE, as a scanner's
        receive chain band-limits its RF; it removes out-of-band (e.g. white electronic) noise.
        Default (None): on when both frequencies are known. True without them is an error.
    bandpass_fractional_bandwidth : float, optional
        Pass band ``fc (1 -+ b / 2)``; 1.0 passes 0.5-1.5 fc.
    max_strain : float, optional
        Largest compression expected; sets the DP axial search range to
        ``(-ceil(max_strain * depth_samples) - 3, 3)`` and, by default, the lateral one.
    dp_lateral_range : (int, int), optional
        DP lateral search (lines). Default: ``+-dp_lateral_search(line, max_strain=max_strain)``,
        which covers the sideways expansion at the frame edges for a frame centred on the
        compressed block (7 % over 250 lines moves the edge lines by ~8.6 lines).
    dp_weight, dp_block, dp_line_step : optional
        DP parameters (:func:`analysis.strain.dp.dp_displacement`).
    alpha1, alpha2, beta1, beta2, glue_iterations, crop_samples, crop_lines, solver : optional
        GLUE parameters (:func:`analysis.strain.glue.glue`).
    strain_window : int, optional
        Odd LSQ window in samples (41 samples = 0.8 mm at 40 MHz).
    kalman_noise : float, optional
        If given, smooth the LSQ strain across lines with :func:`analysis.strain.lsq.kalman_strain`
        with this measurement-noise variance (strain^2).

    Returns
    -------
    StrainResult

    Raises
    ------
    ValueError
        Bad frames, an unknown coarse method, ``coarse="cnn"`` without a model, ``bandpass=True``
        without both frequencies, or parameters the stages reject.
    """
    pre, post = check_frames(rf_pre, rf_post)
    n, m = pre.shape
    if coarse not in ("dp", "cnn"):
        raise ValueError(f"coarse must be 'dp' or 'cnn', got {coarse!r}")
    if not (np.isfinite(max_strain) and 0 < max_strain < 0.5):
        raise ValueError(f"max_strain must be in (0, 0.5), got {max_strain}")
    known = sampling_frequency is not None and center_frequency is not None
    if bandpass is None:
        bandpass = known
    elif bandpass and not known:
        raise ValueError("bandpass=True needs sampling_frequency and center_frequency (Hz)")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if bandpass:
        assert sampling_frequency is not None and center_frequency is not None
        kw = dict(sampling_frequency=sampling_frequency, center_frequency=center_frequency,
                  fractional_bandwidth=bandpass_fractional_bandwidth)
        pre, post = check_frames(bandpass_rf(pre, **kw), bandpass_rf(post, **kw))
    seconds["bandpass"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if dp_lateral_range is None:
        half = dp_lateral_search(m, max_strain=max_strain)
        dp_lateral_range = (-half, half)
    if coarse == "dp":
        dp = dp_displacement(
            pre, post, axial_range=(-math.ceil(max_strain * n) - 3, 3),
            lateral_range=dp_lateral_range, weight=dp_weight, block=min(dp_block, n),
            line_step=dp_line_step,
        )
        ax0, lat0 = dp.axial, dp.lateral
    else:
        if model is None:
            raise ValueError("coarse='cnn' needs a trained model (analysis.strain.flownet."
                             "load_flow_cnn or analysis.strain.train.train_flow_cnn)")
        # lazy: the DP path runs without torch (flownet imports it, ~1.1 s)
        from analysis.strain.flownet import predict_displacement

        ax0, lat0 = predict_displacement(model, pre, post)
    t1 = time.perf_counter()
    g = glue(pre, post, ax0, lat0, alpha1=alpha1, alpha2=alpha2, beta1=beta1, beta2=beta2,
             crop_samples=crop_samples, crop_lines=crop_lines, iterations=glue_iterations,
             solver=solver)
    t2 = time.perf_counter()
    strain_region = lsq_strain(g.axial, window=strain_window)
    if kalman_noise is not None:
        strain_region = kalman_strain(strain_region, measurement_noise=kalman_noise)
    t3 = time.perf_counter()
    seconds.update(coarse=t1 - t0, glue=t2 - t1, strain=t3 - t2)

    axial = np.full((n, m), np.nan, dtype=np.float32)
    lateral = np.full((n, m), np.nan, dtype=np.float32)
    strain = np.full((n, m), np.nan, dtype=np.float32)
    axial[g.region] = g.axial
    lateral[g.region] = g.lateral
    strain[g.region] = strain_region
    h = strain_window // 2
    rows, cols = g.region
    valid = (slice(rows.start + h, rows.stop - h), cols)
    return StrainResult(
        axial_displacement=axial, lateral_displacement=lateral, axial_strain=strain,
        coarse_axial=np.asarray(ax0, dtype=np.float32),
        coarse_lateral=np.asarray(lat0, dtype=np.float32), valid=valid, coarse=coarse,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------
# Store runner
# --------------------------------------------------------------------------------------------
def _inclusion_windows(
    truth_strain: NDArray[np.floating], valid: tuple[slice, slice]
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Target/background windows from a true strain image: inclusion = strongest deviation.

    The target is the central half of the bounding box of the connected region, around the
    largest deviation, of pixels whose true strain departs from the median by more than 25 %;
    the background is a box of the same size at the same depth on
    the side farther from the inclusion. None if there is no inclusion or no room.
    """
    t = np.asarray(truth_strain, dtype=np.float64)[valid]
    med = np.median(t)
    if med == 0:
        return None
    dev = np.abs(t - med)
    mask = dev > 0.25 * abs(med)
    if mask.sum() < 16:
        return None
    from scipy.ndimage import label

    labels, _ = label(mask)
    mask = labels == labels[np.unravel_index(int(np.argmax(dev)), dev.shape)]
    r = np.flatnonzero(mask.any(axis=1))
    c = np.flatnonzero(mask.any(axis=0))
    h = max(2, (r[-1] - r[0] + 1) // 2)
    w = max(2, (c[-1] - c[0] + 1) // 2)
    rc = (r[0] + r[-1]) // 2
    cc = (c[0] + c[-1]) // 2
    r0 = max(0, rc - h // 2)
    target = (slice(r0, r0 + h), slice(max(0, cc - w // 2), max(0, cc - w // 2) + w))
    ncols = t.shape[1]
    if cc < ncols / 2:
        b0 = ncols - w - 1
    else:
        b0 = 1
    if b0 < 0 or abs(b0 - target[1].start) < w:
        return None
    background = (slice(r0, r0 + h), slice(b0, b0 + w))
    off_r, off_c = valid[0].start or 0, valid[1].start or 0

    def shift(win: tuple[slice, slice]) -> tuple[slice, slice]:
        return (slice(win[0].start + off_r, win[0].stop + off_r),
                slice(win[1].start + off_c, win[1].stop + off_c))

    return shift(target), shift(background)


def pair_metrics(
    strain: NDArray[np.floating],
    valid: tuple[slice, slice],
    *,
    truth_strain: NDArray[np.floating] | None = None,
) -> dict[str, float]:
    """SNR in the valid region, and with a truth image also MSSIM and CNR (see notes).

    MSSIM compares the strain images normalised by the mean true strain (strain is relative),
    with ``data_range`` = range of the normalised truth (at least 0.1). CNR windows come from the
    truth (:func:`_inclusion_windows`).
    """
    s = np.asarray(strain, dtype=np.float64)
    out: dict[str, float] = {}
    region = s[valid]
    if not np.all(np.isfinite(region)):
        return {"snr": float("nan")}
    # SNR of |strain| (compression is negative): mean / std.
    out["snr"] = abs(snr(region, window=(slice(None), slice(None))))
    if truth_strain is not None:
        t = np.asarray(truth_strain, dtype=np.float64)
        scale = float(np.mean(t[valid]))
        if scale != 0.0:
            tn = t[valid] / scale
            sn = region / scale
            rng = max(float(tn.max() - tn.min()), 0.1)
            out["mssim"] = mssim(sn, tn, data_range=rng)
        wins = _inclusion_windows(t, valid)
        if wins is not None:
            out["cnr"] = cnr(s, background=wins[1], target=wins[0])
    return out
