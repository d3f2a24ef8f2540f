"""Instrument backends as discriminated models; stored configs of earlier versions; plan size."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.config import (
    MAX_PLAN_UNITS,
    ConfigError,
    GcsHexapodConfig,
    NetFtSensorConfig,
    SerialFtSensorConfig,
    SimForceSensorConfig,
    SimHexapodConfig,
    SimRobotConfig,
    UrRtdeRobotConfig,
    load_config,
    parse_config,
    parse_stored_config,
    upgrade_stored_config,
)
from lab.devices import robot_limits
from protocols.plan import build_plan, check_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DATA = Path(__file__).with_name("data")


def lab(**sections: Any) -> dict[str, Any]:
    return {"lab": sections}


def test_backend_defaults_to_sim_and_selects_the_model() -> None:
    cfg = parse_config(lab(robot={}, hexapod={"backend": "gcs", "host": "10.0.0.2"},
                           probe_force_sensor={"model": "nano43", "rate_hz": 500.0}))
    assert isinstance(cfg.lab.robot, SimRobotConfig)
    assert isinstance(cfg.lab.hexapod, GcsHexapodConfig) and cfg.lab.hexapod.host == "10.0.0.2"
    assert isinstance(cfg.lab.probe_force_sensor, SimForceSensorConfig)
    assert cfg.lab.probe_force_sensor.rate_hz == 500.0


@pytest.mark.parametrize(("section", "settings", "key"), [
    ("indenter_force_sensor", {"backend": "serial", "serial_port": "/dev/ttyUSB0",
                               "host": "10.0.0.5"}, "host"),
    ("indenter_force_sensor", {"backend": "netft", "serial_port": "/dev/ttyUSB0"},
     "serial_port"),
    ("probe_force_sensor", {"backend": "sim", "counts_per_force": 5.0}, "counts_per_force"),
    ("robot", {"backend": "sim", "host": "10.0.0.1"}, "host"),
    ("ultrasound", {"backend": "cicada", "snr_db": 20.0}, "snr_db"),
    ("ultrasound", {"backend": "sim", "sdk_module": "x"}, "sdk_module"),
])
def test_settings_of_another_backend_are_refused(section: str, settings: dict[str, Any],
                                                 key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(lab(**{section: settings}))
    assert f"lab.{section}.{key} = " in str(err.value)
    assert f"unknown key for backend {settings['backend']!r}" in str(err.value)


def test_serial_sensor_needs_its_port() -> None:
    with pytest.raises(ConfigError, match=r"lab\.indenter_force_sensor\.serial_port"):
        parse_config(lab(indenter_force_sensor={"backend": "serial"}))


def test_unknown_backend_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"lab\.hexapod\.backend = 'x': allowed: 'sim' or "
                                          r"'gcs'"):
        parse_config(lab(hexapod={"backend": "x"}))


def test_shipped_configs_load_with_their_backends() -> None:
    sim = load_config(CONFIGS / "sim-lab.toml")
    assert {type(sim.lab.robot), type(sim.lab.hexapod)} == {SimRobotConfig, SimHexapodConfig}
    real = load_config(CONFIGS / "real-lab-template.toml")
    assert isinstance(real.lab.robot, UrRtdeRobotConfig)
    assert isinstance(real.lab.hexapod, GcsHexapodConfig)
    assert isinstance(real.lab.probe_force_sensor, NetFtSensorConfig)
    assert isinstance(real.lab.indenter_force_sensor, SerialFtSensorConfig)
    for cfg in (sim, real):
        assert check_plan(build_plan(cfg), cfg) == []


def test_robot_limits_follow_the_safety_section() -> None:
    cfg = load_config(CONFIGS / "real-lab-template.toml")
    limits = robot_limits(cfg.safety)
    assert limits.workspace_min_m == cfg.safety.workspace_min_m
    assert limits.max_speed_m_s == cfg.safety.robot_speed_max_m_s == 0.02
    assert limits.max_acceleration_m_s2 == cfg.safety.robot_acceleration_max_m_s2


# -- stored configs of earlier versions ----------------------------------------------------------
def stored(name: str) -> dict[str, Any]:
    """A config as elastolab 02b9ba9 stored it in a session store (``model_dump(mode="json")``)."""
    return json.loads((DATA / f"stored-config-0-{name}.json").read_text())


def test_an_old_stored_config_drops_the_settings_that_had_no_effect() -> None:
    old = stored("real-lab-template")
    assert old["lab"]["robot"]["timeout_s"] == 5.0 and "host" in old["lab"]["indenter_force_sensor"]
    upgraded, notes = upgrade_stored_config(old)
    assert "lab.robot.timeout_s (it was never read (ur_rtde calls have no timeout))" in notes
    assert any(n.startswith("lab.hexapod.velocity_mm_s") for n in notes)
    assert any(n.startswith("lab.indenter_force_sensor.host (not a setting of backend "
                            "'serial')") for n in notes)
    cfg = parse_stored_config(old, source="old.zarr (stored config)")
    assert cfg == load_config(CONFIGS / "real-lab-template.toml")
    assert upgraded["safety"] == old["safety"]  # nothing else touched


def test_an_old_stored_config_outside_todays_bounds_names_the_store() -> None:
    """The old default workspace reached 0.622 m from the shoulder: resume says so clearly."""
    with pytest.raises(ConfigError) as err:
        parse_stored_config(stored("sim-lab"), source="old.zarr (stored config)")
    msg = str(err.value)
    assert msg.startswith("old.zarr (stored config): invalid configuration")
    assert "workspace_max_m" in msg and "UR3 shoulder" in msg
    fixed = stored("sim-lab")
    fixed["safety"]["workspace_max_m"] = [0.35, -0.15, 0.35]
    assert parse_stored_config(fixed, source="old.zarr").name == "sim-lab"


# -- planning stays bounded ----------------------------------------------------------------------
def largest_config() -> dict[str, Any]:
    """The most units a config may plan: 10 blocks x 1000 positions, every push allowed."""
    ids = [f"b{i}" for i in range(10)]
    return {
        "phantoms": [{"kind": "block", "id": i, "gelatin_percent": 17.5} for i in ids],
        "protocols": [{"kind": "swei", "blocks": ids, "positions_per_block": 1000,
                       "push_elements": list(range(16, 112, 6))}],
    }


def test_the_largest_accepted_plan_takes_bounded_work() -> None:
    """Count, not time: the plan and its check of the largest accepted config make a bounded
    number of Python calls per unit (no quadratic step), and one unit more is refused."""
    cfg = parse_config(largest_config())
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        plan = build_plan(cfg)
        check_plan(plan, cfg)
    finally:
        sys.setprofile(None)
    assert len(plan.units) == MAX_PLAN_UNITS
    assert calls / len(plan.units) < 200, calls
    bigger = largest_config()
    bigger["protocols"][0]["positions_per_block"] = 1001
    with pytest.raises(ConfigError, match="positions_per_block = 1001"):
        parse_config(bigger)


def test_hardware_ranges_match_the_drivers() -> None:
    """The config's copies of driver figures (kept here so config validation does not import
    the GCS client stack) agree with the drivers."""
    from drivers.force.spec import NANO17, NANO43
    from drivers.hexapod.base import AXIS_KEYWORDS
    from drivers.hexapod.gcs import H820
    from drivers.ultrasound.sequences import ProbeModel, PushSequence
    from lab.config import (
        H820_TRAVEL,
        H820_VELOCITY_MAX_MM_S,
        PROBE_ELEMENTS,
        PUSH_APERTURE_ELEMENTS,
        SENSOR_FZ_RANGE_N,
    )

    assert SENSOR_FZ_RANGE_N == {"nano17": NANO17.force_range_n[2],
                                 "nano43": NANO43.force_range_n[2]}
    assert {AXIS_KEYWORDS[a]: r for a, r in H820_TRAVEL.items()} == H820.travel
    assert H820_VELOCITY_MAX_MM_S == H820.max_velocity_mm_s
    assert PROBE_ELEMENTS == ProbeModel().n_elements
    assert PUSH_APERTURE_ELEMENTS == PushSequence().aperture_elements


@pytest.mark.parametrize(("section", "key", "instead"), [
    ("robot", "timeout_s", "ur_rtde calls have no timeout"),
    ("hexapod", "velocity_mm_s", "[[protocols]] velocity_mm_s"),
])
def test_removed_keys_say_what_replaced_them(section: str, key: str, instead: str) -> None:
    backend = {"robot": "ur_rtde", "hexapod": "gcs"}[section]
    with pytest.raises(ConfigError) as err:
        parse_config(lab(**{section: {"backend": backend, key: 1.0}}))
    msg = str(err.value)
    assert f"lab.{section}.{key} = 1.0: no longer a setting" in msg and instead in msg
