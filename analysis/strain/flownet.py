"""Compact coarse-to-fine optical-flow CNN for RF pairs (the CNN half of GLUENet).

[GLUENet] uses FlowNet 2.0 for a coarse but robust displacement that GLUE then refines. This is a
small PWC-Net-style network sized for CPU training in minutes:

* **Input.** Each RF frame becomes an envelope image (magnitude of the analytic signal along
  depth), block-averaged by ``axial_factor`` x ``lateral_factor`` (default 8 x 2) to the *working
  grid*, square-rooted to tame speckle peaks and z-normalised per frame (:func:`flow_input`). At
  40 MHz and 6.67 MHz a working pixel is 8 samples (0.15 mm) deep.
* **Network.** A shared feature pyramid (``levels`` stages, each a stride-2 conv and a conv,
  batch norm + leaky ReLU). At the coarsest level a local cost volume (correlation of the two
  feature maps over +-``search_axial`` x +-``search_lateral`` pixels) and a small conv estimator
  give the flow; each finer level upsamples the flow (x2), warps the post-frame features with it,
  builds a new cost volume and estimates a residual. The finest estimate (half the working grid)
  is upsampled to the working grid.
* **Output.** 2-D displacement (axial, lateral) in working pixels; :func:`predict_displacement`
  converts it to RF samples and lines on the full frame grid.

Weights are stored as safetensors plus a JSON card (configuration, training recipe, metrics,
SHA-256 of the weights file); never pickle.

References
----------
Kibria & Rivaz, GLUENet, 2018; Sun et al., PWC-Net, CVPR 2018 (cost volume + warping pyramid);
Dosovitskiy et al., FlowNet, ICCV 2015.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from safetensors.torch import load_file, save_file
from scipy.signal import hilbert
from torch import nn

from analysis.strain._checks import check_frames

__all__ = [
    "FlowCNN",
    "FlowConfig",
    "flow_cnn",
    "flow_input",
    "load_flow_cnn",
    "predict_displacement",
    "save_flow_cnn",
]


@dataclass(frozen=True)
class FlowConfig:
    """Network and input configuration (stored in the weight card).

    ``channels[k]`` is the feature width of pyramid level ``k + 1`` (level k has stride 2^k on
    the working grid); ``search_axial`` / ``search_lateral`` the cost-volume half-ranges in pixels
    of each level (``d`` in PWC-Net).
    """

    channels: tuple[int, ...] = (16, 24, 32)
    search_axial: int = 3
    search_lateral: int = 1
    estimator_width: int = 32
    axial_factor: int = 8
    lateral_factor: int = 2

    @property
    def levels(self) -> int:
        return len(self.channels)


def flow_input(rf: ArrayLike, *, axial_factor: int, lateral_factor: int) -> NDArray[np.float32]:
    """Working-grid image of an RF frame: block-averaged envelope, sqrt, z-normalised.

    Parameters
    ----------
    rf : array_like, shape (depth_sample, line), real
    axial_factor, lateral_factor : int
        Block size (samples, lines); trailing samples/lines that do not fill a block are dropped.

    Returns
    -------
    ndarray, shape (depth_sample // axial_factor, line // lateral_factor), float32
    """
    x = np.asarray(rf, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rf must be 2-D (depth_sample, line), got shape {x.shape}")
    n = (x.shape[0] // axial_factor) * axial_factor
    m = (x.shape[1] // lateral_factor) * lateral_factor
    if n == 0 or m == 0:
        raise ValueError(f"frame {x.shape} is smaller than one {axial_factor} x {lateral_factor} "
                         "block")
    env = np.abs(hilbert(x, axis=0))[:n, :m]
    img = np.sqrt(env.reshape(n // axial_factor, axial_factor, m // lateral_factor,
                              lateral_factor).mean(axis=(1, 3)))
    std = img.std()
    return ((img - img.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class _FeatureLevel(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride=2)
        self.conv2 = _conv(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _FlowEstimator(nn.Module):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, width)
        self.conv2 = _conv(width, width)
        self.conv3 = _conv(width, width // 2)
        self.flow = nn.Conv2d(width // 2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow(self.conv3(self.conv2(self.conv1(x))))


def _cost_volume(f1: torch.Tensor, f2: torch.Tensor, ra: int, rl: int) -> torch.Tensor:
    """Mean channel correlation of f1 with f2 shifted by every (da, dl) in the search window."""
    padded = F.pad(f2, (rl, rl, ra, ra))
    h, w = f1.shape[-2:]
    out = [
        (f1 * padded[:, :, ra + da: ra + da + h, rl + dl: rl + dl + w]).mean(dim=1, keepdim=True)
        for da in range(-ra, ra + 1) for dl in range(-rl, rl + 1)
    ]
    return F.leaky_relu(torch.cat(out, dim=1), 0.1)


def _warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample x at (row + flow[:, 0], col + flow[:, 1]) (pixels) bilinearly, zeros outside."""
    _, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    r = rows + flow[:, 0]
    c = cols + flow[:, 1]
    grid = torch.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class FlowCNN(nn.Module):
    """Coarse-to-fine flow network (see the module docstring).

    ``forward(pre, post)`` takes two ``(batch, 1, H, W)`` working-grid images (H, W multiples of
    ``2 ** levels``) and returns ``levels + 1`` flow estimates ``(batch, 2, H / s, W / s)`` with
    strides ``s = 2 ** levels, ..., 2, 1`` (coarsest first, the working grid last), each in pixels
    of its own level; channel 0 is axial, channel 1 lateral.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        features = []
        cin = 1
        for cout in config.channels:
            features.append(_FeatureLevel(cin, cout))
            cin = cout
        self.features = nn.ModuleList(features)
        n_cost = (2 * config.search_axial + 1) * (2 * config.search_lateral + 1)
        self.estimators = nn.ModuleList(
            _FlowEstimator(c + n_cost + (0 if k == config.levels - 1 else 2),
                           config.estimator_width)
            for k, c in enumerate(config.channels)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.1, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Start from zero flow: the last layer of every estimator begins small.
        for est in self.estimators:
            nn.init.normal_(est.flow.weight, std=1e-3)

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.features:
            x = level(x)
            out.append(x)
        return out

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.config
        p1 = self._pyramid(pre)
        p2 = self._pyramid(post)
        flows: list[torch.Tensor] = []
        flow: torch.Tensor | None = None
        for k in range(cfg.levels - 1, -1, -1):
            f1, f2 = p1[k], p2[k]
            if flow is None:
                cost = _cost_volume(f1, f2, cfg.search_axial, cfg.search_lateral)
                flow = self.estimators[k](torch.cat([f1, cost], dim=1))
            else:
                up = 2.0 * F.interpolate(flow, size=f1.shape[-2:], mode="bilinear",
                                         align_corners=False)
                cost = _cost_volume(f1, _warp(f2, up), cfg.search_axial, cfg.search_lateral)
                flow = up + self.estimators[k](torch.cat([f1, cost, up], dim=1))
            flows.append(flow)
        flows.append(2.0 * F.interpolate(flow, scale_factor=2.0, mode="bilinear",
                                         align_corners=False))  # type: ignore[arg-type]
        return flows


def flow_cnn(**overrides: Any) -> FlowCNN:
    """The default compact network (3 levels, 16/24/32 channels, +-3 x +-1 search)."""
    return FlowCNN(FlowConfig(**overrides))


def _pad_to(x: NDArray[np.float32], multiple: int) -> NDArray[np.float32]:
    h = -(-x.shape[0] // multiple) * multiple
    w = -(-x.shape[1] // multiple) * multiple
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1])), mode="edge")


def predict_displacement(
    model: FlowCNN, rf_pre: ArrayLike, rf_post: ArrayLike
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Coarse displacement of a pre/post RF pair on the full frame grid.

    Parameters
    ----------
    model : FlowCNN
        Trained network (put in eval mode here).
    rf_pre, rf_post : array_like, shape (depth_sample, line), real
        RF frames of the same shape.

    Returns
    -------
    axial, lateral : ndarray, shape (depth_sample, line), float32
        Displacement in RF samples and lines (``I1(i, j)`` ~ ``I2(i + axial, j + lateral)``).
    """
    pre, post = check_frames(rf_pre, rf_post)
    cfg = model.config
    a = flow_input(pre, axial_factor=cfg.axial_factor, lateral_factor=cfg.lateral_factor)
    b = flow_input(post, axial_factor=cfg.axial_factor, lateral_factor=cfg.lateral_factor)
    h, w = a.shape
    mult = 2 ** cfg.levels
    ta = torch.from_numpy(_pad_to(a, mult))[None, None]
    tb = torch.from_numpy(_pad_to(b, mult))[None, None]
    model.eval()
    with torch.no_grad():
        flow = model(ta, tb)[-1][0, :, :h, :w].numpy().astype(np.float64)
    axial = flow[0] * cfg.axial_factor
    lateral = flow[1] * cfg.lateral_factor
    n, m = pre.shape
    # Working pixel (r, c) covers samples r*fa .. r*fa + fa - 1: its centre is r*fa + (fa-1)/2.
    rows = (np.arange(n) - (cfg.axial_factor - 1) / 2) / cfg.axial_factor
    cols = (np.arange(m) - (cfg.lateral_factor - 1) / 2) / cfg.lateral_factor
    return (_resample(axial, rows, cols).astype(np.float32),
            _resample(lateral, rows, cols).astype(np.float32))


def _resample(field: NDArray[np.float64], rows: NDArray[np.float64],
              cols: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bilinear resampling of a 2-D field at fractional (rows, cols), clamped at the edges."""
    from scipy.ndimage import map_coordinates

    rr, cc = np.meshgrid(np.clip(rows, 0, field.shape[0] - 1),
                         np.clip(cols, 0, field.shape[1] - 1), indexing="ij")
    return map_coordinates(field, [rr, cc], order=1, mode="nearest")


def save_flow_cnn(model: FlowCNN, path: str | Path, *, card: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` (config, card fields, SHA-256).

    Returns the path of the weights file.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    weights = base.with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    doc = {"model": "FlowCNN", "config": asdict(model.config), "sha256": digest,
           **(card or {})}
    base.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str))
    return weights


def load_flow_cnn(path: str | Path) -> tuple[FlowCNN, dict[str, Any]]:
    """Load a network saved by :func:`save_flow_cnn`; checks the weights' SHA-256.

    Raises
    ------
    FileNotFoundError
        Weights or card missing.
    ValueError
        Hash mismatch or a card for another model.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    weights = base.with_suffix(".safetensors")
    card_path = base.with_suffix(".json")
    for f in (weights, card_path):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; train a model with "
                                    "analysis.strain.train.train_flow_cnn and save it first")
    card = json.loads(card_path.read_text())
    if card.get("model") != "FlowCNN":
        raise ValueError(f"{card_path} describes a {card.get('model')!r}, not a FlowCNN")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(f"{weights} does not match the SHA-256 in its card (file changed or "
                         "corrupt)")
    cfg = card["config"]
    cfg["channels"] = tuple(cfg["channels"])
    model = FlowCNN(FlowConfig(**cfg))
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, card
