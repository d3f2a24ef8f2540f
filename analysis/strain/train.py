"""Training the flow CNN (:mod:`analysis.strain.flownet`) on simulated compression pairs.

Recipe (ours; [GLUENet] fine-tunes FlowNet 2.0 and gives no recipe): Adam with a cosine learning
rate decay, multi-scale L1 loss on the flow of every pyramid level (true displacement
block-averaged to the level's grid, in working pixels; weight 1 on the working grid, 0.5 on each
level) plus a cross-entropy between each level's softmax over the shifts and the true shift,
random crops of ``patch`` working pixels, random lateral flips (the lateral flow changes
sign). The RF is band-passed exactly as :func:`analysis.strain.pipeline.estimate_strain` does
before inference. Seeded: the same pairs, seed and settings give the same weights.

Training data comes from :mod:`analysis.strain.synthetic` (the only strain module that calls
the simulator): :func:`~analysis.strain.synthetic.simulate_training_pairs` draws pairs like the
failure-rate study's, and :func:`~analysis.strain.synthetic.train_default_flow_cnn` is the quick,
CLI-independent entry point. :func:`validate_flow_cnn` scores a network on held-out pairs.
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
from analysis.strain.pairs import RfPair

__all__ = [
    "TrainResult",
    "train_flow_cnn",
    "validate_flow_cnn",
]

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
        (and ``seconds_simulate``, ``seconds_validate`` for
        :func:`~analysis.strain.synthetic.train_default_flow_cnn`).
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


def _prepare(
    pairs: Sequence[RfPair], cfg: FlowConfig, *, bandpass: bool
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
    pairs: Sequence[RfPair] | Callable[[np.random.Generator], RfPair],
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
    pairs : sequence of RfPair, or callable(rng) -> RfPair
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
    pairs: Sequence[RfPair],
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
