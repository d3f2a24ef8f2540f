"""Training the flow CNN (:mod:`analysis.strain.flownet`) on simulated compression pairs.

Recipe (ours; [GLUENet] fine-tunes FlowNet 2.0 and gives no recipe): Adam with a cosine learning
rate decay, multi-scale L1 loss on the flow of every pyramid level (true displacement
block-averaged to the level's grid, in working pixels; weight 1 on the working grid, 0.5 on each
level) plus a cross-entropy between each level's softmax over the shifts and the true shift,
random crops of ``patch`` working pixels, random lateral flips (the lateral flow changes
sign). The RF is band-passed exactly as :func:`analysis.strain.pipeline.estimate_strain` does
before inference. Seeded: the same pairs, seed and settings give the same weights.

Training data (:func:`simulate_training_pairs`) is drawn from the distribution of the failure-rate
study (:mod:`analysis.strain.study`): 38.5 mm deep frames (2000 samples at 40 MHz) at the study's
0.152 mm line pitch, applied strain uniform in 0.5-7 %, PSNR mostly 12.7 dB, gelatin blocks with
0-2 soft or stiff inclusions, random probe offsets (frame edges within 20 mm of the block centre,
so the sideways expansion spans the +-9 lines of a 250-line study frame). Generation is cheap:
the FEM solution of each phantom is computed once at unit strain and rescaled, and one
noise-free pre frame per probe position serves several post frames (each pair gets its own noise).

:func:`train_default_flow_cnn` is the quick, CLI-independent entry point (a couple of minutes on
two cores) and reports an honest validation on held-out pairs of the study's phantom geometry
with other speckle, at 12.7 dB (:func:`validate_flow_cnn`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from analysis.strain.bandpass import bandpass_rf
from analysis.strain.flownet import FlowCNN, FlowConfig, flow_input, predict_displacement
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import (
    CompressionPair,
    RfFrame,
    add_psnr_noise,
    simulate_rf_frame,
)

__all__ = [
    "TrainResult",
    "simulate_training_pairs",
    "train_default_flow_cnn",
    "train_flow_cnn",
    "validate_flow_cnn",
    "validation_pairs",
]

#: Line pitch of the study and of the default training frames (mm).
LINE_PITCH_MM = 0.152


@dataclass
class TrainResult:
    """A trained network and how it got there.

    Attributes
    ----------
    model : FlowCNN
    loss_history : list of float
        Mean training loss per epoch.
    epe_working_px : float
        Final mean end-point error (working pixels) on the training crops, eval mode.
    profile : dict
        ``seconds_total``, ``seconds_per_epoch``, ``seconds_per_batch``, ``seconds_prepare``
        (and ``seconds_simulate``, ``seconds_validate`` for :func:`train_default_flow_cnn`).
    recipe : dict
        The settings, for the weight card.
    validation : dict
        Held-out metrics (:func:`validate_flow_cnn`); empty unless computed.
    """

    model: FlowCNN
    loss_history: list[float]
    epe_working_px: float
    profile: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)


def _pair_from_frames(pre: RfFrame, post: RfFrame, rf_pre: NDArray[np.floating],
                      rf_post: NDArray[np.floating]) -> CompressionPair:
    dz = post.sample_spacing_m
    dx = post.line_spacing_m
    return CompressionPair(
        rf_pre=np.asarray(rf_pre, dtype=np.float32), rf_post=np.asarray(rf_post, np.float32),
        axial_displacement_samples=(post.axial_displacement_m / dz).astype(np.float32),
        lateral_displacement_samples=(post.lateral_displacement_m / dx).astype(np.float32),
        axial_displacement_m=post.axial_displacement_m,
        lateral_displacement_m=post.lateral_displacement_m,
        axial_strain=post.axial_strain, depth_m=post.depth_m, lateral_m=post.lateral_m,
        sampling_frequency=post.sampling_frequency, center_frequency=post.center_frequency,
        sound_speed=post.sound_speed, applied_strain=post.applied_strain,
    )


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
                pairs.append(_pair_from_frames(pre, post, a, b))
    return pairs


def _prepare(
    pairs: Sequence[CompressionPair], cfg: FlowConfig, *, bandpass: bool
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Stack working-grid inputs (pair, 6, H, W) and targets (pair, 2, H, W) in working px."""
    fa, fl = cfg.axial_factor, cfg.lateral_factor
    inputs, targets = [], []
    shape = None
    for p in pairs:
        rf_a, rf_b = p.rf_pre, p.rf_post
        if bandpass:
            kw = dict(sampling_frequency=p.sampling_frequency,
                      center_frequency=p.center_frequency)
            rf_a, rf_b = bandpass_rf(rf_a, **kw), bandpass_rf(rf_b, **kw)
        a = flow_input(rf_a, axial_factor=fa, lateral_factor=fl)
        b = flow_input(rf_b, axial_factor=fa, lateral_factor=fl)
        h, w = a.shape[-2:]
        if shape is None:
            shape = (h, w)
        elif (h, w) != shape:
            raise ValueError(f"training pairs must share one frame shape; got working grids "
                             f"{shape} and {(h, w)}")
        ax = p.axial_displacement_samples[: h * fa, : w * fl].reshape(h, fa, w, fl).mean((1, 3))
        lat = p.lateral_displacement_samples[: h * fa, : w * fl].reshape(h, fa, w, fl).mean((1, 3))
        inputs.append(np.concatenate([a, b]))
        targets.append(np.stack([ax / fa, lat / fl]).astype(np.float32))
    return np.stack(inputs), np.stack(targets)


def _level_target(target: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """True flow (working px) block-averaged onto a level grid of ``shape``."""
    sa = target.shape[-2] // shape[0]
    sl = target.shape[-1] // shape[1]
    return F.avg_pool2d(target, (sa, sl)) if sa * sl > 1 else target


def _shift_cross_entropy(scores: torch.Tensor, base: torch.Tensor, target: torch.Tensor,
                         stride: tuple[int, int], search: tuple[int, int]) -> torch.Tensor:
    """Cross-entropy of the softmax of a level's scores against the true shift.

    The true residual ``(target - base) / stride`` (level px) is spread bilinearly over the four
    nearest shift bins; pixels whose residual lies outside the search range are left out.
    """
    ra, rl = search
    res_a = (target[:, 0] - base[:, 0]) / stride[0] + ra
    res_l = (target[:, 1] - base[:, 1]) / stride[1] + rl
    inside = (res_a >= 0) & (res_a <= 2 * ra) & (res_l >= 0) & (res_l <= 2 * rl)
    if not bool(inside.any()):
        return torch.zeros((), dtype=scores.dtype)
    logp = torch.log_softmax(scores, dim=1)
    a0 = res_a.detach().floor().clamp(0, 2 * ra)
    l0 = res_l.detach().floor().clamp(0, 2 * rl)
    fa = (res_a.detach() - a0).clamp(0, 1)
    fl = (res_l.detach() - l0).clamp(0, 1)
    total = torch.zeros_like(res_a)
    for da, wa in ((0, 1 - fa), (1, fa)):
        for dl, wl in ((0, 1 - fl), (1, fl)):
            ia = (a0 + da).clamp(max=2 * ra)
            il = (l0 + dl).clamp(max=2 * rl)
            idx = (ia * (2 * rl + 1) + il).long()[:, None]
            total = total - wa * wl * torch.gather(logp, 1, idx)[:, 0]
    return total[inside].mean()


def _training_loss(model: FlowCNN, pre: torch.Tensor, post: torch.Tensor,
                   target: torch.Tensor, ce_weight: float) -> tuple[torch.Tensor, list]:
    """Multi-scale L1 end-point loss (working px) plus the shift cross-entropy of every level."""
    flows, scores = model(pre, post, return_scores=True)
    cfg = model.config
    strides = cfg.cumulative_strides()
    loss = torch.zeros((), dtype=target.dtype)
    for k, flow in enumerate(flows):
        t = _level_target(target, tuple(flow.shape[-2:]))
        weight = 1.0 if k == len(flows) - 1 else 0.5
        loss = loss + weight * (flow - t).abs().sum(dim=1).mean()
    if ce_weight > 0:
        for j, (sc, base) in enumerate(scores):
            level = cfg.levels - 1 - j
            t = _level_target(target, tuple(sc.shape[-2:]))
            loss = loss + ce_weight * _shift_cross_entropy(
                sc, base, t, strides[level], model.level_search(level))
    return loss, flows


def train_flow_cnn(
    pairs: Sequence[CompressionPair] | Callable[[np.random.Generator], CompressionPair],
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    config: FlowConfig | None = None,
    patch: tuple[int, int] = (256, 64),
    n_pairs: int | None = None,
    bandpass: bool = True,
    crops_per_pair: int = 1,
    ce_weight: float = 0.2,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a :class:`~analysis.strain.flownet.FlowCNN` on simulated pairs (seeded).

    Parameters
    ----------
    pairs : sequence of CompressionPair, or callable(rng) -> CompressionPair
        Training pairs of one frame shape, or a generator called ``n_pairs`` times.
    epochs, batch : int
        Passes over the pairs and crops per optimiser step.
    lr : float
        Initial Adam learning rate (cosine decay to 5 % of it over the run).
    seed : int
        Seeds weight init, crops, flips and the generator.
    config : FlowConfig, optional
        Network configuration (default :class:`FlowConfig`).
    patch : (int, int), optional
        Crop (working pixels, depth x lateral); multiples of ``config.multiple``. A frame smaller
        than the patch is used whole (cropped to a multiple of ``config.multiple``).
    n_pairs : int, optional
        Number of pairs to draw when ``pairs`` is a callable.
    bandpass : bool, optional
        Band-pass the RF as the pipeline does (default True; keep it equal to the pipeline's
        setting at inference).
    crops_per_pair : int, optional
        Random crops drawn from every pair per epoch.
    ce_weight : float, optional
        Weight of the per-level cross-entropy between the softmax of the scores and the true
        shift (teaches the score correction to prefer the right peak); 0 disables it.
    progress : callable(epoch, loss), optional
        Called after each epoch.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        No pairs, mixed frame shapes, bad epochs/batch/lr, or a patch not a multiple of
        ``config.multiple``.
    """
    if epochs < 1 or batch < 1 or crops_per_pair < 1 or not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"epochs, batch and crops_per_pair must be >= 1 and lr > 0, got "
                         f"{epochs}, {batch}, {crops_per_pair}, {lr}")
    cfg = config or FlowConfig()
    ma, ml = cfg.multiple
    if patch[0] % ma or patch[1] % ml:
        raise ValueError(f"patch {patch} must be a multiple of {cfg.multiple} (the coarsest "
                         "stride of the network)")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if callable(pairs):
        if n_pairs is None or n_pairs < 1:
            raise ValueError("n_pairs (>= 1) is required when pairs is a generator")
        pair_list = [pairs(rng) for _ in range(n_pairs)]
    else:
        pair_list = list(pairs)
    if not pair_list:
        raise ValueError("no training pairs given")
    x_all, y_all = _prepare(pair_list, cfg, bandpass=bandpass)
    t_prep = time.perf_counter() - t0
    h, w = x_all.shape[-2:]
    ph = min(patch[0], (h // ma) * ma)
    pw = min(patch[1], (w // ml) * ml)
    if ph == 0 or pw == 0:
        raise ValueError(f"working grid {h} x {w} is smaller than one {ma} x {ml} cell")

    torch.manual_seed(seed)
    model = FlowCNN(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    n = x_all.shape[0]
    steps_per_epoch = -(-n * crops_per_pair // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=epochs * steps_per_epoch,
                                                       eta_min=0.05 * lr)
    history: list[float] = []
    batch_times: list[float] = []
    t_train = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = np.concatenate([rng.permutation(n) for _ in range(crops_per_pair)])
        total = 0.0
        for start in range(0, order.size, batch):
            idx = order[start:start + batch]
            xs, ys = [], []
            for i in idx:
                r0 = int(rng.integers(0, h - ph + 1))
                c0 = int(rng.integers(0, w - pw + 1))
                x = x_all[i, :, r0:r0 + ph, c0:c0 + pw]
                y = y_all[i, :, r0:r0 + ph, c0:c0 + pw].copy()
                if rng.random() < 0.5:
                    x = x[:, :, ::-1]
                    y = y[:, :, ::-1]
                    y[1] = -y[1]
                xs.append(np.ascontiguousarray(x))
                ys.append(np.ascontiguousarray(y))
            xb = torch.from_numpy(np.stack(xs))
            yb = torch.from_numpy(np.stack(ys))
            tb = time.perf_counter()
            half = xb.shape[1] // 2
            loss, _ = _training_loss(model, xb[:, :half], xb[:, half:], yb, ce_weight)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            batch_times.append(time.perf_counter() - tb)
            total += loss.item() * len(idx)
        history.append(total / order.size)
        if progress is not None:
            progress(epoch, history[-1])
    t_total_train = time.perf_counter() - t_train

    model.eval()
    with torch.no_grad():
        k = min(n, 16)
        xb = torch.from_numpy(np.ascontiguousarray(x_all[:k, :, :ph, :pw]))
        yb = torch.from_numpy(np.ascontiguousarray(y_all[:k, :, :ph, :pw]))
        half = xb.shape[1] // 2
        flow = model(xb[:, :half], xb[:, half:])[-1]
        epe = float(torch.linalg.vector_norm(flow - yb, dim=1).mean())
    recipe = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "patch": [ph, pw],
              "n_pairs": n, "crops_per_pair": crops_per_pair, "bandpass": bandpass,
              "loss": f"multi-scale L1 + {ce_weight} x shift cross-entropy",
              "optimizer": "Adam + cosine decay"}
    profile = {
        "seconds_prepare": t_prep,
        "seconds_total": time.perf_counter() - t0,
        "seconds_per_epoch": t_total_train / epochs,
        "seconds_per_batch": float(np.mean(batch_times)),
    }
    return TrainResult(model=model, loss_history=history, epe_working_px=epe, profile=profile,
                       recipe=recipe)


def validate_flow_cnn(
    model: FlowCNN,
    pairs: Sequence[CompressionPair],
    *,
    bandpass: bool = True,
    border: tuple[int, int] = (10, 2),
) -> dict[str, Any]:
    """Coarse-displacement quality of a network on full frames (as the pipeline runs it).

    Metrics over all pixels but a ``border`` (samples, lines), pooled over the pairs:
    ``median_axial_error_samples``, ``median_lateral_error_lines``, ``outlier_fraction`` (axial
    error > 3 samples, about GLUE's capture range of half a carrier period, or lateral error
    > 1.5 lines) and the same per pair (``per_pair``: strain, outliers, median axial error).
    """
    if not pairs:
        raise ValueError("validate_flow_cnn needs at least one pair")
    errs_a, errs_l, per_pair = [], [], []
    core = (slice(border[0], -border[0] or None), slice(border[1], -border[1] or None))
    for p in pairs:
        pre, post = p.rf_pre, p.rf_post
        if bandpass:
            kw = dict(sampling_frequency=p.sampling_frequency,
                      center_frequency=p.center_frequency)
            pre, post = bandpass_rf(pre, **kw), bandpass_rf(post, **kw)
        ax, lat = predict_displacement(model, pre, post)
        ea = np.abs(ax - p.axial_displacement_samples)[core]
        el = np.abs(lat - p.lateral_displacement_samples)[core]
        errs_a.append(ea.ravel())
        errs_l.append(el.ravel())
        per_pair.append({"applied_strain": p.applied_strain,
                         "outlier_fraction": float(np.mean((ea > 3.0) | (el > 1.5))),
                         "median_axial_error_samples": float(np.median(ea))})
    ea_all = np.concatenate(errs_a)
    el_all = np.concatenate(errs_l)
    return {
        "n_pairs": len(pairs),
        "median_axial_error_samples": float(np.median(ea_all)),
        "median_lateral_error_lines": float(np.median(el_all)),
        "outlier_fraction": float(np.mean((ea_all > 3.0) | (el_all > 1.5))),
        "per_pair": per_pair,
    }


def validation_pairs(
    *, seed: int, n_lines: int = 128, strains: Sequence[float] = (0.01, 0.03, 0.05, 0.07),
    psnr_db: float = 12.7, depth_mm: float = 38.5,
) -> list[CompressionPair]:
    """Held-out pairs: the study's phantom geometry with other speckle, at ``psnr_db``.

    The speckle seeds (``10_000 + seed + k``) differ from the study's (7) and training phantoms
    draw theirs at random from 2^31 values, so the network has not seen these scatterers.
    """
    from analysis.strain.study import study_phantom

    rng = np.random.default_rng(10_000 + seed)
    out = []
    for k, strain in enumerate(strains):
        phantom = study_phantom(depth_mm=depth_mm, speckle_seed=10_000 + seed + k)
        geom = dict(depth_mm=depth_mm, width_mm=n_lines * LINE_PITCH_MM, n_lines=n_lines)
        pre = simulate_rf_frame(phantom, applied_strain=0.0, **geom)  # type: ignore[arg-type]
        post = simulate_rf_frame(phantom, applied_strain=float(strain),
                                 **geom)  # type: ignore[arg-type]
        out.append(_pair_from_frames(pre, post, add_psnr_noise(pre.rf, psnr_db=psnr_db, rng=rng),
                                     add_psnr_noise(post.rf, psnr_db=psnr_db, rng=rng)))
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
