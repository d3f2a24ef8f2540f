"""Simulated compression pairs for the strain analysis: training data, validation, the study.

The only strain module that calls the simulator (:mod:`drivers.ultrasound.sim_compression`):

* :func:`simulate_training_pairs` draws pairs from the distribution of the failure-rate study:
  38.5 mm deep frames (2000 samples at 40 MHz) at the study's 0.152 mm line pitch, applied strain
  uniform in 0.5-7 %, PSNR mostly 12.7 dB, gelatin blocks with 0-2 soft or stiff inclusions,
  random probe offsets (frame edges within 20 mm of the block centre, so the sideways expansion
  spans the +-9 lines of a 250-line study frame). Generation is cheap: the FEM solution of each
  phantom is computed once at unit strain and rescaled, and one noise-free pre frame per probe
  position serves several post frames (each pair gets its own noise).
* :func:`validation_pairs`: held-out pairs of the study's phantom geometry with other speckle.
* :func:`train_default_flow_cnn`: the quick, CLI-independent training entry point (a couple of
  minutes on two cores) with an honest validation on :func:`validation_pairs` at 12.7 dB.
* :func:`failure_rate_study`: the study's simulated pairs, scored by
  :func:`analysis.strain.study.evaluate_study`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from analysis.strain.flownet import FlowCNN
from analysis.strain.study import StudyCase, StudyResult, evaluate_study
from analysis.strain.train import TrainResult, train_flow_cnn, validate_flow_cnn
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import (
    CompressionPair,
    add_psnr_noise,
    pair_from_frames,
    simulate_compression_pair,
    simulate_rf_frame,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_N_PAIRS",
    "LINE_PITCH_MM",
    "failure_rate_study",
    "simulate_training_pairs",
    "study_phantom",
    "train_default_flow_cnn",
    "validation_pairs",
]

#: Line pitch of the study and of the default training frames (mm).
LINE_PITCH_MM = 0.152


def _random_phantom(rng: np.random.Generator, *, name: str, depth_mm: float, width_mm: float,
                    block_mm: float) -> BlockPhantom:
    incs = []
    for _ in range(int(rng.integers(0, 3))):
        incs.append(Inclusion(
            x_mm=float(rng.uniform(-width_mm / 2, width_mm / 2)),
            z_mm=float(rng.uniform(3.0, depth_mm - 3.0)),
            radius_mm=float(rng.uniform(1.5, 7.0)),
            gelatin_percent=float(rng.choice([5.0, 7.5, 12.5, 15.0, 17.5])),
        ))
    return BlockPhantom(
        name, float(rng.choice([7.5, 10.0, 12.5])), size_mm=(block_mm, block_mm, block_mm),
        inclusions=tuple(incs), speckle_seed=int(rng.integers(0, 2**31 - 1)),
    )


def simulate_training_pairs(
    n_pairs: int,
    *,
    rng: np.random.Generator,
    depth_mm: float = 38.5,
    n_lines: int = 64,
    line_pitch_mm: float = LINE_PITCH_MM,
    strain_range: tuple[float, float] = (0.005, 0.07),
    psnr_choices_db: Sequence[float | None] = (12.7, 12.7, 12.7, 16.0, 25.0, None),
    pairs_per_view: int = 4,
    views_per_phantom: int = 2,
    element_mm: float = 1.0,
    block_mm: float = 60.0,
    max_edge_mm: float = 20.0,
) -> list[CompressionPair]:
    """Random compression pairs drawn like the failure-rate study's (see the module notes).

    Parameters
    ----------
    n_pairs : int
        Number of pairs.
    rng : numpy.random.Generator
        Draws phantoms, strains, offsets and noise.
    depth_mm, n_lines, line_pitch_mm : optional
        Frame geometry (default 2000 samples x 64 lines at 40 MHz, 0.152 mm pitch).
    strain_range : (float, float), optional
        Applied strain drawn uniformly in this range.
    psnr_choices_db : sequence, optional
        PSNR drawn from these per pair (None = noise-free); default half at 12.7 dB.
    pairs_per_view : int, optional
        Post frames (strains) per noise-free pre frame.
    views_per_phantom : int, optional
        Probe positions per random phantom.
    element_mm, block_mm : float, optional
        FEM mesh size and block side (mm) of the training phantoms.
    max_edge_mm : float, optional
        Probe offsets keep the frame within this distance of the block centre (default 20 mm,
        the edge of the study's 38 mm frame moved by 1 mm), so the sideways expansion stays
        within the study's ~9 lines at 7 % strain and inside the network's search range.

    Returns
    -------
    list of CompressionPair
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if pairs_per_view < 1 or views_per_phantom < 1:
        raise ValueError("pairs_per_view and views_per_phantom must be >= 1")
    width_mm = n_lines * line_pitch_mm
    geom = dict(depth_mm=depth_mm, width_mm=width_mm, n_lines=n_lines, element_mm=element_mm)
    pairs: list[CompressionPair] = []
    k = 0
    while len(pairs) < n_pairs:
        phantom = _random_phantom(rng, name=f"train{k}", depth_mm=depth_mm, width_mm=width_mm,
                                  block_mm=block_mm)
        k += 1
        max_offset = max(0.0, min(block_mm / 2 - 1.0, max_edge_mm) - width_mm / 2)
        for _ in range(views_per_phantom):
            offset = float(rng.uniform(-max_offset, max_offset))
            pre = simulate_rf_frame(phantom, applied_strain=0.0, lateral_offset_mm=offset,
                                    **geom)  # type: ignore[arg-type]
            for _ in range(pairs_per_view):
                if len(pairs) == n_pairs:
                    break
                post = simulate_rf_frame(phantom, applied_strain=float(rng.uniform(*strain_range)),
                                         lateral_offset_mm=offset, **geom)  # type: ignore[arg-type]
                psnr = psnr_choices_db[int(rng.integers(0, len(psnr_choices_db)))]
                a, b = pre.rf, post.rf
                if psnr is not None:
                    a = add_psnr_noise(a, psnr_db=psnr, rng=rng)
                    b = add_psnr_noise(b, psnr_db=psnr, rng=rng)
                pairs.append(pair_from_frames(post, rf_pre=a, rf_post=b))
    return pairs


def study_phantom(*, depth_mm: float, speckle_seed: int = 7) -> BlockPhantom:
    """10 % gelatin block with a soft (5 %) inclusion of radius depth/6 at mid-depth."""
    return BlockPhantom(
        "study", 10.0, size_mm=(60.0, 60.0, 60.0), speckle_seed=speckle_seed,
        inclusions=(Inclusion(0.0, depth_mm / 2, depth_mm / 6, 5.0),),
    )


def validation_pairs(
    *, seed: int, n_lines: int = 128, strains: Sequence[float] = (0.01, 0.03, 0.05, 0.07),
    psnr_db: float = 12.7, depth_mm: float = 38.5,
) -> list[CompressionPair]:
    """Held-out pairs: the study's phantom geometry with other speckle, at ``psnr_db``.

    The speckle seeds (``10_000 + seed + k``) differ from the study's (7) and training phantoms
    draw theirs at random from 2^31 values, so the network has not seen these scatterers.
    """
    rng = np.random.default_rng(10_000 + seed)
    out = []
    for k, strain in enumerate(strains):
        phantom = study_phantom(depth_mm=depth_mm, speckle_seed=10_000 + seed + k)
        geom = dict(depth_mm=depth_mm, width_mm=n_lines * LINE_PITCH_MM, n_lines=n_lines)
        pre = simulate_rf_frame(phantom, applied_strain=0.0, **geom)  # type: ignore[arg-type]
        post = simulate_rf_frame(phantom, applied_strain=float(strain),
                                 **geom)  # type: ignore[arg-type]
        out.append(pair_from_frames(post, rf_pre=add_psnr_noise(pre.rf, psnr_db=psnr_db, rng=rng),
                                    rf_post=add_psnr_noise(post.rf, psnr_db=psnr_db, rng=rng)))
    return out


#: Defaults of :func:`train_default_flow_cnn` (about 2-3 minutes on two cores).
DEFAULT_N_PAIRS = 32
DEFAULT_EPOCHS = 3


def train_default_flow_cnn(
    *,
    n_pairs: int = DEFAULT_N_PAIRS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    validate: bool = True,
) -> TrainResult:
    """Simulate study-like pairs, train the default :class:`FlowCNN`, validate it (seeded).

    The untrained network is already a ZNCC block matcher (see :mod:`analysis.strain.flownet`);
    training adapts its learned descriptor branches, score corrections and temperature.

    Parameters
    ----------
    n_pairs : int, optional
        Training pairs (2000 x 64, :func:`simulate_training_pairs`).
    epochs : int, optional
        Passes over the pairs (two random 512-sample x 64-line crops per pair per pass).
    seed : int, optional
        Seeds simulation, initialisation and crops.
    progress : callable(epoch, loss), optional
        Called after each epoch.
    validate : bool, optional
        Compute :func:`validate_flow_cnn` on :func:`validation_pairs` for the trained network
        and, under ``validation["untrained"]``, for the same network before training.

    Returns
    -------
    TrainResult
        ``profile["seconds_simulate"]`` and ``profile["seconds_validate"]`` are added, and
        ``validation`` holds the held-out metrics.
    """
    t0 = time.perf_counter()
    pairs = simulate_training_pairs(n_pairs, rng=np.random.default_rng(seed))
    t_sim = time.perf_counter() - t0
    result = train_flow_cnn(pairs, epochs=epochs, batch=4, lr=1e-3, seed=seed,
                            patch=(256, 64), crops_per_pair=2, progress=progress)
    result.profile["seconds_simulate"] = t_sim
    result.recipe["data"] = ("simulate_training_pairs defaults: 2000 x 64 frames, 0.152 mm pitch, "
                             "strain 0.5-7 %, PSNR 12.7 dB (half) / 16 / 25 dB / clean")
    if validate:
        t1 = time.perf_counter()
        held_out = validation_pairs(seed=seed)
        torch.manual_seed(seed)
        untrained = FlowCNN(result.model.config)
        before = validate_flow_cnn(untrained, held_out)
        result.validation = validate_flow_cnn(result.model, held_out)
        result.validation["untrained"] = {k: v for k, v in before.items() if k != "per_pair"}
        result.profile["seconds_validate"] = time.perf_counter() - t1
    result.profile["seconds_total"] = time.perf_counter() - t0
    return result


def failure_rate_study(
    *,
    model: Any,
    strains: Sequence[float] = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07),
    repeats: int = 2,
    psnr_db: float = 12.7,
    depth_mm: float = 38.5,
    width_mm: float | None = None,
    n_lines: int = 250,
    line_pitch_mm: float = 0.152,
    seed: int = 0,
    methods: Sequence[str] = ("dp", "cnn"),
    progress: Callable[[str], None] | None = None,
    **estimate_kwargs: Any,
) -> StudyResult:
    """Run the GLUE vs GLUENet comparison on simulated pairs (:func:`study_phantom`).

    Parameters
    ----------
    model : FlowCNN or None
        Trained network for the ``"cnn"`` method (may be None if ``methods`` has only "dp").
    strains : sequence of float, optional
        Applied strains (fractions), default 0.5-7 %.
    repeats : int, optional
        Noise realisations (and probe offsets) per strain.
    psnr_db : float, optional
        Noise level ([GLUENet]: 12.7 dB).
    depth_mm, width_mm, n_lines : optional
        Frame geometry (default 2000 x 250 samples at 40 MHz, 38 mm wide). Small frames work too
        (e.g. 600 x 96: ``depth_mm=11.55, n_lines=96``); the inclusion scales with the depth.
    line_pitch_mm : float, optional
        Line spacing used when ``width_mm`` is None (width = ``n_lines * line_pitch_mm``); the
        default 0.152 mm is also the pitch the default flow CNN is trained at.
    seed : int, optional
        Seeds noise and offsets.
    methods : sequence of {"dp", "cnn"}, optional
    progress : callable(str), optional
        Called with a line of text per pair.
    **estimate_kwargs
        Passed to :func:`analysis.strain.pipeline.estimate_strain`.

    Notes
    -----
    Pairs are simulated one at a time as :func:`analysis.strain.study.evaluate_study` consumes
    them, with one generator seeded by ``seed`` (probe offset, then noise, per pair).

    Returns
    -------
    StudyResult
    """
    if repeats < 1 or not strains:
        raise ValueError("need at least one strain and one repeat")
    if width_mm is None:
        width_mm = n_lines * line_pitch_mm
    if len(strains) * repeats < 2:
        raise ValueError("a failure rate needs at least two images per method "
                         f"(got {len(strains)} strains x {repeats} repeats)")
    rng = np.random.default_rng(seed)
    phantom = study_phantom(depth_mm=depth_mm)
    radius = phantom.inclusions[0].radius_mm
    settings = {
        "strains": list(strains), "repeats": repeats, "psnr_db": psnr_db, "depth_mm": depth_mm,
        "width_mm": width_mm, "n_lines": n_lines, "seed": seed, "phantom": "10 % block, 5 % "
        f"inclusion r={radius:.2f} mm at {depth_mm / 2:.2f} mm", **estimate_kwargs,
    }
    max_off = phantom.size_mm[0] / 2 - width_mm / 2 - 1.0

    def cases() -> Iterator[StudyCase]:
        for strain in strains:
            for rep in range(repeats):
                pair = simulate_compression_pair(
                    phantom, applied_strain=float(strain), depth_mm=depth_mm, width_mm=width_mm,
                    n_lines=n_lines, psnr_db=psnr_db, rng=rng,
                    lateral_offset_mm=float(rng.uniform(-1.0, 1.0)) * min(1.0, max_off),
                )
                yield StudyCase(float(strain), rep, pair)

    return evaluate_study(cases(), model=model, depth_mm=depth_mm, width_mm=width_mm,
                          inclusion_radius_mm=radius, methods=methods, settings=settings,
                          progress=progress, **estimate_kwargs)
