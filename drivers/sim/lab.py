"""A whole simulated lab: one world, one clock, every instrument connected through its real driver.

``build_sim_lab()`` starts the wire simulators (GCS on TCP, two RDT servers on UDP, all on
127.0.0.1 with OS-chosen ports, in daemon threads), connects the real drivers to them
(:class:`~drivers.hexapod.gcs.GcsHexapod`, :class:`~drivers.force.netft.NetFtSensor`) and wraps the
simulated ur_rtde interfaces in :class:`~drivers.robot.ur.UrRtdeRobot`. ``SimLab.close()`` closes
drivers first, then servers, then the world; nothing keeps running.

``serve()`` runs one wire simulator standalone in real time (for ``elastolab sim serve``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from drivers.force.netft import NetFtSensor
from drivers.force.spec import NANO17, NANO43
from drivers.hexapod.connection import PipythonGcsConnection, SocketGcsConnection
from drivers.hexapod.gcs import GcsHexapod
from drivers.robot.base import RobotLimits
from drivers.robot.ur import UrRtdeRobot
from drivers.sim.arm import DEFAULT_ROBOT_HOME_POSE
from drivers.sim.faults import FaultConfig
from drivers.sim.gcs import GcsController, GcsSimServer
from drivers.sim.netft import NetFtSimServer
from drivers.sim.phantom import BlockPhantom, CylinderPhantom
from drivers.sim.rtde import SimRtdeControl, SimRtdeReceive
from drivers.sim.world import SimWorld
from lab.clock import SimClock

#: Real-time bound on every wait for a simulated link's reply or record, in seconds. Generous on
#: purpose: in simulation a reply that is coming is never late because the host is slow (the
#: simulators answer at once in virtual time), so only an injected silence fault ever runs into
#: it. Hardware links keep the timeouts of their config. Tests that inject silence and want it
#: detected sooner shorten the silent driver's ``timeout_s`` when they inject the fault.
SIM_LINK_TIMEOUT_S = 10.0

#: Where ``build_sim_lab`` puts a block by default: top-surface centre 100 mm above the table.
DEFAULT_BLOCK_ORIGIN_M = (0.35, 0.0, 0.10)


@dataclass
class SimLab:
    """Connected simulated instruments sharing one :class:`SimWorld` and clock."""

    world: SimWorld
    clock: SimClock
    robot: UrRtdeRobot
    probe_sensor: NetFtSensor
    hexapod: GcsHexapod
    indenter_sensor: NetFtSensor
    gcs_server: GcsSimServer
    probe_netft_server: NetFtSimServer
    indenter_netft_server: NetFtSimServer
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def faults(self) -> FaultConfig:
        return self.world.faults

    def close(self) -> None:
        """Close drivers, then servers, then the world (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for device in (self.probe_sensor, self.indenter_sensor, self.hexapod):
            device.close()
        for server in (self.gcs_server, self.probe_netft_server, self.indenter_netft_server):
            server.close()
        self.world.close()

    def __enter__(self) -> SimLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_sim_lab(
    *,
    seed: int = 0,
    clock: SimClock | None = None,
    blocks: Iterable[tuple[BlockPhantom, ArrayLike]] | None = None,
    cylinder: CylinderPhantom | None = None,
    faults: FaultConfig | None = None,
    gcs_client: Literal["pipython", "socket"] = "socket",
    robot_limits: RobotLimits | None = None,
    robot_home_pose: ArrayLike = DEFAULT_ROBOT_HOME_POSE,
    robot_watchdog_hz: float | None = None,
    rdt_rate_hz: float = 200.0,
    timeout_s: float = SIM_LINK_TIMEOUT_S,
) -> SimLab:
    """Start the simulators and connect the drivers; the caller must ``close()`` the lab.

    Parameters
    ----------
    seed : int
        Seed of the world's ``numpy.random.Generator``.
    clock : SimClock or None
        Virtual clock (a new one at t = 0 by default).
    blocks : iterable of (BlockPhantom, origin in m) or None
        Blocks on the table; default one 7.5 % block at ``DEFAULT_BLOCK_ORIGIN_M``.
    cylinder : CylinderPhantom or None
        Cylinder under the hexapod plate; default a 7.5 % cylinder (r 10 mm, l0 40 mm).
    faults : FaultConfig or None
        Faults to inject (mutable later through the returned ``SimLab.faults``).
    gcs_client : {"socket", "pipython"}
        How the hexapod driver talks GCS: our socket client or PI's pipython.
    robot_limits : RobotLimits or None
        Workspace and caps of the robot driver.
    robot_home_pose : array_like, shape (6,)
        Where the simulated robot starts (TCP pose, m and rad).
    robot_watchdog_hz : float or None
        Arm the simulated controller's RTDE watchdog at this frequency through the driver.
    rdt_rate_hz : float
        RDT rate of both Net F/T simulators and drivers.
    timeout_s : float
        Real-time bound on the drivers' network waits (default :data:`SIM_LINK_TIMEOUT_S`; not
        a hardware timeout, see there).

    Notes
    -----
    The hexapod is connected but neither servo-enabled nor referenced, the robot is at its home
    pose, and the sensors are not biased: protocols do those steps explicitly, as on hardware.
    """
    clock = clock if clock is not None else SimClock()
    if blocks is None:
        blocks = [(BlockPhantom("block-7.5", 7.5), DEFAULT_BLOCK_ORIGIN_M)]
    if cylinder is None:
        cylinder = CylinderPhantom("cylinder-7.5", 7.5)
    world = SimWorld(
        clock, np.random.default_rng(seed), blocks=blocks, cylinder=cylinder, faults=faults,
        robot_home_pose=robot_home_pose,
    )
    started: list[GcsSimServer | NetFtSimServer] = []
    connected: list[NetFtSensor | GcsHexapod] = []
    try:
        gcs_server = GcsSimServer(GcsController(world)).start()
        started.append(gcs_server)
        probe_server = NetFtSimServer(world, "probe_sensor", rdt_rate_hz=rdt_rate_hz).start()
        started.append(probe_server)
        indenter_server = NetFtSimServer(world, "indenter_sensor", rdt_rate_hz=rdt_rate_hz).start()
        started.append(indenter_server)
        host, port = gcs_server.address
        if gcs_client == "pipython":
            def open_connection() -> PipythonGcsConnection:
                return PipythonGcsConnection.tcp(host, port, timeout_s=timeout_s)
        elif gcs_client == "socket":
            def open_connection() -> SocketGcsConnection:  # type: ignore[misc]
                return SocketGcsConnection(host, port, timeout_s=timeout_s)
        else:
            raise ValueError(f"gcs_client must be 'socket' or 'pipython', got {gcs_client!r}")
        hexapod = GcsHexapod(open_connection, clock)
        hexapod.connect()
        connected.append(hexapod)
        sensors = []
        for name, server, spec in (
            ("probe_sensor", probe_server, NANO43), ("indenter_sensor", indenter_server, NANO17)
        ):
            sensor = NetFtSensor(
                *server.address, clock=clock, name=name, spec=spec, rdt_rate_hz=rdt_rate_hz,
                timeout_s=timeout_s,
            )
            sensor.connect()
            connected.append(sensor)
            sensors.append(sensor)
        robot = UrRtdeRobot(SimRtdeControl(world), SimRtdeReceive(world), clock, robot_limits,
                            watchdog_min_frequency_hz=robot_watchdog_hz)
        robot.connect()
    except BaseException:
        for device in connected:
            device.close()
        for server in started:
            server.close()
        world.close()
        raise
    return SimLab(
        world, clock, robot, sensors[0], hexapod, sensors[1], gcs_server, probe_server,
        indenter_server,
    )


def _real_time_ticker(clock: SimClock, stop: threading.Event, period_s: float) -> None:
    """Advance ``clock`` with the wall clock until ``stop`` is set (standalone serving only)."""
    last = time.monotonic()
    while not stop.wait(period_s):
        now = time.monotonic()
        clock.advance(now - last)
        last = now


def serve(
    kind: Literal["hexapod", "netft"],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int = 0,
    sensor: Literal["probe_sensor", "indenter_sensor"] = "indenter_sensor",
    rdt_rate_hz: float = 200.0,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    stop: threading.Event | None = None,
    announce: bool = True,
) -> None:
    """Run one wire simulator in real time until Ctrl-C (or until ``stop`` is set).

    The world's virtual clock is advanced with the wall clock by a ticker thread, so positions,
    forces and RDT streaming run at their real rates. The default port 0 lets the OS choose; the
    bound address is printed when ``announce`` is true and passed to ``on_ready``.
    """
    clock = SimClock()
    world = SimWorld(
        clock, np.random.default_rng(seed),
        blocks=[(BlockPhantom("block-7.5", 7.5), DEFAULT_BLOCK_ORIGIN_M)],
        cylinder=CylinderPhantom("cylinder-7.5", 7.5),
    )
    if kind == "hexapod":
        server: GcsSimServer | NetFtSimServer = GcsSimServer(
            GcsController(world), host=host, port=port
        )
    elif kind == "netft":
        server = NetFtSimServer(world, sensor, host=host, port=port, rdt_rate_hz=rdt_rate_hz)
    else:
        world.close()
        raise ValueError(f"kind must be 'hexapod' or 'netft', got {kind!r}")
    stop = stop if stop is not None else threading.Event()
    ticker = threading.Thread(
        target=_real_time_ticker, args=(clock, stop, 0.005), name="sim-ticker", daemon=True
    )
    server.start()
    ticker.start()
    try:
        if announce:
            bound_host, bound_port = server.address
            print(f"{kind} simulator listening on {bound_host}:{bound_port} (Ctrl-C to stop)")
        if on_ready is not None:
            on_ready(server.address)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to end serving
    finally:
        stop.set()
        ticker.join(timeout=5.0)
        server.close()
        world.close()
