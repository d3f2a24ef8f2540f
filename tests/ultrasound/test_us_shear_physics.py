"""Shear-wave simulator against physics: c = sqrt(E / 3 rho), reflection at a stiff inclusion."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sequences import ProbeModel, PushSequence
from drivers.ultrasound.sim_shear import simulate_shear_wave
from lab.gelatin import DENSITY_KG_M3

PROBE = ProbeModel()
PUSH = PushSequence(center_element=40)
X_PUSH_M = PROBE.element_lateral_mm(40) * 1e-3
DEPTH_M = np.array([10e-3])  # push depth
DT_OUT_S = 10e-6


def _time_to_peak_s(signal: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Peak time of each column of (time, x), refined by a parabola through the peak sample."""
    i = np.clip(signal.argmax(axis=0), 1, signal.shape[0] - 2)
    cols = np.arange(signal.shape[1])
    y0, y1, y2 = signal[i - 1, cols], signal[i, cols], signal[i + 1, cols]
    return times[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (times[1] - times[0])


def _velocity_along_push_depth(
    modulus, lateral_m: np.ndarray, t_end_s: float, eta: float = 0.0, **kw
):
    times = np.arange(0.0, t_end_s, DT_OUT_S)
    field = simulate_shear_wave(modulus, push=PUSH, probe=PROBE, times_s=times, depth_m=DEPTH_M,
                                lateral_m=lateral_m, viscosity_pa_s=eta, **kw)
    u = field.displacement_m[:, 0, :].astype(np.float64)
    return times, np.gradient(u, times, axis=0), field


@pytest.mark.parametrize("youngs_modulus_kpa", [17.42, 37.55, 72.64, 126.05])
def test_speed_from_true_displacement_matches_sqrt_e_over_3rho(youngs_modulus_kpa: float) -> None:
    c_expected = np.sqrt(youngs_modulus_kpa * 1e3 / (3 * DENSITY_KG_M3))
    lateral = X_PUSH_M + np.arange(3e-3, 13e-3, 0.1e-3)
    times, velocity, field = _velocity_along_push_depth(youngs_modulus_kpa, lateral,
                                                        t_end_s=14e-3 / c_expected + 1e-3)
    u = field.displacement_m
    # time to peak of the particle velocity (what propagates undistorted in 1-D) over 4-12 mm
    sel = (lateral - X_PUSH_M > 4e-3) & (lateral - X_PUSH_M < 12e-3)
    t_peak = _time_to_peak_s(velocity, times)[sel]
    c_measured = np.polyfit(t_peak, lateral[sel], 1)[0]
    assert c_measured == pytest.approx(c_expected, rel=0.03)
    # displacements are micrometres to tens of micrometres, in the push direction (+ depth)
    assert 1e-6 < u.max() < 50e-6
    assert u.max() > -u.min()


def test_stiff_inclusion_reflects_a_wave_back_towards_the_push() -> None:
    background_kpa = 37.55
    c_background = np.sqrt(background_kpa * 1e3 / (3 * DENSITY_KG_M3))
    phantom = BlockPhantom("incl", 7.5, inclusions=(Inclusion(
        x_mm=X_PUSH_M * 1e3 + 9.0, z_mm=10.0, radius_mm=3.0, gelatin_percent=15.0),))

    def with_inclusion(x_m, z_m):
        return phantom.modulus_map_kpa(x_m * 1e3, z_m * 1e3)

    lateral = X_PUSH_M + np.arange(2.5e-3, 5.6e-3, 0.1e-3)  # between push and inclusion edge
    t_end = 5e-3
    times, v_incl, field = _velocity_along_push_depth(with_inclusion, lateral, t_end)
    # same grid and time step for the reference, so the difference is the scattered wave only
    _, v_homog, _ = _velocity_along_push_depth(background_kpa, lateral, t_end,
                                               grid_step_mm=field.grid_step_m * 1e3,
                                               time_step_s=field.time_step_s)
    scattered = v_incl - v_homog
    direct_peak = np.abs(v_homog).max()
    # causality: nothing is scattered back before the wave front (leaving the aperture edge,
    # 1.6 mm from the push centre) can have reached the inclusion edge (6 mm) and come back
    front_m = PUSH.aperture_elements * PROBE.pitch_mm * 1e-3 / 2
    back_path_m = (6e-3 - front_m) + (6e-3 - (lateral - X_PUSH_M))
    since_push_start = times + PUSH.duration_s  # times_s count from the end of the push
    early = since_push_start[:, None] < (back_path_m / c_background - 0.1e-3)[None, :]
    assert np.abs(scattered[early]).max() < 0.02 * direct_peak
    # a reflected wave of clear amplitude (|R| = |Z1 - Z2| / (Z1 + Z2) ~ 0.23 at normal incidence)
    assert np.abs(scattered).max() > 0.05 * direct_peak
    # ... travelling back towards the push at the background speed
    t_peak = _time_to_peak_s(np.abs(scattered), times)
    c_back = np.polyfit(t_peak, lateral, 1)[0]
    assert c_back < 0
    assert -c_back == pytest.approx(c_background, rel=0.15)


def test_viscosity_attenuates_the_wave() -> None:
    lateral = X_PUSH_M + np.array([4e-3, 10e-3])
    _, v_elastic, _ = _velocity_along_push_depth(37.55, lateral, 5e-3, eta=0.0)
    _, v_viscous, _ = _velocity_along_push_depth(37.55, lateral, 5e-3, eta=1.0)
    decay_elastic = np.abs(v_elastic[:, 1]).max() / np.abs(v_elastic[:, 0]).max()
    decay_viscous = np.abs(v_viscous[:, 1]).max() / np.abs(v_viscous[:, 0]).max()
    assert decay_viscous < 0.9 * decay_elastic


def test_bad_modulus_maps_are_refused() -> None:
    kw = dict(push=PUSH, probe=PROBE, times_s=np.array([0.0, 1e-3]), depth_m=DEPTH_M,
              lateral_m=np.array([0.0, 1e-3]))

    def with_nan(x_m, z_m):
        e = np.full(np.broadcast_shapes(np.shape(x_m), np.shape(z_m)), 37.55)
        e[e.shape[0] // 2, e.shape[1] // 2] = np.nan
        return e

    with pytest.raises(ValueError, match="NaN"):
        simulate_shear_wave(with_nan, **kw)
    with pytest.raises(ValueError, match="> 0 kPa"):
        simulate_shear_wave(-5.0, **kw)
    with pytest.raises(ValueError, match="times_s"):
        simulate_shear_wave(37.55, **{**kw, "times_s": np.array([-1e-3])})


def test_push_force_is_attenuated_with_depth_at_the_stated_rate() -> None:
    from drivers.ultrasound.sim_shear import push_force_profile

    zf = PUSH.focal_depth_mm * 1e-3
    d = 4e-3
    z = np.array([zf - d, zf, zf + d])
    lossless = push_force_profile(X_PUSH_M, z, push=PUSH, probe=PROBE, attenuation_db_cm_mhz=0.0)
    lossy = push_force_profile(X_PUSH_M, z, push=PUSH, probe=PROBE, attenuation_db_cm_mhz=0.5)
    # the depth profile is symmetric about the focus, so the ratio of the two sides is the loss
    # over 2 d: 0.5 dB/(cm MHz) x 7.5 MHz x 0.8 cm = 3 dB of intensity
    assert lossless[0] == pytest.approx(lossless[2], rel=1e-12)
    assert lossy[2] / lossy[0] == pytest.approx(10 ** (-3.0 / 10), rel=1e-9)
    assert lossy[1] == pytest.approx(lossless[1], rel=1e-12)  # normalised at the focus
    with pytest.raises(ValueError, match="attenuation"):
        push_force_profile(X_PUSH_M, z, push=PUSH, probe=PROBE, attenuation_db_cm_mhz=-1.0)


def test_attenuation_moves_the_push_up_without_changing_the_speed() -> None:
    lateral = X_PUSH_M + np.array([3e-3, 6e-3])
    depth = np.linspace(1e-3, 20e-3, 39)
    times = np.arange(0.0, 4e-3, DT_OUT_S)
    field = simulate_shear_wave(37.55, push=PUSH, probe=PROBE, times_s=times, depth_m=depth,
                                lateral_m=np.array([X_PUSH_M]))
    peak_depth = depth[np.argmax(np.abs(field.displacement_m).max(axis=0)[:, 0])]
    assert peak_depth < PUSH.focal_depth_mm * 1e-3 - 1e-3  # the force peak sits above the focus
    t, v, _ = _velocity_along_push_depth(37.55, lateral, 4e-3)
    t_peak = _time_to_peak_s(v, t)
    c = (lateral[1] - lateral[0]) / (t_peak[1] - t_peak[0])
    assert c == pytest.approx(np.sqrt(37.55e3 / (3 * DENSITY_KG_M3)), rel=0.03)
