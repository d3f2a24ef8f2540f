"""The safety guard between protocols and drivers.

Protocols never hold a raw driver: :class:`Guard` wraps the lab's devices and hands out only the
guarded ones (:class:`GuardedDevices`); the raw drivers are for driver code and the runner. The
guard enforces, below any protocol code:

* **Force limits on the force stream.** A :class:`~lab.force_watch.ForceWatch` per sensor checks
  every streamed sample whenever the guard is armed, whatever the protocol does (also while it
  only sleeps): a limit, a non-finite or out-of-range reading, a sensor error or a silent stream
  stops *all* motion first, then raises. While a trip is latched every motion is refused except
  a pure retract. Bounds and derivations: :mod:`lab.force_bounds`, ``docs/safety.md``.
* **A speed cap near contact**: a robot move whose path enters a contact zone (the space within
  a margin of a phantom, see :class:`ContactZone`) is refused above
  :func:`lab.force_bounds.max_contact_speed_m_s` for the active limit and the stiffest phantom,
  so the overshoot stays within 5 % of the limit.
* **Robot workspace box and speed / acceleration caps**, checked before a move is sent; a unit
  does not start while the robot stands outside the box (:meth:`GuardedRobot.check_start_pose`).
* **Hexapod soft limits and velocity cap**, checked before a move is sent.
* **Push duty cycle** (minimum time between pushes) and the probe contact force at the push.

Violations raise :class:`SafetyError` (a :class:`~drivers.base.DeviceError`) after the devices
were made safe. Refusals of a target are not retryable (the same protocol would ask again); a
force-watch trip is (a knock on the table is transient). The runner decides what to do.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.base import DeviceError, MotionStatus, Wrench
from drivers.force.base import ForceSensor
from drivers.hexapod.base import AXIS_KEYWORDS, Hexapod
from drivers.robot.base import Robot
from drivers.robot.contact import STIFFEST_CONTACT_N_PER_M
from drivers.ultrasound.base import SweiAcquisition, UltrasoundSystem
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence, RfFrameSequence
from lab.clock import Clock, SimClock
from lab.config import SafetyConfig
from lab.force_bounds import max_contact_speed_m_s
from lab.force_watch import (
    ForceLimitError,
    ForceWatch,
    ForceWatchError,
    SafetyError,
    SensorReadingError,
    SensorStaleError,
)

if TYPE_CHECKING:
    from drivers.ultrasound.base import RfFrame
    from lab.devices import Operator

__all__ = [
    "ContactZone",
    "ForceLimitError",
    "ForceWatchError",
    "Guard",
    "GuardedDevices",
    "GuardedForceSensor",
    "GuardedHexapod",
    "GuardedRobot",
    "GuardedUltrasound",
    "RawLab",
    "SafetyError",
    "SensorReadingError",
    "SensorStaleError",
]

log = logging.getLogger(__name__)


class RawLab(Protocol):
    """The raw devices the guard wraps (:class:`lab.devices.LabDevices` is one)."""

    robot: Robot
    probe_sensor: ForceSensor
    hexapod: Hexapod
    indenter_sensor: ForceSensor
    ultrasound: UltrasoundSystem
    clock: Clock
    operator: Operator


@dataclass(frozen=True)
class ContactZone:
    """A box (base frame, m) around a phantom where the probe may touch it.

    ``lo_m`` and ``hi_m`` are the corners; use ``-inf`` for "down to the table".
    """

    lo_m: tuple[float, float, float]
    hi_m: tuple[float, float, float]

    def crossed_by(self, start: NDArray[np.float64], end: NDArray[np.float64]) -> bool:
        """True if the straight segment ``start -> end`` (TCP positions, m) enters the box."""
        t0, t1 = 0.0, 1.0
        for axis in range(3):
            a, d = float(start[axis]), float(end[axis] - start[axis])
            lo, hi = self.lo_m[axis], self.hi_m[axis]
            if abs(d) < 1e-15:
                if not lo <= a <= hi:
                    return False
                continue
            u0, u1 = sorted(((lo - a) / d, (hi - a) / d))
            t0, t1 = max(t0, u0), min(t1, u1)
            if t0 > t1:
                return False
        return True


def _guarded_status(inner: MotionStatus, watches: Sequence[ForceWatch], clock: Clock,
                    device: str, on_done: Callable[[], None]) -> MotionStatus:
    """A status whose every poll first raises a latched force-watch trip; ``on_done`` is called
    when the motion is seen finished."""

    def poll() -> tuple[bool, bool]:
        for w in watches:
            w.raise_if_tripped()
        done, success = inner.done, inner.success
        if done:
            on_done()
        return done, success

    return MotionStatus(device, clock, poll, poll_interval_s=inner.poll_interval_s,
                        command=inner.command)


def _resume_blind(watch: ForceWatch) -> None:
    """Restart a paused stream before a retract, which may go ahead without it."""
    try:
        watch.resume()
    except DeviceError as exc:
        log.warning("%s: retracting without the force stream: %s", watch.name, exc)


# -- force sensor ----------------------------------------------------------------------------------
class GuardedForceSensor:
    """A force sensor as protocols see it: the newest sample of the watched stream.

    ``read`` makes no request on the wire: it returns the newest sample the force watch checked
    (and raises the watch's latched fault, if any).
    """

    def __init__(self, watch: ForceWatch, *, before_bias: Callable[[], None] | None = None
                 ) -> None:
        self.__watch = watch
        self._before_bias = before_bias
        self.name = watch.name

    @property
    def limit_n(self) -> float:
        """Active force limit in N (set by the guard's owner, not by protocols)."""
        return self.__watch.limit_n

    @property
    def sample_period_s(self) -> float:
        """Period of the watched stream, s."""
        return self.__watch.sample_period_s

    def read(self) -> Wrench:
        """The newest checked sample."""
        return self.__watch.latest()

    def bias(self) -> None:
        """Zero the sensor (explicit only; the probe or plate must be unloaded)."""
        if self._before_bias is not None:
            self._before_bias()
        self.__watch.bias()

    def check_setpoint(self, force_n: float) -> None:
        """Refuse a force set-point at or above the active limit (before anything moves)."""
        if not force_n < self.__watch.limit_n:
            raise SafetyError(self.name, f"force set-point {force_n} N is not below the limit "
                                         f"{self.__watch.limit_n} N (refused)")


# -- robot -----------------------------------------------------------------------------------------
class GuardedRobot:
    """The robot as protocols see it: workspace box, speed caps, force-watched motion."""

    def __init__(self, robot: Robot, *, safety: SafetyConfig, watches: Sequence[ForceWatch],
                 own_watch: ForceWatch, clock: Clock, contact_zones: Sequence[ContactZone] = (),
                 lock: threading.RLock | None = None) -> None:
        self.__robot = robot
        self._own_watch = own_watch
        self.moving = False  # a motion was sent and not yet seen finished
        self._safety = safety
        self._watches = tuple(watches)
        self._clock = clock
        self._zones = tuple(contact_zones)
        self._lock = lock or threading.RLock()
        self.near_contact_speed_max_m_s = safety.robot_speed_max_m_s
        self._biased = False
        self.name = robot.name

    def _raise_if_tripped(self) -> None:
        for w in self._watches:
            w.raise_if_tripped()

    def _in_box(self, xyz: NDArray[np.float64]) -> bool:
        lo = np.asarray(self._safety.workspace_min_m)
        hi = np.asarray(self._safety.workspace_max_m)
        return bool(np.all(xyz >= lo) and np.all(xyz <= hi))

    def check(self, pose: ArrayLike, *, speed_m_s: float | None = None,
              acceleration_m_s2: float | None = None) -> None:
        """Raise :class:`SafetyError` if ``pose`` or the speeds break the session's limits."""
        target = np.asarray(pose, dtype=np.float64)
        if target.shape != (6,) or not np.all(np.isfinite(target)):
            raise SafetyError(self.name, f"pose must be 6 finite values, got {target.tolist()}")
        if not self._in_box(target[:3]):
            raise SafetyError(self.name, f"target {np.round(target[:3], 5).tolist()} m is outside "
                              f"the workspace box {list(self._safety.workspace_min_m)}.."
                              f"{list(self._safety.workspace_max_m)} m (refused)")
        cap_v, cap_a = self._safety.robot_speed_max_m_s, self._safety.robot_acceleration_max_m_s2
        if speed_m_s is not None and not 0 < speed_m_s <= cap_v:
            raise SafetyError(self.name, f"speed {speed_m_s} m/s is outside (0, {cap_v}] m/s "
                                         "(refused)")
        if acceleration_m_s2 is not None and not 0 < acceleration_m_s2 <= cap_a:
            raise SafetyError(self.name, f"acceleration {acceleration_m_s2} m/s^2 is outside "
                                         f"(0, {cap_a}] m/s^2 (refused)")
        self.__robot.check(target, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)

    def in_contact_zone(self) -> bool:
        """True while the tool stands in a contact zone (it may touch a phantom)."""
        here = self.tool_pose()[:3]
        return any(z.crossed_by(here, here) for z in self._zones)

    def prepare_bias(self) -> None:
        """Called before the probe sensor is biased: refuses in a contact zone (the bias must be
        taken unloaded), then allows moves into the zones until the next :meth:`forget_bias`."""
        if self.in_contact_zone():
            raise SafetyError(self.name, "bias refused: the probe is in a contact zone; bias the "
                                         "sensor in air (above the phantom)")
        self._biased = True

    def forget_bias(self) -> None:
        """Refuse moves into the contact zones until the probe sensor is biased again."""
        self._biased = False

    def _check_near_contact(self, here: NDArray[np.float64], target: NDArray[np.float64],
                            speed_m_s: float) -> None:
        lifting = (target[2] >= here[2] and np.allclose(target[:2], here[:2], atol=1e-7)
                   and np.allclose(target[3:], here[3:], atol=1e-7))
        if lifting or not any(z.crossed_by(here[:3], target[:3]) for z in self._zones):
            return
        if not self._biased:
            raise SafetyError(self.name, "move near a phantom refused: the probe sensor was not "
                                         "biased in air since the force watch was armed (its "
                                         "offset would shift the force limit)")
        if speed_m_s > self.near_contact_speed_max_m_s:
            raise SafetyError(self.name, f"speed {speed_m_s} m/s near a phantom is above the "
                              f"near-contact cap {self.near_contact_speed_max_m_s:.4g} m/s (the "
                              "force limit could be overshot by more than 5 %; refused)")

    def check_start_pose(self) -> None:
        """Raise :class:`SafetyError` if the robot stands outside the workspace box.

        The runner calls it before every unit: every move of a unit is checked against the box,
        but a unit that starts outside it would travel from there (its first lift is vertical,
        so it could stay outside the box, or cross a region the box is meant to keep clear).
        """
        here = self.tool_pose()
        if not self._in_box(here[:3]):
            raise SafetyError(self.name, f"the robot is at {np.round(here[:3], 4).tolist()} m, "
                              f"outside the workspace box {list(self._safety.workspace_min_m)}.."
                              f"{list(self._safety.workspace_max_m)} m; move it inside the box "
                              "(pendant or freedrive) before starting a unit (refused)")

    def move_linear(self, pose: ArrayLike, *, speed_m_s: float, acceleration_m_s2: float
                    ) -> MotionStatus:
        self._raise_if_tripped()
        self.check(pose, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
        target = np.asarray(pose, dtype=np.float64)
        with self._lock:
            self._check_near_contact(self.__robot.tool_pose(), target, speed_m_s)
            self._own_watch.resume()
            self._own_watch.check_due()  # every sample so far checked, the stream alive
            self.moving = True
            inner = self.__robot.move_linear(target, speed_m_s=speed_m_s,
                                             acceleration_m_s2=acceleration_m_s2)
        return _guarded_status(inner, self._watches, self._clock, self.name, self._finished)

    def _finished(self) -> None:
        self.moving = False

    def lift(self, z_m: float, *, speed_m_s: float, acceleration_m_s2: float,
             timeout_s: float) -> None:
        """Move the probe straight up to height ``z_m`` (no-op when already there).

        Allowed while a force-watch trip is latched, and not stopped by the watch: moving away
        from the phantom can only unload the probe, and a make-safe retract must work while the
        sensor is down.
        """
        with self._lock:
            here = self.__robot.tool_pose()
        if here[2] >= z_m - 1e-6:
            return
        target = here.copy()
        target[2] = z_m
        self.check(target, speed_m_s=speed_m_s, acceleration_m_s2=acceleration_m_s2)
        _resume_blind(self._own_watch)
        with self._lock:
            self.moving = True
            status = self.__robot.move_linear(target, speed_m_s=speed_m_s,
                                              acceleration_m_s2=acceleration_m_s2)
        status.wait(timeout_s)
        self.moving = False

    def tool_pose(self) -> NDArray[np.float64]:
        with self._lock:
            return self.__robot.tool_pose()

    def tool_force(self) -> Wrench:
        with self._lock:
            return self.__robot.tool_force()

    def stop(self, success: bool = False) -> None:
        with self._lock:
            self.__robot.stop(success)

    @property
    def protective_stopped(self) -> bool:
        with self._lock:
            return bool(self.__robot.protective_stopped)

    def set_payload(self, mass_kg: float, cog_m: ArrayLike) -> None:
        with self._lock:
            self.__robot.set_payload(mass_kg, cog_m)

    def set_tcp(self, offset: ArrayLike) -> None:
        with self._lock:
            self.__robot.set_tcp(offset)


# -- hexapod ---------------------------------------------------------------------------------------
class GuardedHexapod:
    """The hexapod as protocols see it: soft limits, velocity cap, force-watched motion."""

    def __init__(self, hexapod: Hexapod, *, safety: SafetyConfig, watches: Sequence[ForceWatch],
                 own_watch: ForceWatch, clock: Clock, velocity_max_mm_s: float | None = None,
                 lock: threading.RLock | None = None) -> None:
        self.__hexapod = hexapod
        self._own_watch = own_watch
        self.moving = False  # a motion was sent and not yet seen finished
        self._safety = safety
        self._watches = tuple(watches)
        self._clock = clock
        self._lock = lock or threading.RLock()
        self.velocity_max_mm_s = min(safety.hexapod_velocity_max_mm_s,
                                     velocity_max_mm_s if velocity_max_mm_s else math.inf)
        self.name = hexapod.name
        self.soft_limits = {AXIS_KEYWORDS[a]: tuple(v) for a, v in safety.hexapod_limits_mm.items()}

    def _raise_if_tripped(self) -> None:
        for w in self._watches:
            w.raise_if_tripped()

    def check(self, **axes: float) -> None:
        """Raise :class:`SafetyError` if a target is outside the session's soft limits."""
        for key, value in axes.items():
            if key not in AXIS_KEYWORDS.values():
                raise SafetyError(self.name, f"unknown axis {key!r}; use "
                                             f"{list(AXIS_KEYWORDS.values())}")
            if not np.isfinite(value):
                raise SafetyError(self.name, f"{key} target must be finite, got {value}")
            lo, hi = self.soft_limits.get(key, (-np.inf, np.inf))
            if not lo <= value <= hi:
                raise SafetyError(self.name, f"{key} target {value} is outside the soft limits "
                                             f"[{lo}, {hi}] (refused)")
        self.__hexapod.check(**axes)

    def move_to(self, **axes: float) -> MotionStatus:
        self._raise_if_tripped()
        self.check(**axes)
        with self._lock:
            self._own_watch.resume()
            self._own_watch.check_due()
            self.moving = True
            inner = self.__hexapod.move_to(**axes)
        return _guarded_status(inner, self._watches, self._clock, self.name, self._finished)

    def _finished(self) -> None:
        self.moving = False

    def move_relative(self, **axes: float) -> MotionStatus:
        self._raise_if_tripped()
        here = self.position()
        self.check(**{k: here[k] + v for k, v in axes.items()})
        with self._lock:
            self._own_watch.resume()
            self._own_watch.check_due()
            self.moving = True
            inner = self.__hexapod.move_relative(**axes)
        return _guarded_status(inner, self._watches, self._clock, self.name, self._finished)

    def lift(self, z_mm: float, *, velocity_mm_s: float, timeout_s: float) -> None:
        """Move the plate up (+Z) to ``z_mm``; allowed while a trip is latched (it only unloads)."""
        here = self.position()["z_mm"]
        if here >= z_mm - 1e-9:
            return
        self.check(z_mm=z_mm)
        self._check_velocity(velocity_mm_s)
        _resume_blind(self._own_watch)
        with self._lock:
            self.moving = True
            self.__hexapod.set_velocity(velocity_mm_s)
            status = self.__hexapod.move_to(z_mm=z_mm)
        status.wait(timeout_s)
        self.moving = False

    def _check_velocity(self, velocity_mm_s: float) -> None:
        cap = self.velocity_max_mm_s
        if not 0 < velocity_mm_s <= cap:
            raise SafetyError(self.name, f"velocity {velocity_mm_s} mm/s is outside (0, {cap:.4g}]"
                                         " mm/s (refused)")

    def set_velocity(self, velocity_mm_s: float) -> None:
        self._check_velocity(velocity_mm_s)
        with self._lock:
            self.__hexapod.set_velocity(velocity_mm_s)

    def position(self) -> dict[str, float]:
        with self._lock:
            return self.__hexapod.position()

    def record_position(self, axis: str = "z_mm", *, rate_hz: float) -> tuple[float, float]:
        """Start the controller's data recorder on ``axis`` (read-only: nothing moves)."""
        return self.__hexapod.record_position(axis, rate_hz=rate_hz)

    def recorded_positions(self) -> list[float]:
        return self.__hexapod.recorded_positions()

    def on_target(self) -> bool:
        with self._lock:
            return bool(self.__hexapod.on_target())

    def stop(self, success: bool = False) -> None:
        with self._lock:
            self.__hexapod.stop(success)

    def error(self) -> int:
        with self._lock:
            return int(self.__hexapod.error())

    def servo(self, on: bool) -> None:
        with self._lock:
            self.__hexapod.servo(on)

    def reference(self) -> MotionStatus:
        self._raise_if_tripped()
        with self._lock:
            self._own_watch.resume()
            self._own_watch.check_due()
            self.moving = True
            inner = self.__hexapod.reference()
        return _guarded_status(inner, self._watches, self._clock, self.name, self._finished)


# -- ultrasound ------------------------------------------------------------------------------------
class GuardedUltrasound:
    """The ultrasound system as protocols see it: push duty cycle and contact force at the push.

    The session's ``push_min_interval_s`` is enforced here on top of the system's own limits; a
    push is also refused unless the probe force (the newest watched sample) is within
    ``(0, probe limit]``: an ARF push with the probe off the phantom or pressed too hard is
    refused.
    """

    def __init__(self, system: UltrasoundSystem, *, safety: SafetyConfig,
                 probe_sensor: GuardedForceSensor, clock: Clock) -> None:
        self.__system = system
        self._safety = safety
        self._probe_sensor = probe_sensor
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

    def check(self, push: PushSequence, imaging: PlaneWaveSequence) -> None:
        wait = self.push_ready_in_s()
        if wait > 0:
            raise SafetyError(self.name, f"push refused by the duty cycle: wait {wait:.3f} s more "
                                         f"(minimum {self._safety.push_min_interval_s} s between "
                                         "pushes)")
        self.__system.check(push, imaging)

    def acquire_swei(self, push: PushSequence, imaging: PlaneWaveSequence) -> SweiAcquisition:
        self.check(push, imaging)
        fz = self._probe_sensor.read().fz_n
        if fz <= 0:
            raise SafetyError(self.name, f"push refused: probe force {fz:.3f} N, the probe is not "
                                         "in contact")
        self._last_push_s = self._clock.now()
        return self.__system.acquire_swei(push, imaging)

    def acquire_rf_frame(self, seq: RfFrameSequence) -> RfFrame:
        return self.__system.acquire_rf_frame(seq)


# -- bundle ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardedDevices:
    """What a protocol gets: only guarded devices, the clock and the operator."""

    robot: GuardedRobot
    probe_sensor: GuardedForceSensor
    hexapod: GuardedHexapod
    indenter_sensor: GuardedForceSensor
    ultrasound: GuardedUltrasound
    clock: Clock
    operator: Operator


class Guard:
    """Owner of the guarded devices and of the force watches (the runner keeps it; protocols
    get :attr:`devices`).

    Building it starts both force streams and the watch (on the clock in simulation, in threads
    on hardware); :meth:`close` stops them. Motion is refused while a watch is not streaming.

    Parameters
    ----------
    lab : RawLab
        The raw devices.
    safety : SafetyConfig
    sample_rate_hz : float
        Force-stream rate of the probe watch (and of the indenter watch by default), Hz.
    indenter_rate_hz : float or None
        Force-stream rate of the indenter watch, Hz.
    stream_timeout_s : float
        Simulation: real-time wait for a due sample before calling the stream stale.
    contact_zones : sequence of ContactZone
        Where the probe may touch a phantom (the near-contact speed cap applies there).
    stiffest_probe_n_per_m : float
        Contact stiffness of the stiffest phantom the probe may press (N/m).
    stiffest_cylinder_n_per_m : float or None
        Axial stiffness of the stiffest cylinder (N/m); caps the hexapod velocity when given.
    stop_latency_s : float
        Time from a tripping sample to the start of braking (0 in simulation).
    deceleration_m_s2 : float
        Braking of the robot's stop (``inf`` in simulation: it stops at once).
    probe_range_n, indenter_range_n : float or None
        Fz range of each sensor; readings beyond it trip the watch.
    """

    def __init__(self, lab: RawLab, safety: SafetyConfig, *, sample_rate_hz: float = 200.0,
                 indenter_rate_hz: float | None = None, stream_timeout_s: float = 2.0,
                 contact_zones: Sequence[ContactZone] = (),
                 stiffest_probe_n_per_m: float = STIFFEST_CONTACT_N_PER_M,
                 stiffest_cylinder_n_per_m: float | None = None, stop_latency_s: float = 0.0,
                 deceleration_m_s2: float = math.inf,
                 probe_range_n: float | None = None,
                 indenter_range_n: float | None = None) -> None:
        clock = lab.clock
        self.safety = safety
        self._stiffest_probe = stiffest_probe_n_per_m
        self._stop_latency_s = stop_latency_s
        self._deceleration_m_s2 = deceleration_m_s2
        self._probe = ForceWatch(lab.probe_sensor, limit_n=safety.probe_force_max_n, clock=clock,
                                 sample_rate_hz=sample_rate_hz, stream_timeout_s=stream_timeout_s,
                                 range_n=probe_range_n)
        self._indenter = ForceWatch(lab.indenter_sensor,
                                    limit_n=safety.indentation_force_limit_n, clock=clock,
                                    sample_rate_hz=indenter_rate_hz or sample_rate_hz,
                                    stream_timeout_s=stream_timeout_s, range_n=indenter_range_n)
        self._watches = (self._probe, self._indenter)
        hexapod_cap = None
        if stiffest_cylinder_n_per_m is not None:
            hexapod_cap = 1e3 * max_contact_speed_m_s(
                safety.indentation_force_limit_n,
                sample_period_s=self._indenter.sample_period_s,
                stiffness_n_per_m=stiffest_cylinder_n_per_m, stop_latency_s=stop_latency_s)
        robot = GuardedRobot(lab.robot, safety=safety, watches=self._watches,
                             own_watch=self._probe, clock=clock, contact_zones=contact_zones)
        hexapod = GuardedHexapod(lab.hexapod, safety=safety, watches=self._watches,
                                 own_watch=self._indenter, clock=clock,
                                 velocity_max_mm_s=hexapod_cap)
        for watch in self._watches:  # any trip stops all motion
            watch.on_trip(robot.stop)
            watch.on_trip(hexapod.stop)
        self._probe.watch_motion_of(lambda: robot.moving)
        self._indenter.watch_motion_of(lambda: hexapod.moving)
        probe_sensor = GuardedForceSensor(self._probe, before_bias=robot.prepare_bias)
        ultrasound = GuardedUltrasound(lab.ultrasound, safety=safety, probe_sensor=probe_sensor,
                                       clock=clock)
        self._robot = robot
        self._hexapod = hexapod
        self.devices = GuardedDevices(robot, probe_sensor, hexapod,
                                      GuardedForceSensor(self._indenter), ultrasound, clock,
                                      lab.operator)
        self._remove_listener: Callable[[], None] | None = None
        if isinstance(clock, SimClock):
            self._remove_listener = clock.on_advance(self._on_clock)
        self.set_mode("swei")
        self.arm()

    def _on_clock(self, t_from_s: float, t_to_s: float) -> None:
        error: ForceWatchError | None = None
        for watch in self._watches:  # both see every step, so both logs are complete
            try:
                watch.on_clock(t_from_s, t_to_s)
            except ForceWatchError as exc:
                error = error or exc
        if error is not None:
            raise error

    def arm(self) -> None:
        """(Re)start both force streams and clear latched trips (after make-safe / reconnect).

        Raises
        ------
        drivers.base.DeviceError
            A stream did not start; motion stays refused.
        """
        self._robot.forget_bias()
        for watch in self._watches:
            watch.start()

    @contextmanager
    def making_safe(self) -> Iterator[None]:
        """Within: the watches log but do not trip (only retracts are sent while making safe)."""
        for watch in self._watches:
            watch.suspend(True)
        try:
            yield
        finally:
            for watch in self._watches:
                watch.suspend(False)

    def set_mode(self, kind: str) -> None:
        """Activate the probe force limit of protocol ``kind`` (compression allows more) and the
        near-contact speed cap that keeps its overshoot within 5 %.

        The stream of the sensor whose device the protocol does not use is paused while that
        device is known at rest (its last motion seen finished); any motion command, read or
        bias on it restarts the stream first.
        """
        uses_probe = kind != "indentation"
        for watch, device, used in ((self._probe, self._robot, uses_probe),
                                    (self._indenter, self._hexapod, not uses_probe)):
            if used:
                watch.resume()
            elif not device.moving:
                watch.pause()
        limit = (self.safety.compression_force_max_n if kind == "compression"
                 else self.safety.probe_force_max_n)
        self._probe.set_limit(limit)
        cap = max_contact_speed_m_s(limit, sample_period_s=self._probe.sample_period_s,
                                    stiffness_n_per_m=self._stiffest_probe,
                                    stop_latency_s=self._stop_latency_s,
                                    deceleration_m_s2=self._deceleration_m_s2)
        self._robot.near_contact_speed_max_m_s = min(cap, self.safety.robot_speed_max_m_s)

    @property
    def tripped(self) -> ForceWatchError | None:
        """The first latched trip of either watch, or None."""
        return self._probe.tripped or self._indenter.tripped

    def latest_forces_n(self) -> dict[str, float | None]:
        """Newest Fz of each sensor (N) without checks, None where none was seen."""
        out: dict[str, float | None] = {}
        for key, watch in (("probe_force_n", self._probe), ("indenter_force_n", self._indenter)):
            sample = watch.peek()
            out[key] = None if sample is None else sample.fz_n
        return out

    def drain_force_log(self) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float32]]]:
        return {"probe_sensor": self._probe.drain_log(),
                "indenter_sensor": self._indenter.drain_log()}

    def force_log_view(self) -> dict[str, tuple[list[float], list[float]]]:
        """Per sensor, the watch's live log lists (see :meth:`ForceWatch.log_view`)."""
        return {"probe_sensor": self._probe.log_view(),
                "indenter_sensor": self._indenter.log_view()}

    def force_log_size(self) -> int:
        """Samples waiting in the force logs (the runner flushes them to the store)."""
        return sum(w.log_size() for w in self._watches)

    @property
    def limits_n(self) -> dict[str, float]:
        return {"probe_sensor": self._probe.limit_n, "indenter_sensor": self._indenter.limit_n}

    def close(self) -> None:
        """Stop the watches and the streams (idempotent)."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for watch in self._watches:
            watch.stop()
