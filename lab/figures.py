"""PNG figures for the CLI and the demo report (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

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
