"""The one simulated world that every simulated instrument shares.

:class:`SimWorld` holds the state of the lab on a virtual :class:`~lab.clock.SimClock`:

- the UR3 tool pose and its linear motion (trapezoidal speed profile along a straight line),
  protective stops (on a force above the robot's safety limit, or injected);
- the probe face and the gelatin blocks on the table (top surface in the robot base frame);
- the hexapod plate pose and its velocity-limited motion, and the cylinder under the plate;
- the two force sensors: the Nano43 between flange and probe, the Nano17 under the plate.

Frames and signs. The robot base frame has z up; a block is placed by the base-frame position of
its block-frame origin (top-surface centre, :mod:`drivers.sim.phantom`), with block x along base x,
block y along base y and block depth along -z. The tool pose is the probe-face centre (TCP); the
probe is assumed face-down and aligned with the block axes (its orientation is tracked but does not
enter the contact model). The hexapod plate moves down (negative Z, mm) to compress the cylinder
standing under it. Both sensors report compression as positive Fz.

What is modelled: positions as exact functions of virtual time, contact forces (see
:mod:`lab.gelatin` and :mod:`drivers.sim.contact`; arm motion in :mod:`drivers.sim.arm`, plate
motion in :mod:`drivers.sim.plate`), sensor offsets, noise, quantisation and saturation,
transient force spikes, protective stops and the controller's RTDE watchdog (set, kicked and
fired in virtual time: when it fires the robot halts and the control script stops until it is
re-uploaded). Not modelled: robot dynamics and joint limits, tilt of probe or plate, friction,
lateral forces, block edges (the probe is in contact when its centre is over the block),
viscoelastic creep, temperature drift.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.force.spec import NANO17, NANO43, SensorSpec
from drivers.sim.arm import DEFAULT_ROBOT_HOME_POSE, LinearMotion, first_time_reaching
from drivers.sim.contact import TOE_STRAIN, cylinder_force_n
from drivers.sim.faults import FaultConfig
from drivers.sim.phantom import BlockPhantom, CylinderPhantom
from drivers.sim.plate import HEXAPOD_AXES, PlateMotion, cylinder_compression_mm, plate_move
from lab.clock import SimClock
from lab.gelatin import flat_punch_force_n

SensorName = Literal["probe_sensor", "indenter_sensor"]

#: Table stiffness (N/mm) felt by a probe pushed into the table beside the blocks.
TABLE_STIFFNESS_N_PER_MM = 1e4


@dataclass(frozen=True)
class ProbeGeometry:
    """Probe face: ``face_lateral_mm`` along the array (block x), ``face_elevation_mm`` along y."""

    face_lateral_mm: float = 40.0
    face_elevation_mm: float = 10.0

    @property
    def face_area_mm2(self) -> float:
        return self.face_lateral_mm * self.face_elevation_mm


@dataclass(frozen=True)
class PlacedBlock:
    """A block phantom and the base-frame position (m) of its top-surface centre."""

    phantom: BlockPhantom
    origin_m: tuple[float, float, float]


@dataclass(frozen=True)
class ProbeContact:
    """Where the probe is relative to the block under it, and how hard it presses.

    Attributes
    ----------
    phantom : BlockPhantom or None
        The block under the probe centre, or None.
    lateral_offset_mm, elevation_offset_mm : float
        Probe-centre position in the block frame (x lateral, y elevation), mm; 0 without a block.
    indentation_mm : float
        Depth of the probe face below the block's top surface, mm (negative above it).
    force_n : float
        Contact force in N (>= 0), before sensor noise.
    in_contact : bool
        True when ``force_n > 0``.
    """

    phantom: BlockPhantom | None
    lateral_offset_mm: float
    elevation_offset_mm: float
    indentation_mm: float
    force_n: float
    in_contact: bool


class SimWorld:
    """Shared physical state of the simulated lab (thread-safe).

    Parameters
    ----------
    clock : SimClock
        Virtual clock; the world listens to it to detect protective stops along a motion.
    rng : numpy.random.Generator
        Source of all randomness (sensor noise, offsets, packet loss).
    blocks : iterable of (BlockPhantom, (x, y, z) in m)
        Blocks on the table and the base-frame position of their top-surface centre.
    cylinder : CylinderPhantom or None
        Cylinder under the hexapod plate.
    faults : FaultConfig or None
        Injected faults (mutable; may be changed during a run).
    probe : ProbeGeometry
        Probe face size.
    robot_home_pose : array_like, shape (6,)
        Initial tool pose [x, y, z, rx, ry, rz] in m and rad.
    cylinder_contact_z_mm : float
        Hexapod Z (mm) at which the plate touches the top of the uncompressed cylinder.
    protective_stop_force_n : float
        Contact force (N) at which the robot's safety system triggers a protective stop.
    table_z_m : float
        Height of the table top in the base frame (m).
    """

    def __init__(
        self,
        clock: SimClock,
        rng: np.random.Generator,
        *,
        blocks: Iterable[tuple[BlockPhantom, ArrayLike]] = (),
        cylinder: CylinderPhantom | None = None,
        faults: FaultConfig | None = None,
        probe: ProbeGeometry | None = None,
        robot_home_pose: ArrayLike = DEFAULT_ROBOT_HOME_POSE,
        cylinder_contact_z_mm: float = -1.0,
        protective_stop_force_n: float = 50.0,
        table_z_m: float = 0.0,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.faults = faults if faults is not None else FaultConfig()
        self.probe = probe if probe is not None else ProbeGeometry()
        self.protective_stop_force_n = float(protective_stop_force_n)
        self.table_z_m = float(table_z_m)
        self.cylinder_contact_z_mm = float(cylinder_contact_z_mm)
        self.toe_strain = TOE_STRAIN
        self.sensor_specs: dict[str, SensorSpec] = {
            "probe_sensor": NANO43, "indenter_sensor": NANO17,
        }
        self._lock = threading.RLock()
        self._blocks: list[PlacedBlock] = []
        self._cylinder = cylinder
        home = np.asarray(robot_home_pose, dtype=np.float64).reshape(6)
        self._robot_motion = LinearMotion(home, home, clock.now(), 1.0, 1.0)
        self._protective_stop = False
        self._protective_stop_injected = False
        self._program_running = True
        self._watchdog_period_s: float | None = None
        self._watchdog_last_kick_s = clock.now()
        self._payload: tuple[float, tuple[float, float, float]] = (0.0, (0.0, 0.0, 0.0))
        self._tcp_offset = np.zeros(6)
        zero = dict.fromkeys(HEXAPOD_AXES, 0.0)
        self._hexapod_motion = PlateMotion(zero, dict(zero), clock.now(), 0.0)
        # Unloaded sensor offsets (tool weight, drift): why a bias is needed before measuring.
        self._sensor_offsets = {
            name: (rng.normal(0.0, 0.05, 3), rng.normal(0.0, 5e-4, 3)) for name in self.sensor_specs
        }
        self._sensor_offsets["probe_sensor"][0][2] -= 0.8  # probe weight hangs on the Nano43
        for phantom, origin in blocks:
            self.add_block(phantom, origin)
        self._remove_listener: Callable[[], None] | None = clock.on_advance(self._on_advance)

    def close(self) -> None:
        """Stop listening to the clock."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    # ------------------------------------------------------------------ phantoms
    def add_block(self, phantom: BlockPhantom, origin_m: ArrayLike) -> None:
        """Put ``phantom`` on the table with its top-surface centre at ``origin_m`` (base frame)."""
        origin = tuple(float(v) for v in np.asarray(origin_m, dtype=float).reshape(3))
        with self._lock:
            if any(b.phantom.phantom_id == phantom.phantom_id for b in self._blocks):
                raise ValueError(f"block {phantom.phantom_id!r} is already in the world")
            self._blocks.append(PlacedBlock(phantom, origin))  # type: ignore[arg-type]

    def remove_block(self, phantom_id: str) -> None:
        with self._lock:
            kept = [b for b in self._blocks if b.phantom.phantom_id != phantom_id]
            if len(kept) == len(self._blocks):
                raise KeyError(f"no block {phantom_id!r} in the world")
            self._blocks = kept

    @property
    def blocks(self) -> tuple[PlacedBlock, ...]:
        with self._lock:
            return tuple(self._blocks)

    def set_cylinder(
        self, phantom: CylinderPhantom | None, *, contact_z_mm: float | None = None
    ) -> None:
        """Put ``phantom`` under the hexapod plate (None removes it).

        ``contact_z_mm`` (default: unchanged) is the hexapod Z at which the plate touches it.
        """
        with self._lock:
            self._cylinder = phantom
            if contact_z_mm is not None:
                self.cylinder_contact_z_mm = float(contact_z_mm)

    @property
    def cylinder(self) -> CylinderPhantom | None:
        return self._cylinder

    # ------------------------------------------------------------------ robot
    def robot_pose(self, t_s: float | None = None) -> NDArray[np.float64]:
        """Tool pose [x, y, z, rx, ry, rz] (m, rad) at ``t_s`` (default now), shape (6,)."""
        with self._lock:
            t = self.clock.now() if t_s is None else t_s
            return self._robot_motion.pose(t)

    def robot_move_linear(
        self, target_pose: ArrayLike, *, speed_m_s: float, acceleration_m_s2: float
    ) -> None:
        """Start a linear move from the current pose (the previous move, if any, is replaced)."""
        target = np.asarray(target_pose, dtype=np.float64).reshape(6)
        if speed_m_s <= 0 or acceleration_m_s2 <= 0:
            raise ValueError("speed and acceleration must be > 0")
        with self._lock:
            if self._protective_stop:
                raise RuntimeError("robot is in a protective stop")
            if not self._program_running:
                raise RuntimeError("the control script is not running")
            now = self.clock.now()
            start = self._robot_motion.pose(now)
            self._robot_motion = LinearMotion(start, target, now, speed_m_s, acceleration_m_s2)

    def robot_stop(self) -> None:
        """Stop the current move where it is."""
        with self._lock:
            self._halt_robot(self.clock.now())

    def robot_moving(self) -> bool:
        with self._lock:
            return self.clock.now() < self._robot_motion.t_end_s

    def robot_motion_end_s(self) -> float:
        """Virtual time at which the current (or last) move ends."""
        with self._lock:
            return self._robot_motion.t_end_s

    def robot_target_reached(self) -> bool:
        with self._lock:
            m = self._robot_motion
            return m.t_stop_s is None and self.clock.now() >= m.t_end_s

    @property
    def protective_stopped(self) -> bool:
        with self._lock:
            return self._protective_stop

    def trigger_protective_stop(self) -> None:
        """Put the robot in a protective stop now (as its safety system would)."""
        with self._lock:
            self._halt_robot(self.clock.now())
            self._protective_stop = True

    def unlock_protective_stop(self) -> None:
        """Release a protective stop (an operator action; drivers never call this themselves)."""
        with self._lock:
            self._protective_stop = False

    # -- controller script and its RTDE watchdog (ur_rtde's setWatchdog / kickWatchdog)
    @property
    def robot_program_running(self) -> bool:
        """True while the controller runs the RTDE control script (False after a watchdog stop)."""
        with self._lock:
            return self._program_running

    def robot_set_watchdog(self, min_frequency_hz: float) -> None:
        """Arm the controller's watchdog: without a kick for ``1 / min_frequency_hz`` s of
        virtual time the robot halts and the control script stops (ur_rtde's "stop" action)."""
        if not min_frequency_hz > 0:
            raise ValueError(f"watchdog frequency must be > 0 Hz, got {min_frequency_hz}")
        with self._lock:
            self._watchdog_period_s = 1.0 / float(min_frequency_hz)
            self._watchdog_last_kick_s = self.clock.now()

    def robot_kick_watchdog(self) -> None:
        """An input update from the host: restarts the watchdog period."""
        with self._lock:
            self._watchdog_last_kick_s = self.clock.now()

    def robot_restart_program(self) -> bool:
        """Start the control script again (``reuploadScript``); the new script has no watchdog.

        Returns False (nothing done) while the robot is in a protective stop.
        """
        with self._lock:
            if self._protective_stop:
                return False
            self._program_running = True
            self._watchdog_period_s = None
            return True

    def set_payload(self, mass_kg: float, cog_m: ArrayLike) -> None:
        cog = tuple(float(v) for v in np.asarray(cog_m, dtype=float).reshape(3))
        with self._lock:
            self._payload = (float(mass_kg), cog)  # type: ignore[assignment]

    def set_tcp(self, offset: ArrayLike) -> None:
        with self._lock:
            self._tcp_offset = np.asarray(offset, dtype=float).reshape(6).copy()

    @property
    def payload(self) -> tuple[float, tuple[float, float, float]]:
        return self._payload

    @property
    def tcp_offset(self) -> NDArray[np.float64]:
        return self._tcp_offset.copy()

    def robot_tool_force(self) -> NDArray[np.float64]:
        """The robot's own TCP force estimate [Fx, Fy, Fz, Tx, Ty, Tz] (N, N m), base frame.

        The contact pushes the tool up (+z). UR's estimate from joint currents is coarse: Gaussian
        noise of 0.5 N and 0.02 N m is added.
        """
        with self._lock:
            force = self.probe_contact().force_n
            out = np.array([0.0, 0.0, force, 0.0, 0.0, 0.0])
            out[:3] += self.rng.normal(0.0, 0.5, 3)
            out[3:] += self.rng.normal(0.0, 0.02, 3)
            return out

    def _halt_robot(self, t_s: float) -> None:
        m = self._robot_motion
        if t_s < m.t_end_s:
            m.t_stop_s = t_s

    # ------------------------------------------------------------------ probe contact
    def probe_contact(self, t_s: float | None = None) -> ProbeContact:
        """Contact of the probe with the block under it at ``t_s`` (default now)."""
        with self._lock:
            return self._contact_at(self.robot_pose(t_s))

    def _contact_at(self, pose: NDArray[np.float64]) -> ProbeContact:
        x_m, y_m, z_m = (float(v) for v in pose[:3])
        for placed in self._blocks:
            ox, oy, oz = placed.origin_m
            lateral_mm = (x_m - ox) * 1e3
            elevation_mm = (y_m - oy) * 1e3
            size_x, size_y, _ = placed.phantom.size_mm
            if abs(lateral_mm) <= size_x / 2 and abs(elevation_mm) <= size_y / 2:
                indentation_mm = (oz - z_m) * 1e3
                force = flat_punch_force_n(
                    placed.phantom.youngs_modulus_kpa, indentation_mm,
                    face_area_mm2=self.probe.face_area_mm2,
                )
                return ProbeContact(
                    placed.phantom, lateral_mm, elevation_mm, indentation_mm, force, force > 0
                )
        depth_mm = (self.table_z_m - z_m) * 1e3
        force = max(depth_mm, 0.0) * TABLE_STIFFNESS_N_PER_MM
        return ProbeContact(None, 0.0, 0.0, depth_mm, force, force > 0)

    # ------------------------------------------------------------------ hexapod
    def hexapod_position(self, t_s: float | None = None) -> dict[str, float]:
        """Plate pose by axis: X Y Z in mm, U V W in degrees, at ``t_s`` (default now)."""
        with self._lock:
            t = self.clock.now() if t_s is None else t_s
            return self._hexapod_motion.position(t)

    def hexapod_axis_position(self, axis: str, t_s: float | None = None) -> float:
        """One axis of :meth:`hexapod_position` (``"X"`` ... ``"W"``)."""
        with self._lock:
            t = self.clock.now() if t_s is None else t_s
            return self._hexapod_motion.axis_position(axis, t)

    def hexapod_move(self, target: dict[str, float], *, velocity_mm_s: float) -> float:
        """Start a straight move to ``target`` (missing axes keep their target); returns duration.

        All axes arrive together. Translation runs at ``velocity_mm_s``; rotation at the same
        number of degrees per second, whichever takes longer.
        """
        if velocity_mm_s <= 0:
            raise ValueError(f"velocity must be > 0 mm/s, got {velocity_mm_s}")
        with self._lock:
            now = self.clock.now()
            self._hexapod_motion = plate_move(
                self._hexapod_motion.position(now), target, t_start_s=now,
                velocity_mm_s=velocity_mm_s,
            )
            return self._hexapod_motion.duration_s

    def hexapod_target(self) -> dict[str, float]:
        with self._lock:
            return dict(self._hexapod_motion.target)

    def hexapod_halt(self) -> None:
        """Stop the plate where it is; the target becomes the current position."""
        with self._lock:
            now = self.clock.now()
            here = self._hexapod_motion.position(now)
            self._hexapod_motion = PlateMotion(here, dict(here), now, 0.0)

    def hexapod_on_target(self) -> bool:
        with self._lock:
            return self._hexapod_motion.arrived(self.clock.now())

    def cylinder_compression_mm(self, t_s: float | None = None) -> float:
        """Shortening of the cylinder (mm, >= 0) at ``t_s``; 0 without a cylinder."""
        with self._lock:
            if self._cylinder is None:
                return 0.0
            return cylinder_compression_mm(self.cylinder_contact_z_mm,
                                           self.hexapod_axis_position("Z", t_s))

    def cylinder_force_n(self, t_s: float | None = None) -> float:
        """Force of the cylinder on the plate in N (noise-free)."""
        with self._lock:
            cyl = self._cylinder
            if cyl is None:
                return 0.0
            return cylinder_force_n(
                cyl.youngs_modulus_kpa, self.cylinder_compression_mm(t_s),
                radius_mm=cyl.radius_mm, height_mm=cyl.height_mm, toe_strain=self.toe_strain,
            )

    # ------------------------------------------------------------------ sensors
    def sensor_wrench(
        self, sensor: SensorName, t_s: float | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], bool]:
        """One raw (unbiased) sample of ``sensor`` at ``t_s`` (default now).

        Returns
        -------
        force_n : ndarray, shape (3,)
            Load + unloaded offset + spike + Gaussian noise, quantised to the resolution and
            clipped to the range.
        torque_nm : ndarray, shape (3,)
            Offset + noise, quantised and clipped.
        saturated : bool
            True if any channel reached its range.
        """
        with self._lock:
            t = self.clock.now() if t_s is None else t_s
            spec = self.sensor_specs[sensor]
            if sensor == "probe_sensor":
                load_n = self.probe_contact(t).force_n
            elif sensor == "indenter_sensor":
                load_n = self.cylinder_force_n(t)
            else:
                raise ValueError(f"unknown sensor {sensor!r}")
            offset_f, offset_t = self._sensor_offsets[sensor]
            # plain floats (this runs at 200 Hz per stream; small-array numpy dominates): the
            # same draws and the same IEEE operations as offset + normal(0, noise, 3) per part
            z = self.rng.standard_normal(6).tolist()
            spike_n = self.faults.spike_n(sensor, t) if self.faults.force_spikes else 0.0
        f_noise, t_noise = spec.force_noise_n, spec.torque_noise_nm
        fx, fy, fz = offset_f.tolist()
        tx, ty, tz = offset_t.tolist()
        f = _quantised((fx + f_noise * z[0], fy + f_noise * z[1],
                        (fz + f_noise * z[2]) + (load_n + spike_n)), spec.force_resolution_n)
        t = _quantised((tx + t_noise * z[3], ty + t_noise * z[4], tz + t_noise * z[5]),
                       spec.torque_resolution_nm)
        rfx, rfy, rfz = spec.force_range_n
        rtx, rty, rtz = spec.torque_range_nm
        saturated = not (abs(f[0]) < rfx and abs(f[1]) < rfy and abs(f[2]) < rfz
                         and abs(t[0]) < rtx and abs(t[1]) < rty and abs(t[2]) < rtz)
        force_n = np.array([min(max(f[0], -rfx), rfx), min(max(f[1], -rfy), rfy),
                            min(max(f[2], -rfz), rfz)])
        torque_nm = np.array([min(max(t[0], -rtx), rtx), min(max(t[1], -rty), rty),
                              min(max(t[2], -rtz), rtz)])
        return force_n, torque_nm, saturated

    # ------------------------------------------------------------------ time
    def _on_advance(self, t_from_s: float, t_to_s: float) -> None:
        """Find protective stops (force limit or injected) and watchdog stops between two clock
        readings."""
        with self._lock:
            if self._protective_stop:
                return
            injected = self.faults.protective_stop_at_s
            if injected is not None and not self._protective_stop_injected and injected <= t_to_s:
                self._protective_stop_injected = True
                self._halt_robot(max(injected, t_from_s))
                self._protective_stop = True
                return
            t_watchdog = np.inf
            if self._program_running and self._watchdog_period_s is not None:
                t_watchdog = max(self._watchdog_last_kick_s + self._watchdog_period_s, t_from_s)
            if self._force_stop_between(t_from_s, min(t_to_s, t_watchdog)):
                return
            if t_watchdog <= t_to_s:
                self._halt_robot(float(t_watchdog))
                self._program_running = False
                self._watchdog_period_s = None

    def _force_stop_between(self, t_from_s: float, t_to_s: float) -> bool:
        """Protective stop where the contact force first reaches the robot's limit in the
        interval; True if it did."""
        t = first_time_reaching(
            self._robot_motion, t_from_s, t_to_s,
            lambda pose: self._contact_at(pose).force_n, self.protective_stop_force_n,
        )
        if t is None:
            return False
        self._halt_robot(t)
        self._protective_stop = True
        return True


def _quantised(values: tuple[float, ...], step: float) -> list[float]:
    """``values`` rounded to multiples of ``step`` (half to even, as :func:`numpy.round`);
    non-finite values pass unchanged (``v - v`` is 0 only for finite ``v``)."""
    return [round(v / step) * step if v - v == 0 else v for v in values]
