"""Full elasticity maps: fully convolutional (dense) evaluation and window-by-window reference.

Dense evaluation shares the computation of overlapping windows. Spatial strides are handled
exactly by *space-to-batch* (the polyphase form of the "a trous" trick): where the window network
subsamples by ``f`` (the first convolution, the pooling between blocks), the dense path computes
the operation at stride 1 and splits the map into its ``f x f`` phases, stacked along the batch
axis. Every later layer then runs as an ordinary, undilated convolution on each phase, which is
exactly what a window whose origin lies on that phase sees. At the end the phases are interleaved
back (batch-to-space, in reverse order), giving one output per window origin.

Per-window z-normalisation is applied after the trunk, as a division of each position's pooled
features by that window's standard deviation (see ``analysis.swei_cnn.model``): the window
statistics are box sums over (frame, h, w), computed in float64 with integral images.

Maps are processed in tiles of output positions (input tile = output tile + window - 1) so the
peak memory stays under ``max_memory_mb`` whatever the map size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from analysis.swei_cnn.model import SpatioTemporalDenseNet

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called after each chunk of work."""


def zscore_windows(windows: NDArray[np.floating]) -> NDArray[np.float32]:
    """z-normalise each window over all its (frame, depth, lateral) values.

    Parameters
    ----------
    windows : ndarray, shape (n, frame, h, w), real
        Displacement windows (any unit).

    Returns
    -------
    normalised : ndarray, shape (n, frame, h, w), float32
        ``(x - mean) / std`` per window (population std); constant windows become zeros.
    """
    w = np.array(windows, dtype=np.float32)  # a copy, normalised in place
    if w.ndim != 4:
        raise ValueError(f"windows must be shaped (n, frame, h, w), got {w.shape}")
    return zscore_windows_inplace(w)


def zscore_windows_inplace(w: NDArray[np.float32]) -> NDArray[np.float32]:
    """:func:`zscore_windows` overwriting a C-contiguous float32 (n, frame, h, w) array; returns it.

    Two passes in float32 (the loader's throughput hangs on this; no BLAS and no thread pool, so
    a loaded machine slows it no more than any single-threaded loop): the mean by NumPy's pairwise
    sum, then the population std from per-frame sums of the centred squares, added in float64
    (both within ~1e-6 relative of a float64 computation). A window whose centred values are all
    equal (a constant window, whatever the rounding of its mean) becomes zeros.
    """
    if w.dtype != np.float32 or w.ndim != 4 or not w.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous float32 (n, frame, h, w) array, got {w.dtype} "
                         f"{w.shape}")
    flat = w.reshape(len(w), -1)  # a view (C-contiguous)
    if flat.shape[1] == 0:
        return w
    mean = flat.sum(axis=1, keepdims=True)
    mean /= flat.shape[1]
    flat -= mean
    frames = w.reshape(len(w), w.shape[1], -1)
    squares = np.einsum("nfp,nfp->nf", frames, frames).sum(axis=1, dtype=np.float64)
    std = np.sqrt(squares / flat.shape[1]).astype(np.float32)[:, None]
    # constant windows: the centred values are all the (tiny) rounding error of the mean
    for i in np.flatnonzero(std[:, 0] <= 1e-4 * np.abs(mean[:, 0])):
        if (flat[i] == flat[i, 0]).all():
            flat[i] = 0.0
            std[i] = 1.0
    std[std == 0] = 1.0
    flat /= std
    return w


def _space_to_batch(x: Tensor, f: int) -> Tensor:
    """(B, C, T, H, W) -> (f*f*B, C, T, H/f, W/f), zero-padding H, W up to multiples of f."""
    if f == 1:
        return x
    b, c, t, h, w = x.shape
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
        h, w = h + ph, w + pw
    x = x.reshape(b, c, t, h // f, f, w // f, f).permute(4, 6, 0, 1, 2, 3, 5)
    return x.reshape(f * f * b, c, t, h // f, w // f)


def _batch_to_space(x: Tensor, f: int) -> Tensor:
    """Inverse of :func:`_space_to_batch` for (f*f*B, C, H, W) maps (frames already reduced)."""
    if f == 1:
        return x
    n, c, h, w = x.shape
    b = n // (f * f)
    x = x.reshape(f, f, b, c, h, w).permute(2, 3, 4, 0, 5, 1)
    return x.reshape(b, c, h * f, w * f)


def _window_std(x: Tensor, window_px: int) -> Tensor:
    """Population std over (frame, window, window) per window origin: (B, T, H, W) -> (B, h, w).

    Accumulated in float64 with integral images of the frame sums of x and x^2.
    """
    x64 = x.to(torch.float64)
    s1 = x64.sum(dim=1)
    s2 = x64.square().sum(dim=1)
    n = x.shape[1] * window_px * window_px

    def box(s: Tensor) -> Tensor:
        ii = F.pad(s.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        k = window_px
        return ii[:, k:, k:] - ii[:, :-k, k:] - ii[:, k:, :-k] + ii[:, :-k, :-k]

    mean = box(s1) / n
    var = (box(s2) / n - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    return torch.where(std > 0, std, torch.ones_like(std))


@torch.no_grad()
def dense_forward(model: SpatioTemporalDenseNet, displacement: Tensor) -> Tensor:
    """Modulus for every window origin of a displacement tile, by one fully convolutional pass.

    Parameters
    ----------
    model : SpatioTemporalDenseNet
        In eval mode (fixed normalisation statistics); raises otherwise.
    displacement : Tensor, shape (batch, frame, depth, lateral), float32
        Raw (not normalised) displacement, any unit.

    Returns
    -------
    youngs_modulus_kpa : Tensor, shape (batch, depth - window_px + 1, lateral - window_px + 1)
        Element ``[b, i, j]`` is the prediction for the window whose top-left pixel is ``(i, j)``
        (centre ``(i + window_px // 2, j + window_px // 2)``).
    """
    if model.training:
        raise ValueError("dense_forward needs the model in eval mode (call model.eval()): batch "
                         "statistics differ between a map and a batch of windows")
    k = model.window_px
    if displacement.ndim != 4 or displacement.shape[1] != model.frames:
        raise ValueError(f"displacement must be shaped (batch, {model.frames}, depth, lateral), "
                         f"got {tuple(displacement.shape)}")
    _, _, h, w = displacement.shape
    if h < k or w < k:
        raise ValueError(f"a {h} x {w} px map is smaller than the {k} px window")
    # Offsets do not reach the trunk (zero-sum first layer); removing the tile mean keeps the
    # float32 cancellation in the first layer small.
    x = displacement - displacement.mean(dim=(1, 2, 3), keepdim=True)
    sigma = _window_std(x, k)  # (B, h-k+1, w-k+1), float64
    feats = x.unsqueeze(1)
    factors: list[int] = []
    for module in model.trunk_modules():
        if hasattr(module, "forward_unstrided"):
            feats = module.forward_unstrided(feats)
            factors.append(module.spatial_stride)
            feats = module.forward_rest(_space_to_batch(feats, module.spatial_stride))
        else:
            feats = module(feats)
    feats = model.finish_features(feats)  # (P*B, C, y, x)
    r = model.plan.final_extent
    if r > 1:
        feats = F.avg_pool2d(feats, r, stride=1)
    for f in reversed(factors):
        feats = _batch_to_space(feats, f)
    feats = feats[:, :, : h - k + 1, : w - k + 1]  # drop origins created by padding
    feats = (feats.to(torch.float64) / sigma.unsqueeze(1)).to(torch.float32)
    return model.predict_from_features(feats.permute(0, 2, 3, 1))


def _bytes_per_input_pixel(model: SpatioTemporalDenseNet) -> int:
    """Rough peak working memory per input pixel of a dense pass (float32 activations)."""
    frames = (model.frames - 3) // 2 + 1
    widest = 0
    channels = model.config["stem_channels"][-1]
    for stage in model.stages:
        if hasattr(stage, "layers"):
            channels += len(stage.layers) * model.config["growth_rate"]
            widest = max(widest, channels * frames)
        else:
            channels //= 2
            frames //= 2
    # concatenated block + its normalised copy + ReLU + new layer, plus allocator slack
    return 4 * widest * 4


def _window_origins(size: int, window_px: int, stride: int) -> NDArray[np.intp]:
    return np.arange(0, size - window_px + 1, stride)


def predict_map(
    model: SpatioTemporalDenseNet,
    displacement: ArrayLike,
    *,
    stride: int = 1,
    method: Literal["auto", "dense", "window"] = "auto",
    max_memory_mb: float = 1024.0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
) -> NDArray[np.float32]:
    """Young's-modulus map of one or more displacement sequences.

    Parameters
    ----------
    model : SpatioTemporalDenseNet
        Trained network; switched to eval mode here.
    displacement : array_like, shape (seq, frame, depth, lateral) or (frame, depth, lateral)
        Axial displacement (any unit; windows are z-normalised), float32 or convertible; zarr
        arrays are read one sequence at a time.
    stride : int
        Predict every ``stride``-th pixel along depth and lateral (1 = every pixel).
    method : {"auto", "dense", "window"}
        ``"dense"``: fully convolutional, computes every origin then keeps every ``stride``-th;
        ``"window"``: extract each window and run the network on batches of them;
        ``"auto"``: dense unless ``stride`` > 4 (then dense work would be mostly discarded).
    max_memory_mb : float
        Working-memory budget of one dense pass; the map is tiled to stay under it.
    batch_size : int
        Windows per forward pass for ``method="window"``.
    device : str or torch.device
        Where to run the network.
    progress : callable, optional
        ``progress(done, total)`` after each tile or batch.

    Returns
    -------
    youngs_modulus_kpa : ndarray, shape (seq, depth, lateral) or (depth, lateral), float32
        Estimate at each window centre on the ``stride`` grid starting at ``window_px // 2``; NaN
        elsewhere (pixels closer than ``window_px // 2`` to the border, skipped pixels).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if method not in ("auto", "dense", "window"):
        raise ValueError(f"method must be 'auto', 'dense' or 'window', got {method!r}")
    single = np.ndim(displacement) == 3
    shape = np.shape(displacement)
    if len(shape) not in (3, 4):
        raise ValueError(f"displacement must be (seq, frame, depth, lateral) or (frame, depth, "
                         f"lateral), got shape {shape}")
    n_seq = 1 if single else shape[0]
    frames, h, w = shape[-3:]
    k = model.window_px
    if frames != model.frames:
        raise ValueError(f"the model takes {model.frames} frames, the displacement has {frames}")
    if h < k or w < k:
        raise ValueError(f"a {h} x {w} px map is smaller than the {k} px window")
    model = model.eval().to(device)
    use_dense = method == "dense" or (method == "auto" and stride <= 4)
    out = np.full((n_seq, h, w), np.nan, dtype=np.float32)
    rows, cols = _window_origins(h, k, stride), _window_origins(w, k, stride)
    c = k // 2
    for s in range(n_seq):
        seq = np.asarray(displacement if single else displacement[s], dtype=np.float32)
        if use_dense:
            est = _dense_map(model, seq, max_memory_mb=max_memory_mb, device=device)
            out[s][np.ix_(rows + c, cols + c)] = est[np.ix_(rows, cols)]
        else:
            est = _window_map(model, seq, rows, cols, batch_size=batch_size, device=device)
            out[s][np.ix_(rows + c, cols + c)] = est
        if progress is not None:
            progress(s + 1, n_seq)
    return out[0] if single else out


def _dense_map(model: SpatioTemporalDenseNet, seq: NDArray[np.float32], *, max_memory_mb: float,
               device: str | torch.device) -> NDArray[np.float32]:
    """Dense prediction for every window origin of one sequence, tile by tile."""
    k = model.window_px
    _, h, w = seq.shape
    budget_px = max_memory_mb * 2**20 / _bytes_per_input_pixel(model)
    tile_in = int(np.sqrt(budget_px))
    jump = model.plan.final_jump
    tile_out = max(jump, (tile_in - (k - 1)) // jump * jump)  # whole phases per tile
    out_h, out_w = h - k + 1, w - k + 1
    est = np.empty((out_h, out_w), dtype=np.float32)
    x = torch.from_numpy(seq)
    for i0 in range(0, out_h, tile_out):
        for j0 in range(0, out_w, tile_out):
            i1, j1 = min(out_h, i0 + tile_out), min(out_w, j0 + tile_out)
            tile = x[:, i0 : i1 + k - 1, j0 : j1 + k - 1].unsqueeze(0).to(device)
            est[i0:i1, j0:j1] = dense_forward(model, tile)[0].cpu().numpy()
    return est


@torch.no_grad()
def _window_map(model: SpatioTemporalDenseNet, seq: NDArray[np.float32],
                rows: NDArray[np.intp], cols: NDArray[np.intp], *, batch_size: int,
                device: str | torch.device) -> NDArray[np.float32]:
    """Window-by-window prediction at origins ``rows x cols`` (the reference path)."""
    k = model.window_px
    origins = [(i, j) for i in rows for j in cols]
    est = np.empty(len(origins), dtype=np.float32)
    for b0 in range(0, len(origins), batch_size):
        chunk = origins[b0 : b0 + batch_size]
        windows = np.stack([seq[:, i : i + k, j : j + k] for i, j in chunk])
        batch = torch.from_numpy(zscore_windows(windows)).unsqueeze(1).to(device)
        est[b0 : b0 + len(chunk)] = model(batch).cpu().numpy()
    return est.reshape(len(rows), len(cols))
