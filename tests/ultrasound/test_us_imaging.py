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


@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("snr_db", [10.0, 30.0])
def test_measured_snr_equals_requested(snr_db: float, coarse: bool) -> None:
    geometry = ImagingGeometry(PROBE, COARSE) if coarse else GEOMETRY
    scatterers = tissue_scatterers(geometry, speckle_seed=3)
    motion = np.zeros((2, geometry.padded_depth_m.size, geometry.padded_lateral_m.size),
                      dtype=np.float32)
    iq = image_domain_iq(motion, scatterers, geometry, snr_db=snr_db,
                         rng=np.random.default_rng(1)).astype(np.complex128)
    # same echoes in both frames: their difference is noise only (variance 2 sigma^2)
    noise_power = np.mean(np.abs(iq[1] - iq[0]) ** 2) / 2
    signal_power = np.mean(np.abs(iq[0]) ** 2) - noise_power
    assert 10 * np.log10(signal_power / noise_power) == pytest.approx(snr_db, abs=0.3)


#: The default demo's pixel grid (80 x 160 over 20 x 33 mm: 0.25 x 0.21 mm pixels), 10 x 10 mm.
COARSE = PlaneWaveSequence(depth_start_mm=5.0, fov_depth_mm=10.0, fov_lateral_mm=10.0, n_depth=40,
                           n_lateral=49, n_frames=1)


def _envelope_snr(sequence: PlaneWaveSequence, density: float) -> float:
    geometry = ImagingGeometry(PROBE, sequence)
    env = []
    for seed in range(3):
        scatterers = tissue_scatterers(geometry, speckle_seed=seed,
                                       scatterers_per_resolution_cell=density)
        motion = np.zeros((1, *scatterers.amplitude.shape[:2]), np.float32)
        iq = image_domain_iq(motion, scatterers, geometry, snr_db=None,
                             rng=np.random.default_rng(0))
        env.append(np.abs(iq[0]).astype(np.float64).ravel())
    e = np.concatenate(env)
    return float(e.mean() / e.std())


@pytest.mark.parametrize("sequence", [SMALL, COARSE])
def test_envelope_is_rayleigh_at_the_default_density(sequence: PlaneWaveSequence) -> None:
    # fully developed speckle: Rayleigh envelope, mean / std = sqrt(pi / (4 - pi)) = 1.913
    # (measured 1.91 and 1.91 at 10 per resolution cell; the estimate from three 10 x 10 mm
    # images scatters by about +-0.03)
    rayleigh = np.sqrt(np.pi / (4 - np.pi))
    assert _envelope_snr(sequence, 10.0) == pytest.approx(rayleigh, rel=0.04)


def test_one_scatterer_per_coarse_pixel_is_not_developed_speckle() -> None:
    # the former model (one scatterer per pixel) on the default demo grid: ~0.9 per resolution
    # cell, an envelope far from Rayleigh (measured 1.47)
    geometry = ImagingGeometry(PROBE, COARSE)
    assert geometry.scatterers_per_cell(10.0) == 11
    assert geometry.scatterers_per_cell(1.0) == 1
    assert _envelope_snr(COARSE, 1.0) < 1.6
    with pytest.raises(ValueError, match="scatterers_per_resolution_cell"):
        geometry.scatterers_per_cell(0.0)


def _displacement_snr_db(density: float, snr_db: float | None,
                         axial_kernel: int | None = None) -> float:
    """Loupas on a 10 um Gaussian bump against the truth: 20 log10(rms true / rms error)."""
    from analysis.displacement import loupas

    geometry = ImagingGeometry(PROBE, COARSE)
    zz, xx = np.meshgrid(geometry.padded_depth_m, geometry.padded_lateral_m, indexing="ij")
    bump = 10e-6 * np.exp(-((zz - 10e-3) ** 2 + xx**2) / (2 * (3e-3) ** 2))
    motion = np.stack([np.zeros_like(bump), bump]).astype(np.float32)
    true = geometry.crop(bump)
    err = []
    for seed in range(6):
        scatterers = tissue_scatterers(geometry, speckle_seed=seed,
                                       scatterers_per_resolution_cell=density)
        iq = image_domain_iq(motion, scatterers, geometry, snr_db=snr_db,
                             rng=np.random.default_rng(seed))
        u = loupas(iq, sampling_frequency=C / (2 * geometry.dz_m), modulation_frequency=F0,
                   sound_speed=C, axial_kernel=axial_kernel)[0]
        err.append(np.mean((u - true) ** 2))
    return float(10 * np.log10(np.mean(true**2) / np.mean(err)))


def test_displacement_snr_rises_with_density_towards_its_limit() -> None:
    # on the default demo's grid with 20 dB electronic SNR and a one-sample kernel, the phase of
    # single pixels (measured: -2.7, 0.4, 1.4 dB at 1, 10, 100 scatterers per resolution cell;
    # 7.6 dB without noise at 100): with few scatterers many pixels are dark and their phase is
    # the noise's
    sparse, default, dense = (_displacement_snr_db(d, 20.0, axial_kernel=1)
                              for d in (1.0, 10.0, 100.0))
    assert default > sparse + 1.5
    assert abs(dense - default) < 2.0
    # still below the noise-free limit
    assert dense < _displacement_snr_db(100.0, None, axial_kernel=1) - 3.0


def test_default_kernel_tracks_on_the_coarse_demo_grid() -> None:
    # the default kernel on 0.25 mm pixels is 3 samples, not the 1 that 1.5 wavelengths round
    # to: measured 11.0 dB against 0.4 dB for one sample (10 per resolution cell, 20 dB
    # electronic SNR; 16.4 dB without noise at 100 per cell)
    default = _displacement_snr_db(10.0, 20.0)
    assert default > 9.0
    assert default > _displacement_snr_db(10.0, 20.0, axial_kernel=1) + 8.0


def test_same_tissue_gives_same_speckle() -> None:
    dx_mm = GEOMETRY.dx_m * 1e3
    here = tissue_scatterers(GEOMETRY, speckle_seed=7, lateral_offset_mm=2.0)
    moved = tissue_scatterers(GEOMETRY, speckle_seed=7, lateral_offset_mm=2.0 + 10 * dx_mm)
    # the probe moved 10 pixels to the right: the tissue appears 10 columns to the left
    assert here.per_cell == 1  # 0.09 resolution cells per pixel: at least one scatterer
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


@pytest.mark.parametrize("sequence", [SMALL, COARSE])
def test_speckle_field_of_one_scatterer_is_its_echo(sequence: PlaneWaveSequence) -> None:
    from drivers.ultrasound.sim_imaging import Scatterers, speckle_field

    geometry = ImagingGeometry(PROBE, sequence)
    shape = (geometry.padded_depth_m.size, geometry.padded_lateral_m.size, 1)
    amplitude = np.zeros(shape, np.float32)
    offset = np.zeros(shape, np.float32)
    row, col = shape[0] // 2, 3
    amplitude[row, col, 0], offset[row, col, 0] = 1.5, 0.37
    speckle = speckle_field(Scatterers(amplitude, offset), geometry)
    zeta = geometry.padded_depth_m[row] + 0.37 * geometry.dz_m
    z = speckle.start_m + np.arange(speckle.field.shape[0]) * speckle.step_m
    k0 = 2 * np.pi * F0 / C
    echo = 1.5 * np.exp(-0.5 * ((z - zeta) / geometry.axial_sigma_m) ** 2) * np.exp(-2j * k0 * zeta)
    # within 2 % of the peak: the linear split on a sigma / 3 grid, the variance corrected
    assert np.abs(speckle.field[:, col] - echo).max() < 0.02 * 1.5
    assert np.abs(np.delete(speckle.field, col, axis=1)).max() == 0.0


@pytest.mark.parametrize("sequence", [SMALL, COARSE])
def test_moving_speckle_equals_the_moved_scatterers(sequence: PlaneWaveSequence) -> None:
    """The pre-convolved field shifted by u equals the exact echo sum of scatterers moved by u."""
    geometry = ImagingGeometry(PROBE, sequence)
    scatterers = tissue_scatterers(geometry, speckle_seed=4, scatterers_per_resolution_cell=10)
    zz, xx = np.meshgrid(geometry.padded_depth_m, geometry.padded_lateral_m, indexing="ij")
    u = (12e-6 * np.exp(-((zz - 9e-3) ** 2 + xx**2) / (2 * (2e-3) ** 2))).astype(np.float32)
    iq = image_domain_iq(u[None], scatterers, geometry, snr_db=None, rng=np.random.default_rng(0))
    # exact, in float64: every scatterer moved by the displacement of its own cell
    k0 = 2 * np.pi * F0 / C
    zeta = zz[..., None] + scatterers.offset.astype(np.float64) * geometry.dz_m + u[..., None]
    z = geometry.padded_depth_m[:, None, None, None]  # (pixel row, scatterer row, col, s)
    axial = np.sum(scatterers.amplitude[None] * np.exp(-2j * k0 * zeta[None])
                   * np.exp(-0.5 * ((z - zeta[None]) / geometry.axial_sigma_m) ** 2),
                   axis=(1, 3))
    kernel = geometry.lateral_kernel().astype(np.float64)
    exact = geometry.crop(np.apply_along_axis(np.convolve, 1, axial, kernel, mode="same"))
    err = iq[0].astype(np.complex128) - exact
    assert np.sqrt(np.mean(np.abs(err) ** 2) / np.mean(np.abs(exact) ** 2)) < 0.02
    # the phase the displacement turns agrees too (what the displacement estimator reads)
    rest = image_domain_iq(np.zeros_like(u)[None], scatterers, geometry, snr_db=None,
                           rng=np.random.default_rng(0))[0].astype(np.complex128)
    turned = np.angle(np.conj(rest) * iq[0])
    turned_exact = np.angle(np.conj(rest) * exact)
    assert np.median(np.abs(turned - turned_exact)) < 0.01
