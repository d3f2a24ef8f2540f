"""Build the lab's devices from a :class:`~lab.config.LabConfig`: one code path for protocols.

:func:`build_devices` returns a :class:`LabDevices` with the raw devices of every role (robot,
probe force sensor, hexapod, indenter force sensor, ultrasound system), the clock and the
operator. With ``backend = "sim"`` everywhere, the instruments are the simulators of
:mod:`drivers.sim` sharing one :class:`~drivers.sim.world.SimWorld` on a virtual
:class:`~lab.clock.SimClock`, with the config's blocks placed on the bench
(:func:`protocols.plan.bench_layout`), the robot starting inside the session's workspace
(:func:`sim_home_pose`), and the operator is simulated too. With real backends the
drivers connect to the addresses of the config, on the wall clock, and the operator is a person
at the console. Mixing simulated and real instruments is refused: the simulated ones would not
feel the real phantoms.

Protocols never see these raw devices: the session runner wraps them in :mod:`lab.safety`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from drivers.base import DeviceError, ProtectiveStopError
from drivers.force.netft import NetFtSensor
from drivers.force.serial_ft import SerialFtSensor
from drivers.force.spec import NANO17, NANO43
from drivers.hexapod.connection import PipythonGcsConnection, PyvisaGcsConnection
from drivers.hexapod.gcs import GcsHexapod
from drivers.robot.base import RobotLimits
from drivers.robot.ur import UrRtdeRobot
from drivers.sim.lab import build_sim_lab
from drivers.sim.phantom import BlockPhantom, CylinderPhantom, Inclusion
from drivers.ultrasound.cicada import CicadaUltrasound
from drivers.ultrasound.sim_system import SimUltrasound
from lab.clock import Clock, SimClock, WallClock
from lab.config import BlockConfig, CylinderConfig, SessionConfig
from lab.logs import console
from protocols.plan import PROBE_DOWN_RAD, bench_layout, travel_z_m

log = logging.getLogger(__name__)


class Operator(Protocol):
    """The person (or the simulation of one) who swaps phantoms and clears faults."""

    def place_cylinder(self, cylinder: CylinderConfig, *, contact_z_mm: float) -> None:
        """Put ``cylinder`` under the plate so that the plate touches it near ``contact_z_mm``."""
        ...

    def acknowledge_fault(self, error: DeviceError) -> bool:
        """Clear what ``error`` left behind (e.g. release a protective stop); True if cleared."""
        ...


class SimOperator:
    """Simulated operator: places cylinders in the world and releases protective stops.

    The cylinder is put so that the plate touches it ``approach gap`` below the run's start height,
    give or take 5 % of the gap (seeded), so the contact search has something to find.
    """

    def __init__(self, world: Any, seed: int) -> None:
        self._world = world
        self._seed = seed

    def place_cylinder(self, cylinder: CylinderConfig, *, contact_z_mm: float) -> None:
        rng = np.random.default_rng([self._seed, zlib.crc32(cylinder.id.encode())])
        jitter_mm = float(rng.uniform(-0.05, 0.05)) * abs(contact_z_mm) if contact_z_mm else 0.0
        phantom = CylinderPhantom(cylinder.id, cylinder.gelatin_percent,
                                  radius_mm=cylinder.radius_mm, height_mm=cylinder.height_mm)
        self._world.set_cylinder(phantom, contact_z_mm=contact_z_mm + jitter_mm)

    def acknowledge_fault(self, error: DeviceError) -> bool:
        if isinstance(error, ProtectiveStopError) or self._world.protective_stopped:
            self._world.unlock_protective_stop()
        return True


class ConsoleOperator:
    """A person at the console; non-interactive sessions cannot be helped (returns False)."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def _confirm(self, question: str) -> bool:
        if not self.interactive:
            log.error("operator action needed but the session is not interactive: %s", question)
            return False
        from rich.prompt import Confirm


        return bool(Confirm.ask(question, console=console))

    def place_cylinder(self, cylinder: CylinderConfig, *, contact_z_mm: float) -> None:
        question = (f"Place cylinder {cylinder.id!r} ({cylinder.gelatin_percent} %, lubricated) "
                    f"under the plate; the plate will start {abs(contact_z_mm):.2f} mm above it. "
                    "Ready?")
        if not self._confirm(question):
            raise DeviceError("operator", f"cylinder {cylinder.id!r} was not placed")

    def acknowledge_fault(self, error: DeviceError) -> bool:
        return self._confirm(f"{error}\nClear the fault (release the protective stop on the "
                             "pendant, check cables) and continue?")


@dataclass
class LabDevices:
    """The raw devices of a lab (protocols get them only through :class:`lab.safety.Guard`)."""

    robot: Any
    probe_sensor: Any
    hexapod: Any
    indenter_sensor: Any
    ultrasound: Any
    clock: Clock
    operator: Operator
    world: Any = None
    sim_lab: Any = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def simulated(self) -> bool:
        return self.world is not None

    def reconnect(self) -> list[str]:
        """Close and reopen every device link; returns the problems (empty when all are up)."""
        problems = []
        for device in (self.robot, self.probe_sensor, self.hexapod, self.indenter_sensor,
                       self.ultrasound):
            try:
                device.close()
            except DeviceError as exc:
                log.warning("closing %s before reconnecting: %s", device.name, exc)
            try:
                device.connect()
            except DeviceError as exc:
                problems.append(str(exc))
        return problems

    def close(self) -> None:
        """Close everything (idempotent)."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()


def block_phantom(cfg: BlockConfig) -> BlockPhantom:
    """Simulated phantom of a block config."""
    return BlockPhantom(
        cfg.id, cfg.gelatin_percent, size_mm=tuple(cfg.size_mm),
        inclusions=tuple(Inclusion(i.x_mm, i.z_mm, i.radius_mm, i.gelatin_percent)
                         for i in cfg.inclusions),
        viscosity_pa_s=cfg.viscosity_pa_s, speckle_seed=cfg.speckle_seed,
    )


def sim_home_pose(config: SessionConfig, layout: dict[str, list[float]]) -> list[float]:
    """Start pose of the simulated robot: probe face down over the middle of the session's
    workspace box, half-way between the travel height above the blocks and the top of the box
    (clipped into the box), so a session starts inside its own workspace."""
    lo = np.asarray(config.safety.workspace_min_m, dtype=float)
    hi = np.asarray(config.safety.workspace_max_m, dtype=float)
    x, y, _ = (lo + hi) / 2
    z = float(np.clip((travel_z_m(layout) + hi[2]) / 2, lo[2], hi[2]))
    return [float(x), float(y), z, *PROBE_DOWN_RAD]


def _backends(config: SessionConfig) -> set[str]:
    lab = config.lab
    return {lab.robot.backend, lab.hexapod.backend, lab.probe_force_sensor.backend,
            lab.indenter_force_sensor.backend, lab.ultrasound.backend}


def build_devices(config: SessionConfig, *, interactive: bool = False,
                  faults: Any = None) -> LabDevices:
    """Connect the devices of ``config`` (all simulated or all real); the caller must close them.

    Parameters
    ----------
    config : SessionConfig
    interactive : bool
        Real lab: whether the operator can be asked questions on the console.
    faults : drivers.sim.faults.FaultConfig, optional
        Simulated lab: faults to inject (tests).
    """
    backends = _backends(config)
    if backends == {"sim"}:
        return _build_sim(config, faults)
    if "sim" in backends:
        raise DeviceError("lab", "mixing simulated and real instruments is not supported: the "
                                 f"simulators would not feel the real phantoms (backends "
                                 f"{sorted(backends)})")
    if faults is not None:
        raise ValueError("faults can only be injected into a simulated lab")
    return _build_real(config, interactive)


def _build_sim(config: SessionConfig, faults: Any) -> LabDevices:
    lab_cfg = config.lab
    safety = config.safety
    layout = bench_layout(config)
    blocks = [(block_phantom(p), layout[p.id]) for p in config.phantoms
              if isinstance(p, BlockConfig)]
    clock = SimClock()
    watchdog_hz = lab_cfg.robot.watchdog_min_frequency_hz or None
    limits = RobotLimits(workspace_min_m=safety.workspace_min_m,
                         workspace_max_m=safety.workspace_max_m,
                         max_speed_m_s=safety.robot_speed_max_m_s,
                         max_acceleration_m_s2=safety.robot_acceleration_max_m_s2)
    timeout_s = min(lab_cfg.probe_force_sensor.timeout_s, lab_cfg.indenter_force_sensor.timeout_s)
    sim = build_sim_lab(seed=lab_cfg.sim_seed, clock=clock, blocks=blocks, faults=faults,
                        robot_limits=limits, robot_home_pose=sim_home_pose(config, layout),
                        robot_watchdog_hz=watchdog_hz,
                        rdt_rate_hz=lab_cfg.probe_force_sensor.rate_hz, timeout_s=timeout_s)
    try:
        sim.world.set_cylinder(None)
        ultrasound = SimUltrasound(sim.world, clock,
                                   np.random.default_rng([lab_cfg.sim_seed, 1]),
                                   fidelity=lab_cfg.ultrasound.fidelity,
                                   snr_db=lab_cfg.ultrasound.snr_db)
        ultrasound.connect()
    except BaseException:
        sim.close()
        raise
    devices = LabDevices(
        robot=sim.robot, probe_sensor=sim.probe_sensor, hexapod=sim.hexapod,
        indenter_sensor=sim.indenter_sensor, ultrasound=ultrasound, clock=clock,
        operator=SimOperator(sim.world, lab_cfg.sim_seed), world=sim.world, sim_lab=sim,
    )
    devices._closers += [sim.close, ultrasound.close]
    return devices


def _build_real(config: SessionConfig, interactive: bool) -> LabDevices:
    lab_cfg = config.lab
    safety = config.safety
    clock = WallClock()
    closers: list[Callable[[], None]] = []
    specs = {"nano17": NANO17, "nano43": NANO43}

    def sensor(cfg: Any, name: str) -> Any:
        if cfg.backend == "netft":
            dev = NetFtSensor(cfg.host, cfg.port, clock=clock, name=name, spec=specs[cfg.model],
                              counts_per_force=cfg.counts_per_force,
                              counts_per_torque=cfg.counts_per_torque, rdt_rate_hz=cfg.rate_hz,
                              timeout_s=cfg.timeout_s)
        else:
            dev = SerialFtSensor(cfg.serial_port, clock=clock, name=name,
                                 baudrate=cfg.baudrate, counts_per_force=cfg.counts_per_force,
                                 counts_per_torque=cfg.counts_per_torque,
                                 spec=specs[cfg.model], timeout_s=cfg.timeout_s)
        dev.connect()
        closers.append(dev.close)
        return dev

    try:
        limits = RobotLimits(workspace_min_m=safety.workspace_min_m,
                             workspace_max_m=safety.workspace_max_m,
                             max_speed_m_s=safety.robot_speed_max_m_s,
                             max_acceleration_m_s2=safety.robot_acceleration_max_m_s2)
        robot = UrRtdeRobot.from_host(
            lab_cfg.robot.host, clock, limits,
            watchdog_min_frequency_hz=lab_cfg.robot.watchdog_min_frequency_hz or None)
        closers.append(robot.close)
        robot.set_payload(lab_cfg.robot.payload_kg, (0.0, 0.0, 0.05))
        robot.set_tcp(lab_cfg.robot.tcp_offset_m)
        hx = lab_cfg.hexapod
        if hx.interface == "pipython":
            def open_connection() -> Any:
                return PipythonGcsConnection.tcp(hx.host, hx.port, timeout_s=hx.timeout_s)
        else:
            def open_connection() -> Any:
                return PyvisaGcsConnection(hx.host, hx.port, timeout_s=hx.timeout_s)
        hexapod = GcsHexapod(open_connection, clock)
        hexapod.connect()
        closers.append(hexapod.close)
        probe_sensor = sensor(lab_cfg.probe_force_sensor, "probe_sensor")
        indenter_sensor = sensor(lab_cfg.indenter_force_sensor, "indenter_sensor")
        ultrasound = CicadaUltrasound(clock, sdk_module=lab_cfg.ultrasound.sdk_module,
                                      timeout_s=lab_cfg.ultrasound.timeout_s)
        ultrasound.connect()
        closers.append(ultrasound.close)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    devices = LabDevices(robot=robot, probe_sensor=probe_sensor, hexapod=hexapod,
                         indenter_sensor=indenter_sensor, ultrasound=ultrasound, clock=clock,
                         operator=ConsoleOperator(interactive))
    devices._closers += closers
    return devices
