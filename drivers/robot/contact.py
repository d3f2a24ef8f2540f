"""Force-controlled placement of the probe with the Nano43 on the end effector.

:class:`ContactLogic` gets its parts (robot, sensor, clock) as fields, never the whole lab.
The approach: move to a stand-off above the expected surface, bias the sensor there (explicitly,
with the probe in air), then descend slowly in short bounded segments, reading the sensor every
control period, and stop as soon as the axial force reaches the lower edge of the band; then
correct the depth in small steps (Newton steps on the contact stiffness measured during the
descent) until ``|F - target| <= tolerance / 2``. Force above ``max_force_n`` stops the robot and
raises. The sensor's Fz is taken positive in compression (see :mod:`drivers.sim.world`).

Why segments. A robot keeps executing its last move when the host loses the force sensor or the
robot link (a simulated robot does, and so does a UR without the RTDE watchdog). One long descent
to the bottom of the search range would then press several newtons into the phantom. Each segment
therefore ends no deeper than ``(max_force_n - F - force_margin_n) / max_stiffness_n_per_m`` below
the point where the force F was last read at rest (and never more than ``max_segment_m``), where
``max_stiffness_n_per_m`` is the contact stiffness of the stiffest plausible phantom: whatever the
host loses during a segment, the robot stops at the segment's end with at most ``max_force_n`` on
the probe. The sensor is read at rest before every segment; a sensor or link error stops the robot
(if it can still be reached) and is raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.base import DeviceError, DeviceTimeoutError, MotionStatus, Wrench
from drivers.robot.base import Robot
from lab.clock import Clock

log = logging.getLogger(__name__)

#: Contact stiffness (N/m) of the stiffest phantom the lab makes: 17.5 % gelatin (126.05 kPa) under
#: the 40 x 10 mm probe face is 3.79 N/mm as a flat punch of equal area (Sneddon); elongated faces
#: are somewhat stiffer than their equal-area circle (King 1987), hence the 1.25 factor.
STIFFEST_CONTACT_N_PER_M = 4750.0
#: Fastest allowed search speed (m/s): one 200 Hz control period covers at most 25 um.
MAX_SEARCH_SPEED_M_S = 0.005


class ContactSensor(Protocol):
    """What the contact logic needs of a force sensor: a sample now, and an explicit bias.

    A raw :class:`~drivers.force.base.ForceSensor` is one; so is the guard's watched sensor
    (:class:`lab.safety.GuardedForceSensor`), which protocols use.
    """

    name: str

    def read(self) -> Wrench: ...
    def bias(self) -> None: ...


class ContactError(DeviceError):
    """Contact could not be established or held within its force band."""


@dataclass(frozen=True)
class ForceTrace:
    """Samples recorded during an approach or hold.

    Attributes
    ----------
    t_s : ndarray, shape (n,)
        Sample times on the clock, s.
    z_m : ndarray, shape (n,)
        Commanded or measured TCP height at each sample, m (base frame).
    force_n : ndarray, shape (n,)
        Axial force Fz, N (compression positive).
    """

    t_s: NDArray[np.float64]
    z_m: NDArray[np.float64]
    force_n: NDArray[np.float64]


@dataclass(frozen=True)
class ContactResult:
    """Outcome of :meth:`ContactLogic.approach`.

    ``pose`` is the TCP pose holding the target force, ``force_n`` the mean force there,
    ``first_contact_pose`` the pose where the force first exceeded the contact threshold,
    ``stiffness_n_per_m`` the contact stiffness measured during the descent.
    """

    pose: NDArray[np.float64]
    force_n: float
    first_contact_pose: NDArray[np.float64]
    stiffness_n_per_m: float
    trace: ForceTrace


class _Recorder:
    def __init__(self) -> None:
        self.t: list[float] = []
        self.z: list[float] = []
        self.f: list[float] = []

    def add(self, t_s: float, z_m: float, force_n: float) -> None:
        self.t.append(t_s)
        self.z.append(z_m)
        self.f.append(force_n)

    def trace(self) -> ForceTrace:
        return ForceTrace(np.asarray(self.t), np.asarray(self.z), np.asarray(self.f))


@dataclass
class ContactLogic:
    """Bring the probe into contact at ``target_force_n`` and hold it there.

    Parameters
    ----------
    robot, sensor, clock
        The parts it drives.
    target_force_n : float
        Contact force to reach (0.2 N in [SWEI]).
    tolerance_n : float
        Accepted deviation |F - target|.
    max_force_n : float
        Abort (stop and raise) above this force.
    standoff_m : float
        Start of the slow descent above the surface hint.
    max_travel_m : float
        Longest slow descent below the surface hint before giving up.
    approach_speed_m_s, search_speed_m_s : float
        Speeds of the move to the stand-off and of the slow descent (the latter at most
        ``MAX_SEARCH_SPEED_M_S``).
    max_stiffness_n_per_m : float
        Contact stiffness of the stiffest phantom that may be under the probe (bounds the
        segments of the descent, see the module docstring).
    max_segment_m : float
        Longest segment of the descent.
    force_margin_n : float
        Allowance for sensor noise and offset when sizing a segment.
    acceleration_m_s2 : float
        Acceleration of all moves.
    control_period_s : float
        Time between two sensor reads (200 Hz by default).
    samples_per_estimate : int
        Sensor reads averaged for each force estimate during corrections.
    max_corrections : int
        Correction steps allowed to reach the band.
    max_step_m : float
        Largest single depth correction.
    bias_at_standoff : bool
        Bias the sensor at the stand-off before descending (probe in air).
    timeout_s : float
        Limit for each motion wait.
    """

    robot: Robot
    sensor: ContactSensor
    clock: Clock
    target_force_n: float = 0.2
    tolerance_n: float = 0.05
    max_force_n: float = 1.0
    standoff_m: float = 0.005
    max_travel_m: float = 0.02
    approach_speed_m_s: float = 0.01
    search_speed_m_s: float = 0.001
    max_stiffness_n_per_m: float = STIFFEST_CONTACT_N_PER_M
    max_segment_m: float = 5e-4
    force_margin_n: float = 0.05
    acceleration_m_s2: float = 0.1
    control_period_s: float = 0.005
    samples_per_estimate: int = 4
    max_corrections: int = 40
    max_step_m: float = 2e-4
    bias_at_standoff: bool = True
    timeout_s: float = 60.0
    _stiffness_n_per_m: float = field(default=1000.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.tolerance_n < self.target_force_n < self.max_force_n:
            raise ValueError("need 0 < tolerance_n < target_force_n < max_force_n")
        if self.control_period_s <= 0 or self.samples_per_estimate < 1:
            raise ValueError("control_period_s must be > 0 and samples_per_estimate >= 1")
        if not 0 < self.search_speed_m_s <= MAX_SEARCH_SPEED_M_S:
            raise ValueError(f"search_speed_m_s must be in (0, {MAX_SEARCH_SPEED_M_S}] m/s, got "
                             f"{self.search_speed_m_s}")
        if self.max_stiffness_n_per_m <= 0 or self.max_segment_m <= 0 or self.force_margin_n < 0:
            raise ValueError("max_stiffness_n_per_m and max_segment_m must be > 0 and "
                             "force_margin_n >= 0")
        if self.target_force_n + self.force_margin_n >= self.max_force_n:
            raise ValueError(f"target_force_n + force_margin_n ({self.target_force_n} + "
                             f"{self.force_margin_n} N) leaves no room below max_force_n "
                             f"({self.max_force_n} N) for the descent")

    @property
    def name(self) -> str:
        return f"{self.robot.name}+{self.sensor.name}"

    # ------------------------------------------------------------------ helpers
    def _read_fz(self, rec: _Recorder) -> float:
        self.clock.sleep(self.control_period_s)
        sample = self.sensor.read()
        fz = sample.fz_n
        rec.add(sample.t_s, float(self.robot.tool_pose()[2]), fz)
        if fz > self.max_force_n:
            self.robot.stop()
            raise ContactError(
                self.name, f"contact force {fz:.3f} N exceeds the limit {self.max_force_n} N"
            )
        return fz

    def _mean_fz(self, rec: _Recorder) -> float:
        return float(np.mean([self._read_fz(rec) for _ in range(self.samples_per_estimate)]))

    def _move(self, pose: NDArray[np.float64], speed_m_s: float) -> MotionStatus:
        return self.robot.move_linear(
            pose, speed_m_s=speed_m_s, acceleration_m_s2=self.acceleration_m_s2
        )

    def _settle_to_band(self, rec: _Recorder) -> tuple[NDArray[np.float64], float]:
        """Newton steps on the measured stiffness until |F - target| <= tolerance / 2."""
        force = self._mean_fz(rec)
        for _ in range(self.max_corrections):
            if abs(force - self.target_force_n) <= self.tolerance_n / 2:
                break
            step = (self.target_force_n - force) / self._stiffness_n_per_m
            # deeper steps also stay within the bound of a descent segment (module docstring)
            step = float(np.clip(step, -self.max_step_m,
                                 min(self.max_step_m, self._segment_m(force))))
            pose = self.robot.tool_pose()
            pose[2] -= step  # deeper (lower z) for more force
            self._move(pose, self.search_speed_m_s).wait(self.timeout_s)
            force = self._mean_fz(rec)
        if abs(force - self.target_force_n) > self.tolerance_n:
            raise ContactError(
                self.name, f"force {force:.3f} N not within {self.target_force_n} +/- "
                f"{self.tolerance_n} N after {self.max_corrections} corrections"
            )
        return self.robot.tool_pose(), force

    def _segment_m(self, force_n: float) -> float:
        """Longest descent from a point where ``force_n`` was read at rest (see module doc)."""
        headroom_n = self.max_force_n - max(force_n, 0.0) - self.force_margin_n
        return min(self.max_segment_m, max(headroom_n, 0.0) / self.max_stiffness_n_per_m)

    def _stop_after(self, error: DeviceError) -> None:
        """Stop the robot after ``error``; a failing stop is noted on ``error``, not raised."""
        try:
            self.robot.stop()
        except DeviceError as stop_error:
            log.error("%s: could not stop the robot after %s: %s", self.name, error, stop_error)
            error.add_note(f"stopping the robot failed too: {stop_error}")

    def _descend(self, hint: NDArray[np.float64], rec: _Recorder
                 ) -> NDArray[np.float64]:
        """Segmented descent until the force reaches the band; returns the first-contact pose."""
        floor_z = hint[2] - self.max_travel_m
        threshold = self.target_force_n - self.tolerance_n / 2
        contact_threshold = min(self.tolerance_n, self.target_force_n / 4)
        first_contact: NDArray[np.float64] | None = None
        fz = self._read_fz(rec)  # at rest at the stand-off: the sensor answers before any descent
        while fz < threshold:
            here = self.robot.tool_pose()
            if here[2] <= floor_z + 1e-7:
                raise ContactError(
                    self.name, f"no contact within {self.max_travel_m * 1e3:.1f} mm below the "
                    f"surface hint (last force {fz:.3f} N)"
                )
            end = here.copy()
            end[2] = max(floor_z, here[2] - self._segment_m(fz))
            status = self._move(end, self.search_speed_m_s)
            deadline_s = self.clock.now() + self.timeout_s
            while not status.done:
                if self.clock.now() > deadline_s:
                    raise DeviceTimeoutError(self.name, f"descent segment not finished after "
                                             f"{self.timeout_s} s", command=status.command)
                fz = self._read_fz(rec)
                if first_contact is None and fz >= contact_threshold:
                    first_contact = self.robot.tool_pose()
                if fz >= threshold:
                    self.robot.stop(success=True)
                    break
            else:
                status.wait(self.timeout_s)  # raises if the segment ended short of its end
                fz = self._read_fz(rec)  # at rest: verified before the next segment
            if first_contact is None and fz >= contact_threshold:
                first_contact = self.robot.tool_pose()
        assert first_contact is not None  # contact_threshold < threshold
        self._stiffness_n_per_m = _stiffness(rec.trace(), contact_threshold)
        return first_contact

    # ------------------------------------------------------------------ public
    def approach(self, surface_hint_pose: ArrayLike) -> ContactResult:
        """Bring the probe into contact below ``surface_hint_pose`` (TCP pose at the surface).

        Raises
        ------
        ContactError
            No contact within ``max_travel_m`` below the hint, force above ``max_force_n``, or
            the band not reached after ``max_corrections``.
        DeviceError
            A sensor or robot error during the descent or the corrections; the robot was told to
            stop first (if the link allows; a failed stop is in the error's notes).
        ProtectiveStopError, DeviceTimeoutError, LimitError
            From the robot.
        """
        hint = np.asarray(surface_hint_pose, dtype=np.float64).reshape(6)
        start = hint.copy()
        start[2] += self.standoff_m
        self._move(start, self.approach_speed_m_s).wait(self.timeout_s)
        if self.bias_at_standoff:
            self.clock.sleep(self.control_period_s)
            self.sensor.bias()
        rec = _Recorder()
        try:
            first_contact = self._descend(hint, rec)
            pose, force = self._settle_to_band(rec)
        except DeviceError as error:
            self._stop_after(error)
            raise
        return ContactResult(pose, force, first_contact, self._stiffness_n_per_m, rec.trace())

    def hold(self, duration_s: float) -> ForceTrace:
        """Hold the force in the band for ``duration_s``, correcting outside half the band."""
        rec = _Recorder()
        t_end = self.clock.now() + duration_s
        while self.clock.now() < t_end:
            fz = self._read_fz(rec)
            if abs(fz - self.target_force_n) > self.tolerance_n / 2:
                step = float(np.clip(
                    (self.target_force_n - fz) / self._stiffness_n_per_m,
                    -self.max_step_m / 4, self.max_step_m / 4,
                ))
                pose = self.robot.tool_pose()
                pose[2] -= step
                self._move(pose, self.search_speed_m_s).wait(self.timeout_s)
        return rec.trace()

    def retract(self, height_m: float) -> None:
        """Lift the probe straight up by ``height_m``."""
        if height_m <= 0:
            raise ValueError(f"retract height must be > 0 m, got {height_m}")
        pose = self.robot.tool_pose()
        pose[2] += height_m
        self._move(pose, self.approach_speed_m_s).wait(self.timeout_s)


def _stiffness(trace: ForceTrace, threshold_n: float) -> float:
    """Contact stiffness -dF/dz (N/m) fitted over in-contact samples; 1000 N/m if too few."""
    inside = trace.force_n >= threshold_n
    if np.count_nonzero(inside) < 2 or np.ptp(trace.z_m[inside]) == 0:
        return 1000.0
    slope = np.polyfit(trace.z_m[inside], trace.force_n[inside], 1)[0]
    return float(-slope) if slope < 0 else 1000.0
