"""Band-pass filter of the RF and the speckle statistics of the compression simulator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import hilbert

from analysis.strain.bandpass import bandpass_edges_hz, bandpass_rf
from analysis.strain.pipeline import dp_lateral_search, estimate_strain
from drivers.sim.phantom import BlockPhantom
from drivers.ultrasound.sim_compression import (
    add_psnr_noise,
    simulate_compression_pair,
    simulate_rf_frame,
)

FS, FC = 40e6, 6.67e6


def _tone(freq_hz: float, n: int = 2000, lines: int = 3) -> np.ndarray:
    t = np.arange(n) / FS
    return np.repeat(np.sin(2 * np.pi * freq_hz * t)[:, None], lines, axis=1)


def test_out_of_band_tones_removed_in_band_kept() -> None:
    inband = _tone(FC)
    core = slice(200, -200)  # away from the forward-backward end transients
    for out_of_band in (1e6, 15e6, 19e6):
        mixed = inband + _tone(out_of_band)
        out = bandpass_rf(mixed, sampling_frequency=FS, center_frequency=FC)
        # Out-of-band tone suppressed by > 30 dB; in-band tone within 2 % and not delayed.
        residual = out[core] - inband[core]
        assert np.sqrt(np.mean(residual**2)) < 0.03 * np.sqrt(np.mean(inband[core] ** 2))
    alone = bandpass_rf(_tone(FC), sampling_frequency=FS, center_frequency=FC)
    np.testing.assert_allclose(alone[core], inband[core], atol=0.02)
    lag = np.argmax(np.correlate(alone[core, 0], inband[core, 0], "full")) - (2000 - 400 - 1)
    assert lag == 0  # zero phase


def test_bandpass_shapes_dtypes_and_white_noise_power() -> None:
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal((1000, 4)).astype(np.float32)
    out32 = bandpass_rf(x32, sampling_frequency=FS, center_frequency=FC)
    assert out32.shape == x32.shape and out32.dtype == np.float32
    out64 = bandpass_rf(x32.astype(np.float64), sampling_frequency=FS, center_frequency=FC)
    assert out64.dtype == np.float64
    assert bandpass_rf(x32[:, 0], sampling_frequency=FS, center_frequency=FC).shape == (1000,)
    # White noise keeps about the pass-band share of its power (6.67 of 20 MHz = 1/3).
    ratio = out64[100:-100].var() / x32.var()
    assert 0.25 < ratio < 0.40
    assert bandpass_edges_hz(sampling_frequency=FS, center_frequency=FC) == pytest.approx(
        (0.5 * FC, 1.5 * FC))


@pytest.mark.parametrize(
    ("fs", "fc", "bw", "match"),
    [(40e6, 0.0, 1.0, "center_frequency"), (-1.0, 6.67e6, 1.0, "sampling_frequency"),
     (40e6, float("nan"), 1.0, "center_frequency"), (10e6, 6.67e6, 1.0, "Nyquist"),
     (40e6, 6.67e6, 2.5, "fractional_bandwidth")],
)
def test_bad_frequencies_raise(fs: float, fc: float, bw: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bandpass_rf(np.zeros((200, 2)), sampling_frequency=fs, center_frequency=fc,
                    fractional_bandwidth=bw)


def test_bandpass_bad_data_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bandpass_rf(np.full((200, 2), np.nan), sampling_frequency=FS, center_frequency=FC)
    with pytest.raises(ValueError, match="samples along depth"):
        bandpass_rf(np.zeros((10, 2)), sampling_frequency=FS, center_frequency=FC)
    with pytest.raises(ValueError, match="real"):
        bandpass_rf(np.zeros((200, 2), complex), sampling_frequency=FS, center_frequency=FC)


PHANTOM = BlockPhantom("speckle", 10.0, size_mm=(20.0, 20.0, 20.0), speckle_seed=5)


def test_speckle_is_fully_developed() -> None:
    frame = simulate_rf_frame(PHANTOM, applied_strain=0.0, depth_mm=12.0, width_mm=12.0,
                              n_lines=80, element_mm=1.0)
    rf = frame.rf.astype(np.float64)[30:-30]
    env = np.abs(hilbert(rf, axis=0))
    # Rayleigh envelope: mean / std = 1.91; near-Gaussian RF: excess kurtosis ~ 0.
    assert 1.7 < env.mean() / env.std() < 2.1
    z = (rf - rf.mean()) / rf.std()
    assert abs(np.mean(z**4) - 3.0) < 0.6
    # The sparse speckle of 40 scatterers / mm^2 is visibly not fully developed.
    sparse = simulate_rf_frame(PHANTOM, applied_strain=0.0, depth_mm=12.0, width_mm=12.0,
                               n_lines=80, element_mm=1.0, scatterers_per_mm2=10.0)
    zs = sparse.rf.astype(np.float64)[30:-30]
    zs = (zs - zs.mean()) / zs.std()
    assert np.mean(zs**4) - 3.0 > 1.0


def test_psnr_definition_uses_peak_of_clean_frame() -> None:
    clean = np.linspace(-2.0, 1.0, 4000)
    noisy = add_psnr_noise(clean, psnr_db=20.0, rng=np.random.default_rng(1))
    noise = noisy - clean
    assert 10 * np.log10(4.0 / noise.var()) == pytest.approx(20.0, abs=0.2)
    with pytest.raises(ValueError, match="psnr_db"):
        add_psnr_noise(clean, psnr_db=float("inf"), rng=np.random.default_rng(1))


def test_dp_lateral_range_covers_frame_edges_and_bandpass_in_pipeline() -> None:
    # 7 % strain: the edge lines of a 250-line frame move by ~0.98 * 0.07 * 125 = 8.6 lines.
    assert dp_lateral_search(250, max_strain=0.07) >= 9
    assert dp_lateral_search(96, max_strain=0.08) == 5
    pair = simulate_compression_pair(PHANTOM, applied_strain=0.02, depth_mm=6.0, width_mm=6.0,
                                     n_lines=32, element_mm=1.0, psnr_db=12.7,
                                     rng=np.random.default_rng(2))
    on = estimate_strain(pair.rf_pre, pair.rf_post, sampling_frequency=FS, center_frequency=FC,
                         max_strain=0.04)
    assert on.seconds["bandpass"] > 0
    err_on = np.abs(on.axial_displacement - pair.axial_displacement_samples)[on.valid]
    off = estimate_strain(pair.rf_pre, pair.rf_post, max_strain=0.04)
    err_off = np.abs(off.axial_displacement - pair.axial_displacement_samples)[off.valid]
    assert np.median(err_on) < np.median(err_off)
    with pytest.raises(ValueError, match="bandpass=True"):
        estimate_strain(pair.rf_pre, pair.rf_post, bandpass=True)
