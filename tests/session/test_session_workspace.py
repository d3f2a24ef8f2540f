"""The robot starts inside the workspace, and a unit never starts while it stands outside."""

from __future__ import annotations

import numpy as np
from session_testkit import factory, write_toml
from typer.testing import CliRunner

from drivers.robot.base import RobotLimits
from drivers.sim.arm import DEFAULT_ROBOT_HOME_POSE
from lab.config import SafetyConfig, parse_config
from lab.devices import build_devices
from lab.session import run_session
from lab.session_cli import session_app
from lab.store import SessionStore
from protocols.testing import tiny_config_dict


def inside(xyz: np.ndarray, lo: tuple[float, ...], hi: tuple[float, ...]) -> bool:
    return bool(np.all(xyz >= np.asarray(lo)) and np.all(xyz <= np.asarray(hi)))


def test_default_sim_home_is_inside_the_default_workspace_and_driver_limits():
    home = np.asarray(DEFAULT_ROBOT_HOME_POSE[:3])
    safety, limits = SafetyConfig(), RobotLimits()
    assert inside(home, safety.workspace_min_m, safety.workspace_max_m)
    assert inside(home, limits.workspace_min_m, limits.workspace_max_m)


def test_sim_robot_starts_inside_the_sessions_own_workspace():
    data = tiny_config_dict(protocols=("swei",), positions=1)
    data["safety"] = {**data["safety"], "workspace_min_m": [0.20, 0.10, 0.0],
                      "workspace_max_m": [0.60, 0.50, 0.35]}
    data["phantoms"] = [p for p in data["phantoms"] if p["id"] == "block-a"]
    data["phantoms"][0]["origin_m"] = [0.40, 0.30, 0.10]
    cfg = parse_config(data)
    devices = build_devices(cfg)
    try:
        pose = devices.robot.tool_pose()
        assert inside(pose[:3], cfg.safety.workspace_min_m, cfg.safety.workspace_max_m)
        assert pose[2] > 0.10 + 0.02  # above the block and its travel clearance
    finally:
        devices.close()


def test_unit_does_not_start_while_the_robot_is_outside_the_workspace(tmp_path):
    cfg = parse_config(tiny_config_dict(protocols=("swei",), positions=1))
    # Outside in x only, above the travel height: every move of the unit would be inside the
    # box, so only the start check can refuse it.
    outside = [cfg.safety.workspace_max_m[0] + 0.10, -0.30, 0.25, np.pi, 0.0, 0.0]

    def park_outside(lab):  # an operator jogs the robot there; the host keeps kicking
        lab.world.robot_move_linear(outside, speed_m_s=0.1, acceleration_m_s2=1.0)
        while lab.world.robot_moving():
            lab.world.robot_kick_watchdog()
            lab.clock.sleep(0.05)

    make, built = factory(park_outside)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False)
    assert result.status == "failed"
    assert "outside the workspace box" in result.message
    np.testing.assert_allclose(built[0].world.robot_pose(), outside, atol=1e-12)  # never moved
    store = SessionStore.open(tmp_path / "s.zarr")
    assert "swei" not in store.tables() or len(store.table("swei")) == 0
    assert result.completed == 0


def test_dry_run_reports_a_block_origin_outside_the_workspace(tmp_path):
    data = tiny_config_dict(protocols=("swei",), positions=1)
    next(p for p in data["phantoms"] if p["id"] == "block-a")["origin_m"] = [0.50, -0.30, 0.10]
    config = write_toml(data, tmp_path / "far.toml")
    result = CliRunner().invoke(session_app, ["run", str(config), "--store",
                                              str(tmp_path / "s.zarr"), "--dry-run"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "outside the robot workspace box" in out and "origin_m [0.5, -0.3, 0.1]" in out
