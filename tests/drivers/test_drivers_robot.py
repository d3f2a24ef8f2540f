"""UR3 driver on the simulated ur_rtde interfaces, and the force-controlled contact logic."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.base import DeviceError, LimitError, ProtectiveStopError
from drivers.force.netft import NetFtSensor
from drivers.force.spec import NANO43
from drivers.robot.contact import ContactError, ContactLogic
from drivers.robot.ur import UrRtdeRobot
from drivers.sim.netft import NetFtSimServer
from drivers.sim.phantom import BlockPhantom
from drivers.sim.rtde import SimRtdeControl, SimRtdeReceive
from drivers.sim.world import SimWorld
from lab.clock import SimClock

SURFACE = np.array([0.35, 0.0, 0.10, np.pi, 0.0, 0.0])  # top-surface centre of the block


class Recording:
    """Proxy that records every vendor method called on the wrapped interface."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if callable(attr):
            def wrapped(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)
            return wrapped
        return attr


@pytest.fixture
def world():
    w = SimWorld(SimClock(), np.random.default_rng(7),
                 blocks=[(BlockPhantom("b", 7.5), SURFACE[:3])])
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def robot(world):
    control = Recording(SimRtdeControl(world))
    r = UrRtdeRobot(control, SimRtdeReceive(world), world.clock)
    r.connect()
    return r


def test_linear_move_takes_trapezoid_time_and_reaches_target(robot, world):
    start = robot.tool_pose()
    target = start.copy()
    target[0] += 0.05
    t0 = world.clock.now()
    status = robot.move_linear(target, speed_m_s=0.05, acceleration_m_s2=0.5)
    assert not status.done
    status.wait(timeout_s=5.0)
    assert status.success
    # 50 mm at 50 mm/s with 0.5 m/s^2: 1 s cruise + 0.1 s for the ramps, polled every 8 ms
    assert world.clock.now() - t0 == pytest.approx(1.1, abs=0.01)
    np.testing.assert_allclose(robot.tool_pose(), target, atol=1e-9)


def test_limits_checked_before_anything_is_sent(robot):
    pose = robot.tool_pose()
    robot.control.calls.clear()
    outside = pose.copy()
    outside[2] = -0.05
    with pytest.raises(LimitError, match="workspace"):
        robot.move_linear(outside, speed_m_s=0.01, acceleration_m_s2=0.1)
    with pytest.raises(LimitError, match="speed"):
        robot.move_linear(pose, speed_m_s=1.0, acceleration_m_s2=0.1)
    with pytest.raises(LimitError, match="finite"):
        robot.move_linear([np.nan] * 6, speed_m_s=0.01, acceleration_m_s2=0.1)
    assert robot.control.calls == []


def test_protective_stop_surfaces_and_is_never_reset(robot, world):
    deep = SURFACE.copy()
    deep[2] -= 0.06  # 60 mm into a 37.55 kPa block: > 50 N, the safety limit
    status = robot.move_linear(deep, speed_m_s=0.05, acceleration_m_s2=0.5)
    with pytest.raises(ProtectiveStopError):
        status.wait(timeout_s=10.0)
    assert robot.protective_stopped
    assert world.probe_contact().force_n == pytest.approx(50.0, rel=0.01)  # stopped at the limit
    robot.control.calls.clear()
    with pytest.raises(ProtectiveStopError):
        robot.move_linear(
            SURFACE + np.array([0, 0, 0.05, 0, 0, 0]), speed_m_s=0.01, acceleration_m_s2=0.1
        )
    assert "moveL" not in robot.control.calls
    assert SimRtdeControl(world).moveL(list(SURFACE)) is False  # vendor semantics
    world.clock.sleep(10.0)
    assert robot.protective_stopped  # nothing released it


def test_injected_protective_stop_and_disconnect(robot, world):
    world.faults.protective_stop_at_s = world.clock.now() + 0.2
    target = robot.tool_pose() + np.array([0.05, 0, 0, 0, 0, 0])
    status = robot.move_linear(target, speed_m_s=0.05, acceleration_m_s2=0.5)
    with pytest.raises(ProtectiveStopError):
        status.wait(timeout_s=5.0)
    world.faults.disconnect("robot")
    with pytest.raises(DeviceError, match="getActualTCPPose") as info:
        robot.tool_pose()
    assert "Socket disconnected" in str(info.value)
    with pytest.raises(DeviceError, match="not connected"):
        UrRtdeRobot(SimRtdeControl(world), SimRtdeReceive(world), world.clock).connect()


def test_stop_ends_a_move_without_success(robot, world):
    target = robot.tool_pose() + np.array([0.05, 0, 0, 0, 0, 0])
    status = robot.move_linear(target, speed_m_s=0.01, acceleration_m_s2=0.1)
    world.clock.sleep(1.0)
    robot.stop()
    with pytest.raises(DeviceError, match="without reaching"):
        status.wait(timeout_s=1.0)
    robot.set_payload(0.3, [0, 0, 0.05])
    robot.set_tcp([0, 0, 0.12, 0, 0, 0])
    assert world.payload == (0.3, (0.0, 0.0, 0.05))


@pytest.fixture
def probe_sensor(world):
    server = NetFtSimServer(world, "probe_sensor").start()
    sensor = NetFtSensor(*server.address, clock=world.clock, spec=NANO43, timeout_s=1.0)
    sensor.connect()
    try:
        yield sensor
    finally:
        sensor.close()
        server.close()


def test_contact_logic_reaches_and_holds_the_target_force(robot, probe_sensor, world):
    logic = ContactLogic(robot, probe_sensor, world.clock)
    result = logic.approach(SURFACE)
    true_force = world.probe_contact().force_n
    assert abs(true_force - 0.2) <= 0.05
    assert abs(result.force_n - 0.2) <= 0.025
    # the measured stiffness matches the flat-punch model (1.13 N/mm at 37.55 kPa)
    assert result.stiffness_n_per_m == pytest.approx(1130.0, rel=0.1)
    assert result.first_contact_pose[2] < SURFACE[2]
    trace = logic.hold(1.0)
    assert trace.t_s[-1] - trace.t_s[0] == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(trace.force_n - 0.2) <= 0.05)
    logic.retract(0.01)
    assert world.probe_contact().force_n == 0.0


def test_contact_logic_gives_up_without_surface(robot, probe_sensor, world):
    logic = ContactLogic(robot, probe_sensor, world.clock, max_travel_m=0.005)
    high = SURFACE + np.array([0, 0, 0.05, 0, 0, 0])
    with pytest.raises(ContactError, match="no contact"):
        logic.approach(high)
    with pytest.raises(ValueError):
        ContactLogic(robot, probe_sensor, world.clock, tolerance_n=0.3)
