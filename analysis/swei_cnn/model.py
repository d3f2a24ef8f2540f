"""The spatio-temporal 3-D DenseNet of [SWEI] (Neidhardt et al.): displacement window -> kPa.

Axis order everywhere: ``(batch, channel, frame, depth, lateral)``; a window is
``(batch, 1, 35, h, w)`` with ``h == w == window_px`` in {65, 33, 17, 9, 5}.

The paper fixes the outline (three initial 3-D convolutions, three dense blocks of four 3-D
convolutions, average pooling between the blocks, batch normalisation + ReLU, spatial stride one
for the 9 x 9 and 5 x 5 windows) but not the layer sizes; ours are chosen below and recorded in
:class:`SpatioTemporalDenseNet`'s docstring. Two design decisions come from the requirement that a
full map computed fully convolutionally (``analysis.swei_cnn.dense``) equals window-by-window
prediction exactly:

1. **Valid spatial convolutions, no spatial padding.** A window-by-window network that zero-pads
   at the window border sees different numbers than a sliding network that sees the neighbours. All
   spatial kernels are unpadded; inside a dense block the earlier feature maps are centre-cropped to
   the size of the newest one before concatenation. Each spatial kernel is 3 while the receptive
   field still fits in the window and 1 (a purely temporal (3, 1, 1) kernel) afterwards; the last
   spatial extent is averaged by a fixed pooling kernel that covers exactly the rest of the window.
   The time axis is never slid, so temporal padding and strides are free.
2. **Per-window z-normalisation commutes with the trunk.** The paper z-normalises each window
   (zero mean, unit standard deviation). Overlapping windows have different means and deviations,
   so a shared feature map cannot have seen "the" normalised input. We make the trunk ``g``
   insensitive to an added constant and positively homogeneous of degree one:

   * the first convolution's kernels sum to zero (the weight is re-centred in ``forward``) and it is
     unpadded in time, so ``g(x + c) = g(x)``;
   * no convolution has a bias, and the batch normalisation is *scale-only*
     (:class:`_ScaleNorm3d`: ``gamma * x / sqrt(E[x^2] + eps)``, no centring and no shift), so
     together with ReLU and average pooling ``g(a x) = a g(x)`` for ``a > 0``.

   Then ``g((x - mu) / sigma) = g(x) / sigma``: the dense path evaluates ``g`` once on the raw map
   and divides each output position's pooled features by that window's ``sigma`` before the head
   (a pointwise MLP, which may have biases). Window-by-window prediction on z-normalised windows
   and the dense map agree to float rounding.

References
----------
.. [SWEI] Neidhardt et al., "Ultrasound shear wave elasticity imaging with spatio-temporal deep
   learning" (``shared/papers/swei-spatiotemporal-cnn.txt``), Sec. II-A and Fig. 2.
.. [DenseNet] Huang et al., "Densely connected convolutional networks", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WindowPx = Literal[5, 9, 17, 33, 65]
WINDOW_SIZES: tuple[int, ...] = get_args(WindowPx)
#: Plane-wave frames per push sequence ([SWEI]: 35 frames at 7 kHz).
FRAMES = 35


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


class _ScaleNorm3d(nn.Module):
    """Batch normalisation without centring: ``y = gamma * x / sqrt(E[x^2] + eps)`` per channel.

    In training ``E[x^2]`` is the batch mean square over (batch, frame, depth, lateral), summed
    over all processes when a ``torch.distributed`` group is initialised (synchronised batch
    statistics, so a DDP step equals a single-process step on the whole batch); a running average
    (``momentum``) is kept for evaluation, where the layer is a fixed per-channel scale. Having no
    mean and no shift keeps the network positively homogeneous (see module docstring).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_mean_square", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            sum_sq = x.square().sum(dim=(0, 2, 3, 4))
            count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                sum_sq = _AllReduceSum.apply(sum_sq)
                torch.distributed.all_reduce(count)
            mean_sq = sum_sq / count
            with torch.no_grad():
                self.running_mean_square.lerp_(mean_sq.detach(), self.momentum)
        else:
            mean_sq = self.running_mean_square
        scale = self.weight * torch.rsqrt(mean_sq + self.eps)
        return x * scale.view(1, -1, 1, 1, 1)


class _ZeroSumConv3d(nn.Conv3d):
    """3-D convolution whose kernels (per output and input channel) sum to zero (offset-blind)."""

    def centred_weight(self) -> Tensor:
        return self.weight - self.weight.mean(dim=(2, 3, 4), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.centred_weight(), self.bias)


def _conv(c_in: int, c_out: int, spatial_kernel: int) -> nn.Conv3d:
    """Bias-free (3, k, k) convolution, padded in time only."""
    return nn.Conv3d(c_in, c_out, kernel_size=(3, spatial_kernel, spatial_kernel),
                     padding=(1, 0, 0), bias=False)


def _centre_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    dh = (x.shape[-2] - size[0]) // 2
    dw = (x.shape[-1] - size[1]) // 2
    return x[..., dh : dh + size[0], dw : dw + size[1]]


class _Stem(nn.Module):
    """The three initial convolutions: (B, 1, 35, h, w) -> (B, c3, 17, h', w')."""

    def __init__(self, channels: tuple[int, int, int], spatial_kernels: tuple[int, int, int],
                 spatial_stride: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        k1, k2, k3 = spatial_kernels
        self.spatial_stride = spatial_stride
        # frames 35 -> 17 (unpadded, temporal stride 2); zero-sum kernels
        self.conv1 = _ZeroSumConv3d(1, c1, kernel_size=(3, k1, k1), stride=(2, 1, 1), bias=False)
        self.norm1 = _ScaleNorm3d(c1)
        self.conv2 = _conv(c1, c2, k2)
        self.norm2 = _ScaleNorm3d(c2)
        self.conv3 = _conv(c2, c3, k3)

    def forward_unstrided(self, x: Tensor) -> Tensor:
        """Everything up to the spatial subsampling (which the caller applies)."""
        return self.conv1(x)

    def forward_rest(self, x: Tensor) -> Tensor:
        x = self.conv2(F.relu(self.norm1(x)))
        return self.conv3(F.relu(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        s = self.spatial_stride
        return self.forward_rest(self.forward_unstrided(x)[..., ::s, ::s])


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv(3, k, k) producing ``growth_rate`` new channels."""

    def __init__(self, c_in: int, growth_rate: int, spatial_kernel: int) -> None:
        super().__init__()
        self.norm = _ScaleNorm3d(c_in)
        self.conv = _conv(c_in, growth_rate, spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.relu(self.norm(x)))


class _DenseBlock(nn.Module):
    """Layers that each see the concatenation of all earlier outputs (centre-cropped)."""

    def __init__(self, c_in: int, growth_rate: int, spatial_kernels: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _DenseLayer(c_in + i * growth_rate, growth_rate, k)
            for i, k in enumerate(spatial_kernels)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            new = layer(x)
            x = torch.cat([_centre_crop(x, new.shape[-2:]), new], dim=1)
        return x


class _Transition(nn.Module):
    """BN-ReLU-Conv(1, 1, 1) halving the channels, then average pooling (2, p, p)."""

    def __init__(self, c_in: int, c_out: int, spatial_pool: int) -> None:
        super().__init__()
        self.spatial_stride = spatial_pool
        self.norm = _ScaleNorm3d(c_in)
        self.conv = nn.Conv3d(c_in, c_out, kernel_size=1, bias=False)

    def forward_unstrided(self, x: Tensor) -> Tensor:
        p = self.spatial_stride
        x = self.conv(F.relu(self.norm(x)))
        return F.avg_pool3d(x, kernel_size=(2, p, p), stride=(2, 1, 1))

    def forward_rest(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        p = self.spatial_stride
        return self.forward_unstrided(x)[..., ::p, ::p]


@dataclass(frozen=True)
class SpatialPlan:
    """Spatial kernel of every layer, chosen so the receptive field tiles the window exactly.

    Attributes
    ----------
    stem : tuple of int
        Spatial kernels of the three initial convolutions.
    blocks : tuple of tuple of int
        Spatial kernels of each dense layer.
    pools : tuple of int
        Spatial pooling factors of the transitions (2 or 1).
    final_extent : int
        Side of the feature map left at the end of a window, averaged by the final reduction.
    final_jump : int
        Distance in input pixels between neighbouring final-map positions (product of strides).
    """

    stem: tuple[int, int, int]
    blocks: tuple[tuple[int, ...], ...]
    pools: tuple[int, ...]
    final_extent: int
    final_jump: int


def spatial_plan(window_px: int, *, spatial_stride: int,
                 block_config: Sequence[int] = (4, 4, 4)) -> SpatialPlan:
    """Greedy plan: kernel 3 while the receptive field fits the window, else 1.

    The first convolution has stride ``spatial_stride`` and each transition pools by
    ``spatial_stride`` while that still fits. Raises ``ValueError`` when the remaining extent does
    not tile the window exactly (the centre pixel would not be the centre of what the net sees).
    """
    if window_px < 3 or window_px % 2 == 0:
        raise ValueError(f"window_px must be odd and >= 3, got {window_px}")
    if spatial_stride not in (1, 2):
        raise ValueError(f"spatial_stride must be 1 or 2, got {spatial_stride}")
    rf, jump = 1, 1

    def kernel() -> int:
        nonlocal rf
        if rf + 2 * jump <= window_px:
            rf += 2 * jump
            return 3
        return 1

    stem = [kernel()]
    jump *= spatial_stride
    stem += [kernel(), kernel()]
    blocks: list[tuple[int, ...]] = []
    pools: list[int] = []
    for i, n_layers in enumerate(block_config):
        blocks.append(tuple(kernel() for _ in range(n_layers)))
        if i < len(block_config) - 1:
            p = spatial_stride if rf + (spatial_stride - 1) * jump <= window_px else 1
            rf += (p - 1) * jump
            jump *= p
            pools.append(p)
    if (window_px - rf) % jump:
        raise ValueError(f"window {window_px} px is not tiled by receptive field {rf} px with "
                         f"jump {jump} px; pick one of {WINDOW_SIZES}")
    return SpatialPlan(tuple(stem), tuple(blocks), tuple(pools),  # type: ignore[arg-type]
                       final_extent=(window_px - rf) // jump + 1, final_jump=jump)


class SpatioTemporalDenseNet(nn.Module):
    """3-D DenseNet regressing the Young's modulus (kPa) of a window's centre pixel ([SWEI]).

    Parameters
    ----------
    window_px : int
        Window side h = w in pixels (odd); the paper uses 65, 33, 17, 9 and 5.
    spatial_stride : int
        Spatial stride of the first convolution and of the pooling between blocks ([SWEI]: 2,
        and 1 for the 9 x 9 and 5 x 5 windows).
    stem_channels : tuple of int
        Output channels of the three initial convolutions.
    growth_rate : int
        New channels per dense layer (DenseNet's k).
    block_config : tuple of int
        Dense layers per block ([SWEI]: three blocks of four).
    head_hidden : int
        Width of the regression head's hidden layer.
    frames : int
        Frames per window (35 in [SWEI]).

    Notes
    -----
    Shapes for the 65 x 65 network (batch B, defaults); ``k`` = spatial kernel chosen by
    :func:`spatial_plan`::

        input                       (B,   1, 35, 65, 65)  z-normalised displacement
        stem.conv1 k3, stride 2     (B,  16, 17, 32, 32)  zero-sum kernels, unpadded in time
        stem.conv2 k3               (B,  16, 17, 30, 30)
        stem.conv3 k3               (B,  32, 17, 28, 28)
        block1 (4 x k3, +16 each)   (B,  96, 17, 20, 20)
        transition1 conv, pool 2    (B,  48,  8, 10, 10)
        block2 (4 x k3)             (B, 112,  8,  2,  2)
        transition2 conv, pool 2    (B,  56,  4,  1,  1)
        block3 (4 x k1: (3,1,1))    (B, 120,  4,  1,  1)
        norm + ReLU, mean (t, y, x) (B, 120)
        head 120 -> 64 -> 1         (B,)                  kPa = offset + scale * head

    The output offset and scale (buffers ``target_offset_kpa``, ``target_scale_kpa``) are set
    from the training targets so the head starts near the data; they are saved with the weights.
    """

    def __init__(
        self,
        window_px: int,
        *,
        spatial_stride: int = 2,
        stem_channels: tuple[int, int, int] = (16, 16, 32),
        growth_rate: int = 16,
        block_config: tuple[int, ...] = (4, 4, 4),
        head_hidden: int = 64,
        frames: int = FRAMES,
    ) -> None:
        super().__init__()
        if frames < 3:
            raise ValueError(f"frames must be >= 3, got {frames}")
        self.window_px = window_px
        self.frames = frames
        self.spatial_stride = spatial_stride
        self.config = {"window_px": window_px, "spatial_stride": spatial_stride,
                       "stem_channels": list(stem_channels), "growth_rate": growth_rate,
                       "block_config": list(block_config), "head_hidden": head_hidden,
                       "frames": frames}
        self.plan = spatial_plan(window_px, spatial_stride=spatial_stride,
                                 block_config=block_config)

        self.stem = _Stem(stem_channels, self.plan.stem, spatial_stride)
        stages: list[nn.Module] = []
        channels = stem_channels[-1]
        for i, kernels in enumerate(self.plan.blocks):
            stages.append(_DenseBlock(channels, growth_rate, kernels))
            channels += len(kernels) * growth_rate
            if i < len(self.plan.pools):
                stages.append(_Transition(channels, channels // 2, self.plan.pools[i]))
                channels //= 2
        self.stages = nn.ModuleList(stages)
        self.norm_final = _ScaleNorm3d(channels)
        self.num_features = channels
        self.head = nn.Sequential(
            nn.Linear(channels, head_hidden), nn.ReLU(inplace=True), nn.Linear(head_hidden, 1)
        )
        self.register_buffer("target_offset_kpa", torch.tensor(0.0))
        self.register_buffer("target_scale_kpa", torch.tensor(1.0))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for convolutions; unit norm scales; default linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, _ScaleNorm3d):
                nn.init.ones_(m.weight)
                m.running_mean_square.fill_(1.0)

    def set_target_scale(self, offset_kpa: float, scale_kpa: float) -> None:
        """Output = ``offset_kpa + scale_kpa * head(...)``; call before training."""
        if not scale_kpa > 0:
            raise ValueError(f"scale_kpa must be > 0, got {scale_kpa}")
        self.target_offset_kpa.fill_(offset_kpa)
        self.target_scale_kpa.fill_(scale_kpa)

    def trunk_modules(self) -> list[nn.Module]:
        """Stem then the dense blocks and transitions, in order (the dense path walks these)."""
        return [self.stem, *self.stages]

    def finish_features(self, x: Tensor) -> Tensor:
        """Final norm + ReLU and the mean over frames: (B, C, t, y, x) -> (B, C, y, x)."""
        return F.relu(self.norm_final(x)).mean(dim=2)

    def predict_from_features(self, features: Tensor) -> Tensor:
        """Head on pooled, scale-normalised features (..., C) -> modulus (...) in kPa."""
        out = self.head(features).squeeze(-1)
        return self.target_offset_kpa + self.target_scale_kpa * out

    def forward(self, x: Tensor) -> Tensor:
        """Young's modulus in kPa of each window's centre pixel.

        Parameters
        ----------
        x : Tensor, shape (batch, 1, frame, depth, lateral), float32
            z-normalised displacement windows (``frames`` x ``window_px`` x ``window_px``).

        Returns
        -------
        youngs_modulus_kpa : Tensor, shape (batch,)
        """
        want = (1, self.frames, self.window_px, self.window_px)
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected windows shaped (batch, {', '.join(map(str, want))}), "
                             f"got {tuple(x.shape)}")
        for module in self.trunk_modules():
            x = module(x)
        x = self.finish_features(x)  # (B, C, r, r)
        return self.predict_from_features(x.mean(dim=(2, 3)))


def swei_cnn(window_px: WindowPx, **overrides: int) -> SpatioTemporalDenseNet:
    """The [SWEI] variant for a window size: spatial stride 2, or 1 for the 9 and 5 px windows.

    ``overrides`` are passed to :class:`SpatioTemporalDenseNet` (e.g. a smaller ``growth_rate``
    for tests).
    """
    if window_px not in WINDOW_SIZES:
        raise ValueError(f"window_px must be one of {WINDOW_SIZES}, got {window_px}")
    return SpatioTemporalDenseNet(window_px, spatial_stride=1 if window_px <= 9 else 2,
                                  **overrides)  # type: ignore[arg-type]
