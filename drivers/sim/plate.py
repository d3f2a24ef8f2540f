"""Plate model of the simulated hexapod and the cylinder it compresses.

Plate pose by axis: X Y Z in mm, U V W in degrees. A move is a straight line at constant speed
(no acceleration phase); the plate moves down (negative Z) to compress the cylinder standing under
it. The cylinder's force law is :func:`drivers.sim.contact.cylinder_force_n`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

HEXAPOD_AXES = ("X", "Y", "Z", "U", "V", "W")


@dataclass
class PlateMotion:
    """A straight plate move of the hexapod: all axes arrive together, in virtual time."""

    start: dict[str, float]
    target: dict[str, float]
    t_start_s: float
    duration_s: float
    t_stop_s: float | None = None

    def position(self, t_s: float) -> dict[str, float]:
        f = self._fraction(t_s)
        if f is None:
            return dict(self.target)
        return {k: self.start[k] + (self.target[k] - self.start[k]) * f for k in HEXAPOD_AXES}

    def axis_position(self, axis: str, t_s: float) -> float:
        """``position(t_s)[axis]`` without building the whole pose (runs every sample)."""
        f = self._fraction(t_s)
        if f is None:
            return self.target[axis]
        return self.start[axis] + (self.target[axis] - self.start[axis]) * f

    def _fraction(self, t_s: float) -> float | None:
        """Share of the move done at ``t_s``; None once it ended (at the target)."""
        if self.t_stop_s is not None:
            t_s = min(t_s, self.t_stop_s)
        if self.duration_s <= 0 or t_s >= self.t_start_s + self.duration_s:
            return None
        return max(t_s - self.t_start_s, 0.0) / self.duration_s

    def arrived(self, t_s: float) -> bool:
        return self.t_stop_s is None and t_s >= self.t_start_s + self.duration_s


def plate_move(
    start: Mapping[str, float], target: Mapping[str, float], *, t_start_s: float,
    velocity_mm_s: float,
) -> PlateMotion:
    """Move from ``start`` to ``target`` (missing axes keep ``start``).

    Translation runs at ``velocity_mm_s``; rotation at the same number of degrees per second,
    whichever takes longer.
    """
    start = dict(start)
    goal = {**start, **{k.upper(): float(v) for k, v in target.items()}}
    d_lin = np.sqrt(sum((goal[k] - start[k]) ** 2 for k in "XYZ"))
    d_rot = np.sqrt(sum((goal[k] - start[k]) ** 2 for k in "UVW"))
    return PlateMotion(start, goal, t_start_s, float(max(d_lin, d_rot) / velocity_mm_s))


def cylinder_compression_mm(contact_z_mm: float, plate_z_mm: float) -> float:
    """Shortening (mm, >= 0) of a cylinder whose top the plate meets at ``contact_z_mm``."""
    return max(contact_z_mm - plate_z_mm, 0.0)
