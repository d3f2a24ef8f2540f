"""Arm model of the simulated UR3: straight-line tool moves with a trapezoidal speed profile.

Poses are ``[x, y, z, rx, ry, rz]`` in m and rad (base frame), positions exact functions of
virtual time. Not modelled: robot dynamics, joint limits, blending between moves. The shared
state (protective stops, watchdog, contact) lives in :class:`drivers.sim.world.SimWorld`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

#: Home pose of the simulated UR3 TCP: 250 mm above the table, probe face down. It lies inside both
#: the default session workspace (:class:`lab.config.SafetyConfig`) and the default driver limits
#: (:class:`drivers.robot.base.RobotLimits`), so a session can start from it.
DEFAULT_ROBOT_HOME_POSE = (0.20, -0.30, 0.25, np.pi, 0.0, 0.0)
#: Length (m) that converts a rotation (rad) into path length for timing a linear move.
ROTATION_PATH_RADIUS_M = 0.1


@dataclass
class LinearMotion:
    """A straight-line tool motion with a trapezoidal speed profile, in virtual time."""

    start: NDArray[np.float64]
    target: NDArray[np.float64]
    t_start_s: float
    speed_m_s: float
    acceleration_m_s2: float
    t_stop_s: float | None = None  # set when halted early
    length_m: float = field(init=False)
    duration_s: float = field(init=False)

    def __post_init__(self) -> None:
        delta = self.target - self.start
        self.length_m = float(
            max(np.linalg.norm(delta[:3]), np.linalg.norm(delta[3:]) * ROTATION_PATH_RADIUS_M)
        )
        v, a, length = self.speed_m_s, self.acceleration_m_s2, self.length_m
        if length == 0.0:
            self.duration_s = 0.0
        elif length >= v * v / a:
            self.duration_s = length / v + v / a
        else:
            self.duration_s = 2.0 * np.sqrt(length / a)

    @property
    def t_end_s(self) -> float:
        end = self.t_start_s + self.duration_s
        return end if self.t_stop_s is None else min(end, self.t_stop_s)

    def fraction(self, t_s: float) -> float:
        """Fraction of the path covered at ``t_s`` (0 to 1)."""
        if self.length_m == 0.0:
            return 1.0
        t = min(max(t_s, self.t_start_s), self.t_end_s) - self.t_start_s
        v, a, length, total = self.speed_m_s, self.acceleration_m_s2, self.length_m, self.duration_s
        t_ramp = min(v / a, total / 2.0)
        v_peak = a * t_ramp
        if t <= t_ramp:
            s = 0.5 * a * t * t
        elif t <= total - t_ramp:
            s = 0.5 * a * t_ramp**2 + v_peak * (t - t_ramp)
        else:
            s = length - 0.5 * a * (total - t) ** 2
        return float(min(max(s / length, 0.0), 1.0))

    def pose(self, t_s: float) -> NDArray[np.float64]:
        return self.start + (self.target - self.start) * self.fraction(t_s)


def first_time_reaching(
    motion: LinearMotion, t_from_s: float, t_to_s: float,
    force_n_at: Callable[[NDArray[np.float64]], float], limit_n: float,
) -> float | None:
    """First virtual time in ``(t_from_s, t_to_s]`` at which ``force_n_at(pose) >= limit_n``.

    The part of ``motion`` inside the interval is sampled every 50 um of path (1 to 2000 samples);
    returns None when the force stays below the limit (or the tool does not move in the interval).
    """
    t_begin = max(t_from_s, motion.t_start_s)
    t_end = min(t_to_s, motion.t_end_s)
    if t_end <= t_begin:
        return None
    travelled_m = motion.length_m * (motion.fraction(t_end) - motion.fraction(t_begin))
    steps = int(np.clip(np.ceil(travelled_m / 5e-5), 1, 2000))
    for t in np.linspace(t_begin, t_end, steps + 1)[1:]:
        if force_n_at(motion.pose(float(t))) >= limit_n:
            return float(t)
    return None
