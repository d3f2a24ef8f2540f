"""Simulated ur_rtde interfaces: ``SimRtdeControl`` and ``SimRtdeReceive``.

They mirror the method names, arguments, units and return values of
``rtde_control.RTDEControlInterface`` and ``rtde_receive.RTDEReceiveInterface`` (ur_rtde 1.6) for
the subset the driver uses, so :class:`~drivers.robot.ur.UrRtdeRobot` runs unchanged on either:
poses ``[x, y, z, rx, ry, rz]`` in m and rad, forces in N; ``moveL`` returns False when the robot is
(or becomes) protective-stopped; ``getAsyncOperationProgress`` is >= 0 while an asynchronous move
runs and toggles between -1 and -2 as operations finish; with the link down (fault
``disconnected``) every call raises ``RuntimeError`` as ur_rtde does on a lost socket, and
``isConnected`` returns False. A protective stop is never released by these classes.

The controller's RTDE watchdog is mirrored: ``setWatchdog(min_frequency)`` arms it,
``kickWatchdog()`` restarts its period, and when the period passes without a kick (for example
because the link is down, so kicks cannot arrive) the world halts the robot and stops the control
script, in virtual time, whether or not anyone is calling. While the script is stopped ``moveL``
returns False and ``isProgramRunning`` is False; ``reuploadScript()`` (or ``reconnect()``) starts
it again without a watchdog, as a fresh ur_rtde control script would be.

Not modelled: joint space, inverse kinematics, blending, servo/speed/force modes, the dashboard.
"""

from __future__ import annotations

import numpy as np

from drivers.sim.world import SimWorld


class _SimRtdeBase:
    def __init__(self, world: SimWorld, hostname: str = "127.0.0.1") -> None:
        self.world = world
        self.hostname = hostname
        self._closed = False

    def _require_link(self) -> None:
        if self._closed or "robot" in self.world.faults.disconnected:
            raise RuntimeError("RTDE - Socket disconnected")

    def isConnected(self) -> bool:
        return not self._closed and "robot" not in self.world.faults.disconnected

    def disconnect(self) -> None:
        self._closed = True

    def reconnect(self) -> bool:
        if "robot" in self.world.faults.disconnected:
            return False
        self._closed = False
        return True


class SimRtdeControl(_SimRtdeBase):
    """Stand-in for ``rtde_control.RTDEControlInterface`` on a :class:`SimWorld`."""

    def __init__(self, world: SimWorld, hostname: str = "127.0.0.1") -> None:
        super().__init__(world, hostname)
        self._progress_done = -1
        self._async_running = False

    def _finish_async_if_ended(self) -> None:
        if self._async_running and not self.world.robot_moving():
            self._async_running = False
            self._progress_done = -2 if self._progress_done == -1 else -1

    def moveL(
        self, pose: list[float], speed: float = 0.25, acceleration: float = 1.2,
        asynchronous: bool = False,
    ) -> bool:
        self._require_link()
        target = np.asarray(pose, dtype=float)
        if target.shape != (6,) or not np.all(np.isfinite(target)):
            raise RuntimeError("moveL: pose must be 6 finite numbers")
        if self.world.protective_stopped or not self.world.robot_program_running:
            return False  # the control script is not running
        self._finish_async_if_ended()
        if self._async_running:  # a new move replaces the running one
            self._async_running = False
            self._progress_done = -2 if self._progress_done == -1 else -1
        self.world.robot_move_linear(target, speed_m_s=speed, acceleration_m_s2=acceleration)
        if asynchronous:
            self._async_running = True
            return True
        remaining = self.world.robot_motion_end_s() - self.world.clock.now()
        if remaining > 0:
            self.world.clock.sleep(remaining)
        return not self.world.protective_stopped

    def stopL(self, a: float = 10.0, asynchronous: bool = False) -> None:
        self._require_link()
        self.world.robot_stop()
        self._finish_async_if_ended()

    def getAsyncOperationProgress(self) -> int:
        self._require_link()
        self._finish_async_if_ended()
        return 0 if self._async_running else self._progress_done

    def isSteady(self) -> bool:
        self._require_link()
        return not self.world.robot_moving()

    def isProgramRunning(self) -> bool:
        self._require_link()
        return not self.world.protective_stopped and self.world.robot_program_running

    def reconnect(self) -> bool:
        if not super().reconnect():
            return False
        if not self.world.robot_program_running:  # ur_rtde uploads its script on reconnect
            self.world.robot_restart_program()
        return True

    def reuploadScript(self) -> bool:
        self._require_link()
        if self.world.robot_program_running:
            return True  # ur_rtde only uploads when no script runs
        return self.world.robot_restart_program()

    def setWatchdog(self, min_frequency: float = 10.0) -> bool:
        self._require_link()
        if not min_frequency > 0 or not self.isProgramRunning():
            return False
        self.world.robot_set_watchdog(min_frequency)
        return True

    def kickWatchdog(self) -> bool:
        self._require_link()
        self.world.robot_kick_watchdog()
        return True

    def isPoseWithinSafetyLimits(self, pose: list[float]) -> bool:
        self._require_link()
        return bool(np.all(np.isfinite(np.asarray(pose, dtype=float))))

    def setPayload(self, mass: float, cog: list[float]) -> bool:
        self._require_link()
        if mass < 0 or len(cog) != 3:
            return False
        self.world.set_payload(mass, cog)
        return True

    def setTcp(self, tcp_offset: list[float]) -> bool:
        self._require_link()
        if len(tcp_offset) != 6:
            return False
        self.world.set_tcp(tcp_offset)
        return True

    def triggerProtectiveStop(self) -> bool:
        self._require_link()
        self.world.trigger_protective_stop()
        return True

    def stopScript(self) -> None:
        self._require_link()


class SimRtdeReceive(_SimRtdeBase):
    """Stand-in for ``rtde_receive.RTDEReceiveInterface`` on a :class:`SimWorld`."""

    def getActualTCPPose(self) -> list[float]:
        self._require_link()
        return [float(v) for v in self.world.robot_pose()]

    def getActualTCPForce(self) -> list[float]:
        self._require_link()
        return [float(v) for v in self.world.robot_tool_force()]

    def isProtectiveStopped(self) -> bool:
        self._require_link()
        return self.world.protective_stopped

    def isEmergencyStopped(self) -> bool:
        self._require_link()
        return False

    def getTimestamp(self) -> float:
        self._require_link()
        return self.world.clock.now()
