"""The guard refuses wrong protocols and stops motion within one force sample."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.robot.contact import ContactLogic
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence
from lab.config import parse_config
from lab.devices import build_devices
from lab.force_bounds import max_overshoot_n, probe_contact_stiffness_n_per_m
from lab.safety import ForceLimitError, Guard, SafetyError
from lab.session import SessionError, run_session
from lab.store import SessionStore
from protocols import swei
from protocols.common import surface_pose, travel_to
from protocols.plan import build_plan
from protocols.testing import tiny_config_dict


@pytest.fixture
def lab():
    cfg = parse_config(tiny_config_dict(protocols=("swei",), positions=1))
    devices = build_devices(cfg)
    try:
        yield cfg, devices, Guard(devices, cfg.safety, sample_rate_hz=50.0)
    finally:
        devices.close()


def test_robot_target_outside_the_workspace_is_refused_before_sending(lab):
    cfg, devices, guard = lab
    before = devices.world.robot_pose()
    outside = [0.0, -0.30, cfg.safety.workspace_max_m[2] + 0.01, np.pi, 0.0, 0.0]
    with pytest.raises(SafetyError, match="outside the workspace box"):
        guard.devices.robot.move_linear(outside, speed_m_s=0.01, acceleration_m_s2=0.1)
    with pytest.raises(SafetyError, match="speed"):
        guard.devices.robot.move_linear([0.0, -0.3, 0.2, np.pi, 0, 0], speed_m_s=0.5,
                                        acceleration_m_s2=0.1)
    assert not devices.world.robot_moving()
    assert np.array_equal(devices.world.robot_pose(), before)


def test_hexapod_targets_outside_soft_limits_are_refused(lab):
    _, devices, guard = lab
    target_before = devices.world.hexapod_target()
    with pytest.raises(SafetyError, match="outside the soft limits"):
        guard.devices.hexapod.move_to(z_mm=-11.0)
    with pytest.raises(SafetyError, match="velocity"):
        guard.devices.hexapod.set_velocity(5.0)
    assert devices.world.hexapod_target() == target_before


def test_swei_unit_with_a_set_point_above_the_limit_never_moves(lab, tmp_path):
    _, devices, guard = lab
    data = tiny_config_dict(protocols=("swei",), positions=1)
    data["protocols"][0]["contact_force_n"] = 3.0
    bad = parse_config(data)
    with pytest.raises(SessionError, match=r"contact force set-point 3\.0 N"):
        run_session(bad, tmp_path / "bad.zarr", show_progress=False)
    assert not (tmp_path / "bad.zarr").exists()
    # The same unit handed to the protocol directly (plan check bypassed): refused by the guard.
    unit = build_plan(bad).units[0]
    store = SessionStore.create(tmp_path / "s.zarr")
    before = devices.world.robot_pose()
    with pytest.raises(SafetyError, match=r"set-point 3\.0 N is not below the limit 2\.0 N"):
        swei.run_unit(unit, guard.devices, store, phantom_index=0)
    assert not devices.world.robot_moving()
    assert np.array_equal(devices.world.robot_pose(), before)
    assert store.tables() == []


def test_a_rogue_protocol_cannot_press_past_the_limit(lab):
    cfg, devices, guard = lab
    dev = guard.devices
    unit = build_plan(cfg).units[0]
    p = unit.params
    travel_to(dev, p.above_pose, travel_z_m=p.travel_pose[2], speed_m_s=0.04,
              acceleration_m_s2=0.2)
    guard.drain_force_log()
    rogue = ContactLogic(robot=dev.robot, sensor=dev.probe_sensor, clock=dev.clock,
                         target_force_n=3.0, tolerance_n=0.05, max_force_n=10.0,
                         search_speed_m_s=0.001, max_travel_m=0.005)
    with pytest.raises(ForceLimitError, match=r"limit 2\.0 N"):
        rogue.approach(surface_pose(p.origin_m, p.x_mm, p.y_mm))
    z_trip = devices.world.robot_pose()[2]
    devices.clock.sleep(1.0)
    assert not devices.world.robot_moving()  # stopped by the watchdog, not by the protocol
    assert devices.world.robot_pose()[2] == pytest.approx(z_trip, abs=1e-5)
    _, force = guard.drain_force_log()["probe_sensor"]
    limit = cfg.safety.probe_force_max_n
    first = int(np.argmax(force > limit))
    assert force[first] > limit and np.all(force[:first] <= limit)  # nothing above before it
    # the watch keeps reading after the trip: the force stays where the stop left it
    assert force.size > first + 40
    # the trip sample exceeds it by at most one sample period of descent (20 ms at 1 mm/s on
    # 7.5 % gelatin, about 23 mN) plus sensor noise; the true force never more
    bound = max_overshoot_n(0.001, sample_period_s=1 / 50.0,
                            stiffness_n_per_m=probe_contact_stiffness_n_per_m(37.55))
    assert limit < force.max() < limit + bound + 0.005
    assert devices.world.probe_contact().force_n < limit + bound


def test_push_duty_cycle_and_contact_are_enforced(lab):
    cfg, _, guard = lab
    dev = guard.devices
    imaging = PlaneWaveSequence(n_frames=4, n_depth=40, n_lateral=64)
    with pytest.raises(SafetyError, match="not in contact"):
        dev.ultrasound.acquire_swei(PushSequence(center_element=64), imaging)
    unit = build_plan(cfg).units[0]
    p = unit.params
    travel_to(dev, p.above_pose, travel_z_m=p.travel_pose[2], speed_m_s=0.04,
              acceleration_m_s2=0.2)
    contact = ContactLogic(robot=dev.robot, sensor=dev.probe_sensor, clock=dev.clock,
                           max_force_n=1.0)
    contact.approach(surface_pose(p.origin_m, p.x_mm, p.y_mm))
    dev.ultrasound.acquire_swei(PushSequence(center_element=64), imaging)
    with pytest.raises(SafetyError, match="duty cycle"):
        dev.ultrasound.acquire_swei(PushSequence(center_element=64), imaging)
    dev.clock.sleep(dev.ultrasound.push_ready_in_s())
    dev.ultrasound.acquire_swei(PushSequence(center_element=64), imaging)
