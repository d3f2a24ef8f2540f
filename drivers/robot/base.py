"""The ``Robot`` role: a six-axis arm moving a tool in Cartesian space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.base import MotionStatus, Wrench


@dataclass(frozen=True)
class RobotLimits:
    """Workspace box of the TCP (base frame, m) and speed/acceleration caps of linear moves."""

    workspace_min_m: tuple[float, float, float] = (0.1, -0.4, 0.0)
    workspace_max_m: tuple[float, float, float] = (0.5, 0.4, 0.4)
    max_speed_m_s: float = 0.1
    max_acceleration_m_s2: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min_m), np.asarray(self.workspace_max_m)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError("workspace_min_m and workspace_max_m must be 3 values with min < max")
        if self.max_speed_m_s <= 0 or self.max_acceleration_m_s2 <= 0:
            raise ValueError("speed and acceleration caps must be > 0")


@runtime_checkable
class Robot(Protocol):
    """Arm holding the probe. Backend: UrRtdeRobot (ur_rtde, or its simulator).

    Poses are ``[x, y, z, rx, ry, rz]``: TCP position in m and rotation vector in rad, base frame.
    """

    name: str

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def tool_pose(self) -> NDArray[np.float64]: ...
    def check(
        self, pose: ArrayLike, *, speed_m_s: float | None = None,
        acceleration_m_s2: float | None = None,
    ) -> None: ...
    def move_linear(
        self, pose: ArrayLike, *, speed_m_s: float, acceleration_m_s2: float
    ) -> MotionStatus: ...
    def tool_force(self) -> Wrench: ...
    def stop(self, success: bool = False) -> None: ...
    @property
    def protective_stopped(self) -> bool: ...
    def set_payload(self, mass_kg: float, cog_m: ArrayLike) -> None: ...
    def set_tcp(self, offset: ArrayLike) -> None: ...
