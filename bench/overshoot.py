"""Overshoot of the force limits: limit, speed, stiffness -> peak TRUE force, per protocol.

A rogue press on the simulated lab, through the guard: the probe (SWEI limit, compression limit)
or the hexapod plate (indentation limit) is commanded far into a phantom at a given speed and
never waited on; only the force watch stops it. The peak true contact force of the simulated
world is compared with the documented bound (``lab.force_bounds.max_overshoot_n``: no stop
latency in the simulator, the sensor's reading error included). The guard's near-contact cap
is switched off here (no contact zones) so speeds above it can be measured; ``cap`` marks the
speeds the guard allows.

Run: ``PYTHONPATH=. python bench/overshoot.py [--quick]``; writes ``bench/results/overshoot.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from drivers.force.spec import NANO17, NANO43
from drivers.sim.phantom import CylinderPhantom
from lab.config import parse_config
from lab.devices import build_devices
from lab.force_bounds import (
    cylinder_stiffness_n_per_m,
    max_contact_speed_m_s,
    max_overshoot_n,
    probe_contact_stiffness_n_per_m,
    reading_error_n,
)
from lab.gelatin import flat_punch_stiffness_n_per_mm, youngs_modulus_kpa
from lab.safety import ForceWatchError, Guard
from protocols.common import surface_pose, travel_to
from protocols.plan import build_plan
from protocols.testing import tiny_config_dict


def _config(rate_hz: float, gelatin_percent: float) -> Any:
    data = tiny_config_dict(protocols=("swei",), positions=1, push_elements=(64,), frames=6)
    for sensor in ("probe_force_sensor", "indenter_force_sensor"):
        data["lab"][sensor]["rate_hz"] = rate_hz
        data["lab"][sensor]["timeout_s"] = 2.0
    data["lab"]["robot"] = {"backend": "sim", "watchdog_min_frequency_hz": 0.0}
    for p in data["phantoms"]:
        if p["kind"] == "block":
            p["gelatin_percent"] = gelatin_percent
            p.pop("inclusions", None)
    return parse_config(data)


def _peak(lab: Any) -> list[float]:
    """Peak true forces ``[probe, plate]`` (N), updated at every clock step from now on."""
    peak = [0.0, 0.0]

    def record(_a: float, _b: float) -> None:
        peak[0] = max(peak[0], lab.world.probe_contact().force_n)
        peak[1] = max(peak[1], lab.world.cylinder_force_n())

    lab.clock.on_advance(record)
    return peak


def _press_until_trip(lab: Any, guard: Guard, duration_s: float) -> str:
    """Sleep while the commanded press runs; the force watch's error name ('' if none).
    Closes the guard and the lab."""
    try:
        guard.devices.clock.sleep(duration_s)
    except ForceWatchError as exc:
        return type(exc).__name__
    finally:
        guard.close()
        lab.close()
    return ""


def probe_press(kind: str, *, rate_hz: float, gelatin_percent: float, speed_m_s: float
                ) -> dict[str, Any]:
    """Peak true probe force of a rogue press at ``speed_m_s`` (kind: swei or compression)."""
    cfg = _config(rate_hz, gelatin_percent)
    unit = build_plan(cfg).units[0]
    p = unit.params
    lab = build_devices(cfg)
    guard = Guard(lab, cfg.safety, sample_rate_hz=rate_hz, stream_timeout_s=2.0)
    guard.set_mode(kind)
    dev = guard.devices
    limit = dev.probe_sensor.limit_n
    travel_to(dev, p.above_pose, travel_z_m=p.travel_pose[2],
              speed_m_s=p.travel_speed_m_s, acceleration_m_s2=p.acceleration_m_s2)
    dev.probe_sensor.bias()
    peak = _peak(lab)
    deep = surface_pose(p.origin_m, p.x_mm, p.y_mm)
    deep[2] -= 0.01
    dev.robot.move_linear(deep, speed_m_s=speed_m_s,
                          acceleration_m_s2=cfg.safety.robot_acceleration_max_m_s2)
    tripped = _press_until_trip(lab, guard, 0.03 / speed_m_s)
    k_true = flat_punch_stiffness_n_per_mm(youngs_modulus_kpa(gelatin_percent),
                                           face_area_mm2=400.0) * 1e3
    return _row(kind, limit, speed_m_s, rate_hz, k_true, peak[0], tripped,
                cap_m_s=max_contact_speed_m_s(limit, sample_period_s=1 / rate_hz,
                                              stiffness_n_per_m=probe_contact_stiffness_n_per_m(
                                                  youngs_modulus_kpa(gelatin_percent))))


def plate_press(*, rate_hz: float, gelatin_percent: float, velocity_mm_s: float) -> dict[str, Any]:
    """Peak true plate force of a rogue hexapod drive into a cylinder at ``velocity_mm_s``."""
    cfg = _config(rate_hz, 7.5)
    cfg = cfg.model_copy(update={"safety": cfg.safety.model_copy(
        update={"hexapod_velocity_max_mm_s": max(velocity_mm_s, 1.0)})})
    lab = build_devices(cfg)
    cylinder = CylinderPhantom("cyl", gelatin_percent)
    lab.world.set_cylinder(cylinder, contact_z_mm=-0.2)
    guard = Guard(lab, cfg.safety, sample_rate_hz=rate_hz, stream_timeout_s=2.0)
    dev = guard.devices
    limit = dev.indenter_sensor.limit_n
    dev.hexapod.servo(True)
    dev.hexapod.reference().wait(60.0)
    dev.indenter_sensor.bias()
    peak = _peak(lab)
    dev.hexapod.set_velocity(velocity_mm_s)
    dev.hexapod.move_to(z_mm=-9.0)
    tripped = _press_until_trip(lab, guard, 9.0 / velocity_mm_s)
    k = cylinder_stiffness_n_per_m(youngs_modulus_kpa(gelatin_percent), radius_mm=10.0,
                                   height_mm=40.0)
    return _row("indentation", limit, velocity_mm_s * 1e-3, rate_hz, k, peak[1], tripped,
                cap_m_s=max_contact_speed_m_s(limit, sample_period_s=1 / rate_hz,
                                              stiffness_n_per_m=k))


def _row(protocol: str, limit_n: float, speed_m_s: float, rate_hz: float, k_n_per_m: float,
         peak_n: float, tripped: str, *, cap_m_s: float) -> dict[str, Any]:
    spec = NANO17 if protocol == "indentation" else NANO43
    bound = max_overshoot_n(speed_m_s, sample_period_s=1 / rate_hz, stiffness_n_per_m=k_n_per_m,
                            reading_error_n=reading_error_n(spec.force_noise_n,
                                                            spec.force_resolution_n))
    return {"protocol": protocol, "limit_n": limit_n, "speed_mm_s": speed_m_s * 1e3,
            "rate_hz": rate_hz, "stiffness_n_per_mm": k_n_per_m * 1e-3,
            "peak_true_n": peak_n, "overshoot_n": peak_n - limit_n, "bound_n": bound,
            "overshoot_percent": 100 * (peak_n - limit_n) / limit_n, "tripped": tripped,
            "within_bound": bool(peak_n - limit_n <= bound + 1e-9),
            "guard_cap_mm_s": cap_m_s * 1e3, "at_or_below_cap": speed_m_s <= cap_m_s * 1.0001}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rates = [200.0] if args.quick else [50.0, 200.0]
    gels = [17.5] if args.quick else [7.5, 17.5]
    rows = []
    for rate in rates:
        for gel in gels:
            for kind, limit in (("swei", 2.0), ("compression", 8.0)):
                k = probe_contact_stiffness_n_per_m(youngs_modulus_kpa(gel))
                cap = max_contact_speed_m_s(limit, sample_period_s=1 / rate, stiffness_n_per_m=k)
                speeds = {min(cap, 0.05), min(0.05, 4 * cap)}
                if not args.quick:
                    speeds.add(0.002)  # the plan's approach speed
                speeds = sorted(speeds)
                rows += [probe_press(kind, rate_hz=rate, gelatin_percent=gel, speed_m_s=v)
                         for v in sorted(speeds)]
            rows += [plate_press(rate_hz=rate, gelatin_percent=gel, velocity_mm_s=v)
                     for v in ((1.0,) if args.quick else (0.01, 1.0))]
    header = (f"{'protocol':<12}{'limit N':>8}{'speed mm/s':>11}{'rate Hz':>8}{'k N/mm':>8}"
              f"{'peak N':>9}{'over %':>8}{'bound N':>9}  cap?  ok")
    print(header)
    for r in rows:
        print(f"{r['protocol']:<12}{r['limit_n']:>8.2f}{r['speed_mm_s']:>11.3f}{r['rate_hz']:>8.0f}"
              f"{r['stiffness_n_per_mm']:>8.3f}{r['peak_true_n']:>9.4f}"
              f"{r['overshoot_percent']:>8.2f}{r['bound_n']:>9.4f}  "
              f"{'yes' if r['at_or_below_cap'] else 'no ':<4}  {r['within_bound']}")
    worst_at_cap = max((r["overshoot_percent"] for r in rows if r["at_or_below_cap"]),
                       default=float("nan"))
    print(f"worst overshoot at or below the guard's caps: {worst_at_cap:.2f} % of the limit")
    write_results("overshoot", {"rows": rows, "worst_percent_at_or_below_cap": worst_at_cap,
                                "all_within_bound": bool(np.all([r["within_bound"]
                                                                 for r in rows]))}, args.out)


if __name__ == "__main__":
    main()
