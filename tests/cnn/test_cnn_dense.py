"""Dense (fully convolutional) maps equal window-by-window prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.swei_cnn.dense import predict_map, zscore_windows, zscore_windows_inplace
from analysis.swei_cnn.model import FRAMES, SpatioTemporalDenseNet, swei_cnn


def _random_eval_model(window_px: int, seed: int = 0, **overrides: int) -> SpatioTemporalDenseNet:
    """A model with random weights AND random normalisation statistics, in eval mode."""
    torch.manual_seed(seed)
    model = swei_cnn(window_px, **overrides)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean_square"):
                buf.uniform_(0.3, 3.0)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name:
                p.uniform_(0.5, 1.5)
    model.set_target_scale(60.0, 40.0)
    return model.eval()


def _wave(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t, h, w = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    u = np.sin(0.3 * t - 0.2 * w + 0.05 * h) * np.exp(-w / 40.0) * 4e-6 + 2e-6
    return (u + rng.normal(0, 5e-7, shape)).astype(np.float32)


@pytest.mark.parametrize(("window_px", "size"), [(5, (14, 17)), (9, (17, 21)), (17, (26, 29)),
                                                 (33, (40, 38))])
def test_dense_equals_window_by_window(window_px: int, size: tuple[int, int]) -> None:
    model = _random_eval_model(window_px, growth_rate=8)
    disp = _wave((FRAMES, *size), seed=window_px)
    dense = predict_map(model, disp, method="dense")
    window = predict_map(model, disp, method="window", batch_size=32)
    half = window_px // 2
    valid = np.isfinite(window)
    assert valid.sum() == (size[0] - 2 * half) * (size[1] - 2 * half)
    np.testing.assert_array_equal(np.isfinite(dense), valid)
    diff = np.abs(dense[valid] - window[valid])
    assert (diff / np.abs(window[valid])).max() <= 1e-4
    # outputs vary across the map far more than the two paths differ: a real comparison
    assert diff.max() <= 1e-3 * np.nanstd(window)


def test_dense_handles_offsets_and_scales_like_zscore() -> None:
    """Each window is z-normalised, so adding a constant or scaling the map changes nothing."""
    model = _random_eval_model(9, growth_rate=8)
    disp = _wave((FRAMES, 13, 15), seed=3)
    base = predict_map(model, disp, method="dense")
    shifted = predict_map(model, disp * 7.0 + 3e-5, method="dense")
    np.testing.assert_allclose(shifted, base, rtol=1e-4)


def test_tiling_and_stride() -> None:
    model = _random_eval_model(17, growth_rate=8)
    disp = _wave((FRAMES, 40, 52), seed=5)
    whole = predict_map(model, disp, method="dense")
    tiled = predict_map(model, disp, method="dense", max_memory_mb=4)  # forces several tiles
    np.testing.assert_allclose(tiled, whole, rtol=1e-5)
    strided = predict_map(model, disp, stride=3, method="window")
    grid = np.zeros_like(whole, dtype=bool)
    grid[8 : 40 - 8 : 3, 8 : 52 - 8 : 3] = True
    np.testing.assert_array_equal(np.isfinite(strided), grid)
    np.testing.assert_allclose(strided[grid], whole[grid], rtol=1e-4)


def test_zscore_windows() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(3.0, 2.0, (4, 35, 5, 5))
    w[1] = 1.5  # constant window
    z = zscore_windows(w)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[[0, 2, 3]].mean(axis=(1, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(z[[0, 2, 3]].std(axis=(1, 2, 3)), 1, atol=1e-5)
    assert (z[1] == 0).all()


@pytest.mark.parametrize("value", [0.1, 3.3e-7, -2.7, 0.0])
def test_zscore_constant_window_is_zeros_when_its_float32_mean_is_inexact(value: float) -> None:
    """35 x 33 x 33 copies of 0.1 do not sum to 0.1 * n in float32; the window is still
    constant and must become zeros (not +-1 from dividing the rounding error by itself)."""
    rng = np.random.default_rng(1)
    w = rng.normal(1e-6, 3e-7, (3, 35, 33, 33)).astype(np.float32)
    w[1] = value
    z = zscore_windows(w)
    assert (z[1] == 0).all()
    want = (w[0].astype(np.float64) - w[0].mean(dtype=np.float64)) / w[0].std(dtype=np.float64)
    np.testing.assert_allclose(z[0], want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        zscore_windows_inplace(w[:, :, ::2])


def test_dense_requires_eval_mode_and_big_enough_map() -> None:
    from analysis.swei_cnn.dense import dense_forward

    model = swei_cnn(9, growth_rate=4)
    with pytest.raises(ValueError, match="eval mode"):
        dense_forward(model.train(), torch.zeros(1, FRAMES, 12, 12))
    with pytest.raises(ValueError, match="smaller than the 9 px window"):
        predict_map(model, np.zeros((FRAMES, 8, 20), np.float32))
