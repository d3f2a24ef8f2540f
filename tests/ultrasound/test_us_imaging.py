"""Imaging physics: IQ phase of a rigid shift, measured SNR, tissue-fixed speckle, push artefact."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.beamforming import das_plane_wave, rf_to_iq
from drivers.ultrasound.sequences import PlaneWaveSequence, ProbeModel
from drivers.ultrasound.sim_imaging import (
    PUSH_ARTEFACT_DURATION_S,
    ImagingGeometry,
    channel_rf,
    image_domain_iq,
    tissue_scatterers,
)

PROBE = ProbeModel()
SMALL = PlaneWaveSequence(depth_start_mm=6.0, fov_depth_mm=8.0, fov_lateral_mm=8.0, n_depth=100,
                          n_lateral=145, n_frames=2)
GEOMETRY = ImagingGeometry(PROBE, SMALL)
F0 = PROBE.center_frequency_hz
C = SMALL.sound_speed_m_s


def _zero_motion(n_frames: int) -> np.ndarray:
    return np.zeros((n_frames, GEOMETRY.padded_depth_m.size, GEOMETRY.padded_lateral_m.size),
                    dtype=np.float32)


def _mean_phase(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.angle(np.sum(np.conj(a.astype(np.complex128)) * b)))


@pytest.mark.parametrize("modulation_frequency", [F0, 6.0e6])
@pytest.mark.parametrize("shift_m", [1e-6, 5e-6, 12e-6])
def test_rigid_axial_shift_turns_iq_phase_by_4_pi_f_u_over_c(
    shift_m: float, modulation_frequency: float
) -> None:
    scatterers = tissue_scatterers(GEOMETRY, speckle_seed=11)
    motion = _zero_motion(2)
    motion[1] = shift_m  # away from the probe
    iq = image_domain_iq(motion, scatterers, GEOMETRY, snr_db=None, rng=np.random.default_rng(0),
                         modulation_frequency=modulation_frequency)
    expected = -4 * np.pi * F0 * shift_m / C  # motion away from the probe lowers the phase
    assert _mean_phase(iq[0], iq[1]) == pytest.approx(expected, rel=0.02)


def test_rigid_shift_phase_through_channel_data_and_das() -> None:
    rng = np.random.default_rng(5)
    n = 400
    x = rng.uniform(-1.5e-3, 1.5e-3, n)
    z = rng.uniform(7e-3, 10e-3, n)
    amp = rng.standard_normal(n)
    shift_m = 4e-6
    n_samples = int(2 * 12e-3 / C * SMALL.channel_sampling_frequency_hz)
    frames = [channel_rf(x, z + u, amp, probe=PROBE, imaging=SMALL, n_samples=n_samples)
              for u in (0.0, shift_m)]
    iq = rf_to_iq(np.stack(frames), sampling_frequency=SMALL.channel_sampling_frequency_hz,
                  modulation_frequency=F0, t0=0.0)
    image = das_plane_wave(iq, element_positions_m=PROBE.element_positions_m,
                           depth_m=np.arange(7.5e-3, 9.5e-3, 0.05e-3),
                           lateral_m=np.arange(-1e-3, 1e-3, 0.05e-3),
                           channel_sampling_frequency=SMALL.channel_sampling_frequency_hz,
                           sound_speed=C, t0=0.0,
                           modulation_frequency=F0)
    expected = -4 * np.pi * F0 * shift_m / C
    assert _mean_phase(image[0], image[1]) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("snr_db", [10.0, 30.0])
def test_measured_snr_equals_requested(snr_db: float) -> None:
    scatterers = tissue_scatterers(GEOMETRY, speckle_seed=3)
    iq = image_domain_iq(_zero_motion(2), scatterers, GEOMETRY, snr_db=snr_db,
                         rng=np.random.default_rng(1)).astype(np.complex128)
    # same echoes in both frames: their difference is noise only (variance 2 sigma^2)
    noise_power = np.mean(np.abs(iq[1] - iq[0]) ** 2) / 2
    signal_power = np.mean(np.abs(iq[0]) ** 2) - noise_power
    assert 10 * np.log10(signal_power / noise_power) == pytest.approx(snr_db, abs=0.3)


def test_same_tissue_gives_same_speckle() -> None:
    dx_mm = GEOMETRY.dx_m * 1e3
    here = tissue_scatterers(GEOMETRY, speckle_seed=7, lateral_offset_mm=2.0)
    moved = tissue_scatterers(GEOMETRY, speckle_seed=7, lateral_offset_mm=2.0 + 10 * dx_mm)
    # the probe moved 10 pixels to the right: the tissue appears 10 columns to the left
    np.testing.assert_array_equal(moved.amplitude[:, :-10], here.amplitude[:, 10:])
    np.testing.assert_array_equal(moved.offset[:, :-10], here.offset[:, 10:])
    other_slice = tissue_scatterers(GEOMETRY, speckle_seed=7, lateral_offset_mm=2.0,
                                    elevation_offset_mm=3.0)
    other_phantom = tissue_scatterers(GEOMETRY, speckle_seed=8, lateral_offset_mm=2.0)
    for other in (other_slice, other_phantom):
        r = np.corrcoef(other.amplitude.ravel(), here.amplitude.ravel())[0, 1]
        assert abs(r) < 0.05


def test_frames_inside_the_push_artefact_window_are_corrupted() -> None:
    scatterers = tissue_scatterers(GEOMETRY, speckle_seed=2)
    times = np.array([-1e-4, 0.02e-3, PUSH_ARTEFACT_DURATION_S])  # reference, early, default start
    iq = image_domain_iq(_zero_motion(3), scatterers, GEOMETRY, snr_db=None,
                         rng=np.random.default_rng(0), time_after_push_s=times)
    power = np.mean(np.abs(iq.astype(np.complex128)) ** 2, axis=(1, 2))
    assert power[1] > 10 * power[0]  # reverberation ~ +20 dB at 20 us
    np.testing.assert_array_equal(iq[2], iq[0])  # from 0.13 ms on: nothing added


def test_bad_displacement_is_refused() -> None:
    scatterers = tissue_scatterers(GEOMETRY, speckle_seed=2)
    motion = _zero_motion(2)
    motion[1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        image_domain_iq(motion, scatterers, GEOMETRY, snr_db=None, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="padded grid"):
        image_domain_iq(motion[:, 1:], scatterers, GEOMETRY, snr_db=None,
                        rng=np.random.default_rng(0))


def test_axial_psf_sum_is_finite_on_coarse_grids_and_matches_the_recursion() -> None:
    """A pulse narrower than a pixel used to overflow float32 (inf * 0 -> NaN in the IQ)."""
    import warnings

    from drivers.ultrasound.sim_imaging import _axial_sum, _axial_sum_direct

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((30, 5)) + 1j * rng.standard_normal((30, 5))).astype(np.complex64)
    off = rng.uniform(-0.5, 0.5, (30, 5)).astype(np.float32)
    for sigma in (1.2, 3.0):  # where the recursion is used, both agree
        taps = int(np.ceil(4 * sigma))
        a = _axial_sum(w, off, sigma, taps)
        b = _axial_sum_direct(w, off, np.float32(sigma**2), taps)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coarse = _axial_sum(w, off, 0.1, 2)
    assert np.isfinite(coarse).all()
    np.testing.assert_allclose(np.abs(coarse), np.abs(w * np.exp(-0.5 * off**2 / 0.01)), rtol=1e-4,
                               atol=1e-6)  # only the own row contributes at sigma = 0.1 px
