"""UR3 backend on ur_rtde's ``RTDEControlInterface`` / ``RTDEReceiveInterface`` (or the sims).

Every vendor call's return value is checked (``moveL``, ``setPayload``, ``setTcp`` return False
on failure, for example on a protective stop) and vendor ``RuntimeError`` (lost socket) becomes a
:class:`~drivers.base.DeviceError` naming the call. A protective stop is surfaced as
:class:`~drivers.base.ProtectiveStopError` and never released here: that needs an operator.

RTDE watchdog (optional, ``watchdog_min_frequency_hz``). ur_rtde's ``setWatchdog(f)`` makes the
controller stop the robot and its control script when no ``kickWatchdog()`` arrives for ``1 / f``
seconds, which covers what the host cannot: a lost link or a crashed host during a move. The
driver arms it on :meth:`UrRtdeRobot.connect` (and before a move if it is not armed) and kicks it
on every pose read, move and poll (the host talks to the robot at least once per control period
while anything moves). The watchdog cannot be paused, so it also fires while the robot stands
still and the host is busy elsewhere (an indentation run); that stop is harmless, and the next
move re-uploads the control script (``reuploadScript``) and re-arms the watchdog first. A move
that a watchdog stop ended early raises :class:`~drivers.base.DeviceError` saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.base import (
    DeviceError,
    LimitError,
    MotionStatus,
    ProtectiveStopError,
    Wrench,
    check_finite,
)
from drivers.robot.base import RobotLimits
from lab.clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A move counts as on target within this distance (m) and rotation (rad).
TARGET_TOLERANCE_M = 1e-4
TARGET_TOLERANCE_RAD = 1e-3


class UrRtdeRobot:
    """Robot role over ur_rtde control and receive interfaces.

    Parameters
    ----------
    control : RTDEControlInterface or SimRtdeControl
        Connected control interface.
    receive : RTDEReceiveInterface or SimRtdeReceive
        Connected receive interface.
    clock : Clock
        Motion waits poll on it; tool-force samples are stamped with it.
    limits : RobotLimits
        Workspace box and speed/acceleration caps checked before every move.
    name : str
        Device name for errors.
    poll_interval_s : float
        Time between polls while waiting for a move.
    watchdog_min_frequency_hz : float or None
        Arm the controller's RTDE watchdog at this frequency (Hz) on :meth:`connect`; None leaves
        it off. See the module docstring.
    """

    def __init__(
        self,
        control: Any,
        receive: Any,
        clock: Clock,
        limits: RobotLimits | None = None,
        *,
        name: str = "robot",
        poll_interval_s: float = 0.008,
        watchdog_min_frequency_hz: float | None = None,
    ) -> None:
        if watchdog_min_frequency_hz is not None and not watchdog_min_frequency_hz > 0:
            raise ValueError(f"watchdog frequency must be > 0 Hz, got {watchdog_min_frequency_hz}")
        self.watchdog_min_frequency_hz = watchdog_min_frequency_hz
        self.control = control
        self.receive = receive
        self.clock = clock
        self.limits = limits if limits is not None else RobotLimits()
        self.name = name
        self.poll_interval_s = float(poll_interval_s)
        self._motion_id = 0
        self._stopped_motion = -1
        self._watchdog_armed = False

    @classmethod
    def from_host(
        cls, host: str, clock: Clock, limits: RobotLimits | None = None, *, name: str = "robot",
        watchdog_min_frequency_hz: float | None = None,
    ) -> UrRtdeRobot:
        """Connect to a real UR controller at ``host`` with ur_rtde (and arm the watchdog)."""
        import rtde_control
        import rtde_receive

        try:
            receive = rtde_receive.RTDEReceiveInterface(host)
            control = rtde_control.RTDEControlInterface(host)
        except RuntimeError as err:
            raise DeviceError(name, f"cannot connect to UR at {host}: {err}") from err
        robot = cls(control, receive, clock, limits, name=name,
                    watchdog_min_frequency_hz=watchdog_min_frequency_hz)
        robot.connect()
        return robot

    # ------------------------------------------------------------------ plumbing
    def _call(self, command: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RuntimeError, OSError, ValueError, TypeError) as err:  # lost socket, bad reply
            raise DeviceError(self.name, f"ur_rtde call failed: {err}", command=command) from err

    def _vector(self, command: str, raw: object, what: str) -> NDArray[np.float64]:
        """``raw`` as 6 finite floats, or DeviceError naming the reply."""
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            values = np.full(1, np.nan)
        if values.shape != (6,) or not np.all(np.isfinite(values)):
            raise DeviceError(self.name, f"bad {what}", command=command, reply=str(raw))
        return values

    def connect(self) -> None:
        """Make sure both interfaces are connected (reconnecting once if needed); arm the
        watchdog when one is configured."""
        for label, iface in (("control", self.control), ("receive", self.receive)):
            if not self._call(f"{label}.isConnected()", iface.isConnected):
                if not self._call(f"{label}.reconnect()", iface.reconnect):
                    raise DeviceError(
                        self.name, f"{label} interface is not connected",
                        command=f"{label}.reconnect()", reply="False",
                    )
        self._watchdog_armed = False
        self._ensure_watchdog()

    def _ensure_watchdog(self) -> None:
        """Arm the watchdog (when configured and not armed), re-uploading the control script
        first if it is not running (a watchdog stop); nothing while in a protective stop."""
        f = self.watchdog_min_frequency_hz
        if f is None:
            return
        running = self._call("isProgramRunning()", self.control.isProgramRunning)
        if running and self._watchdog_armed:
            return
        if not running:
            if self.protective_stopped:
                return  # an operator must release it; moves raise ProtectiveStopError
            log.info("%s: the control script is not running (RTDE watchdog stop); re-uploading "
                     "it", self.name)
            if not self._call("reuploadScript()", self.control.reuploadScript):
                raise DeviceError(self.name, "the control script is not running and could not "
                                  "be re-uploaded", command="reuploadScript()", reply="False")
        command = f"setWatchdog({f})"
        if not self._call(command, lambda: self.control.setWatchdog(f)):
            raise DeviceError(self.name, "setWatchdog refused", command=command, reply="False")
        self._watchdog_armed = True
        self.kick_watchdog()

    def kick_watchdog(self) -> None:
        """Tell the controller the host is alive (no-op without a watchdog)."""
        if self.watchdog_min_frequency_hz is None:
            return
        if not self._call("kickWatchdog()", self.control.kickWatchdog):
            raise DeviceError(self.name, "kickWatchdog refused", command="kickWatchdog()",
                              reply="False")

    def close(self) -> None:
        """Disconnect both interfaces (the robot keeps its state)."""
        for iface in (self.control, self.receive):
            self._call("disconnect()", iface.disconnect)

    def __enter__(self) -> UrRtdeRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ readings
    def tool_pose(self) -> NDArray[np.float64]:
        """TCP pose ``[x, y, z, rx, ry, rz]`` (m, rad) in the base frame, shape (6,)."""
        self.kick_watchdog()
        raw = self._call("getActualTCPPose()", self.receive.getActualTCPPose)
        return self._vector("getActualTCPPose()", raw, "TCP pose")

    def tool_force(self) -> Wrench:
        """The robot's own TCP force/torque estimate (``getActualTCPForce``), base frame."""
        t_s = self.clock.now()
        raw = self._call("getActualTCPForce()", self.receive.getActualTCPForce)
        values = self._vector("getActualTCPForce()", raw, "TCP force")
        return Wrench(values[:3], values[3:], t_s)

    @property
    def protective_stopped(self) -> bool:
        """True while the robot is in a protective stop."""
        return bool(self._call("isProtectiveStopped()", self.receive.isProtectiveStopped))

    # ------------------------------------------------------------------ checks and motion
    def check(
        self, pose: ArrayLike, *, speed_m_s: float | None = None,
        acceleration_m_s2: float | None = None,
    ) -> None:
        """Raise :class:`LimitError` if ``pose`` leaves the workspace box or a cap is exceeded."""
        target = np.asarray(pose, dtype=np.float64)
        if target.shape != (6,):
            raise LimitError(self.name, f"pose must have 6 values, got shape {target.shape}")
        check_finite(self.name, "pose", target)
        lo = np.asarray(self.limits.workspace_min_m)
        hi = np.asarray(self.limits.workspace_max_m)
        if np.any(target[:3] < lo) or np.any(target[:3] > hi):
            raise LimitError(
                self.name, f"position {target[:3].tolist()} m is outside the workspace "
                f"{lo.tolist()}..{hi.tolist()}"
            )
        if speed_m_s is not None:
            check_finite(self.name, "speed_m_s", speed_m_s)
            if not 0 < speed_m_s <= self.limits.max_speed_m_s:
                raise LimitError(
                    self.name, f"speed {speed_m_s} m/s is outside 0..{self.limits.max_speed_m_s}"
                )
        if acceleration_m_s2 is not None:
            check_finite(self.name, "acceleration_m_s2", acceleration_m_s2)
            if not 0 < acceleration_m_s2 <= self.limits.max_acceleration_m_s2:
                raise LimitError(
                    self.name, f"acceleration {acceleration_m_s2} m/s^2 is outside "
                    f"0..{self.limits.max_acceleration_m_s2}"
                )

    def _raise_if_protective_stop(self, command: str) -> None:
        if self.protective_stopped:
            raise ProtectiveStopError(
                self.name, "robot is in a protective stop; an operator must release it",
                command=command,
            )

    def move_linear(
        self, pose: ArrayLike, *, speed_m_s: float, acceleration_m_s2: float
    ) -> MotionStatus:
        """Start a linear move (``moveL``, asynchronous) after checking the limits."""
        self.check(pose, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
        target = np.asarray(pose, dtype=np.float64)
        command = f"moveL({target.tolist()}, {speed_m_s}, {acceleration_m_s2}, True)"
        self._raise_if_protective_stop(command)
        self._ensure_watchdog()
        self.kick_watchdog()
        progress_before = self._call(
            "getAsyncOperationProgress()", self.control.getAsyncOperationProgress
        )
        ok = self._call(
            command,
            lambda: self.control.moveL(target.tolist(), speed_m_s, acceleration_m_s2, True),
        )
        if not ok:
            self._raise_if_protective_stop(command)
            raise DeviceError(self.name, "moveL refused", command=command, reply=str(ok))
        self._motion_id += 1
        motion = self._motion_id

        def poll() -> tuple[bool, bool]:
            self._raise_if_protective_stop(command)
            self.kick_watchdog()
            progress = self._call(
                "getAsyncOperationProgress()", self.control.getAsyncOperationProgress
            )
            if progress >= 0 or progress == progress_before:
                return False, False
            if self._stopped_motion == motion:
                return True, False
            here = self.tool_pose()
            reached = bool(
                np.linalg.norm(here[:3] - target[:3]) <= TARGET_TOLERANCE_M
                and np.linalg.norm(here[3:] - target[3:]) <= TARGET_TOLERANCE_RAD
            )
            if not reached and self.watchdog_min_frequency_hz is not None and not self._call(
                "isProgramRunning()", self.control.isProgramRunning
            ):
                raise DeviceError(
                    self.name, "the controller's RTDE watchdog stopped the move (no kick for "
                    f"{1.0 / self.watchdog_min_frequency_hz:.3g} s: link lost or host stalled)",
                    command=command,
                )
            return True, reached

        return MotionStatus(self.name, self.clock, poll, self.poll_interval_s, command=command)

    def stop(self, success: bool = False) -> None:
        """Decelerate to a stop (``stopL``); a running move's status ends with ``success``."""
        self._stopped_motion = -1 if success else self._motion_id
        if self.watchdog_min_frequency_hz is not None and not self._call(
            "isProgramRunning()", self.control.isProgramRunning
        ):
            return  # a watchdog stop already halted the robot; no script to take stopL
        self._call("stopL(10.0)", lambda: self.control.stopL(10.0))

    def set_payload(self, mass_kg: float, cog_m: ArrayLike) -> None:
        """Payload mass (kg) and centre of gravity (m, from the flange)."""
        cog = [float(v) for v in np.asarray(cog_m, dtype=float).reshape(3)]
        check_finite(self.name, "payload", [mass_kg, *cog])
        command = f"setPayload({mass_kg}, {cog})"
        ok = self._call(command, lambda: self.control.setPayload(float(mass_kg), cog))
        if not ok:
            raise DeviceError(self.name, "setPayload refused", command=command, reply=str(ok))

    def set_tcp(self, offset: ArrayLike) -> None:
        """TCP offset from the flange ``[x, y, z, rx, ry, rz]`` (m, rad)."""
        values = [float(v) for v in np.asarray(offset, dtype=float).reshape(6)]
        check_finite(self.name, "tcp offset", values)
        command = f"setTcp({values})"
        ok = self._call(command, lambda: self.control.setTcp(values))
        if not ok:
            raise DeviceError(self.name, "setTcp refused", command=command, reply=str(ok))
