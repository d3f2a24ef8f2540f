"""2.5-D shear-wave model against physics: elevation spreading of the push's field.

The push beam is finite in elevation (the lens), the phantoms are invariant along it, so the
field in the image plane is the k_y-integral of 2-D problems (see ``sim_shear``). Checked here:
the extra geometric decay with distance, the unchanged speed, the 2-D limit of a very wide
elevation beam, the convergence of the k_y quadrature and the reference displacement level.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.ultrasound.sequences import ProbeModel, PushSequence
from drivers.ultrasound.sim_shear import ElevationLens, elevation_quadrature, simulate_shear_wave
from lab.gelatin import DENSITY_KG_M3, gelatin_viscosity_pa_s, youngs_modulus_kpa

PROBE = ProbeModel()
PUSH = PushSequence(center_element=40)
X_PUSH_M = PROBE.element_lateral_mm(40) * 1e-3
DEPTH_M = np.array([10e-3])
R_M = np.arange(0.0, 14.01e-3, 0.5e-3)  # lateral distance from the push centre
TIMES_S = np.arange(0.0, 5.5e-3, 10e-6)
MODULUS_KPA = 37.55  # elastic (eta = 0): the decay is geometric only


def _field(elevation: ElevationLens | None, **kw) -> np.ndarray:
    field = simulate_shear_wave(MODULUS_KPA, push=PUSH, probe=PROBE, times_s=TIMES_S,
                                depth_m=DEPTH_M, lateral_m=X_PUSH_M + R_M, elevation=elevation,
                                **kw)
    return field.displacement_m[:, 0, :].astype(np.float64)


@pytest.fixture(scope="module")
def line_source() -> np.ndarray:
    return _field(None)


@pytest.fixture(scope="module")
def lens_source() -> np.ndarray:
    return _field(ElevationLens())


def _decay_slope(u: np.ndarray, lo_m: float, hi_m: float) -> float:
    peak = np.abs(u).max(axis=0)
    sel = (R_M >= lo_m) & (R_M <= hi_m)
    return float(np.polyfit(np.log(R_M[sel]), np.log(peak[sel]), 1)[0])


def test_elevation_spreading_adds_cylindrical_decay(line_source, lens_source) -> None:
    # The push is a line source along depth (FWHM ~14 mm) that is also long in elevation in the
    # 2-D model: between 4 and 12 mm the wave is nearly planar (slope measured -0.12). With a
    # 1.5 mm elevation beam the source is a line along depth only, so the wave spreads
    # cylindrically in (lateral, elevation): peak ~ r^-1/2 once r exceeds the elevation width
    # (measured -0.53; the extra decay -0.40 over 2-5 mm, -0.40 over 8-14 mm). A point-like
    # source (r^-1) would need r beyond the push's depth extent (~14 mm).
    slope_2d = _decay_slope(line_source, 4e-3, 12e-3)
    slope_25d = _decay_slope(lens_source, 4e-3, 12e-3)
    assert -0.25 < slope_2d < 0.0
    assert slope_25d == pytest.approx(-0.5, abs=0.1)
    assert -0.55 < slope_25d - slope_2d < -0.3
    # the extra decay grows towards -1/2 with distance (the elevation width matters less)
    near = _decay_slope(lens_source, 2e-3, 5e-3) - _decay_slope(line_source, 2e-3, 5e-3)
    far = _decay_slope(lens_source, 8e-3, 14e-3) - _decay_slope(line_source, 8e-3, 14e-3)
    assert -0.55 < far < -0.3 and -0.55 < near < -0.3


def _speed_m_s(u: np.ndarray) -> float:
    velocity = np.gradient(u, TIMES_S, axis=0)
    i = np.clip(velocity.argmax(axis=0), 1, TIMES_S.size - 2)
    cols = np.arange(velocity.shape[1])
    y0, y1, y2 = velocity[i - 1, cols], velocity[i, cols], velocity[i + 1, cols]
    t_peak = TIMES_S[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (TIMES_S[1] - TIMES_S[0])
    sel = (R_M > 4e-3) & (R_M < 12e-3)
    return float(np.polyfit(t_peak[sel], R_M[sel], 1)[0])


def test_elevation_spreading_keeps_the_shear_speed(line_source, lens_source) -> None:
    # measured: 3.535 m/s (2-D), 3.473 m/s (2.5-D), expected 3.538 m/s
    c_expected = np.sqrt(MODULUS_KPA * 1e3 / (3 * DENSITY_KG_M3))
    c_2d, c_25d = _speed_m_s(line_source), _speed_m_s(lens_source)
    assert c_25d == pytest.approx(c_2d, rel=0.02)
    assert c_25d == pytest.approx(c_expected, rel=0.03)


def test_a_very_wide_elevation_beam_is_the_line_source(line_source) -> None:
    # aperture 2 m, focus 100 m: the force is ~100 mm wide in elevation, far wider than any
    # wave travels in 5.5 ms, so the image plane sees the 2-D line source (same on-axis force)
    wide = _field(ElevationLens(aperture_mm=2000.0, focus_mm=1e5))
    assert np.abs(wide - line_source).max() < 2e-3 * np.abs(line_source).max()


def test_elevation_quadrature_converges(lens_source) -> None:
    # the default truncation (tolerance 0.1) against a 10x finer one, which about doubles the
    # number of k_y nodes: the field changes by 0.93 % of its peak (elastic; 0.55 % with
    # eta = 0.2 Pa s, which damps the high wavenumbers)
    fine = _field(ElevationLens(tolerance=1e-2))
    assert np.abs(fine - lens_source).max() < 0.015 * np.abs(fine).max()


def test_quadrature_rebuilds_the_elevation_profile_within_the_reach() -> None:
    # sum_j w_j g_hat(k_j) cos(k_j y) is the elevation profile repeated every 2 pi / dk: equal
    # to the Gaussian within the reach (no image there), equal to its image one period away
    sigma = np.full(5, 0.6e-3)
    reach = 20e-3
    k, w = elevation_quadrature(sigma, np.ones(5), reach_m=reach, tolerance=1e-3)
    period = 2 * np.pi / k[1]
    assert period >= reach + 4 * sigma[0]
    y = np.linspace(0.0, reach, 401)
    g_hat = np.sqrt(2 * np.pi) * sigma[0] * np.exp(-0.5 * (k * sigma[0]) ** 2)
    rebuilt = (w * g_hat) @ np.cos(np.outer(k, y))
    assert rebuilt == pytest.approx(np.exp(-0.5 * (y / sigma[0]) ** 2), abs=2e-3)
    image = (w * g_hat) @ np.cos(k * period)
    assert image == pytest.approx(1.0, abs=2e-3)
    with pytest.raises(ValueError, match="tolerance"):
        ElevationLens(tolerance=0.0)
    with pytest.raises(ValueError, match="> 0 mm"):
        ElevationLens(aperture_mm=-1.0)


@pytest.mark.parametrize(("percent", "low_um", "high_um"), [(5.0, 20.0, 32.0), (17.5, 6.0, 11.0)])
def test_reference_level_gives_the_documented_peak_displacement(
    percent: float, low_um: float, high_um: float
) -> None:
    # ~26 um at 17 kPa to ~8 um at 126 kPa for 120 V at the first frame (0.13 ms after the push)
    times = 0.13e-3 + np.arange(3) / 7000.0
    depth = np.linspace(1e-3, 20e-3, 39)
    lateral = X_PUSH_M + np.linspace(-3e-3, 3e-3, 31)
    field = simulate_shear_wave(youngs_modulus_kpa(percent), push=PUSH, probe=PROBE,
                                times_s=times, depth_m=depth, lateral_m=lateral,
                                viscosity_pa_s=gelatin_viscosity_pa_s(percent))
    assert low_um < field.displacement_m.max() * 1e6 < high_um
