"""``resume`` of a store whose embedded config was written by an earlier elastolab (02b9ba9)."""

from __future__ import annotations

import pytest
from session_testkit import failed_store

from lab.config import ConfigError, parse_config
from lab.session import resume_session
from lab.store import SessionStore


def old_format(config: dict) -> dict:
    """``config`` as 02b9ba9 stored it: every setting of every backend, and the unread keys."""
    lab = config["lab"]
    sensor_extras = {"host": "127.0.0.1", "port": 49152, "serial_port": None,
                     "baudrate": 115200, "counts_per_force": 1e6, "counts_per_torque": 1e6}
    return {**config, "lab": {
        **lab,
        "robot": {**lab["robot"], "host": "127.0.0.1", "timeout_s": 5.0},
        "hexapod": {**lab["hexapod"], "host": "127.0.0.1", "port": 50000,
                    "interface": "pipython", "timeout_s": 5.0, "velocity_mm_s": 0.01},
        "probe_force_sensor": {**lab["probe_force_sensor"], **sensor_extras},
        "indenter_force_sensor": {**lab["indenter_force_sensor"], **sensor_extras},
        "ultrasound": {**lab["ultrasound"], "sdk_module": "cephasonics", "timeout_s": 10.0},
    }}


@pytest.fixture
def stored(tmp_path):
    """A resumable store with nothing done yet (its lab could not be built)."""
    return failed_store(tmp_path / "s.zarr")


def test_a_store_with_an_old_config_resumes_to_complete(stored):
    store = SessionStore.open(stored, mode="a")
    old = old_format(store.config)
    store.set_attrs(config=old)
    with pytest.raises(ConfigError):  # today's loader refuses those keys in a new file
        parse_config(old)
    result = resume_session(stored, show_progress=False)
    assert result.status == "complete" and result.completed == result.total == 1


def test_a_store_with_an_old_config_out_of_todays_bounds_says_which_key(stored):
    store = SessionStore.open(stored, mode="a")
    old = old_format(store.config)
    old["lab"]["robot"]["watchdog_min_frequency_hz"] = 0.0  # "off" was accepted then
    store.set_attrs(config=old)
    with pytest.raises(ConfigError, match=r"\(stored config\): invalid configuration.*\n.*"
                                          r"lab\.robot\.watchdog_min_frequency_hz = 0\.0"):
        resume_session(stored, show_progress=False)
