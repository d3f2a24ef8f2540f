"""Coarse-to-fine correlation flow network for RF pairs (the CNN half of GLUENet).

[GLUENet] uses FlowNet 2.0 for a coarse but robust displacement that GLUE then refines. This is a
small PWC-Net-style pyramid sized for CPU training in minutes, built so that **without any
training it is a classical coarse-to-fine block matcher** (normalised cross-correlation, argmax,
parabolic sub-pixel peak, median filtering between levels); training only adds corrections.

* **Input** (:func:`flow_input`). Each (band-passed) RF frame becomes three channels on the
  *working grid*: RF, quadrature (imaginary part of the analytic signal along depth) and envelope,
  divided by the frame's RMS envelope and block-averaged by ``axial_factor`` x ``lateral_factor``
  (default 2 x 1: a working pixel is two RF samples by one line).
* **Descriptors.** Level ``k`` lives on a grid ``cumulative_strides()[k]`` coarser than the
  working grid. Its *fixed* descriptor is what speckle allows to be matched on that grid: at a
  level with axial stride 1 (the working grid) the RF and quadrature channels (the carrier phase
  gives sub-sample precision) plus the envelope (which penalises jumps by a carrier period); at
  coarser levels only the envelope, box-averaged over the level's cell. Box-averaging makes the
  envelope smooth on the scale of one cell, so a correlation evaluated at whole-cell shifts still
  has a peak one cell wide that a parabola can interpolate (raw speckle, or RF whose carrier is
  aliased by the stride, decorrelates within a fraction of a cell and gives a flat, useless
  cost). A learned branch (two 3x3 convs on the pooled input, ``channels[k]`` features) is
  appended to the descriptor through a gain that starts small (0.1).
* **Cost volume.** Zero-normalised cross-correlation (ZNCC) over a window ``windows[k]`` (level
  pixels) for every integer shift of the search range: local means removed, products summed over
  the window and over channels, divided by the window energies of both frames. Values lie in
  [-1, 1] whatever the echo level, so one temperature serves all frames.
* **Decoder.** Scores = ``temperature * cost + correction(cost, flow)`` (the correction is a
  small conv net whose last layer starts at zero). Flow = argmax of the scores plus a sub-pixel
  offset along each axis from a cosine (else parabolic) fit through the peak and its two
  neighbours (clamped to +-0.5 pixel). A soft-argmax over the whole range
  is *not* used: with a few dozen shifts, the mass of the off-peak shifts pulls the estimate
  toward zero (this, with the flat cost of random features, is why the version-2 network
  returned 2.5 samples for an 8-sample shift). The scores are returned for a training loss.
* **Coarse to fine.** The coarsest level searches +-``coarse_search``; each finer level
  upsamples the (3 x 3 median-filtered) flow of the level below, which is kept in working pixels,
  warps the post-frame descriptor by it (bilinear, in the level's pixels) and searches a
  residual of +-``search`` around it. (Rounding the warp to whole pixels, which avoids
  interpolating the carrier, was tried and tracked worse: 18 % instead of 3.5 % outliers.)

Ranges with the defaults (working grid 2 samples x 1 line; cumulative strides (1, 1), (2, 1),
(4, 2), (8, 2) working pixels): the coarsest search of +-11 x +-6 cells covers +-88 working
pixels = +-176 samples and +-12 lines, more than the 140 samples (7 % of 2000) and ~9 lines (edge
of a 250-line frame at 7 % strain) of the study. Every finer level searches +-2 x +-1 of its own
pixels, i.e. tolerates an error of the level below of +-8, +-4, +-2 working pixels axially
(a whole cell of that level) and +-2, +-1, +-1 lines laterally (half a cell or more); the
coarse levels' typical errors are a fraction of their cell. ZNCC windows: 31 x 11, 21 x 11,
15 x 11 and 21 x 11 pixels of the level (62 samples at the finest level, 336 samples x 22 lines
at the coarsest): smaller windows lose to 12.7 dB noise.

Weights are stored as safetensors plus a JSON card (configuration, training recipe, metrics,
SHA-256 of the weights file); never pickle. Card version 3 (this architecture); older cards are
refused with a message.

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
    "CARD_VERSION",
    "FlowCNN",
    "FlowConfig",
    "flow_cnn",
    "flow_input",
    "load_flow_cnn",
    "predict_displacement",
    "save_flow_cnn",
    "zncc_cost_volume",
]

#: Input channels of :func:`flow_input`: RF, quadrature, envelope.
N_INPUT_CHANNELS = 3
#: Version of the weight card written by :func:`save_flow_cnn` (3: ZNCC pyramid).
CARD_VERSION = 3


@dataclass(frozen=True)
class FlowConfig:
    """Network and input configuration (stored in the weight card).

    ``strides[k]`` is the (axial, lateral) downsampling of pyramid level ``k`` relative to the
    previous level (the working grid for ``k = 0``); ``channels[k]`` the width of its learned
    descriptor branch; ``windows[k]`` its ZNCC window (level pixels, odd; None: defaults that
    (31, 11), (21, 11), (15, 11), ... and (21, 11) at the coarsest level: large windows are what
makes matching survive 12.7 dB noise).
    ``coarse_search`` / ``search`` are the cost-volume half-ranges (axial, lateral) in pixels of
    the coarsest level and of the finer levels.
    """

    channels: tuple[int, ...] = (4, 4, 4, 4)
    strides: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (2, 2), (2, 1))
    coarse_search: tuple[int, int] = (11, 6)
    search: tuple[int, int] = (2, 1)
    estimator_width: int = 16
    axial_factor: int = 2
    lateral_factor: int = 1
    windows: tuple[tuple[int, int], ...] | None = None
    temperature: float = 10.0

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
        if min(self.channels) < 0:
            raise ValueError(f"channels must be >= 0, got {self.channels}")
        if self.windows is not None:
            if len(self.windows) != len(self.strides):
                raise ValueError(f"windows {self.windows} needs one (axial, lateral) per level")
            for w in self.windows:
                if len(w) != 2 or min(w) < 1 or w[0] % 2 == 0 or w[1] % 2 == 0:
                    raise ValueError(f"each window must be odd (axial, lateral) >= 1, got {w}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

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

    def level_windows(self) -> list[tuple[int, int]]:
        """ZNCC window (axial, lateral) of each level in its own pixels (odd sizes)."""
        if self.windows is not None:
            return [tuple(w) for w in self.windows]  # type: ignore[misc]
        return [(21, 11) if k == self.levels - 1 else (max(15, 31 - 10 * k), 11)
                for k in range(self.levels)]

    def carrier_level(self, k: int) -> bool:
        """Whether level ``k`` matches RF and quadrature (axial stride 1) or the envelope only."""
        return self.cumulative_strides()[k][0] == 1

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


def _box(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Mean over a centred window (odd sizes), averaging only the pixels inside the frame.

    Separable (one pass per axis): exact, because the in-frame count is a product too.
    """
    x = F.avg_pool2d(x, (window[0], 1), stride=1, padding=(window[0] // 2, 0),
                     count_include_pad=False)
    return F.avg_pool2d(x, (1, window[1]), stride=1, padding=(0, window[1] // 2),
                        count_include_pad=False)


def _shifted(x: torch.Tensor, da: int, dl: int, ra: int, rl: int,
             padded: torch.Tensor | None = None) -> torch.Tensor:
    """``x[..., i + da, j + dl]`` with zeros outside (``padded``: x zero-padded by ra, rl)."""
    if padded is None:
        padded = F.pad(x, (rl, rl, ra, ra))
    h, w = x.shape[-2:]
    return padded[..., ra + da: ra + da + h, rl + dl: rl + dl + w]


def zncc_cost_volume(f1: torch.Tensor, f2: torch.Tensor, *, search: tuple[int, int],
                     window: tuple[int, int], eps: float = 1e-6) -> torch.Tensor:
    """Windowed zero-normalised cross-correlation of f1 with f2 at every shift of a range.

    Parameters
    ----------
    f1, f2 : Tensor, shape (batch, channel, h, w)
        Descriptors of the pre and post frames on one grid.
    search : (int, int)
        Half-ranges (axial ``ra``, lateral ``rl``) of the integer shifts, pixels.
    window : (int, int)
        Odd window (axial, lateral) over which products are summed, pixels.
    eps : float, optional
        Added to the energy product (flat regions give 0, not NaN).

    Returns
    -------
    Tensor, shape (batch, (2 ra + 1) (2 rl + 1), h, w)
        ``cost[:, s]`` for shift ``s = (da + ra) (2 rl + 1) + (dl + rl)``: the ZNCC of the
        window of f1 centred on (i, j) with the window of f2 centred on (i + da, j + dl), in
        [-1, 1]. Shifts that leave the frame see zeros. Each descriptor has its local mean
        (over a window around every pixel) removed first: a cheap stand-in for removing the
        mean of each compared window.
    """
    ra, rl = search
    g1 = f1 - _box(f1, window)
    g2 = f2 - _box(f2, window)
    pad = (window[0] // 2, window[1] // 2)

    def window_sum(x: torch.Tensor) -> torch.Tensor:  # mean with zeros outside; separable
        x = F.avg_pool2d(x, (window[0], 1), stride=1, padding=(pad[0], 0))
        return F.avg_pool2d(x, (1, window[1]), stride=1, padding=(0, pad[1]))

    g2p = F.pad(g2, (rl, rl, ra, ra))
    e1 = window_sum((g1 * g1).sum(dim=1, keepdim=True))
    e2p = window_sum((g2p * g2p).sum(dim=1, keepdim=True))  # energy of every shifted window
    prods, energies = [], []
    for da in range(-ra, ra + 1):
        for dl in range(-rl, rl + 1):
            prods.append((g1 * _shifted(g2, da, dl, ra, rl, g2p)).sum(dim=1, keepdim=True))
            # e2p is already padded: slice it at the shift (e1 only supplies the shape).
            energies.append(_shifted(e1, da, dl, ra, rl, e2p))
    num = window_sum(torch.cat(prods, dim=1))
    return num / torch.sqrt(e1 * torch.cat(energies, dim=1) + eps)


def _decode(scores: torch.Tensor, search: tuple[int, int]) -> torch.Tensor:
    """Argmax of scores over the shifts plus a sub-pixel offset per axis.

    ``scores``: (batch, (2 ra + 1)(2 rl + 1), h, w). Returns (batch, 2, h, w) shifts in pixels.
    The offset comes from a cosine fit through the peak score ``s0`` and its neighbours
    ``s-``, ``s+`` (``cos w = (s- + s+) / (2 s0)``, ``t = atan2(s+ - s-, 2 s0 sin w) / w``;
    where ``s0 <= 0`` the parabola ``(s- - s+) / (2 (s- - 2 s0 + s+))``), clamped to +-0.5; it
    is 0 at the edge of the range or where the curvature is not negative. Gradients reach the
    three scores used.
    """
    ra, rl = search
    b, _, h, w = scores.shape
    s = scores.view(b, 2 * ra + 1, 2 * rl + 1, h, w)
    flat_idx = scores.argmax(dim=1, keepdim=True)  # (b, 1, h, w)
    ia = torch.div(flat_idx, 2 * rl + 1, rounding_mode="floor")
    il = flat_idx - ia * (2 * rl + 1)
    s0 = torch.gather(scores, 1, flat_idx)

    def offset(idx: torch.Tensor, n: int, axis: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros_like(s0)
        lo = (idx - 1).clamp(0, n - 1)
        hi = (idx + 1).clamp(0, n - 1)
        if axis == 0:
            sm = torch.gather(s, 1, lo[:, :, None].expand(b, 1, 2 * rl + 1, h, w))
            sp = torch.gather(s, 1, hi[:, :, None].expand(b, 1, 2 * rl + 1, h, w))
            sm = torch.gather(sm[:, 0], 1, il)
            sp = torch.gather(sp[:, 0], 1, il)
        else:
            row = torch.gather(s, 1, ia[:, :, None].expand(b, 1, 2 * rl + 1, h, w))[:, 0]
            sm = torch.gather(row, 1, lo)
            sp = torch.gather(row, 1, hi)
        curv = sm - 2 * s0 + sp
        inside = (idx > 0) & (idx < n - 1) & (curv < -1e-6)
        safe = torch.where(inside, curv, -torch.ones_like(curv))
        parabola = ((sm - sp) / (2 * safe)).clamp(-0.5, 0.5)
        # Cosine fit through the three scores (exact for s(k) = A cos(w (k - t)), the shape of
        # a carrier-level correlation peak; close to the parabola for broad peaks).
        use_cos = inside & (s0 > 1e-6)
        s0_safe = torch.where(use_cos, s0, torch.ones_like(s0))
        cos_w = ((sm + sp) / (2 * s0_safe)).clamp(-1 + 1e-6, 1 - 1e-4)
        omega = torch.acos(cos_w)
        cosine = (torch.atan2(sp - sm, 2 * s0_safe * torch.sin(omega)) / omega).clamp(-0.5, 0.5)
        off = torch.where(use_cos, cosine, parabola)
        return torch.where(inside, off, torch.zeros_like(off))

    da = ia.to(scores.dtype) - ra + offset(ia, 2 * ra + 1, 0)
    dl = il.to(scores.dtype) - rl + offset(il, 2 * rl + 1, 1)
    return torch.cat([da, dl], dim=1)


def _median3(flow: torch.Tensor) -> torch.Tensor:
    """3 x 3 median of each flow channel (edge-replicated): removes isolated outliers."""
    b, c, h, w = flow.shape
    p = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(p, 3).view(b, c, 9, h, w)
    return patches.median(dim=2).values


def _warp(x: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """Sample x at (row + flow[:, 0], col + flow[:, 1]) (pixels) bilinearly, zeros outside."""
    _, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    r = rows + flow_px[:, 0]
    c = cols + flow_px[:, 1]
    grid = torch.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class _LearnedDescriptor(nn.Module):
    """Two 3x3 convs on the pooled input, entering the descriptor through a small gain.

    The gain starts at 0.1, not 0: both frames' learned channels scale with it, so the ZNCC
    depends on it quadratically and a zero gain would get no gradient. At 0.1 the (siamese,
    hence also motion-tracking) learned channels carry ~1 % of the descriptor energy.
    """

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(N_INPUT_CHANNELS, cout, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.gain = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.net(x)


class _Correction(nn.Module):
    """Learned score correction from the cost volume (and the incoming flow); starts at zero."""

    def __init__(self, n_shift: int, extra: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_shift + extra, width, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, n_shift, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FlowCNN(nn.Module):
    """Coarse-to-fine ZNCC flow network (see the module docstring).

    ``forward(pre, post)`` takes two ``(batch, 3, H, W)`` working-grid inputs (H, W multiples
    of ``config.multiple``) and returns ``levels + 1`` flow estimates, coarsest first, the last
    on the working grid. Every estimate is in **working-grid pixels** (channel 0 axial,
    channel 1 lateral), whatever the resolution of the level it was computed on. With
    ``return_scores=True`` it also returns, per level (coarsest first), the scores over the
    shifts and the flow (working pixels) that level's shifts are relative to.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.descriptors = nn.ModuleList(
            _LearnedDescriptor(c) if c > 0 else nn.Identity() for c in config.channels)
        n_coarse = (2 * config.coarse_search[0] + 1) * (2 * config.coarse_search[1] + 1)
        n_fine = (2 * config.search[0] + 1) * (2 * config.search[1] + 1)
        self.corrections = nn.ModuleList(
            _Correction(n_coarse, 0, config.estimator_width) if k == config.levels - 1
            else _Correction(n_fine, 2, config.estimator_width)
            for k in range(config.levels)
        )
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(config.temperature))))

    def level_search(self, k: int) -> tuple[int, int]:
        """Search half-range of level ``k`` (its own pixels)."""
        return self.config.coarse_search if k == self.config.levels - 1 else self.config.search

    def _descriptor(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Fixed (+ learned) descriptor of working-grid input x at level k."""
        sa, sl = self.config.cumulative_strides()[k]
        pooled = F.avg_pool2d(x, (sa, sl)) if sa * sl > 1 else x
        fixed = pooled if self.config.carrier_level(k) else pooled[:, 2:3]
        if self.config.channels[k] > 0:
            return torch.cat([fixed, self.descriptors[k](pooled)], dim=1)
        return fixed

    def forward(self, pre: torch.Tensor, post: torch.Tensor, *, return_scores: bool = False
                ) -> Any:
        cfg = self.config
        strides = cfg.cumulative_strides()
        windows = cfg.level_windows()
        temperature = self.log_temperature.exp()
        flows: list[torch.Tensor] = []
        scores_out: list[tuple[torch.Tensor, torch.Tensor]] = []
        flow: torch.Tensor | None = None
        for k in range(cfg.levels - 1, -1, -1):
            f1 = self._descriptor(pre, k)
            f2 = self._descriptor(post, k)
            scale = torch.tensor(strides[k], dtype=f1.dtype, device=f1.device).view(1, 2, 1, 1)
            search = self.level_search(k)
            if flow is None:
                base = torch.zeros((f1.shape[0], 2, *f1.shape[-2:]), dtype=f1.dtype,
                                   device=f1.device)
                cost = zncc_cost_volume(f1, f2, search=search, window=windows[k])
                extra = cost
            else:
                base = F.interpolate(_median3(flow), size=f1.shape[-2:], mode="bilinear",
                                     align_corners=False)
                cost = zncc_cost_volume(f1, _warp(f2, base / scale), search=search,
                                        window=windows[k])
                extra = torch.cat([cost, base / scale], dim=1)
            scores = temperature * cost + self.corrections[k](extra)
            flow = base + _decode(scores, search) * scale
            flows.append(flow)
            scores_out.append((scores, base))
        assert flow is not None
        flows.append(F.interpolate(flow, size=pre.shape[-2:], mode="bilinear",
                                   align_corners=False))
        return (flows, scores_out) if return_scores else flows


def flow_cnn(**overrides: Any) -> FlowCNN:
    """The default network (5 levels, ZNCC matching), or one with ``overrides``."""
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
    doc = {"model": "FlowCNN", "version": CARD_VERSION, "config": asdict(model.config),
           "sha256": digest,
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
        Hash mismatch, a card for another model, or a card of another version (1: envelope
        input; 2: learned-feature correlation with soft-argmax, which did not track): retrain.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    weights = base.with_suffix(".safetensors")
    card_path = base.with_suffix(".json")
    for f in (weights, card_path):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; train a model with "
                                    "analysis.strain.synthetic.train_default_flow_cnn and save it")
    card = json.loads(card_path.read_text())
    if card.get("model") != "FlowCNN":
        raise ValueError(f"{card_path} describes a {card.get('model')!r}, not a FlowCNN")
    if card.get("version", 1) != CARD_VERSION:
        raise ValueError(f"{card_path} holds a version-{card.get('version', 1)} FlowCNN; this "
                         f"code reads version {CARD_VERSION} (ZNCC pyramid) only: retrain with "
                         "analysis.strain.synthetic.train_default_flow_cnn")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ValueError(f"{weights} does not match the SHA-256 in its card (file changed or "
                         "corrupt)")
    cfg = dict(card["config"])
    cfg["channels"] = tuple(cfg["channels"])
    cfg["strides"] = tuple(tuple(s) for s in cfg["strides"])
    cfg["coarse_search"] = tuple(cfg["coarse_search"])
    cfg["search"] = tuple(cfg["search"])
    if cfg.get("windows") is not None:
        cfg["windows"] = tuple(tuple(w) for w in cfg["windows"])
    model = FlowCNN(FlowConfig(**cfg))
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return model, card
