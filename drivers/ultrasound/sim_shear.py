"""Shear-wave physics of the SWEI simulator: ARF push and 2-D wave propagation.

What it models
--------------
The axial (depth) displacement ``u(x, z, t)`` in the image plane (``x`` lateral, ``z`` depth) of
a nearly incompressible Voigt solid, as a scalar wave equation with heterogeneous shear modulus::

    rho u_tt = div(mu grad u) + div(eta grad u_t) + f(x, z, t),    mu = E / 3 = rho c_s^2

- ``mu`` comes from the phantom's Young's modulus map (E = 3 mu, PHYSICS.md), sampled on the
  finite-difference (FD) grid, which extends past the field of view so inclusions just outside it
  still scatter. Fluxes use the harmonic mean of ``mu`` between nodes (continuous traction at an
  interface), so inclusions reflect and refract.
- ``eta`` (Pa s) is the Voigt viscosity (dispersion and attenuation); uniform.
- ``f`` is the acoustic radiation force of the push: on for ``cycles / frequency`` seconds,
  laterally the push aperture (11 elements x pitch for the unfocused push of [SWEI], a top-hat
  with edges softened over one wavelength; a Gaussian of width ``lambda F#`` for a focused push),
  and in depth a Gaussian around ``focal_depth_mm`` whose FWHM is the depth of field
  ``7 lambda (z_f / D)^2`` of the aperture (for 11 x 0.29 mm at 7.5 MHz the natural focus
  ``D^2 / (4 lambda)`` is about 12 mm, which is why an unfocused push reaches 10 mm). Its
  amplitude scales with voltage squared (force ~ intensity ~ V^2); the reference level gives
  peak displacements of ~25 um (17 kPa) to ~9 um (126 kPa) for 120 V, below the lag-one
  aliasing limit c / (4 f) = 51 um of a fixed-reference Loupas estimate at 7.5 MHz.
  The push beam is attenuated on its way down: the force (proportional to the local intensity)
  carries ``10^(-alpha f (z - z_f) / 10)`` with ``alpha`` in dB/(cm MHz) (0.5 by default, a
  gelatin-graphite phantom; soft tissue 0.3-0.7), normalised at the focal depth so the
  reference level above stays the force at the focus: shallower tissue is pushed harder and
  deeper tissue less, and the force peak moves a few mm above the focus.
- Boundaries: the probe face (depth 0) is rigid (``u = 0``: the probe does not move during the
  5 ms record); the other three sides end in absorbing sponge layers that stand for the rest of
  the 100 mm block.

Numerics: second-order centred differences in space, leapfrog in time with the viscous term on
the backward velocity; the time step satisfies the von Neumann bound of this scheme,
``2 c^2 dt^2 / h^2 + 4 (eta / rho) dt / h^2 <= 1`` (with a 0.9 margin). The FD grid is coarser
than the pixel grid: by default ``h = c_min * 60 us`` clipped to 0.1-0.2 mm (15 nodes per
wavelength at 1.1 kHz; the velocity time-to-peak speed of a 17 kPa medium is then within ~1 %);
frames are interpolated to the output times (linear in time) and pixel centres (cubic
convolution, separable), which keeps a paper-size sequence well under a second.

What it does not model: the in-plane pressure coupling and the lateral displacement component
(P-SV physics), out-of-plane (elevation) spreading (a 2-D line source), heating, nonlinear
elasticity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from numpy.typing import NDArray

from drivers.ultrasound.sequences import SOUND_SPEED_M_S, ProbeModel, PushSequence
from lab.gelatin import DENSITY_KG_M3, shear_wave_speed_m_s

__all__ = [
    "REFERENCE_FORCE_N_M3",
    "ShearWaveField",
    "push_force_profile",
    "simulate_shear_wave",
]

#: Peak ARF body force (N/m^3) of a 120 V push: ~25 um peak at 17 kPa, ~9 um at 126 kPa.
REFERENCE_FORCE_N_M3 = 1.5e5
REFERENCE_VOLTAGE_V = 120.0
#: Acoustic attenuation of the push beam in dB/(cm MHz) (gelatin with graphite; our choice).
ATTENUATION_DB_CM_MHZ = 0.5

ModulusMap = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.floating]]


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
) -> ShearWaveField:
    """Simulate the shear wave of one push; true axial displacement at ``times_s`` on a pixel grid.

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

    # flux coefficients (harmonic mean of mu between nodes), scaled by dt^2 / (rho h^2)
    scale = dt**2 / (rho * h**2)
    ax = (scale * 2 * mu[:, 1:] * mu[:, :-1] / (mu[:, 1:] + mu[:, :-1])).astype(np.float32)
    az = (scale * 2 * mu[1:, :] * mu[:-1, :] / (mu[1:, :] + mu[:-1, :])).astype(np.float32)
    bv = np.float32(viscosity_pa_s * dt / (rho * h**2))
    force = (push_force_profile(xg[None, :], zg[:, None], push=push, probe=probe)
             * dt**2 / rho).astype(np.float32)
    force[0] = 0.0

    t_push = push.duration_s
    t_out = t_push + times
    n_steps = int(np.ceil(t_out.max() / dt)) + 1
    order = np.argsort(t_out)
    # sparse (4 taps per row) interpolation operators: cheap and free of BLAS threading
    wz = scipy.sparse.csr_matrix(_cubic_matrix(zg[0], h, nz, zp, odd_start=True), dtype=np.float32)
    wx = scipy.sparse.csr_matrix(_cubic_matrix(xg[0], h, nx, xp), dtype=np.float32)
    displacement = np.zeros((times.size, zp.size, xp.size), dtype=np.float32)
    u_prev = np.zeros((nz, nx), dtype=np.float32)
    u = np.zeros((nz, nx), dtype=np.float32)
    lap = np.zeros((nz, nx), dtype=np.float32)
    next_out = 0
    for n in range(n_steps):
        # u holds time n * dt; record every output time in [(n - 1) dt, n dt]
        t_now = n * dt
        while next_out < order.size and t_out[order[next_out]] <= t_now:
            k = order[next_out]
            w = 1.0 - (t_now - t_out[k]) / dt if n > 0 else 1.0
            snapshot = np.float32(w) * u + np.float32(1.0 - w) * u_prev
            displacement[k] = wz @ (wx @ snapshot.T).T  # cubic interpolation to the pixels
            next_out += 1
        if next_out == order.size:
            break
        vel = u - u_prev
        fx = ax * np.diff(u, axis=1)
        fz = az * np.diff(u, axis=0)
        if bv > 0:
            fx += bv * np.diff(vel, axis=1)
            fz += bv * np.diff(vel, axis=0)
        lap[:] = 0.0
        lap[:, :-1] += fx
        lap[:, 1:] -= fx
        lap[:-1, :] += fz
        lap[1:, :] -= fz
        u_next = u + keep * vel + lap
        # force on during [0, t_push): midpoint rule over the step
        on = min(max((t_push - t_now) / dt, 0.0), 1.0)
        if on > 0:
            u_next += np.float32(on) * force
        u_next[0] = 0.0  # rigid probe face
        u_prev, u = u, u_next

    return ShearWaveField(
        displacement_m=displacement,
        youngs_modulus_kpa=modulus_pix.astype(np.float32),
        times_s=times,
        depth_m=zp,
        lateral_m=xp,
        grid_step_m=h,
        time_step_s=float(dt),
    )


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
