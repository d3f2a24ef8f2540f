"""The contact approach stays below its force limit when the sensor or the robot link drops.

The world's true contact force (not the sensor) is watched over virtual time, during the approach
and for a long while after the fault, since a robot that nobody stops keeps moving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from drivers.base import DeviceError
from drivers.force.netft import NetFtSensor
from drivers.force.spec import NANO43
from drivers.robot.contact import STIFFEST_CONTACT_N_PER_M, ContactLogic
from drivers.robot.ur import UrRtdeRobot
from drivers.sim.netft import NetFtSimServer
from drivers.sim.phantom import BlockPhantom
from drivers.sim.rtde import SimRtdeControl, SimRtdeReceive
from drivers.sim.world import SimWorld
from lab.clock import SimClock
from lab.gelatin import GELATIN_YOUNGS_MODULUS_KPA, flat_punch_stiffness_n_per_mm

SURFACE = np.array([0.35, 0.0, 0.10, np.pi, 0.0, 0.0])
MAX_FORCE_N = 1.0


@dataclass
class Rig:
    world: SimWorld
    robot: UrRtdeRobot
    sensor: NetFtSensor
    max_true_force_n: list[float]


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    cleanups: list[Callable[[], None]] = []

    def make(gelatin_percent: float = 7.5, watchdog_hz: float | None = None) -> Rig:
        world = SimWorld(SimClock(), np.random.default_rng(3),
                         blocks=[(BlockPhantom("b", gelatin_percent), SURFACE[:3])])
        cleanups.append(world.close)
        server = NetFtSimServer(world, "probe_sensor").start()
        cleanups.append(server.close)
        sensor = NetFtSensor(*server.address, clock=world.clock, spec=NANO43, timeout_s=0.2)
        sensor.connect()
        cleanups.append(sensor.close)
        robot = UrRtdeRobot(SimRtdeControl(world), SimRtdeReceive(world), world.clock,
                            watchdog_min_frequency_hz=watchdog_hz)
        robot.connect()
        peak = [0.0]

        def watch(t_from_s: float, t_to_s: float) -> None:
            # a move is a straight line, so the deepest point of an advance is at one of its ends
            for t in (t_from_s, t_to_s):
                peak[0] = max(peak[0], world.probe_contact(t).force_n)

        cleanups.append(world.clock.on_advance(watch))
        return Rig(world, robot, sensor, peak)

    yield make
    for cleanup in reversed(cleanups):
        cleanup()


def inject_when(world: SimWorld, force_n: float, fault: Callable[[], None]) -> None:
    """Apply ``fault`` at the first clock advance ending with the true force above ``force_n``."""
    fired = [False]

    def check(_t_from_s: float, t_to_s: float) -> None:
        if not fired[0] and world.probe_contact(t_to_s).force_n > force_n:
            fired[0] = True
            fault()

    world.clock.on_advance(check)


def fault_of(world: SimWorld, kind: str) -> Callable[[], None]:
    if kind == "sensor_dropout":
        return lambda: world.faults.sensor_dropout.add("probe_sensor")
    return lambda: world.faults.disconnect("robot")


def test_stiffest_contact_bound_covers_the_stiffest_gelatin():
    stiffest = flat_punch_stiffness_n_per_mm(max(GELATIN_YOUNGS_MODULUS_KPA.values()),
                                             face_area_mm2=400.0) * 1e3
    assert STIFFEST_CONTACT_N_PER_M >= stiffest


@pytest.mark.parametrize("kind", ["sensor_dropout", "link_loss"])
@pytest.mark.parametrize(("gelatin_percent", "at_force_n"), [(7.5, 0.0), (7.5, 0.1), (17.5, 0.1)])
def test_fault_mid_approach_never_exceeds_the_force_limit(make_rig, kind, gelatin_percent,
                                                          at_force_n):
    rig = make_rig(gelatin_percent)
    logic = ContactLogic(rig.robot, rig.sensor, rig.world.clock, max_force_n=MAX_FORCE_N)
    inject_when(rig.world, at_force_n, fault_of(rig.world, kind))
    with pytest.raises(DeviceError):
        logic.approach(SURFACE)
    rig.world.clock.sleep(30.0)  # nobody can stop the robot any more: let it finish its move
    assert not rig.world.robot_moving()
    assert rig.world.probe_contact().force_n > 0  # the fault hit in contact, not in air
    assert rig.max_true_force_n[0] <= MAX_FORCE_N


def test_sensor_dropout_stops_the_robot_before_raising(make_rig):
    rig = make_rig()
    logic = ContactLogic(rig.robot, rig.sensor, rig.world.clock, max_force_n=MAX_FORCE_N)
    inject_when(rig.world, 0.05, fault_of(rig.world, "sensor_dropout"))
    with pytest.raises(DeviceError, match="no RDT record"):
        logic.approach(SURFACE)
    assert not rig.world.robot_moving()  # stopped where the sensor went silent
    depth_mm = rig.world.probe_contact().indentation_mm
    rig.world.clock.sleep(10.0)
    assert rig.world.probe_contact().indentation_mm == depth_mm


def test_link_loss_raises_with_the_failed_stop_noted(make_rig):
    rig = make_rig()
    logic = ContactLogic(rig.robot, rig.sensor, rig.world.clock, max_force_n=MAX_FORCE_N)
    inject_when(rig.world, 0.05, fault_of(rig.world, "link_loss"))
    with pytest.raises(DeviceError, match="Socket disconnected") as info:
        logic.approach(SURFACE)
    assert any("stopping the robot failed" in note for note in info.value.__notes__)


def test_watchdog_halts_the_robot_soon_after_the_link_is_lost(make_rig):
    rig = make_rig(watchdog_hz=10.0)
    logic = ContactLogic(rig.robot, rig.sensor, rig.world.clock, max_force_n=MAX_FORCE_N)
    lost_at: list[float] = []

    def lose_link() -> None:
        lost_at.append(float(rig.world.probe_contact().indentation_mm))
        rig.world.faults.disconnect("robot")

    inject_when(rig.world, 0.05, lose_link)
    with pytest.raises(DeviceError):
        logic.approach(SURFACE)
    rig.world.clock.sleep(10.0)
    assert not rig.world.robot_program_running  # the controller's watchdog stopped the script
    # halted within one watchdog period (0.1 s at 1 mm/s = 0.1 mm) of the last kick
    assert rig.world.probe_contact().indentation_mm <= lost_at[0] + 0.1 + 0.01
    rig.world.faults.reconnect("robot")
    rig.robot.connect()  # ur_rtde re-uploads its script on reconnect; the driver re-arms
    assert rig.world.robot_program_running
    logic.retract(0.01)
    assert rig.world.probe_contact().force_n == 0.0


def test_watchdog_stop_while_idle_is_rearmed_by_the_next_move(make_rig):
    rig = make_rig(watchdog_hz=10.0)
    rig.world.clock.sleep(1.0)  # the host is busy elsewhere: nothing kicks
    assert not rig.world.robot_program_running
    target = rig.robot.tool_pose() + np.array([0.01, 0, 0, 0, 0, 0])
    rig.robot.move_linear(target, speed_m_s=0.05, acceleration_m_s2=0.5).wait(5.0)
    np.testing.assert_allclose(rig.robot.tool_pose(), target, atol=1e-9)
    assert rig.world.robot_program_running


def test_watchdog_stop_during_a_move_is_reported(make_rig):
    rig = make_rig(watchdog_hz=10.0)
    target = rig.robot.tool_pose() + np.array([0.05, 0, 0, 0, 0, 0])
    status = rig.robot.move_linear(target, speed_m_s=0.01, acceleration_m_s2=0.1)
    rig.world.clock.sleep(0.5)  # no poll, no kick for 0.5 s: the watchdog fires at 0.1 s
    with pytest.raises(DeviceError, match="watchdog stopped the move"):
        status.wait(5.0)


def test_normal_approach_descends_in_bounded_segments(make_rig):
    rig = make_rig(17.5)
    targets: list[float] = []
    move = rig.robot.move_linear

    def recording_move(pose, **kwargs):
        targets.append(float(np.asarray(pose)[2]))
        return move(pose, **kwargs)

    rig.robot.move_linear = recording_move  # type: ignore[method-assign]
    logic = ContactLogic(rig.robot, rig.sensor, rig.world.clock, max_force_n=MAX_FORCE_N)
    result = logic.approach(SURFACE)
    assert abs(rig.world.probe_contact().force_n - 0.2) <= 0.05
    assert result.stiffness_n_per_m == pytest.approx(3790.0, rel=0.15)
    descent = np.asarray(targets[1:])  # after the move to the stand-off
    bound_m = (MAX_FORCE_N - logic.force_margin_n) / STIFFEST_CONTACT_N_PER_M
    assert len(descent) > 10
    assert np.all(-np.diff(descent) <= bound_m + 1e-9)
    assert rig.max_true_force_n[0] < 0.3
