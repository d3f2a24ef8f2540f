"""PNG figures for the CLI and the demo report (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray


def _extent_mm(depth_m: Sequence[float], lateral_m: Sequence[float]) -> list[float]:
    d = np.asarray(depth_m) * 1e3
    x = np.asarray(lateral_m) * 1e3
    return [float(x[0]), float(x[-1]), float(d[-1]), float(d[0])]


def image_panels(
    images: Mapping[str, NDArray[np.floating]], path: Path, *, depth_m: Sequence[float],
    lateral_m: Sequence[float], label: str, vmin: float | None = None, vmax: float | None = None,
    cmap: str = "viridis", title: str = "",
) -> Path:
    """Side-by-side (depth, lateral) images on one colour scale; NaN drawn as grey."""
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.8, 3.2), squeeze=False)
    finite = [v[np.isfinite(v)] for v in images.values()]
    finite = [f for f in finite if f.size]
    if vmin is None:
        vmin = float(min(np.percentile(f, 1) for f in finite)) if finite else 0.0
    if vmax is None:
        vmax = float(max(np.percentile(f, 99) for f in finite)) if finite else 1.0
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.75")
    im = None
    for ax, (name, img) in zip(axes[0], images.items(), strict=True):
        im = ax.imshow(np.ma.masked_invalid(img), extent=_extent_mm(depth_m, lateral_m),
                       vmin=vmin, vmax=vmax, cmap=colormap, aspect="equal")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("lateral (mm)")
    axes[0][0].set_ylabel("depth (mm)")
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label=label, shrink=0.85)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def bmode(iq: NDArray[np.complexfloating], path: Path, *, depth_m: Sequence[float],
          lateral_m: Sequence[float], dynamic_range_db: float = 50.0, title: str = "B-mode"
          ) -> Path:
    """Log-compressed envelope of one IQ frame (depth, lateral)."""
    envelope = np.abs(iq).astype(np.float64)
    db = 20 * np.log10(envelope / max(envelope.max(), 1e-30) + 1e-12)
    return image_panels({title: db}, path, depth_m=depth_m, lateral_m=lateral_m, label="dB",
                        vmin=-dynamic_range_db, vmax=0.0, cmap="gray")


def displacement_frames(displacement_m: NDArray[np.floating], path: Path, *,
                        depth_m: Sequence[float], lateral_m: Sequence[float],
                        frames: Sequence[int], frame_rate_hz: float, initial_time_s: float
                        ) -> Path:
    """Selected frames of an axial displacement sequence (frame, depth, lateral), micrometres."""
    images = {f"t = {1e3 * (initial_time_s + k / frame_rate_hz):.2f} ms": displacement_m[k] * 1e6
              for k in frames}
    peak = float(np.nanpercentile(np.abs(displacement_m[list(frames)]) * 1e6, 99.5))
    return image_panels(images, path, depth_m=depth_m, lateral_m=lateral_m,
                        label="axial displacement (µm)", vmin=-peak, vmax=peak, cmap="RdBu_r")


def error_panels(
    estimates: Mapping[str, NDArray[np.floating]], truth: NDArray[np.floating], path: Path, *,
    depth_m: Sequence[float], lateral_m: Sequence[float], label: str = "error (kPa)",
    title: str = "",
) -> Path:
    """Per-pixel ``estimate - truth`` of each estimate (depth, lateral) on one signed scale.

    The colour bar is symmetric about zero (blue: underestimate, red: overestimate); NaN (no
    estimate) is grey.
    """
    errors = {f"{name} - truth": np.asarray(img, float) - np.asarray(truth, float)
              for name, img in estimates.items()}
    peak = _symmetric_peak(errors.values())
    return image_panels(errors, path, depth_m=depth_m, lateral_m=lateral_m, label=label,
                        vmin=-peak, vmax=peak, cmap="RdBu_r", title=title)


def strain_panels(
    strains: Mapping[str, NDArray[np.floating]], path: Path, *, depth_m: Sequence[float],
    lateral_m: Sequence[float], title: str = "",
) -> Path:
    """Axial strain images (depth, line; dimensionless) side by side in percent, axes in mm, on
    one colour scale symmetric about zero (negative = compression: blue; NaN: grey)."""
    percent = {name: 100 * np.asarray(img, float) for name, img in strains.items()}
    peak = _symmetric_peak(percent.values())
    return image_panels(percent, path, depth_m=depth_m, lateral_m=lateral_m,
                        label="axial strain (%, negative = compression)", vmin=-peak, vmax=peak,
                        cmap="RdBu_r", title=title)


def _symmetric_peak(images: Iterable[NDArray[np.floating]]) -> float:
    """99th percentile of ``|value|`` over the finite pixels of all images (1.0 when none)."""
    finite = np.concatenate([np.abs(im[np.isfinite(im)]).ravel() for im in images]
                            or [np.zeros(0)])
    peak = float(np.percentile(finite, 99)) if finite.size else 0.0
    return peak if peak > 0 else 1.0


def _finish_xy(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, grid, legend and title of a line plot, then save and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(epochs: Sequence[Mapping[str, float]], path: Path, *, title: str = "") -> Path:
    """Training and validation MAE (kPa) per epoch, from the model card's history."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = [int(e["epoch"]) + 1 for e in epochs]
    for key, name in (("train_mae_kpa", "training"), ("val_mae_kpa", "validation")):
        y = np.array([float(e.get(key, np.nan)) for e in epochs])
        if np.isfinite(y).any():
            ax.plot(x, y, marker="o", ms=3, label=name)
    return _finish_xy(fig, ax, path, xlabel="epoch", ylabel="window-centre MAE (kPa)",
                      title=title)


def predicted_vs_true(groups: Mapping[str, Mapping[float, Sequence[float]]], path: Path, *,
                      truth_kpa: Mapping[float, float], title: str = "") -> Path:
    """Per gelatin %, the median predicted E of each sequence (kPa) against the true E.

    ``groups`` maps a method name to ``{gelatin %: [median E of each sequence]}``; points are
    spread slightly per method, the line is identity.
    """
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    top = max([*truth_kpa.values(), 1.0])
    for j, (name, by_pct) in enumerate(groups.items()):
        xs, ys = [], []
        for pct, values in by_pct.items():
            xs += [truth_kpa[pct] * (1 + 0.015 * (j - 0.5))] * len(values)
            ys += list(values)
        if xs:
            ax.plot(xs, ys, "o", ms=4, alpha=0.7, label=name)
            top = max(top, float(np.nanmax(ys)) if np.isfinite(ys).any() else top)
    ax.plot([0, 1.1 * top], [0, 1.1 * top], "k--", lw=1, label="identity")
    return _finish_xy(fig, ax, path, xlabel="true E (kPa)",
                      ylabel="median predicted E per sequence (kPa)", title=title)


def space_time(displacement_m: NDArray[np.floating], path: Path, *, lateral_m: Sequence[float],
               frame_rate_hz: float, initial_time_s: float, title: str = "") -> Path:
    """Depth-averaged axial displacement (frame, depth, lateral) as a lateral x time image (µm).

    A shear wave shows as a ridge whose slope is its speed (mm/ms = m/s).
    """
    image = np.nanmean(np.asarray(displacement_m, float), axis=1) * 1e6  # (frame, lateral)
    t_ms = 1e3 * (initial_time_s + np.arange(image.shape[0]) / frame_rate_hz)
    x_mm = np.asarray(lateral_m) * 1e3
    peak = float(np.nanpercentile(np.abs(image), 99.5)) or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    im = ax.imshow(image, extent=[float(x_mm[0]), float(x_mm[-1]), float(t_ms[-1]),
                                  float(t_ms[0])], aspect="auto", cmap="RdBu_r", vmin=-peak,
                   vmax=peak)
    ax.set_xlabel("lateral (mm)")
    ax.set_ylabel("time (ms)")
    fig.colorbar(im, ax=ax, label="depth-averaged displacement (µm)")
    if title:
        ax.set_title(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
