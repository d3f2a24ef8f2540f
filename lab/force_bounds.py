"""How far a force limit can be overshot, and the watch rates and speeds that keep it small.

Pure functions (no devices, no I/O) shared by the safety guard (:mod:`lab.safety`), config
validation and ``bench/overshoot.py``. The model, documented in ``docs/safety.md``:

A device moves at speed ``v`` into a contact of stiffness ``k`` (N/m). The force watch checks one
sample every period ``T``; a sample above the limit ``F_max`` stops the device, which takes a
latency ``L`` (host, link and controller) to start braking and then brakes at ``a``. The force
crossed ``F_max`` at most one period before the sample that saw it, so the force reached is at
most

    F_peak <= F_max + k * (v * (T + L) + v^2 / (2 a)) + e

where ``e`` is the reading error of the sensor (noise and quantisation: the watch compares the
reading, not the true force; about 4 sigma + one resolution step, :func:`reading_error_n`).

A stale sample counts like a missing one: the watch trips when its newest sample is older than
:func:`stale_bound_s` (which already contains the one period of the bound above).

One lost sample. The stale bound is two periods, so one lost (or late) sample is tolerated; the
motion then goes on for up to ``2 T`` after the newest sample. In simulation the watch tolerates
it only while that newest reading is at most :func:`lost_sample_ceiling_n` ``= (1 - f) F_max``
(``f`` = :data:`OVERSHOOT_FRACTION`); closer to the limit a missing sample trips at once. The
force reached is then at most ``max(F_max + k v T, (1 - f) F_max + 2 k v T) + ...``, i.e. the
bound above plus ``max(0, k v T - f F_max)`` (``lost_sample_headroom_n = f F_max``), which is 0
at or below the near-contact caps and the config's minimum watch rates (both keep
``k v T <= f F_max``): the 5 % budget holds with one lost sample. On the wall clock (hardware)
the watch knows no due time and tolerates a late or lost sample up to the stale bound whatever
the force: the extra term is ``k v T`` (``lost_sample_headroom_n = 0``). Two consecutive lost
samples trip (stale) in both modes, motion stopped first.

Stiffness: the probe face is a rigid flat punch on the gelatin half-space (Sneddon, equal-area
circle), times :data:`ELONGATED_FACE_FACTOR` for the 4:1 face (King 1987: elongated faces are
stiffer than their equal-area circle); a plate on a cylinder is ``E pi r^2 / l0``.
"""

from __future__ import annotations

import math

from lab.gelatin import flat_punch_stiffness_n_per_mm

#: Share of the force limit that an overshoot may reach on the stiffest configured phantom.
OVERSHOOT_FRACTION = 0.05
#: Flat-punch stiffness factor for an elongated (4:1) probe face over its equal-area circle.
ELONGATED_FACE_FACTOR = 1.25
#: Probe face area of the lab's linear probe (40 x 10 mm), mm^2.
PROBE_FACE_AREA_MM2 = 400.0
#: Samples a stream may be late before the watch calls it stale (on the wall clock: jitter).
STALE_SAMPLES = 2.0


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def probe_contact_stiffness_n_per_m(youngs_modulus_kpa: float, *,
                                    face_area_mm2: float = PROBE_FACE_AREA_MM2) -> float:
    """Contact stiffness of the probe face on a gelatin block, N/m (conservative, see module)."""
    k_n_per_mm = flat_punch_stiffness_n_per_mm(_positive("youngs_modulus_kpa", youngs_modulus_kpa),
                                               face_area_mm2=face_area_mm2)
    return ELONGATED_FACE_FACTOR * k_n_per_mm * 1e3


def cylinder_stiffness_n_per_m(youngs_modulus_kpa: float, *, radius_mm: float,
                               height_mm: float) -> float:
    """Axial stiffness ``E pi r^2 / l0`` of a lubricated cylinder between plates, N/m."""
    e_pa = _positive("youngs_modulus_kpa", youngs_modulus_kpa) * 1e3
    r_m = _positive("radius_mm", radius_mm) * 1e-3
    return e_pa * math.pi * r_m**2 / (_positive("height_mm", height_mm) * 1e-3)


def stale_bound_s(sample_period_s: float, *, samples: float = STALE_SAMPLES) -> float:
    """Age (s) above which the newest force sample is stale: ``samples`` periods."""
    return _positive("samples", samples) * _positive("sample_period_s", sample_period_s)


def lost_sample_ceiling_n(limit_n: float, *, fraction: float = OVERSHOOT_FRACTION) -> float:
    """Newest reading (N) up to which the simulated watch tolerates one lost sample:
    ``(1 - fraction) * limit_n`` (see the module docstring)."""
    return (1.0 - _positive("fraction", fraction)) * _positive("limit_n", limit_n)


def reading_error_n(noise_n: float, resolution_n: float) -> float:
    """Largest plausible gap between a force reading and the true force (N): 4 sigma of the
    noise plus one quantisation step."""
    return 4.0 * _non_negative("noise_n", noise_n) + _non_negative("resolution_n", resolution_n)


def max_overshoot_n(speed_m_s: float, *, sample_period_s: float, stiffness_n_per_m: float,
                    stop_latency_s: float = 0.0, deceleration_m_s2: float = math.inf,
                    reading_error_n: float = 0.0,
                    lost_sample_headroom_n: float | None = None) -> float:
    """Largest force (N) above the limit reached before the stop: see the module docstring.

    Parameters
    ----------
    speed_m_s : float
        Speed into the contact, m/s (>= 0).
    sample_period_s : float
        Period of the force watch, s (> 0).
    stiffness_n_per_m : float
        Contact stiffness, N/m (> 0).
    stop_latency_s : float
        Time from the tripping sample to the start of braking, s (>= 0; 0 in simulation).
    deceleration_m_s2 : float
        Braking deceleration, m/s^2 (> 0; ``inf`` = stops at once, as the simulator does).
    reading_error_n : float
        Reading error of the sensor, N (>= 0; see :func:`reading_error_n`).
    lost_sample_headroom_n : float or None
        With one lost sample: how far below the limit the newest reading must be for the watch
        to tolerate it, N (``OVERSHOOT_FRACTION * limit`` in simulation, 0 on the wall clock);
        None: no sample lost.

    Returns
    -------
    overshoot_n : float
        ``k (v (T + L) + v^2 / (2 a)) + e``, plus ``max(0, k v T - headroom)`` with a lost
        sample.
    """
    v = _non_negative("speed_m_s", speed_m_s)
    period = _positive("sample_period_s", sample_period_s)
    k = _positive("stiffness_n_per_m", stiffness_n_per_m)
    latency = _non_negative("stop_latency_s", stop_latency_s)
    if not deceleration_m_s2 > 0:
        raise ValueError(f"deceleration_m_s2 must be > 0, got {deceleration_m_s2!r}")
    braking_m = 0.0 if math.isinf(deceleration_m_s2) else v * v / (2.0 * deceleration_m_s2)
    lost_n = 0.0 if lost_sample_headroom_n is None else max(
        0.0, k * v * period - _non_negative("lost_sample_headroom_n", lost_sample_headroom_n))
    return k * (v * (period + latency) + braking_m) + lost_n + _non_negative("reading_error_n",
                                                                             reading_error_n)


def max_contact_speed_m_s(limit_n: float, *, sample_period_s: float, stiffness_n_per_m: float,
                          fraction: float = OVERSHOOT_FRACTION, stop_latency_s: float = 0.0,
                          deceleration_m_s2: float = math.inf) -> float:
    """Fastest speed near contact (m/s) whose overshoot stays within ``fraction * limit_n``.

    Solves :func:`max_overshoot_n` ``= fraction * limit_n`` for the speed (the positive root of
    ``k v^2 / (2 a) + k (T + L) v - fraction F_max = 0``).
    """
    budget_n = _positive("fraction", fraction) * _positive("limit_n", limit_n)
    k = _positive("stiffness_n_per_m", stiffness_n_per_m)
    reach_s = _positive("sample_period_s", sample_period_s) + _non_negative("stop_latency_s",
                                                                            stop_latency_s)
    if not deceleration_m_s2 > 0:
        raise ValueError(f"deceleration_m_s2 must be > 0, got {deceleration_m_s2!r}")
    if math.isinf(deceleration_m_s2):
        return budget_n / (k * reach_s)
    a2 = k / (2.0 * deceleration_m_s2)
    return (-k * reach_s + math.sqrt((k * reach_s) ** 2 + 4.0 * a2 * budget_n)) / (2.0 * a2)


def min_watch_rate_hz(limit_n: float, *, speed_m_s: float, stiffness_n_per_m: float,
                      fraction: float = OVERSHOOT_FRACTION, stop_latency_s: float = 0.0,
                      deceleration_m_s2: float = math.inf) -> float:
    """Lowest force-watch rate (Hz) that keeps the overshoot at ``speed_m_s`` within
    ``fraction * limit_n``; raises ``ValueError`` when latency and braking alone use it up."""
    v = _positive("speed_m_s", speed_m_s)
    k = _positive("stiffness_n_per_m", stiffness_n_per_m)
    budget_n = _positive("fraction", fraction) * _positive("limit_n", limit_n)
    fixed_n = max_overshoot_n(v, sample_period_s=1e-300, stiffness_n_per_m=k,
                              stop_latency_s=stop_latency_s, deceleration_m_s2=deceleration_m_s2)
    if fixed_n >= budget_n:
        raise ValueError(f"at {v} m/s into {k:.0f} N/m the stop latency and braking alone "
                         f"overshoot {fixed_n:.3g} N, more than {budget_n:.3g} N; lower the speed")
    return k * v / (budget_n - fixed_n)
