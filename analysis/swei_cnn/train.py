"""Training the spatio-temporal CNN: the [SWEI] recipe, a quick CPU profile, fine-tuning.

The ``paper`` profile is [SWEI] Sec. II-C: MSE loss on kPa, Adam with learning rate 1e-4, 250
epochs, batch 250, one random window per training sequence per epoch, and after epoch 150 the rate
halves every 50 epochs. The ``quick`` profile is ours, for CPU runs on small stores (a couple of
minutes): up to 24 epochs, 16 windows per sequence per epoch, batch 32, rate 1e-3 halving every 3
epochs from epoch 8, and early stopping on the validation MAE (patience 6 epochs; the weights of
the best validation epoch are kept); windows of inclusion sequences are centred inside an inclusion
half of the time, in training and in validation (so a fine-tuning validated on an inclusion
position is chosen on inclusion and background alike, not by area: on the default demo's inclusion
positions, push mean, area-weighted validation chose models with inclusion MAE 16.6 or 27.1 kPa
depending on thread-level rounding, background 7.0 or 4.3 kPa; stratified validation chose 5.5 kPa
inside, 17.4 kPa in the background, ToF 11.5 / 25.5). Measured on the default demo (fold 0, held-
out maps): 8 windows per sequence, 12 epochs, centres in the paper's ROI gave 11.6 kPa (ToF 19.8
kPa); 24 windows per sequence with this schedule, ROI centres: 8.5 kPa; the same with centres over
the whole field of view: 5.7 kPa. Those figures were measured on displacement tracked with a
one-sample Loupas kernel (-1 dB SNR on that grid); with the three-sample default (11 dB) this
recipe gives 5.03 kPa held out (ToF 21.3) and, on the study profile, a push-mean background MAE
of 3.8 kPa on the inclusion phantom, most of it within half a window of the interface.
``border_window_fraction`` (windows straddling an interface) is off by default: 0.25 on the
study profile gave 3.8 kPa too, with the far background unbiased. The figures of the current
recipe are in the demo's ``metrics.json``.

Early stopping ([SWEI] trains a fixed 250 epochs): after every epoch the validation MAE on fixed
windows (drawn once, ``validation_windows_per_sequence`` per sequence) is compared with the best
so far; an epoch within ``min_delta_kpa`` of it does not count as better; after
``early_stopping_patience`` epochs without improvement training stops, and the best epoch's
weights are restored either way. Without validation sequences nothing stops early.

Everything random is drawn from ``np.random.default_rng([seed, epoch])`` (window centres,
augmentation, order), so a run resumed from a checkpoint continues exactly like an uninterrupted
one, and in distributed (DDP) runs every process draws the same epoch and keeps its share of each
batch. Per-epoch metrics go to ``on_epoch``, per-batch progress to ``on_progress``; this module
never prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from analysis.swei_cnn.data import (
    DEFAULT_ROI_PX,
    Augmentation,
    Split,
    SweiTrainingSet,
    WindowCache,
    WindowDraw,
)
from analysis.swei_cnn.io import load_checkpoint, save_checkpoint
from analysis.swei_cnn.model import SpatioTemporalDenseNet

ProfileName = Literal["paper", "quick"]


@dataclass(frozen=True)
class TrainingProfile:
    """Optimisation recipe.

    The learning rate is ``learning_rate`` for the first ``lr_decay_start_epoch`` epochs and is
    halved at that epoch and every ``lr_decay_every`` epochs after it.
    ``early_stopping_patience`` (epochs, None = never stop early) and ``min_delta_kpa`` control
    early stopping on the validation MAE (module docstring); ``validation_windows_per_sequence``
    defaults to ``windows_per_sequence``. ``inclusion_window_fraction`` stratifies the training
    windows of sequences with per-pixel targets (that share inside inclusions, the rest in the
    background; :meth:`WindowCache.draw`); None draws their centres uniformly.
    ``border_window_fraction`` takes that share of those training windows from the background
    within half a window of an inclusion (windows straddling an interface).
    ``validation_inclusion_fraction`` does the same for the fixed validation windows, so that
    the validation MAE of inclusion sequences weighs inclusion and background alike rather
    than by area (homogeneous sequences are unaffected).
    ``loss`` is the training loss on kPa: "mse" ([SWEI]) or "l1" (absolute error, the metric
    the maps are scored by). Under squared error a minority of windows with large errors (an
    underestimated inclusion) pulls every prediction towards them; the absolute error's optimum
    is the conditional median, which a minority does not move (the demo fine-tunes with it).
    """

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    lr_decay_start_epoch: int
    lr_decay_every: int
    windows_per_sequence: int = 1
    augmentation: Augmentation = field(default_factory=Augmentation)
    early_stopping_patience: int | None = None
    min_delta_kpa: float = 0.0
    validation_windows_per_sequence: int | None = None
    inclusion_window_fraction: float | None = None
    validation_inclusion_fraction: float | None = None
    border_window_fraction: float | None = None
    loss: Literal["mse", "l1"] = "mse"

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.windows_per_sequence < 1:
            raise ValueError("epochs, batch_size and windows_per_sequence must be >= 1")
        if not self.learning_rate > 0 or self.lr_decay_every < 1:
            raise ValueError("learning_rate must be > 0 and lr_decay_every >= 1")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 epoch or None")
        if self.min_delta_kpa < 0:
            raise ValueError(f"min_delta_kpa must be >= 0, got {self.min_delta_kpa}")
        if (self.validation_windows_per_sequence is not None
                and self.validation_windows_per_sequence < 1):
            raise ValueError("validation_windows_per_sequence must be >= 1 or None")
        if self.border_window_fraction is not None and (
                self.inclusion_window_fraction is None or not
                0.0 <= self.border_window_fraction <= 1.0 - self.inclusion_window_fraction):
            raise ValueError("border_window_fraction needs inclusion_window_fraction and must be "
                             "in [0, 1 - inclusion_window_fraction]")

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        if epoch < self.lr_decay_start_epoch:
            return self.learning_rate
        halvings = (epoch - self.lr_decay_start_epoch) // self.lr_decay_every + 1
        return self.learning_rate * 0.5**halvings


PROFILES: dict[str, TrainingProfile] = {
    "paper": TrainingProfile("paper", epochs=250, batch_size=250, learning_rate=1e-4,
                             lr_decay_start_epoch=150, lr_decay_every=50),
    "quick": TrainingProfile("quick", epochs=24, batch_size=32, learning_rate=1e-3,
                             lr_decay_start_epoch=8, lr_decay_every=3, windows_per_sequence=16,
                             early_stopping_patience=6, validation_windows_per_sequence=16,
                             inclusion_window_fraction=0.5, validation_inclusion_fraction=0.5),
}


def get_profile(profile: ProfileName | TrainingProfile) -> TrainingProfile:
    if isinstance(profile, TrainingProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch: losses are MSE in kPa^2 (whatever loss trained), errors in kPa; NaN when there
    is no validation set."""

    epoch: int
    train_loss: float
    train_mae_kpa: float
    val_loss: float
    val_mae_kpa: float
    learning_rate: float
    duration_s: float


@dataclass
class TrainingResult:
    """What :func:`train` returns."""

    history: list[EpochMetrics]
    data_hash: str
    first_step_loss: float | None
    profile: TrainingProfile
    best_epoch: int | None = None
    stopped_early: bool = False

    def metrics_dict(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        best = next((m for m in self.history if m.epoch == self.best_epoch), None)
        return {"epochs": len(self.history),
                "final": asdict(last) if last is not None else None,
                "best_epoch": self.best_epoch,
                "best": asdict(best) if best is not None else None,
                "stopped_early": self.stopped_early,
                "history": [asdict(m) for m in self.history]}


def _best_path(checkpoint_path: str | os.PathLike[str]) -> str:
    return os.fspath(checkpoint_path) + ".best"


def _best_epoch(history: list[EpochMetrics], min_delta_kpa: float) -> int | None:
    """Epoch of the best validation MAE (an epoch must beat the best by ``min_delta_kpa``)."""
    best: EpochMetrics | None = None
    for m in history:
        if np.isfinite(m.val_mae_kpa) and (best is None
                                           or m.val_mae_kpa < best.val_mae_kpa - min_delta_kpa):
            best = m
    return None if best is None else best.epoch


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if _distributed()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _evaluate(model: nn.Module, cache: WindowCache, draw: WindowDraw, *, batch_size: int,
              device: torch.device) -> tuple[float, float]:
    """MSE and MAE (kPa) of ``model`` on fixed windows, in eval mode."""
    model.eval()
    sq = ab = 0.0
    with torch.no_grad():
        for b0 in range(0, len(draw), batch_size):
            x, y = cache.batch(draw.subset(slice(b0, b0 + batch_size)))
            err = model(x.to(device)) - y.to(device)
            sq += float(err.square().sum())
            ab += float(err.abs().sum())
    return sq / len(draw), ab / len(draw)


def _validation_draw(cache: WindowCache, prof: TrainingProfile, seed: int) -> WindowDraw:
    """The fixed validation windows of a run (the same for every epoch and for
    :func:`evaluate_windows`)."""
    return cache.draw(np.random.default_rng([seed, 2**31]),
                      windows_per_sequence=prof.validation_windows_per_sequence
                      or prof.windows_per_sequence,
                      inside_fraction=prof.validation_inclusion_fraction)


def evaluate_windows(
    model: SpatioTemporalDenseNet, data: SweiTrainingSet, indices: np.ndarray, *,
    profile: ProfileName | TrainingProfile = "quick", seed: int = 0,
    roi_px: tuple[int, int] = DEFAULT_ROI_PX, device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """MSE (kPa^2) and MAE (kPa) of ``model`` on the validation windows :func:`train` would draw
    for these sequences with this profile and seed (so the figures compare with its
    ``val_loss`` / ``val_mae_kpa``)."""
    prof = get_profile(profile)
    cache = WindowCache(data, indices, window_px=model.window_px, roi_px=roi_px)
    draw = _validation_draw(cache, prof, seed)
    model.to(torch.device(device))
    return _evaluate(model, cache, draw, batch_size=prof.batch_size, device=torch.device(device))


def train(
    model: SpatioTemporalDenseNet,
    data: SweiTrainingSet,
    split: Split,
    *,
    profile: ProfileName | TrainingProfile = "quick",
    device: str | torch.device = "cpu",
    seed: int = 0,
    roi_px: tuple[int, int] = DEFAULT_ROI_PX,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    set_target_scale: bool = True,
    max_steps: int | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Train ``model`` in place on ``split.train``, validating on ``split.validation``.

    Parameters
    ----------
    model : SpatioTemporalDenseNet
        Network to train (its window size sets the window size).
    data : SweiTrainingSet
        Sequences and targets.
    split : Split
        Sequence indices; ``split.validation`` may be empty.
    profile : {"paper", "quick"} or TrainingProfile
        Recipe (see module docstring).
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    seed : int
        Seeds window draws, augmentation and batch order.
    roi_px : (int, int)
        ROI of window centres (depth, lateral) in pixels.
    checkpoint_path : path, optional
        Written after every epoch (by rank 0).
    resume : bool
        Continue from ``checkpoint_path`` if it exists (model, optimizer, epoch, history).
    set_target_scale : bool
        Set the model's output offset/scale from the training targets (fresh runs only).
    max_steps : int, optional
        Stop after this many optimiser steps (smoke tests, DDP checks).
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochMetrics`.
    on_progress : callable, optional
        ``on_progress(step_in_epoch, steps_per_epoch)`` after every optimiser step.

    Returns
    -------
    TrainingResult
        History, training data hash and the first step's loss (before any update).

    Notes
    -----
    Under ``torch.distributed`` (see ``analysis.swei_cnn.ddp``) the model is wrapped in
    ``DistributedDataParallel``; each process takes every ``world_size``-th window of each batch,
    the loss is scaled so the averaged gradient is the whole batch's, and the scale-only batch
    normalisation sums its statistics over processes, so a step matches the single-process step.
    """
    prof = get_profile(profile)
    device = torch.device(device)
    rank, world = _distributed()
    model.to(device)
    train_cache = WindowCache(data, split.train, window_px=model.window_px, roi_px=roi_px)
    val_cache = (WindowCache(data, split.validation, window_px=model.window_px, roi_px=roi_px)
                 if len(split.validation) else None)
    val_draw = _validation_draw(val_cache, prof, seed) if val_cache is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=prof.learning_rate)
    start_epoch, history = 0, []
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early = False
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        start_epoch, state = load_checkpoint(checkpoint_path, model=model, optimizer=optimizer)
        if state.get("data_hash") != train_cache.data_hash or state.get("seed") != seed:
            raise ValueError(f"checkpoint {checkpoint_path} was made with other training data or "
                             "seed; refusing to resume (delete it or pass resume=False)")
        history = [EpochMetrics(**m) for m in state["history"]]
        best_epoch = _best_epoch(history, prof.min_delta_kpa)
        if best_epoch is not None and os.path.exists(_best_path(checkpoint_path)):
            best_state = load_file(_best_path(checkpoint_path))
    elif set_target_scale:
        targets = train_cache.targets
        model.set_target_scale(float(targets.mean()), max(float(targets.std()), 1.0))
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    first_step_loss: float | None = None
    steps = 0
    for epoch in range(start_epoch, prof.epochs):
        t0 = time.perf_counter()
        lr = prof.learning_rate_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([seed, epoch])
        draw = train_cache.draw(rng, windows_per_sequence=prof.windows_per_sequence,
                                augmentation=prof.augmentation,
                                inside_fraction=prof.inclusion_window_fraction,
                                border_fraction=prof.border_window_fraction)
        n_batches = -(-len(draw) // prof.batch_size)
        net.train()
        sq_sum = abs_sum = 0.0
        for b in range(n_batches):
            batch = draw.subset(slice(b * prof.batch_size, (b + 1) * prof.batch_size))
            n_global = len(batch)
            x, y = train_cache.batch(batch.subset(np.arange(rank, n_global, world)))
            x, y = x.to(device), y.to(device)
            err = net(x) - y
            loss = (err.abs() if prof.loss == "l1" else err.square()).sum() * (world / n_global)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sq, ab = _all_sum([float(err.detach().square().sum()),
                               float(err.detach().abs().sum())], device)
            sq_sum += sq
            abs_sum += ab
            if first_step_loss is None:
                first_step_loss = sq / n_global
            steps += 1
            if on_progress is not None:
                on_progress(b + 1, n_batches)
            if max_steps is not None and steps >= max_steps:
                break
        seen = min(len(draw), steps * prof.batch_size) if max_steps is not None else len(draw)
        val_loss, val_mae = (_evaluate(model, val_cache, val_draw, batch_size=prof.batch_size,
                                       device=device)
                             if val_cache is not None and val_draw is not None
                             else (float("nan"), float("nan")))
        metrics = EpochMetrics(epoch=epoch, train_loss=sq_sum / seen,
                               train_mae_kpa=abs_sum / seen, val_loss=val_loss,
                               val_mae_kpa=val_mae, learning_rate=lr,
                               duration_s=time.perf_counter() - t0)
        history.append(metrics)
        improved = _best_epoch(history, prof.min_delta_kpa) == epoch
        if improved:
            best_epoch = epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(metrics)
        if checkpoint_path is not None and rank == 0:
            if improved and best_state is not None:
                save_file(best_state, _best_path(checkpoint_path))
            save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, epoch=epoch + 1,
                            state={"seed": seed, "data_hash": train_cache.data_hash,
                                   "profile": asdict(prof),
                                   "history": [asdict(m) for m in history]})
        if max_steps is not None and steps >= max_steps:
            break
        if (prof.early_stopping_patience is not None and best_epoch is not None
                and epoch - best_epoch >= prof.early_stopping_patience):
            stopped_early = True
            break
    if best_state is not None and best_epoch is not None and best_epoch != history[-1].epoch:
        model.load_state_dict(best_state)  # the best validation epoch's weights
    model.eval()
    return TrainingResult(history=history, data_hash=train_cache.data_hash,
                          first_step_loss=first_step_loss, profile=prof, best_epoch=best_epoch,
                          stopped_early=stopped_early)


def finetune(
    model: SpatioTemporalDenseNet,
    data: SweiTrainingSet,
    *,
    epochs: int = 10,
    indices: np.ndarray | None = None,
    validation: np.ndarray | None = None,
    base_profile: ProfileName | TrainingProfile = "paper",
    device: str | torch.device = "cpu",
    seed: int = 0,
    roi_px: tuple[int, int] = DEFAULT_ROI_PX,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Continue training a trained model for ``epochs`` epochs ([SWEI]: 10 on inclusion phantoms).

    Uses ``base_profile``'s batch size, window count and augmentation at its initial learning
    rate, without decay; the output scale is kept. ``indices`` defaults to the sequences with
    per-pixel targets (inclusion phantoms), or all sequences if there are none.
    """
    base = get_profile(base_profile)
    if indices is None:
        indices = np.flatnonzero(data.uses_map) if data.uses_map.any() else np.arange(len(data))
    prof = replace(base, name=f"finetune-{base.name}", epochs=epochs,
                   lr_decay_start_epoch=epochs, lr_decay_every=1)
    split = Split(train=np.asarray(indices, dtype=np.intp),
                  validation=np.asarray(validation if validation is not None else [],
                                        dtype=np.intp),
                  test=np.asarray([], dtype=np.intp), description={"kind": "finetune"})
    return train(model, data, split, profile=prof, device=device, seed=seed, roi_px=roi_px,
                 set_target_scale=False, on_epoch=on_epoch, on_progress=on_progress)
