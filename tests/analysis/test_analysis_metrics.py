"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics import (
    cnr,
    dice,
    failure_rate,
    mean_absolute_error,
    mssim,
    ncc,
    pearson_correlation,
    snr,
)


def test_mae_ignores_nan_estimates_and_respects_mask() -> None:
    est = np.array([1.0, 4.0, np.nan, 10.0])
    truth = np.array([2.0, 2.0, 2.0, 2.0])
    mae, std = mean_absolute_error(est, truth)
    assert mae == pytest.approx((1 + 2 + 8) / 3)
    assert std == pytest.approx(np.std([1.0, 2.0, 8.0]))
    mae, std = mean_absolute_error(est, truth, mask=np.array([True, True, True, False]))
    assert (mae, std) == (pytest.approx(1.5), pytest.approx(0.5))


def test_mae_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mean_absolute_error(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        mean_absolute_error(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="no finite estimate"):
        mean_absolute_error(np.full(3, np.nan), np.zeros(3))
    with pytest.raises(ValueError, match="truth contains NaN"):
        mean_absolute_error(np.zeros(3), np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="boolean"):
        mean_absolute_error(np.zeros(3), np.zeros(3), mask=np.ones(3))


def test_pearson() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200)
    assert pearson_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert pearson_correlation(a, -a) == pytest.approx(-1.0)
    b = np.append(a[:-1], np.nan)
    assert pearson_correlation(b, 2 * b) == pytest.approx(1.0)
    c = rng.standard_normal(200)
    assert pearson_correlation(a, c) == pytest.approx(np.corrcoef(a, c)[0, 1])
    with pytest.raises(ValueError, match="constant"):
        pearson_correlation(np.ones(5), np.arange(5.0))


def test_dice() -> None:
    truth = np.zeros((10, 10))
    truth[2:6, 2:6] = 100.0  # 16 px
    est = np.zeros((10, 10))
    est[3:7, 2:6] = 100.0  # 16 px, 12 overlap
    assert dice(est, truth, threshold=67.38) == pytest.approx(2 * 12 / 32)
    assert dice(truth, truth, threshold=67.38) == 1.0
    assert dice(np.zeros(4), np.zeros(4), threshold=1.0) == 1.0
    est[3, 3] = np.nan  # NaN counts as below the threshold
    assert dice(est, truth, threshold=67.38) == pytest.approx(2 * 11 / 31)


def test_snr_and_cnr() -> None:
    img = np.zeros((20, 20))
    img[:10] = np.tile([1.0, 3.0], (10, 10))  # mean 2, std 1
    img[10:] = np.tile([5.0, 9.0], (10, 10))  # mean 7, std 2
    top, bottom = (slice(0, 10), slice(0, 20)), (slice(10, 20), slice(0, 20))
    assert snr(img, window=top) == pytest.approx(2.0)
    assert cnr(img, background=top, target=bottom) == pytest.approx(np.sqrt(2 * 25 / 5))
    with pytest.raises(ValueError, match="tuple of slices"):
        snr(img, window=[slice(0, 3)])  # type: ignore[arg-type]
    img[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        snr(img, window=top)


def test_mssim_needs_data_range_and_matches_identity() -> None:
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 0.02, (32, 32))
    assert mssim(ref, ref, data_range=0.02) == pytest.approx(1.0)
    noisy = ref + rng.normal(0, 0.005, ref.shape)
    assert mssim(noisy, ref, data_range=0.02) < 0.9
    with pytest.raises(ValueError, match="data_range"):
        mssim(ref, ref, data_range=0.0)


def test_ncc_and_failure_rate() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((16, 16))
    assert ncc(base, 2 * base + 3) == pytest.approx(1.0)
    assert ncc(base, np.ones_like(base)) == 0.0
    good = [base + 0.2 * rng.standard_normal(base.shape) for _ in range(4)]
    bad = [rng.standard_normal(base.shape) for _ in range(2)]
    rate, failed = failure_rate([*good, *bad])
    assert rate == pytest.approx(2 / 6)
    assert failed.tolist() == [False] * 4 + [True] * 2
    with pytest.raises(ValueError, match="at least two"):
        failure_rate([base])
    with pytest.raises(ValueError, match="same shape"):
        failure_rate([base, base[:8]])
