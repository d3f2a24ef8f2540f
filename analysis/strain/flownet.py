"""Compact coarse-to-fine optical-flow CNN for RF pairs (the CNN half of GLUENet).

[GLUENet] uses FlowNet 2.0 for a coarse but robust displacement that GLUE then refines. This is a
small PWC-Net-style network sized for CPU training in minutes:

* **Input** (:func:`flow_input`). Each (band-passed) RF frame becomes three channels on the
  *working grid*: the RF, its quadrature (imaginary part of the analytic signal along depth) and
  the envelope (magnitude of the analytic signal), divided by the frame's RMS envelope and
  block-averaged by ``axial_factor`` x ``lateral_factor`` (default 2 x 1: a working pixel is two
  RF samples, 38.5 um at 40 MHz, by one line). Keeping the carrier phase (RF and quadrature) lets
  the network resolve the displacement to a fraction of a carrier period; the envelope gives a
  smooth, phase-free cue for the coarse levels. All three channels move with the tissue, so the
  network stays translation-equivariant.
* **Network.** A shared (siamese) feature pyramid; level ``k`` downsamples by ``strides[k]``
  (axial, lateral) with a strided conv and refines with a second conv (group norm + leaky ReLU;
  no batch statistics, so a briefly trained network behaves the same in training and in
  evaluation).
  At the coarsest level a *cost volume* (correlation of the L2-normalised feature vectors of the
  two frames over +-``coarse_search`` pixels, as in PWC-Net/FlowNetC) feeds a small estimator
  that scores every shift (the scaled correlation plus a learned conv correction that sees the
  features and the whole neighbourhood of the cost volume) and returns the soft-argmax shift;
  each finer level upsamples the flow, warps the post-frame features with it, builds a local
  cost volume (+-``search``) and estimates a residual the same way. The finest estimate is
  upsampled to the working grid. The soft-argmax decoder (as in stereo networks such as GC-Net)
  makes the untrained network already a correlation tracker, so minutes of CPU training suffice
  to make it robust.
* **Output.** 2-D displacement (axial, lateral) in working pixels at every level (coarsest first);
  :func:`predict_displacement` converts the finest one to RF samples and lines on the full frame.

With the defaults the coarsest level is 16 x 4 working pixels (32 samples x 4 lines), and its
+-6 x +-3 search covers +-192 samples and +-12 lines: 7 % strain over a 2000-sample frame moves
the bottom by 140 samples and the edge lines of a 250-line frame by ~8.6 lines.

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

#: Input channels of :func:`flow_input`: RF, quadrature, envelope.
N_INPUT_CHANNELS = 3


@dataclass(frozen=True)
class FlowConfig:
    """Network and input configuration (stored in the weight card).

    ``channels[k]`` is the feature width of pyramid level ``k``; ``strides[k]`` its (axial,
    lateral) downsampling relative to the previous level (the working grid for ``k = 0``).
    ``coarse_search`` / ``search`` are the cost-volume half-ranges (axial, lateral) in pixels of
    the coarsest level and of the finer levels (``d`` in PWC-Net).
    """

    channels: tuple[int, ...] = (12, 16, 24, 32)
    strides: tuple[tuple[int, int], ...] = ((2, 1), (2, 2), (2, 2), (2, 1))
    coarse_search: tuple[int, int] = (6, 3)
    search: tuple[int, int] = (2, 1)
    estimator_width: int = 24
    axial_factor: int = 2
    lateral_factor: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"channels {self.channels} and strides {self.strides} must be "
                             "non-empty and of the same length")
        for s in self.strides:
            if len(s) != 2 or min(s) < 1:
                raise ValueError(f"each stride must be (axial, lateral) >= 1, got {s}")
        if min(self.coarse_search) < 0 or min(self.search) < 0:
            raise ValueError("search ranges must be >= 0")
        if self.axial_factor < 1 or self.lateral_factor < 1:
            raise ValueError("axial_factor and lateral_factor must be >= 1")

    @property
    def levels(self) -> int:
        return len(self.channels)

    def cumulative_strides(self) -> list[tuple[int, int]]:
        """(axial, lateral) stride of each level relative to the working grid."""
        out, a, b = [], 1, 1
        for sa, sl in self.strides:
            a, b = a * sa, b * sl
            out.append((a, b))
        return out

    @property
    def multiple(self) -> tuple[int, int]:
        """Working-grid sizes must be multiples of this (the coarsest cumulative stride)."""
        return self.cumulative_strides()[-1]


def flow_input(rf: ArrayLike, *, axial_factor: int, lateral_factor: int) -> NDArray[np.float32]:
    """Working-grid channels of an RF frame: RF, quadrature and envelope, normalised.

    Parameters
    ----------
    rf : array_like, shape (depth_sample, line), real
        RF frame (band-passed, as :func:`analysis.strain.pipeline.estimate_strain` does).
    axial_factor, lateral_factor : int
        Block size (samples, lines); trailing samples/lines that do not fill a block are dropped.

    Returns
    -------
    ndarray, shape (3, depth_sample // axial_factor, line // lateral_factor), float32
        Channels RF, quadrature, envelope, each divided by the RMS envelope of the frame.
    """
    x = np.asarray(rf, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rf must be 2-D (depth_sample, line), got shape {x.shape}")
    n = (x.shape[0] // axial_factor) * axial_factor
    m = (x.shape[1] // lateral_factor) * lateral_factor
    if n == 0 or m == 0:
        raise ValueError(f"frame {x.shape} is smaller than one {axial_factor} x {lateral_factor} "
                         "block")
    analytic = hilbert(x - x.mean(axis=0, keepdims=True), axis=0)[:n, :m]
    env = np.abs(analytic)
    scale = float(np.sqrt(np.mean(env**2)))
    chans = np.stack([analytic.real, analytic.imag, env]) / (scale if scale > 0 else 1.0)
    out = chans.reshape(3, n // axial_factor, axial_factor, m // lateral_factor,
                        lateral_factor).mean(axis=(2, 4))
    return out.astype(np.float32)


def _conv(cin: int, cout: int, stride: tuple[int, int] = (1, 1)) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(4, cout), cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class _FeatureLevel(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride=stride)
        self.conv2 = _conv(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _FlowEstimator(nn.Module):
    """Soft-argmax decoder over a cost volume, with a learned correction of the scores.

    Scores = ``temperature * cost + convs(features, cost, flow)``; the flow is the expected
    shift under the softmax of the scores over the search window (pixels of the level). The
    correction starts at zero, so an untrained estimator is the soft-argmax of the correlation:
    the learned part only has to regularise it, which keeps CPU training short.
    """

    def __init__(self, cin: int, width: int, search: tuple[int, int]) -> None:
        super().__init__()
        ra, rl = search
        self.n_shift = (2 * ra + 1) * (2 * rl + 1)
        self.conv1 = _conv(cin, width)
        self.conv2 = _conv(width, width)
        self.scores = nn.Conv2d(width, self.n_shift, 3, padding=1)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(10.0))))
        shifts = torch.tensor([[da, dl] for da in range(-ra, ra + 1) for dl in range(-rl, rl + 1)],
                              dtype=torch.float32)
        self.register_buffer("shifts", shifts.T.reshape(2, self.n_shift, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        logits = self.log_temperature.exp() * cost + self.scores(self.conv2(self.conv1(x)))
        prob = torch.softmax(logits, dim=1)  # (b, n_shift, h, w)
        shifts = self.shifts.to(prob.dtype)  # type: ignore[union-attr]
        return torch.stack([(prob * shifts[0]).sum(dim=1), (prob * shifts[1]).sum(dim=1)], dim=1)


def _cost_volume(f1: torch.Tensor, f2: torch.Tensor, ra: int, rl: int) -> torch.Tensor:
    """Correlation of unit feature vectors of f1 with f2 shifted by every (da, dl) in range.

    Feature vectors are centred over channels before normalising (the activations are mostly
    positive, which would make every shift look alike).
    """
    f1 = F.normalize(f1 - f1.mean(dim=1, keepdim=True), dim=1)
    f2 = F.normalize(f2 - f2.mean(dim=1, keepdim=True), dim=1)
    padded = F.pad(f2, (rl, rl, ra, ra))
    h, w = f1.shape[-2:]
    out = [
        (f1 * padded[:, :, ra + da: ra + da + h, rl + dl: rl + dl + w]).sum(dim=1, keepdim=True)
        for da in range(-ra, ra + 1) for dl in range(-rl, rl + 1)
    ]
    return torch.cat(out, dim=1)


def _warp(x: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """Sample x at (row + flow[:, 0], col + flow[:, 1]) (pixels) bilinearly, zeros outside."""
    _, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    r = rows + flow_px[:, 0]
    c = cols + flow_px[:, 1]
    grid = torch.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class FlowCNN(nn.Module):
    """Coarse-to-fine flow network (see the module docstring).

    ``forward(pre, post)`` takes two ``(batch, 3, H, W)`` working-grid inputs (H, W multiples
    of ``config.multiple``) and returns ``levels + 1`` flow estimates, coarsest first, the last
    on the working grid. Every estimate is in **working-grid pixels** (channel 0 axial,
    channel 1 lateral), whatever the resolution of the level it was computed on.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        features = []
        cin = N_INPUT_CHANNELS
        for cout, stride in zip(config.channels, config.strides, strict=True):
            features.append(_FeatureLevel(cin, cout, stride))
            cin = cout
        self.features = nn.ModuleList(features)
        n_coarse = (2 * config.coarse_search[0] + 1) * (2 * config.coarse_search[1] + 1)
        n_fine = (2 * config.search[0] + 1) * (2 * config.search[1] + 1)
        self.estimators = nn.ModuleList(
            _FlowEstimator(c + (n_coarse if k == config.levels - 1 else n_fine + 2),
                           config.estimator_width,
                           config.coarse_search if k == config.levels - 1 else config.search)
            for k, c in enumerate(config.channels)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.1, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for est in self.estimators:  # start as the plain soft-argmax of the correlation
            nn.init.zeros_(est.scores.weight)
            nn.init.zeros_(est.scores.bias)

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.features:
            x = level(x)
            out.append(x)
        return out

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.config
        strides = cfg.cumulative_strides()
        p1 = self._pyramid(pre)
        p2 = self._pyramid(post)
        flows: list[torch.Tensor] = []
        flow: torch.Tensor | None = None
        for k in range(cfg.levels - 1, -1, -1):
            f1, f2 = p1[k], p2[k]
            scale = torch.tensor([strides[k][0], strides[k][1]], dtype=f1.dtype,
                                 device=f1.device).view(1, 2, 1, 1)
            if flow is None:
                cost = _cost_volume(f1, f2, *cfg.coarse_search)
                flow = self.estimators[k](torch.cat([f1, cost], dim=1), cost) * scale
            else:
                up = F.interpolate(flow, size=f1.shape[-2:], mode="bilinear",
                                   align_corners=False)
                cost = _cost_volume(f1, _warp(f2, up / scale), *cfg.search)
                flow = up + self.estimators[k](torch.cat([f1, cost, up / scale], dim=1),
                                               cost) * scale
            flows.append(flow)
        assert flow is not None
        flows.append(F.interpolate(flow, size=pre.shape[-2:], mode="bilinear",
                                   align_corners=False))
        return flows


def flow_cnn(**overrides: Any) -> FlowCNN:
    """The default compact network (4 levels, 12-32 channels), or one with ``overrides``."""
    return FlowCNN(FlowConfig(**overrides))


def _pad_to(x: NDArray[np.float32], multiple: tuple[int, int]) -> NDArray[np.float32]:
    h = -(-x.shape[-2] // multiple[0]) * multiple[0]
    w = -(-x.shape[-1] // multiple[1]) * multiple[1]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, h - x.shape[-2]), (0, w - x.shape[-1])]
    return np.pad(x, pad, mode="edge")


def predict_displacement(
    model: FlowCNN, rf_pre: ArrayLike, rf_post: ArrayLike
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Coarse displacement of a pre/post RF pair on the full frame grid.

    Parameters
    ----------
    model : FlowCNN
        Trained network (put in eval mode here).
    rf_pre, rf_post : array_like, shape (depth_sample, line), real
        RF frames of the same shape, filtered as in training (band-passed by default).

    Returns
    -------
    axial, lateral : ndarray, shape (depth_sample, line), float32
        Displacement in RF samples and lines (``I1(i, j)`` ~ ``I2(i + axial, j + lateral)``).
    """
    pre, post = check_frames(rf_pre, rf_post)
    cfg = model.config
    a = flow_input(pre, axial_factor=cfg.axial_factor, lateral_factor=cfg.lateral_factor)
    b = flow_input(post, axial_factor=cfg.axial_factor, lateral_factor=cfg.lateral_factor)
    h, w = a.shape[-2:]
    ta = torch.from_numpy(_pad_to(a, cfg.multiple))[None]
    tb = torch.from_numpy(_pad_to(b, cfg.multiple))[None]
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
    doc = {"model": "FlowCNN", "version": 2, "config": asdict(model.config), "sha256": digest,
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
        Hash mismatch, a card for another model, or weights of the older (version 1,
        envelope-input) network.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    weights = base.with_suffix(".safetensors")
    card_path = base.with_suffix(".json")
    for f in (weights, card_path):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; train a model with "
                                    "analysis.strain.train.train_default_flow_cnn and save it")
    card = json.loads(card_path.read_text())
    if card.get("model") != "FlowCNN":
        raise ValueError(f"{card_path} describes a {card.get('model')!r}, not a FlowCNN")
    if card.get("version", 1) != 2:
        raise ValueError(f"{card_path} holds a version-{card.get('version', 1)} FlowCNN "
                         "(envelope input); retrain with analysis.strain.train")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(f"{weights} does not match the SHA-256 in its card (file changed or "
                         "corrupt)")
    cfg = dict(card["config"])
    cfg["channels"] = tuple(cfg["channels"])
    cfg["strides"] = tuple(tuple(s) for s in cfg["strides"])
    cfg["coarse_search"] = tuple(cfg["coarse_search"])
    cfg["search"] = tuple(cfg["search"])
    model = FlowCNN(FlowConfig(**cfg))
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, card
