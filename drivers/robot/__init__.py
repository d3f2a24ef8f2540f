"""UR3 robot: the ``Robot`` role, its ur_rtde backend and the force-controlled contact logic."""

from drivers.robot.base import Robot, RobotLimits
from drivers.robot.contact import ContactError, ContactLogic, ContactResult, ForceTrace
from drivers.robot.ur import UrRtdeRobot

__all__ = [
    "ContactError",
    "ContactLogic",
    "ContactResult",
    "ForceTrace",
    "Robot",
    "RobotLimits",
    "UrRtdeRobot",
]
