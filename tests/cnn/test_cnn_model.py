"""Shapes and receptive-field plans of the spatio-temporal DenseNet."""

from __future__ import annotations

import pytest
import torch

from analysis.swei_cnn.model import FRAMES, WINDOW_SIZES, spatial_plan, swei_cnn


@pytest.mark.parametrize("window_px", WINDOW_SIZES)
def test_output_shape_all_windows(window_px: int) -> None:
    torch.manual_seed(0)
    model = swei_cnn(window_px, growth_rate=4, head_hidden=8).eval()
    x = torch.randn(2, 1, FRAMES, window_px, window_px)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2,)
    assert torch.isfinite(y).all()
    # the two windows differ, so must the outputs (the network is not constant)
    assert y[0] != y[1]


@pytest.mark.parametrize("window_px", WINDOW_SIZES)
def test_plan_tiles_window_exactly(window_px: int) -> None:
    stride = 1 if window_px <= 9 else 2
    plan = spatial_plan(window_px, spatial_stride=stride)
    # receptive field + (extent - 1) * jump reaches exactly the window
    rf, jump = 1, 1
    for i, k in enumerate(plan.stem):
        rf += (k - 1) * jump
        if i == 0:
            jump *= stride
    for b, kernels in enumerate(plan.blocks):
        for k in kernels:
            rf += (k - 1) * jump
        if b < len(plan.pools):
            rf += (plan.pools[b] - 1) * jump
            jump *= plan.pools[b]
    assert rf + (plan.final_extent - 1) * plan.final_jump == window_px
    assert jump == plan.final_jump
    if window_px <= 9:
        assert plan.final_jump == 1  # spatial stride one for the small windows ([SWEI])


def test_every_input_pixel_reaches_the_output() -> None:
    model = swei_cnn(17, growth_rate=4, head_hidden=8).eval()
    x = torch.randn(1, 1, FRAMES, 17, 17, requires_grad=True)
    model(x).sum().backward()
    per_pixel = x.grad.abs().sum(dim=(0, 1, 2))
    assert (per_pixel > 0).all()


def test_rejects_wrong_window_and_unknown_size() -> None:
    model = swei_cnn(9, growth_rate=4)
    with pytest.raises(ValueError, match=r"expected windows shaped \(batch, 1, 35, 9, 9\)"):
        model(torch.zeros(1, 1, FRAMES, 17, 17))
    with pytest.raises(ValueError, match="window_px must be one of"):
        swei_cnn(11)  # type: ignore[arg-type]
