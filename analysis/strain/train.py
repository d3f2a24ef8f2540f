"""Training the flow CNN (:mod:`analysis.strain.flownet`) on simulated compression pairs.

Recipe (ours; [GLUENet] fine-tunes FlowNet 2.0 and gives no recipe): Adam, multi-scale L1 loss on
the flow of every pyramid level (true displacement block-averaged to the level's grid and
expressed in its pixels, weights 0.32, 0.08, 0.02, ... from the working grid down, as in
FlowNet), random crops of ``patch`` working pixels, random lateral flips (the lateral flow
changes sign). Seeded: the same pairs, seed and settings give the same weights.
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

from analysis.strain.flownet import FlowCNN, FlowConfig, flow_input
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import CompressionPair, simulate_compression_pair

__all__ = ["TrainResult", "simulate_training_pairs", "train_flow_cnn"]


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
        ``seconds_total``, ``seconds_per_epoch``, ``seconds_per_batch``, ``seconds_prepare``.
    recipe : dict
        The settings, for the weight card.
    """

    model: FlowCNN
    loss_history: list[float]
    epe_working_px: float
    profile: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


def simulate_training_pairs(
    n_pairs: int,
    *,
    rng: np.random.Generator,
    depth_mm: float = 39.4,
    width_mm: float = 19.5,
    n_lines: int = 128,
    strain_range: tuple[float, float] = (0.005, 0.07),
    psnr_choices_db: Sequence[float | None] = (None, 30.0, 20.0, 12.7),
    pairs_per_phantom: int = 10,
    element_mm: float = 1.0,
    block_mm: float = 60.0,
) -> list[CompressionPair]:
    """Random compression pairs: blocks with 0-2 random inclusions, strain and noise drawn.

    Parameters
    ----------
    n_pairs : int
        Number of pairs.
    rng : numpy.random.Generator
        Draws phantoms, strains, offsets and noise.
    depth_mm, width_mm, n_lines : optional
        Frame geometry (default 2046 samples x 128 lines at 40 MHz, 0.15 mm line pitch).
    strain_range : (float, float), optional
        Applied strain drawn uniformly in this range.
    psnr_choices_db : sequence, optional
        PSNR drawn from these (None = noise-free).
    pairs_per_phantom : int, optional
        Pairs drawn from each random phantom (different strain, probe offset, noise).
    element_mm, block_mm : float, optional
        FEM mesh size and block side (mm) of the training phantoms.

    Returns
    -------
    list of CompressionPair
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    pairs: list[CompressionPair] = []
    phantom: BlockPhantom | None = None
    for k in range(n_pairs):
        if k % pairs_per_phantom == 0:
            incs = []
            for _ in range(int(rng.integers(0, 3))):
                incs.append(Inclusion(
                    x_mm=float(rng.uniform(-width_mm / 2, width_mm / 2)),
                    z_mm=float(rng.uniform(5.0, depth_mm - 5.0)),
                    radius_mm=float(rng.uniform(2.0, 6.0)),
                    gelatin_percent=float(rng.choice([5.0, 7.5, 12.5, 15.0, 17.5])),
                ))
            phantom = BlockPhantom(
                f"train{k}", float(rng.choice([7.5, 10.0, 12.5])),
                size_mm=(block_mm, block_mm, block_mm), inclusions=tuple(incs),
                speckle_seed=int(rng.integers(0, 2**31 - 1)),
            )
        assert phantom is not None
        max_offset = max(0.0, block_mm / 2 - width_mm / 2 - 1.0)
        psnr = psnr_choices_db[int(rng.integers(0, len(psnr_choices_db)))]
        pairs.append(simulate_compression_pair(
            phantom, applied_strain=float(rng.uniform(*strain_range)), depth_mm=depth_mm,
            width_mm=width_mm, n_lines=n_lines, psnr_db=psnr, rng=rng,
            lateral_offset_mm=float(rng.uniform(-max_offset, max_offset)),
            element_mm=element_mm,
        ))
    return pairs


def _prepare(
    pairs: Sequence[CompressionPair], cfg: FlowConfig
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Stack working-grid inputs (pair, 2, H, W) and targets (pair, 2, H, W) in working px."""
    fa, fl = cfg.axial_factor, cfg.lateral_factor
    inputs, targets = [], []
    shape = None
    for p in pairs:
        a = flow_input(p.rf_pre, axial_factor=fa, lateral_factor=fl)
        b = flow_input(p.rf_post, axial_factor=fa, lateral_factor=fl)
        h, w = a.shape
        if shape is None:
            shape = (h, w)
        elif (h, w) != shape:
            raise ValueError(f"training pairs must share one frame shape; got working grids "
                             f"{shape} and {(h, w)}")
        ax = p.axial_displacement_samples[: h * fa, : w * fl].reshape(h, fa, w, fl).mean((1, 3))
        lat = p.lateral_displacement_samples[: h * fa, : w * fl].reshape(h, fa, w, fl).mean((1, 3))
        inputs.append(np.stack([a, b]))
        targets.append(np.stack([ax / fa, lat / fl]).astype(np.float32))
    return np.stack(inputs), np.stack(targets)


def _multiscale_loss(flows: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    loss = torch.zeros((), dtype=target.dtype)
    n = len(flows)
    for k, flow in enumerate(flows):
        stride = target.shape[-2] // flow.shape[-2]
        t = F.avg_pool2d(target, stride) / stride if stride > 1 else target
        weight = 0.32 / 4 ** (n - 1 - k)
        loss = loss + weight * (flow - t).abs().sum(dim=1).mean()
    return loss


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
        Adam learning rate.
    seed : int
        Seeds weight init, crops, flips and the generator.
    config : FlowConfig, optional
        Network configuration (default :class:`FlowConfig`).
    patch : (int, int), optional
        Crop (working pixels, depth x lateral); multiples of ``2 ** levels``. A frame smaller
        than the patch is used whole (cropped to a multiple of ``2 ** levels``).
    n_pairs : int, optional
        Number of pairs to draw when ``pairs`` is a callable.
    progress : callable(epoch, loss), optional
        Called after each epoch.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        No pairs, mixed frame shapes, bad epochs/batch/lr, or a patch not a multiple of
        ``2 ** levels``.
    """
    if epochs < 1 or batch < 1 or not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"epochs and batch must be >= 1 and lr > 0, got {epochs}, {batch}, {lr}")
    cfg = config or FlowConfig()
    mult = 2 ** cfg.levels
    if patch[0] % mult or patch[1] % mult:
        raise ValueError(f"patch {patch} must be a multiple of {mult} (2 ** levels)")
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
    x_all, y_all = _prepare(pair_list, cfg)
    t_prep = time.perf_counter() - t0
    h, w = x_all.shape[-2:]
    ph = min(patch[0], (h // mult) * mult)
    pw = min(patch[1], (w // mult) * mult)
    if ph == 0 or pw == 0:
        raise ValueError(f"working grid {h} x {w} is smaller than one {mult} x {mult} cell")

    torch.manual_seed(seed)
    model = FlowCNN(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[float] = []
    n = x_all.shape[0]
    batch_times: list[float] = []
    t_train = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch):
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
            flows = model(xb[:, :1], xb[:, 1:])
            loss = _multiscale_loss(flows, yb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            batch_times.append(time.perf_counter() - tb)
            total += loss.item() * len(idx)
        history.append(total / n)
        if progress is not None:
            progress(epoch, history[-1])
    t_total_train = time.perf_counter() - t_train

    model.eval()
    with torch.no_grad():
        xb = torch.from_numpy(np.ascontiguousarray(x_all[:, :, :ph, :pw]))
        yb = torch.from_numpy(np.ascontiguousarray(y_all[:, :, :ph, :pw]))
        flow = model(xb[:, :1], xb[:, 1:])[-1]
        epe = float(torch.linalg.vector_norm(flow - yb, dim=1).mean())
    recipe = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "patch": [ph, pw],
              "n_pairs": n, "loss": "multi-scale L1", "optimizer": "Adam"}
    profile = {
        "seconds_prepare": t_prep,
        "seconds_total": time.perf_counter() - t0,
        "seconds_per_epoch": t_total_train / epochs,
        "seconds_per_batch": float(np.mean(batch_times)),
    }
    return TrainResult(model=model, loss_history=history, epe_working_px=epe, profile=profile,
                       recipe=recipe)
