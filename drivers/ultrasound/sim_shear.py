"""Shear-wave physics of the SWEI simulator: ARF push and 2.5-D wave propagation.

What it models
--------------
The axial (depth) displacement ``u(x, y, z, t)`` (``x`` lateral, ``y`` elevation, ``z`` depth)
of a nearly incompressible Voigt solid, as a scalar wave equation with heterogeneous shear
modulus, seen in the image plane ``y = 0``::

    rho u_tt = div(mu grad u) + div(eta grad u_t) + f(x, y, z, t),    mu = E / 3 = rho c_s^2

- ``mu`` comes from the phantom's Young's modulus map (E = 3 mu, PHYSICS.md), sampled on the
  finite-difference (FD) grid, which extends past the field of view so inclusions just outside it
  still scatter. Fluxes use the harmonic mean of ``mu`` between nodes (continuous traction at an
  interface), so inclusions reflect and refract. The phantoms are invariant in elevation (blocks,
  cylindrical inclusions along ``y``).
- ``eta`` (Pa s) is the Voigt viscosity (dispersion and attenuation), one per phantom.
- ``f`` is the acoustic radiation force of the push: on for ``cycles / frequency`` seconds,
  laterally the push aperture (11 elements x pitch for the unfocused push of [SWEI], a top-hat
  with edges softened over one wavelength; a Gaussian of width ``lambda F#`` for a focused push),
  and in depth a Gaussian around ``focal_depth_mm`` whose FWHM is the depth of field
  ``7 lambda (z_f / D)^2`` of the aperture (for 11 x 0.29 mm at 7.5 MHz the natural focus
  ``D^2 / (4 lambda)`` is about 12 mm, which is why an unfocused push reaches 10 mm). In
  elevation it is the Gaussian beam of the probe's lens (:class:`ElevationLens`: 4.5 mm
  elements focused at 20 mm, force FWHM 1.5 mm at 10 mm depth). Its amplitude scales with
  voltage squared (force ~ intensity ~ V^2); the reference level gives peak displacements of
  ~26 um (17 kPa) to ~8 um (126 kPa) for 120 V at the first frame, below the lag-one aliasing
  limit c / (4 f) = 51 um of a fixed-reference Loupas estimate at 7.5 MHz (the level was
  raised 1.6x when the elevation spreading came in, which about halves the peak).
  The push beam is attenuated on its way down: the force (proportional to the local intensity)
  carries ``10^(-alpha f (z - z_f) / 10)`` with ``alpha`` in dB/(cm MHz) (0.5 by default, a
  gelatin-graphite phantom; soft tissue 0.3-0.7), normalised at the focal depth so the
  reference level above stays the force at the focus: shallower tissue is pushed harder and
  deeper tissue less, and the force peak moves a few mm above the focus.
- Boundaries: the probe face (depth 0) is rigid (``u = 0``: the probe does not move during the
  5 ms record); the other three sides end in absorbing sponge layers that stand for the rest of
  the 100 mm block.

2.5-D: since the medium does not change along ``y``, a Fourier transform in elevation is
exact: each wavenumber ``k_y`` obeys the 2-D equation with the extra terms ``-mu k_y^2 u`` and
``-eta k_y^2 u_t``, driven by the force's elevation spectrum, and the image plane sees
``u(y = 0) = (1 / pi) int_0^inf u_hat(k_y) dk_y``. The integral is a trapezoid rule
(:func:`elevation_quadrature`) whose period in elevation exceeds the distance the fastest wave
travels by the last output time, so the periodic images that the rule implies never reach the
image plane; it stops where the left-out spectrum is below ``ElevationLens.tolerance`` (0.1)
of the peak force, which changes the field by about 1 % of its peak at most (against a
tolerance of 0.01: 0.93 % elastic, 0.55 % with eta = 0.2 Pa s, at 37.55 kPa); 13 (7.5 %) to
19 (15 %) wavenumbers on the default demo grid.
``elevation=None`` gives the former 2-D line source (infinite in elevation), which decays much
more slowly with distance (slope -0.12 instead of -0.53 of log peak vs log r over 4-12 mm).

Numerics: second-order centred differences in space, leapfrog in time with the viscous term on
the backward velocity, the ``k_y`` terms trapezoidal (implicit, unconditionally stable, so they
do not shorten the step); the time step satisfies the von Neumann bound of the in-plane scheme,
``2 c^2 dt^2 / h^2 + 4 (eta / rho) dt / h^2 <= 1`` (with a 0.9 margin). The FD grid is coarser
than the pixel grid: by default ``h = c_min * 60 us`` clipped to 0.1-0.2 mm (15 nodes per
wavelength at 1.1 kHz; the velocity time-to-peak speed of a 17 kPa medium is then within ~1 %);
frames are interpolated to the output times (linear in time) and pixel centres (cubic
convolution, separable). The time loop of all wavenumbers runs in one compiled kernel
(:mod:`drivers.ultrasound._shear_numba`), the wavenumbers in two groups on two threads where
Numba has them (a fixed split, so the result does not depend on the thread count).

What it does not model: the in-plane pressure coupling and the lateral displacement component
(P-SV physics), elevation changes of the phantom, the on-axis intensity gain of the elevation
focus (the on-axis force is the depth profile above), heating, nonlinear elasticity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import scipy.sparse
from numpy.typing import NDArray

from drivers.ultrasound.sequences import SOUND_SPEED_M_S, ProbeModel, PushSequence
from lab.gelatin import DENSITY_KG_M3, shear_wave_speed_m_s

__all__ = [
    "REFERENCE_FORCE_N_M3",
    "ElevationLens",
    "ShearWaveField",
    "elevation_quadrature",
    "push_force_profile",
    "simulate_shear_wave",
]

#: Peak ARF body force (N/m^3) of a 120 V push: ~26 um peak at 17 kPa, ~8 um at 126 kPa.
REFERENCE_FORCE_N_M3 = 2.4e5
REFERENCE_VOLTAGE_V = 120.0
#: Acoustic attenuation of the push beam in dB/(cm MHz) (gelatin with graphite; our choice).
ATTENUATION_DB_CM_MHZ = 0.5

#: The elevation period of the quadrature exceeds ``margin x c_max x t_end`` (see notes).
ELEVATION_REACH_MARGIN = 1.1

ModulusMap = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.floating]]


@dataclass(frozen=True)
class ElevationLens:
    """Elevation beam of the push: the probe's cylindrical lens (Gaussian-beam model).

    The paper does not give the lens; the defaults are our choice for a 7.5 MHz linear array of
    the L7-4 / L11-4 class: elements ``aperture_mm`` = 4.5 mm high, lens focus ``focus_mm`` =
    20 mm. The force (proportional to intensity) is ``exp(-2 y^2 / w(z)^2)`` in elevation ``y``,
    with the Gaussian-beam radius ``w(z) = w0 sqrt(1 + ((z - z_e) / z_R)^2)``, waist
    ``w0 = lambda z_e / (pi a)`` (``a`` = half the aperture, so ``w(0) ~ a`` at the face) and
    Rayleigh range ``z_R = pi w0^2 / lambda``: at 7.5 MHz the force's elevation FWHM is 1.5 mm
    at the 10 mm push depth and 0.7 mm at the lens focus. The on-axis (y = 0) force is
    :func:`push_force_profile`.

    Attributes
    ----------
    aperture_mm, focus_mm : float
        Element height (elevation aperture) and lens focal depth (mm), > 0.
    tolerance : float
        Truncation level of the elevation-wavenumber quadrature (see
        :func:`elevation_quadrature`), in (0, 0.5).
    """

    aperture_mm: float = 4.5
    focus_mm: float = 20.0
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        if not (self.aperture_mm > 0 and self.focus_mm > 0):
            raise ValueError(f"elevation aperture and focus must be > 0 mm, got "
                             f"{self.aperture_mm} and {self.focus_mm}")
        if not 0 < self.tolerance < 0.5:
            raise ValueError(f"elevation tolerance must be in (0, 0.5), got {self.tolerance}")

    def force_sigma_m(
        self, z_m: NDArray[np.floating], frequency_hz: float, sound_speed: float = SOUND_SPEED_M_S
    ) -> NDArray[np.float64]:
        """Standard deviation (m) of the force's Gaussian elevation profile at depths ``z_m``."""
        wavelength = sound_speed / frequency_hz
        ze = self.focus_mm * 1e-3
        w0 = wavelength * ze / (np.pi * self.aperture_mm * 1e-3 / 2)
        z_r = np.pi * w0**2 / wavelength
        w = w0 * np.sqrt(1.0 + ((np.asarray(z_m, dtype=np.float64) - ze) / z_r) ** 2)
        return w / 2.0


def elevation_quadrature(
    sigma_m: NDArray[np.floating], weight: NDArray[np.floating], *, reach_m: float,
    tolerance: float = 1e-2,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Nodes (rad/m) and weights of ``u(y = 0) = (1 / pi) int_0^inf u_hat(k_y) dk_y``.

    The trapezoid rule of step ``dk = 2 pi / L`` is exact for the field of the source repeated
    every ``L`` in elevation (its images); with ``L = reach_m + 4 max sigma`` no image's wave
    reaches the image plane within the simulated time (``reach_m`` = the fastest speed times
    the last output time), so the rule adds no error there. The rule stops at the ``k_max``
    where the force's spectrum ``exp(-k^2 sigma^2 / 2)`` left out, relative to the peak force,
    is below ``tolerance`` at every depth: ``weight(z) erfc(k_max sigma(z) / sqrt 2) <= tol``.

    Parameters
    ----------
    sigma_m, weight : ndarray, shape (depth,)
        Elevation standard deviation of the force (m) and the on-axis force (any unit) per depth.
    reach_m : float
        Farthest distance a wave travels within the simulation (m), >= 0.
    tolerance : float
        Truncation level (relative to the peak force).

    Returns
    -------
    k_y, weights : ndarray, shape (K,)
        Nodes ``j dk`` (j = 0 .. K-1, rad/m) and weights ``dk / pi`` (half at ``k = 0``).
    """
    from scipy.special import erfcinv

    sigma = np.asarray(sigma_m, dtype=np.float64)
    rel = np.asarray(weight, dtype=np.float64)
    rel = rel / rel.max()
    active = rel > tolerance
    k_max = float(np.max(np.sqrt(2.0) * erfcinv(tolerance / rel[active]) / sigma[active]))
    period = reach_m + 4.0 * float(sigma[active].max())
    dk = 2.0 * np.pi / period
    n = int(np.ceil(k_max / dk)) + 1
    k_y = np.arange(n) * dk
    weights = np.full(n, dk / np.pi)
    weights[0] *= 0.5
    return k_y, weights


@dataclass(frozen=True)
class ShearWaveField:
    """True axial displacement of a push sequence on the pixel grid.

    Attributes
    ----------
    displacement_m : ndarray, shape (frame, depth, lateral), float32
        Axial displacement in m at each requested time; positive = away from the probe (the
        push direction).
    youngs_modulus_kpa : ndarray, shape (depth, lateral), float32
        Young's modulus at the pixel centres (kPa).
    times_s : ndarray, shape (frame,)
        Output times after the end of the push (s).
    depth_m, lateral_m : ndarray
        Pixel centres (m).
    grid_step_m, time_step_s : float
        FD grid spacing and time step used.
    """

    displacement_m: NDArray[np.float32]
    youngs_modulus_kpa: NDArray[np.float32]
    times_s: NDArray[np.float64]
    depth_m: NDArray[np.float64]
    lateral_m: NDArray[np.float64]
    grid_step_m: float
    time_step_s: float


def push_force_profile(
    x_m: NDArray[np.floating], z_m: NDArray[np.floating], *, push: PushSequence, probe: ProbeModel,
    sound_speed: float = SOUND_SPEED_M_S, attenuation_db_cm_mhz: float = ATTENUATION_DB_CM_MHZ,
) -> NDArray[np.float64]:
    """ARF body force of ``push`` at points (x, z), in N/m^3 (x, z broadcast; metres).

    See the module notes for the beam model. The value is the force while the push is on;
    ``attenuation_db_cm_mhz`` (>= 0) attenuates it with depth relative to the focal depth.
    """
    if not attenuation_db_cm_mhz >= 0:
        raise ValueError(f"attenuation must be >= 0 dB/(cm MHz), got {attenuation_db_cm_mhz}")
    x = np.asarray(x_m, dtype=np.float64)
    z = np.asarray(z_m, dtype=np.float64)
    wavelength = sound_speed / push.frequency_hz
    aperture = push.aperture_elements * probe.pitch_mm * 1e-3
    x0 = probe.element_lateral_mm(push.center_element) * 1e-3
    zf = push.focal_depth_mm * 1e-3
    if push.focusing == "unfocused":
        from scipy.special import erf

        s = wavelength / np.sqrt(2.0)
        lateral = 0.5 * (erf((x - x0 + aperture / 2) / s) - erf((x - x0 - aperture / 2) / s))
    else:
        fwhm_x = max(wavelength * zf / aperture, wavelength)
        lateral = np.exp(-4.0 * np.log(2.0) * ((x - x0) / fwhm_x) ** 2)
    fwhm_z = 7.0 * wavelength * (zf / aperture) ** 2
    depth = np.exp(-4.0 * np.log(2.0) * ((z - zf) / fwhm_z) ** 2)
    amplitude = REFERENCE_FORCE_N_M3 * (push.voltage_v / REFERENCE_VOLTAGE_V) ** 2
    loss_db = attenuation_db_cm_mhz * (push.frequency_hz * 1e-6) * (z - zf) * 1e2
    return amplitude * lateral * depth * 10.0 ** (-loss_db / 10.0)


def _cubic_matrix(
    src0: float, step: float, n_src: int, targets: NDArray[np.float64], *, odd_start: bool = False
) -> NDArray[np.float64]:
    """Dense (target, source) matrix of Keys cubic-convolution interpolation (a = -0.5).

    ``odd_start``: node 0 is a Dirichlet boundary (u = 0); the missing node -1 is its odd
    mirror ``-u[1]``, so targets between nodes 0 and 1 are allowed.
    """
    pos = (np.asarray(targets, dtype=np.float64) - src0) / step
    lowest = 0.0 if odd_start else 1.0
    if pos.min() < lowest or pos.max() > n_src - 2.0:
        raise ValueError("interpolation targets must lie inside the FD grid (one node margin)")
    i0 = np.floor(pos).astype(np.int64)
    t = pos - i0
    m = np.zeros((pos.size, n_src), dtype=np.float64)
    rows = np.arange(pos.size)
    a = -0.5
    for k, d in zip((-1, 0, 1, 2), (1 + t, t, 1 - t, 2 - t), strict=True):
        d = np.abs(d)
        w = np.where(
            d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
        )
        node = i0 + k
        mirrored = node < 0
        np.add.at(m, (rows, np.where(mirrored, -node, node)), np.where(mirrored, -w, w))
    return m


def simulate_shear_wave(
    youngs_modulus_kpa: float | ModulusMap,
    *,
    push: PushSequence,
    probe: ProbeModel,
    times_s: NDArray[np.floating],
    depth_m: NDArray[np.floating],
    lateral_m: NDArray[np.floating],
    viscosity_pa_s: float = 0.0,
    density_kg_m3: float = DENSITY_KG_M3,
    grid_step_mm: float | None = None,
    margin_mm: float = 3.0,
    sponge_mm: float = 10.0,
    time_step_s: float | None = None,
    elevation: ElevationLens | None = ElevationLens(),
) -> ShearWaveField:
    """Simulate the shear wave of one push; true axial displacement at ``times_s`` on a pixel grid.

    The displacement is that of the image plane (elevation 0) of the 2.5-D model, or of the 2-D
    model with ``elevation=None``.

    Parameters
    ----------
    youngs_modulus_kpa : float or callable
        Homogeneous Young's modulus (kPa), or ``f(lateral_m, depth_m) -> E_kPa`` evaluated on
        broadcast arrays in image coordinates (m; lateral 0 = probe centre, depth 0 = probe face).
    push : PushSequence
        Push (position, aperture, voltage, cycles, depth).
    probe : ProbeModel
        Probe geometry (element positions).
    times_s : ndarray, shape (frame,)
        Output times after the END of the push (s), >= 0.
    depth_m, lateral_m : ndarray, shape (depth,), (lateral,)
        Pixel centres (m), increasing; depth >= 0.
    viscosity_pa_s : float
        Voigt shear viscosity eta (Pa s), >= 0.
    density_kg_m3 : float
        Density rho (kg/m^3).
    grid_step_mm : float, optional
        FD grid spacing (mm); default ``c_min * 60 us`` clipped to [0.1, 0.2] mm (see notes).
    margin_mm, sponge_mm : float
        Medium simulated beyond the pixel grid before the absorbing layer, and the layer's
        thickness (mm).
    time_step_s : float, optional
        FD time step; default the stable step times 0.9. A larger value than the stability bound
        is refused (useful to run two media with the same step).
    elevation : ElevationLens or None
        Elevation beam of the push (2.5-D model, see the module notes); None = a 2-D line
        source, infinite in elevation.

    Returns
    -------
    ShearWaveField
        ``displacement_m`` (frame, depth, lateral) float32 m, positive away from the probe, and
        the modulus map at the pixels.

    Raises
    ------
    ValueError
        A modulus map with NaN, infinite or non-positive values; negative times; an empty or
        unordered pixel grid; non-physical parameters.
    """
    times = np.asarray(times_s, dtype=np.float64).ravel()
    zp = np.asarray(depth_m, dtype=np.float64).ravel()
    xp = np.asarray(lateral_m, dtype=np.float64).ravel()
    if times.size == 0 or np.any(~np.isfinite(times)) or times.min() < 0:
        raise ValueError("times_s must be finite, non-empty and >= 0 s after the push")
    if zp.size == 0 or xp.size == 0:
        raise ValueError("depth_m and lateral_m must not be empty")
    if np.any(np.diff(zp) <= 0) or np.any(np.diff(xp) <= 0) or zp[0] < 0:
        raise ValueError("depth_m and lateral_m must be increasing and depth_m >= 0")
    if viscosity_pa_s < 0 or not np.isfinite(viscosity_pa_s):
        raise ValueError(f"viscosity must be finite and >= 0 Pa s, got {viscosity_pa_s}")
    if density_kg_m3 <= 0 or margin_mm < 0 or sponge_mm <= 0:
        raise ValueError("density and sponge_mm must be > 0, margin_mm >= 0")
    if grid_step_mm is not None and not grid_step_mm > 0:
        raise ValueError(f"grid_step_mm must be > 0, got {grid_step_mm}")

    rho = float(density_kg_m3)
    modulus_pix = _modulus_on(youngs_modulus_kpa, xp[None, :], zp[:, None], "pixel grid")
    if grid_step_mm is None:
        c_min = shear_wave_speed_m_s(float(modulus_pix.min()), rho)
        h = float(np.clip(c_min * 60e-6, 0.1e-3, 0.2e-3))
    else:
        h = grid_step_mm * 1e-3
    pad = (margin_mm + sponge_mm) * 1e-3
    x_push = probe.element_lateral_mm(push.center_element) * 1e-3
    half_ap = push.aperture_elements * probe.pitch_mm * 1e-3 / 2
    x_lo = min(xp[0], x_push - half_ap) - pad
    x_hi = max(xp[-1], x_push + half_ap) + pad
    # the absorbing layer must start below the push beam (focus + one depth-of-field FWHM)
    zf = push.focal_depth_mm * 1e-3
    beam_bottom = zf + 7.0 * (SOUND_SPEED_M_S / push.frequency_hz) * (zf / (2 * half_ap)) ** 2
    z_hi = max(zp[-1], beam_bottom) + pad
    nx = int(np.ceil((x_hi - x_lo) / h)) + 1
    nz = int(np.ceil(z_hi / h)) + 1
    xg = x_lo + np.arange(nx) * h
    zg = np.arange(nz) * h  # node 0 = probe face

    modulus_grid = _modulus_on(youngs_modulus_kpa, xg[None, :], zg[:, None], "FD grid")
    mu = modulus_grid * 1e3 / 3.0  # Pa
    c_max = float(np.sqrt(mu.max() / rho))
    nu = viscosity_pa_s / rho
    # von Neumann bound of leapfrog + backward-velocity viscosity: 2 c^2 dt^2 + 4 nu dt <= h^2
    dt_stable = (-4 * nu + np.sqrt(16 * nu**2 + 8 * c_max**2 * h**2)) / (4 * c_max**2)
    if time_step_s is None:
        dt = 0.9 * dt_stable
    elif 0 < time_step_s <= dt_stable:
        dt = float(time_step_s)
    else:
        raise ValueError(f"time_step_s {time_step_s} s is outside (0, {dt_stable:.3g}] s, the "
                         f"stability bound for c = {c_max:.2f} m/s on a {h * 1e3:.3f} mm grid")

    # sponge: velocity damping gamma rising quadratically over the layer (sides and bottom)
    sponge = sponge_mm * 1e-3
    dist_x = np.maximum.reduce([x_lo + sponge - xg, xg - (x_hi - sponge), np.zeros(nx)])
    dist_z = np.maximum(zg - (z_hi - sponge), 0.0)
    ramp = np.maximum((dist_x[None, :] / sponge) ** 2, (dist_z[:, None] / sponge) ** 2)
    gamma_max = min(20.0 * c_max / sponge, 0.5 / dt)
    keep = (1.0 - gamma_max * dt * ramp).astype(np.float32)

    # flux coefficients (harmonic mean of mu between nodes), scaled by dt^2 / (rho h^2), on the
    # padded layout of the kernel (one ghost column each side, one ghost row below; ghost faces 0)
    kern = _kernel()
    scale = dt**2 / (rho * h**2)
    bv = viscosity_pa_s * dt / (rho * h**2)
    coef = np.zeros((nz, 6, nx + 2), dtype=np.float32)
    coef[:, kern.AX, 1:nx] = scale * 2 * mu[:, 1:] * mu[:, :-1] / (mu[:, 1:] + mu[:, :-1])
    coef[:-1, kern.AZ, 1:-1] = scale * 2 * mu[1:, :] * mu[:-1, :] / (mu[1:, :] + mu[:-1, :])
    coef[:, kern.BX, 1:nx] = bv
    coef[:, kern.KEEP, :] = 1.0
    coef[:, kern.KEEP, 1:-1] = keep
    coef[:, kern.MU, 1:-1] = mu * dt**2 / rho
    coef[1:, kern.FORCE, 1:-1] = (push_force_profile(xg[None, :], zg[1:, None], push=push,
                                                     probe=probe) * dt**2 / rho)
    bz = np.full(nz, bv, dtype=np.float32)
    bz[-1] = 0.0

    t_push = push.duration_s
    t_out = t_push + times
    if elevation is None:
        k_y, k_weights = np.zeros(1), np.ones(1)
        force_k = np.ones((nz, 1))
    else:
        sigma_y = elevation.force_sigma_m(zg, push.frequency_hz)
        depth_weight = push_force_profile(x_push, zg, push=push, probe=probe)
        k_y, k_weights = elevation_quadrature(
            sigma_y, depth_weight, reach_m=ELEVATION_REACH_MARGIN * c_max * float(t_out.max()),
            tolerance=elevation.tolerance)
        # elevation spectrum of the force at each depth: FT of exp(-y^2 / (2 sigma^2))
        force_k = np.sqrt(2 * np.pi) * sigma_y[:, None] * np.exp(
            -0.5 * (k_y[None, :] * sigma_y[:, None]) ** 2)
    # output time t lies in ((n - 1) dt, n dt]: linear in time between steps n - 1 and n
    step = np.maximum(np.ceil(t_out / dt - 1e-9).astype(np.int64), 0)
    frac = np.where(step > 0, 1.0 - (step * dt - t_out) / dt, 1.0)
    needed = np.unique(np.concatenate([step, np.maximum(step - 1, 0)]))
    n_steps = int(needed.max()) + 1
    record = np.full(n_steps, -1, dtype=np.int64)
    record[needed] = np.arange(needed.size)
    steps = np.arange(n_steps) * dt
    on = np.clip((t_push - steps) / dt, 0.0, 1.0).astype(np.float32)  # midpoint rule per step
    # the wavenumbers in kern.GROUPS groups run in parallel (zero-weight padding evens them)
    groups = kern.GROUPS if k_y.size > 1 else 1
    per_group = -(-k_y.size // groups)
    pad = groups * per_group - k_y.size
    k_pad = np.concatenate([k_y, np.full(pad, k_y[-1])])
    w_pad = np.concatenate([k_weights, np.zeros(pad)])
    fk_pad = np.concatenate([force_k, np.repeat(force_k[:, -1:], pad, axis=1)], axis=1)

    def grouped(a: NDArray[np.float64]) -> NDArray[np.float32]:
        return a.reshape(groups, per_group).astype(np.float32)

    buffers = np.zeros((groups, 3, nz + 1, per_group, nx + 2), dtype=np.float32)
    snapshots = np.zeros((groups, needed.size, nz, nx), dtype=np.float32)
    kern.leapfrog_groups(
        buffers, coef, bz, grouped(k_pad**2),
        grouped(viscosity_pa_s * k_pad**2 * dt / (2 * rho)),
        np.ascontiguousarray(fk_pad.reshape(nz, groups, per_group).transpose(1, 0, 2),
                             dtype=np.float32),
        on, record, grouped(w_pad), snapshots)
    snapshots = snapshots.sum(axis=0)
    frames = (frac[:, None, None].astype(np.float32) * snapshots[record[step]]
              + (1.0 - frac[:, None, None]).astype(np.float32)
              * snapshots[record[np.maximum(step - 1, 0)]])
    # sparse (4 taps per row) cubic interpolation operators to the pixel centres
    wz = scipy.sparse.csr_matrix(_cubic_matrix(zg[0], h, nz, zp, odd_start=True), dtype=np.float32)
    wx = scipy.sparse.csr_matrix(_cubic_matrix(xg[0], h, nx, xp), dtype=np.float32)
    displacement = np.empty((times.size, zp.size, xp.size), dtype=np.float32)
    for k in range(times.size):
        displacement[k] = wz @ (wx @ frames[k].T).T

    return ShearWaveField(
        displacement_m=displacement,
        youngs_modulus_kpa=modulus_pix.astype(np.float32),
        times_s=times,
        depth_m=zp,
        lateral_m=xp,
        grid_step_m=h,
        time_step_s=float(dt),
    )


def _kernel() -> ModuleType:
    """The compiled leapfrog kernel (imported lazily: importing Numba costs ~0.5 s)."""
    from drivers.ultrasound import _shear_numba

    return _shear_numba


def _modulus_on(
    youngs_modulus_kpa: float | ModulusMap,
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    where: str,
) -> NDArray[np.float64]:
    shape = np.broadcast_shapes(x.shape, z.shape)
    if callable(youngs_modulus_kpa):
        e = np.broadcast_to(np.asarray(youngs_modulus_kpa(x, z), dtype=np.float64), shape)
    else:
        e = np.full(shape, float(youngs_modulus_kpa))
    bad = ~np.isfinite(e)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"modulus map has {int(bad.sum())} NaN/infinite values on the {where} (first at "
            f"depth {float(z.ravel()[i]) * 1e3:.2f} mm, lateral {float(x.ravel()[j]) * 1e3:.2f} mm)"
        )
    if np.any(e <= 0):
        raise ValueError(f"modulus map must be > 0 kPa everywhere on the {where}, min {e.min()}")
    return np.array(e, dtype=np.float64)
