"""Pieces shared by the protocols: safe robot travel, contact, progress reports.

Protocols get only guarded devices (:class:`lab.safety.GuardedDevices`); every helper here goes
through them, so the workspace box, the speed caps and the force watchdogs apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from drivers.base import DeviceError
from drivers.robot.contact import ContactLogic, ContactResult
from lab.safety import GuardedDevices
from protocols.params import ProbeParams
from protocols.plan import MAX_SEARCH_DEPTH_M

#: Progress callback: the runner shows these fields in its live summary line.
Report = Callable[..., None]

#: Longest wait for any single motion, in clock seconds.
MOTION_TIMEOUT_S = 120.0
#: Control period of contact force loops (s): the 200 Hz force stream.
CONTROL_PERIOD_S = 0.005


class ProtocolError(DeviceError):
    """A protocol could not do its work (no contact found, inconsistent hardware state)."""


def no_report(**_: Any) -> None:
    """A report callback that ignores everything."""


def move(devices: GuardedDevices, pose: NDArray[np.float64] | list[float], *, speed_m_s: float,
         acceleration_m_s2: float) -> None:
    """Linear move of the probe and wait for it (force-watched by the guard)."""
    devices.robot.move_linear(np.asarray(pose, dtype=np.float64), speed_m_s=speed_m_s,
                              acceleration_m_s2=acceleration_m_s2).wait(MOTION_TIMEOUT_S)


def travel_to(devices: GuardedDevices, above_pose: list[float], *, travel_z_m: float,
              speed_m_s: float, acceleration_m_s2: float) -> None:
    """Go up to ``travel_z_m``, across, then down to ``above_pose`` (never through a block)."""
    here = devices.robot.tool_pose()
    target = np.asarray(above_pose, dtype=np.float64)
    z_travel = max(travel_z_m, float(here[2]), float(target[2]))
    if here[2] < z_travel - 1e-6:
        up = here.copy()
        up[2] = z_travel
        move(devices, up, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
    across = target.copy()
    across[2] = z_travel
    if np.linalg.norm(devices.robot.tool_pose()[:3] - across[:3]) > 1e-6:
        move(devices, across, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
    if z_travel - target[2] > 1e-6:
        move(devices, target, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)


def retract_to(devices: GuardedDevices, z_m: float, *, speed_m_s: float,
               acceleration_m_s2: float) -> None:
    """Lift the probe straight up to height ``z_m`` (no-op when already above it)."""
    here = devices.robot.tool_pose()
    if here[2] < z_m - 1e-6:
        up = here.copy()
        up[2] = z_m
        move(devices, up, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)


def contact_logic(devices: GuardedDevices, *, target_force_n: float, search_speed_m_s: float,
                  acceleration_m_s2: float, max_travel_m: float) -> ContactLogic:
    """Contact logic on the guarded robot and probe sensor; aborts above the active limit.

    The search runs at ``search_speed_m_s`` or the guard's near-contact speed cap, whichever is
    lower.

    Raises
    ------
    lab.safety.SafetyError
        ``target_force_n`` is not below the guard's active probe force limit.
    """
    devices.probe_sensor.check_setpoint(target_force_n)
    # never faster near the phantom than the guard's cap (5 % overshoot on the stiffest phantom)
    search_speed_m_s = min(search_speed_m_s, devices.robot.near_contact_speed_max_m_s)
    return ContactLogic(
        robot=devices.robot, sensor=devices.probe_sensor, clock=devices.clock,
        target_force_n=target_force_n, tolerance_n=min(0.05, target_force_n / 4),
        max_force_n=devices.probe_sensor.limit_n, standoff_m=0.005, max_travel_m=max_travel_m,
        approach_speed_m_s=min(0.01, search_speed_m_s * 5), search_speed_m_s=search_speed_m_s,
        acceleration_m_s2=acceleration_m_s2, control_period_s=CONTROL_PERIOD_S,
        timeout_s=MOTION_TIMEOUT_S,
    )


def surface_pose(origin_m: list[float], x_mm: float, y_mm: float) -> NDArray[np.float64]:
    """Tool pose with the probe face on the block surface at block point (x, y) mm."""
    return np.array([origin_m[0] + x_mm * 1e-3, origin_m[1] + y_mm * 1e-3, origin_m[2],
                     np.pi, 0.0, 0.0])


def approach_position(devices: GuardedDevices, params: ProbeParams, *, unit_id: str,
                      report: Report = no_report) -> tuple[ContactLogic, ContactResult]:
    """Travel above a probe unit's position, then find contact at its ``contact_force_n``.

    Reports the phases ``travel`` (with ``unit=unit_id``) and ``approach``; searches at most
    :data:`protocols.plan.MAX_SEARCH_DEPTH_M` below the surface.

    Parameters
    ----------
    devices : GuardedDevices
    params : ProbeParams
        ``Unit.params`` of an SWEI position or a compression step (:mod:`protocols.params`):
        ``above_pose``, ``travel_pose``, ``travel_speed_m_s``, ``acceleration_m_s2``,
        ``contact_force_n``, ``approach_speed_m_s``, ``origin_m``, ``x_mm``, ``y_mm``.
    unit_id : str
    report : Report

    Returns
    -------
    contact : ContactLogic
        The contact logic (to hold the contact afterwards).
    result : ContactResult
        Outcome of the approach (contact pose and force).
    """
    accel = params.acceleration_m_s2
    report(phase="travel", unit=unit_id)
    travel_to(devices, params.above_pose, travel_z_m=params.travel_pose[2],
              speed_m_s=params.travel_speed_m_s, acceleration_m_s2=accel)
    report(phase="approach")
    contact = contact_logic(devices, target_force_n=params.contact_force_n,
                            search_speed_m_s=params.approach_speed_m_s,
                            acceleration_m_s2=accel, max_travel_m=MAX_SEARCH_DEPTH_M)
    result = contact.approach(surface_pose(params.origin_m, params.x_mm, params.y_mm))
    return contact, result
