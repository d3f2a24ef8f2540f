"""The safety guard between protocols and drivers.

Protocols never hold a raw driver: :class:`Guard` wraps the lab's devices and hands out
only the guarded ones. The guard enforces, below any protocol code:

* **Force limits in the force-stream loop.** :class:`ForceWatchdog` wraps a force sensor; every
  ``read()`` checks the axial force (and the saturation flag) against the active limit and, on a
  violation, stops every registered motion *before* raising :class:`ForceLimitError`. Motion waits
  of the guarded robot and hexapod read the watchdog once per sample period while they wait, so a
  motion is stopped within one sample period of the force crossing the limit even when the
  protocol itself is not reading.
* **Robot workspace box and speed / acceleration caps**, checked before a move is sent; a unit
  does not start while the robot stands outside the box (:meth:`GuardedRobot.check_start_pose`).
* **Hexapod soft limits and velocity cap**, checked before a move is sent.
* **Push duty cycle** (minimum time between pushes) and the probe contact force at the push.

Violations raise :class:`SafetyError` (a :class:`~drivers.base.DeviceError`) after the devices
were made safe. Refusals of a target are not retryable (the same protocol would ask again); a
force-limit trip is (a knock on the table is transient). The runner decides what to do.

Every force sample the watchdogs see is kept (time, Fz) until :meth:`ForceWatchdog.drain_log`,
so the session can store the force stream of every unit attempt, faults included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.base import DeviceError, MotionStatus, Wrench
from lab.clock import Clock
from lab.config import SafetyConfig

log = logging.getLogger(__name__)

#: Hexapod axis keywords of :mod:`drivers.hexapod.base` by GCS axis letter.
_AXIS_KEYWORDS = {"X": "x_mm", "Y": "y_mm", "Z": "z_mm", "U": "u_deg", "V": "v_deg", "W": "w_deg"}


class SafetyError(DeviceError):
    """The guard refused a command or stopped the devices; raised after making them safe.

    ``retryable`` tells the runner whether redoing the unit can help.
    """

    retryable: bool = False


class ForceLimitError(SafetyError):
    """A force reading exceeded the active limit (or saturated); motion was stopped first."""

    retryable = True


# -- force watchdog --------------------------------------------------------------------------------
class ForceWatchdog:
    """A force sensor whose every reading is checked against a limit.

    Parameters
    ----------
    sensor : ForceSensor
        The raw sensor (kept private).
    limit_n : float
        Largest allowed compressive force Fz in N; a reading above it trips the watchdog.
    clock : Clock
        Clock of the lab (sample period bookkeeping).
    sample_rate_hz : float
        Rate of the force stream; guarded motion waits read once per period.
    name : str
        Device name for errors.
    """

    def __init__(self, sensor: Any, *, limit_n: float, clock: Clock, sample_rate_hz: float,
                 name: str) -> None:
        if not limit_n > 0 or not sample_rate_hz > 0:
            raise ValueError("force limit and sample rate must be > 0")
        self.__sensor = sensor
        self.__limit_n = float(limit_n)
        self.__stops: list[Callable[[], None]] = []
        self._clock = clock
        self.name = name
        self.sample_period_s = 1.0 / float(sample_rate_hz)
        self._last_read_s = -np.inf
        self._log_t: list[float] = []
        self._log_f: list[float] = []
        self.tripped: Wrench | None = None

    # The limit is set by the guard owner (the runner), not by protocols.
    @property
    def limit_n(self) -> float:
        """Active force limit in N."""
        return self.__limit_n

    def _set_limit(self, limit_n: float) -> None:
        if not limit_n > 0:
            raise ValueError(f"force limit must be > 0 N, got {limit_n}")
        self.__limit_n = float(limit_n)

    def _on_trip(self, stop: Callable[[], None]) -> None:
        self.__stops.append(stop)

    def _stop_all(self) -> list[str]:
        failures = []
        for stop in self.__stops:
            try:
                stop()
            except DeviceError as exc:  # keep stopping the others; report all
                failures.append(str(exc))
                log.error("%s: stop after a force trip failed: %s", self.name, exc)
        return failures

    # -- ForceSensor role ----------------------------------------------------------------------
    def connect(self) -> None:
        self.__sensor.connect()

    def close(self) -> None:
        self.__sensor.close()

    def bias(self) -> None:
        """Zero the sensor (explicit only; the probe or plate must be unloaded)."""
        self.__sensor.bias()

    def read(self) -> Wrench:
        """One sample; stops all registered motion and raises if it exceeds the limit."""
        sample = self.__sensor.read()
        self._last_read_s = self._clock.now()
        fz = sample.fz_n
        self._log_t.append(sample.t_s)
        self._log_f.append(fz)
        if fz > self.__limit_n or sample.saturated:
            self.tripped = sample
            failures = self._stop_all()
            why = "saturated" if sample.saturated else f"{fz:.4f} N > limit {self.__limit_n} N"
            extra = f"; stopping failed: {failures}" if failures else ""
            raise ForceLimitError(self.name, f"force limit tripped ({why}); motion stopped{extra}",
                                  command="read", reply=f"Fz={fz:.4f}")
        return sample

    def check_setpoint(self, force_n: float) -> None:
        """Refuse a force set-point at or above the active limit (before anything moves)."""
        if not force_n < self.__limit_n:
            raise SafetyError(self.name, f"force set-point {force_n} N is not below the limit "
                                         f"{self.__limit_n} N (refused)")

    def read_if_due(self) -> None:
        """Read (and check) when a sample period has passed since the last read."""
        if self._clock.now() - self._last_read_s >= self.sample_period_s - 1e-12:
            self.read()

    def log_view(self) -> tuple[list[float], list[float]]:
        """The live lists ``(t_s, fz_n)`` logged since the last drain (read them, never modify);
        a drain replaces them with new lists. Used by :mod:`lab.live` for the monitor."""
        return self._log_t, self._log_f

    def drain_log(self) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """All samples seen since the last drain: ``(t_s float64, fz_n float32)``, shape (n,)."""
        t = np.asarray(self._log_t, dtype=np.float64)
        f = np.asarray(self._log_f, dtype=np.float32)
        self._log_t, self._log_f = [], []
        return t, f


def _guarded_status(inner: MotionStatus, watchdogs: tuple[ForceWatchdog, ...], clock: Clock,
                    device: str) -> MotionStatus:
    """A status whose polls read the watchdogs once per sample period before asking the device."""
    period = min(w.sample_period_s for w in watchdogs)
    last_device_poll = [-np.inf]

    def poll() -> tuple[bool, bool]:
        for w in watchdogs:
            w.read_if_due()
        # Ask the device at its own polling rate (a query on the wire), the force every period.
        now = clock.now()
        if now - last_device_poll[0] >= inner.poll_interval_s - 1e-12:
            last_device_poll[0] = now
            return inner.done, inner.success
        return False, False

    return MotionStatus(device, clock, poll, poll_interval_s=min(period, inner.poll_interval_s),
                        command=inner.command)


# -- robot -----------------------------------------------------------------------------------------
class GuardedRobot:
    """The robot as protocols see it: workspace box, speed caps, force-watched waits."""

    def __init__(self, robot: Any, *, safety: SafetyConfig, watchdog: ForceWatchdog,
                 clock: Clock) -> None:
        self.__robot = robot
        self._safety = safety
        self._watchdog = watchdog
        self._clock = clock
        self.name = robot.name
        watchdog._on_trip(lambda: self.__robot.stop())

    def check(self, pose: ArrayLike, *, speed_m_s: float | None = None,
              acceleration_m_s2: float | None = None) -> None:
        """Raise :class:`SafetyError` if ``pose`` or the speeds break the session's limits."""
        target = np.asarray(pose, dtype=np.float64)
        if target.shape != (6,) or not np.all(np.isfinite(target)):
            raise SafetyError(self.name, f"pose must be 6 finite values, got {target.tolist()}")
        lo = np.asarray(self._safety.workspace_min_m)
        hi = np.asarray(self._safety.workspace_max_m)
        if np.any(target[:3] < lo) or np.any(target[:3] > hi):
            raise SafetyError(self.name, f"target {np.round(target[:3], 5).tolist()} m is outside "
                              f"the workspace box {lo.tolist()}..{hi.tolist()} m (refused)")
        cap_v, cap_a = self._safety.robot_speed_max_m_s, self._safety.robot_acceleration_max_m_s2
        if speed_m_s is not None and not 0 < speed_m_s <= cap_v:
            raise SafetyError(self.name, f"speed {speed_m_s} m/s is outside (0, {cap_v}] m/s "
                                         "(refused)")
        if acceleration_m_s2 is not None and not 0 < acceleration_m_s2 <= cap_a:
            raise SafetyError(self.name, f"acceleration {acceleration_m_s2} m/s^2 is outside "
                                         f"(0, {cap_a}] m/s^2 (refused)")
        self.__robot.check(target, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)

    def check_start_pose(self) -> None:
        """Raise :class:`SafetyError` if the robot stands outside the workspace box.

        The runner calls it before every unit: every move of a unit is checked against the box,
        but a unit that starts outside it would travel from there (its first lift is vertical,
        so it could stay outside the box, or cross a region the box is meant to keep clear).
        """
        here = self.__robot.tool_pose()
        lo = np.asarray(self._safety.workspace_min_m)
        hi = np.asarray(self._safety.workspace_max_m)
        if np.any(here[:3] < lo) or np.any(here[:3] > hi):
            raise SafetyError(self.name, f"the robot is at {np.round(here[:3], 4).tolist()} m, "
                              f"outside the workspace box {lo.tolist()}..{hi.tolist()} m; move "
                              "it inside the box (pendant or freedrive) before starting a unit "
                              "(refused)")

    def move_linear(self, pose: ArrayLike, *, speed_m_s: float, acceleration_m_s2: float
                    ) -> MotionStatus:
        self.check(pose, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
        inner = self.__robot.move_linear(pose, speed_m_s=speed_m_s,
                                         acceleration_m_s2=acceleration_m_s2)
        return _guarded_status(inner, (self._watchdog,), self._clock, self.name)

    def lift(self, z_m: float, *, speed_m_s: float, acceleration_m_s2: float,
             timeout_s: float) -> None:
        """Move the probe straight up to height ``z_m`` (no-op when already there).

        The wait does not read the force sensor: moving away from the phantom can only unload
        the probe, and a make-safe retract must work while the sensor is down.
        """
        here = self.__robot.tool_pose()
        if here[2] >= z_m - 1e-6:
            return
        target = here.copy()
        target[2] = z_m
        self.check(target, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
        self.__robot.move_linear(target, speed_m_s=speed_m_s,
                                 acceleration_m_s2=acceleration_m_s2).wait(timeout_s)

    def tool_pose(self) -> NDArray[np.float64]:
        return self.__robot.tool_pose()

    def tool_force(self) -> Wrench:
        return self.__robot.tool_force()

    def stop(self, success: bool = False) -> None:
        self.__robot.stop(success)

    @property
    def protective_stopped(self) -> bool:
        return bool(self.__robot.protective_stopped)

    def set_payload(self, mass_kg: float, cog_m: ArrayLike) -> None:
        self.__robot.set_payload(mass_kg, cog_m)

    def set_tcp(self, offset: ArrayLike) -> None:
        self.__robot.set_tcp(offset)

    def connect(self) -> None:
        self.__robot.connect()

    def close(self) -> None:
        self.__robot.close()


# -- hexapod ---------------------------------------------------------------------------------------
class GuardedHexapod:
    """The hexapod as protocols see it: soft limits, velocity cap, force-watched waits."""

    def __init__(self, hexapod: Any, *, safety: SafetyConfig, watchdog: ForceWatchdog,
                 clock: Clock) -> None:
        self.__hexapod = hexapod
        self._safety = safety
        self._watchdog = watchdog
        self._clock = clock
        self.name = hexapod.name
        self.soft_limits = {_AXIS_KEYWORDS[a]: tuple(v)
                            for a, v in safety.hexapod_limits_mm.items()}
        watchdog._on_trip(lambda: self.__hexapod.stop())

    def check(self, **axes: float) -> None:
        """Raise :class:`SafetyError` if a target is outside the session's soft limits."""
        for key, value in axes.items():
            if key not in _AXIS_KEYWORDS.values():
                raise SafetyError(self.name, f"unknown axis {key!r}; use "
                                             f"{list(_AXIS_KEYWORDS.values())}")
            if not np.isfinite(value):
                raise SafetyError(self.name, f"{key} target must be finite, got {value}")
            lo, hi = self.soft_limits.get(key, (-np.inf, np.inf))
            if not lo <= value <= hi:
                raise SafetyError(self.name, f"{key} target {value} is outside the soft limits "
                                             f"[{lo}, {hi}] (refused)")
        self.__hexapod.check(**axes)

    def move_to(self, **axes: float) -> MotionStatus:
        self.check(**axes)
        inner = self.__hexapod.move_to(**axes)
        return _guarded_status(inner, (self._watchdog,), self._clock, self.name)

    def move_relative(self, **axes: float) -> MotionStatus:
        here = self.__hexapod.position()
        self.check(**{k: here[k] + v for k, v in axes.items()})
        inner = self.__hexapod.move_relative(**axes)
        return _guarded_status(inner, (self._watchdog,), self._clock, self.name)

    def lift(self, z_mm: float, *, velocity_mm_s: float, timeout_s: float) -> None:
        """Move the plate up (+Z) to ``z_mm`` without reading the force (it can only unload)."""
        here = self.__hexapod.position()["z_mm"]
        if here >= z_mm - 1e-9:
            return
        self.check(z_mm=z_mm)
        self.set_velocity(velocity_mm_s)
        self.__hexapod.move_to(z_mm=z_mm).wait(timeout_s)

    def set_velocity(self, velocity_mm_s: float) -> None:
        cap = self._safety.hexapod_velocity_max_mm_s
        if not 0 < velocity_mm_s <= cap:
            raise SafetyError(self.name, f"velocity {velocity_mm_s} mm/s is outside (0, {cap}] "
                                         "mm/s (refused)")
        self.__hexapod.set_velocity(velocity_mm_s)

    def position(self) -> dict[str, float]:
        return self.__hexapod.position()

    def on_target(self) -> bool:
        return bool(self.__hexapod.on_target())

    def stop(self, success: bool = False) -> None:
        self.__hexapod.stop(success)

    def error(self) -> int:
        return int(self.__hexapod.error())

    def servo(self, on: bool) -> None:
        self.__hexapod.servo(on)

    def reference(self) -> MotionStatus:
        return self.__hexapod.reference()

    def connect(self) -> None:
        self.__hexapod.connect()

    def close(self) -> None:
        self.__hexapod.close()


# -- ultrasound ------------------------------------------------------------------------------------
class GuardedUltrasound:
    """The ultrasound system as protocols see it: push duty cycle and contact force at the push.

    The session's ``push_min_interval_s`` is enforced here on top of the system's own limits; a
    push is also refused unless the probe force (read through the probe watchdog) is within
    ``(0, probe limit]``: an ARF push with the probe off the phantom or pressed too hard is
    refused.
    """

    def __init__(self, system: Any, *, safety: SafetyConfig, watchdog: ForceWatchdog,
                 clock: Clock) -> None:
        self.__system = system
        self._safety = safety
        self._watchdog = watchdog
        self._clock = clock
        self._last_push_s: float | None = None
        self.name = system.name
        self.probe = system.probe
        self.limits = system.limits

    def push_ready_in_s(self) -> float:
        """Seconds until a push is allowed by both the session and the system."""
        own = 0.0
        if self._last_push_s is not None:
            own = max(0.0, self._last_push_s + self._safety.push_min_interval_s - self._clock.now())
        return max(own, float(self.__system.push_ready_in_s()))

    def check(self, push: Any, imaging: Any) -> None:
        wait = self.push_ready_in_s()
        if wait > 0:
            raise SafetyError(self.name, f"push refused by the duty cycle: wait {wait:.3f} s more "
                                         f"(minimum {self._safety.push_min_interval_s} s between "
                                         "pushes)")
        self.__system.check(push, imaging)

    def acquire_swei(self, push: Any, imaging: Any) -> Any:
        self.check(push, imaging)
        fz = self._watchdog.read().fz_n
        if fz <= 0:
            raise SafetyError(self.name, f"push refused: probe force {fz:.3f} N, the probe is not "
                                         "in contact")
        self._last_push_s = self._clock.now()
        return self.__system.acquire_swei(push, imaging)

    def acquire_rf_frame(self, seq: Any) -> Any:
        return self.__system.acquire_rf_frame(seq)

    def connect(self) -> None:
        self.__system.connect()

    def close(self) -> None:
        self.__system.close()


# -- bundle ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardedDevices:
    """What a protocol gets: only guarded devices, the clock and the operator."""

    robot: GuardedRobot
    probe_sensor: ForceWatchdog
    hexapod: GuardedHexapod
    indenter_sensor: ForceWatchdog
    ultrasound: GuardedUltrasound
    clock: Clock
    operator: Any


class Guard:
    """Owner of the guarded devices (the runner keeps it; protocols get :attr:`devices`).

    Parameters
    ----------
    lab : LabDevices-like
        Object with ``robot``, ``probe_sensor``, ``hexapod``, ``indenter_sensor``,
        ``ultrasound``, ``clock`` and ``operator`` attributes (raw devices).
    safety : SafetyConfig
    sample_rate_hz : float
        Force-stream rate of both watchdogs.
    """

    def __init__(self, lab: Any, safety: SafetyConfig, *, sample_rate_hz: float = 200.0) -> None:
        clock = lab.clock
        self.safety = safety
        self._probe = ForceWatchdog(lab.probe_sensor, limit_n=safety.probe_force_max_n,
                                    clock=clock, sample_rate_hz=sample_rate_hz,
                                    name=getattr(lab.probe_sensor, "name", "probe_sensor"))
        self._indenter = ForceWatchdog(lab.indenter_sensor,
                                       limit_n=safety.indentation_force_limit_n, clock=clock,
                                       sample_rate_hz=sample_rate_hz,
                                       name=getattr(lab.indenter_sensor, "name",
                                                    "indenter_sensor"))
        robot = GuardedRobot(lab.robot, safety=safety, watchdog=self._probe, clock=clock)
        hexapod = GuardedHexapod(lab.hexapod, safety=safety, watchdog=self._indenter, clock=clock)
        ultrasound = GuardedUltrasound(lab.ultrasound, safety=safety, watchdog=self._probe,
                                       clock=clock)
        self.devices = GuardedDevices(robot, self._probe, hexapod, self._indenter, ultrasound,
                                      clock, lab.operator)

    def set_mode(self, kind: str) -> None:
        """Activate the probe force limit of protocol ``kind`` (compression allows more)."""
        limit = (self.safety.compression_force_max_n if kind == "compression"
                 else self.safety.probe_force_max_n)
        self._probe._set_limit(limit)

    def drain_force_log(self) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float32]]]:
        return {"probe_sensor": self._probe.drain_log(),
                "indenter_sensor": self._indenter.drain_log()}

    def force_log_view(self) -> dict[str, tuple[list[float], list[float]]]:
        """Per sensor, the watchdog's live log lists (see :meth:`ForceWatchdog.log_view`)."""
        return {"probe_sensor": self._probe.log_view(),
                "indenter_sensor": self._indenter.log_view()}

    @property
    def limits_n(self) -> dict[str, float]:
        return {"probe_sensor": self._probe.limit_n, "indenter_sensor": self._indenter.limit_n}
