"""One runner per store: ``STORE/logs/runner.lock`` refuses a second run/resume."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import psutil
import pytest
from session_testkit import failed_store, refuse_devices

from lab.config import parse_config
from lab.devices import build_devices
from lab.session import resume_session, run_session
from lab.session_lock import StoreLockedError, lock_path
from lab.store import SessionStore
from protocols.testing import tiny_config_dict


@pytest.fixture
def store_path(tmp_path):
    """A store left by a runner that could not connect its lab (resumable, quick)."""
    path = failed_store(tmp_path / "s.zarr")
    assert not lock_path(path).exists()  # released at the end
    return path


def write_lock(store, **holder):
    lock_path(store).write_text(json.dumps(holder))


def sessions(store):
    return SessionStore.open(store).attrs["sessions"]


def test_live_runner_on_this_host_is_refused(store_path):
    me = psutil.Process()
    write_lock(store_path, pid=me.pid, host=socket.gethostname(),
               process_start=me.create_time(), since_utc="2024-01-01T00:00:00+00:00")
    before = sessions(store_path)
    with pytest.raises(StoreLockedError, match=f"in use by another session runner: pid {me.pid}"):
        resume_session(store_path, devices_factory=refuse_devices, show_progress=False)
    assert sessions(store_path) == before  # nothing was written
    assert json.loads(lock_path(store_path).read_text())["pid"] == me.pid  # left in place


def test_lock_of_another_host_is_refused_with_how_to_clear_it(store_path):
    write_lock(store_path, pid=1, host="bench-pc-2", process_start=0.0)
    with pytest.raises(StoreLockedError, match="another host") as info:
        resume_session(store_path, devices_factory=refuse_devices, show_progress=False)
    assert f"delete {lock_path(store_path)}" in str(info.value)


def test_stale_lock_of_a_dead_runner_is_taken_over(store_path, caplog):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    write_lock(store_path, pid=dead_pid, host=socket.gethostname(), process_start=1.0)
    with caplog.at_level(logging.WARNING, logger="lab.session_lock"):
        result = resume_session(store_path, devices_factory=refuse_devices,
                                show_progress=False)
    assert result.status == "failed"  # it ran (and could not connect, as designed)
    assert any("taking over the runner lock" in r.message for r in caplog.records)
    assert not lock_path(store_path).exists()


def test_reused_pid_counts_as_stale(store_path):
    me = psutil.Process()  # our pid is alive, but it started at another time than recorded
    write_lock(store_path, pid=me.pid, host=socket.gethostname(),
               process_start=me.create_time() - 1000.0)
    result = resume_session(store_path, devices_factory=refuse_devices, show_progress=False)
    assert result.status == "failed"


def test_lock_is_held_while_the_runner_works(tmp_path):
    cfg = parse_config(tiny_config_dict(protocols=("swei",), positions=1))
    seen = []

    def build(config):
        holder = json.loads(lock_path(tmp_path / "s.zarr").read_text())
        seen.append(holder)
        with pytest.raises(StoreLockedError):  # a second runner, now
            resume_session(tmp_path / "s.zarr", devices_factory=refuse_devices,
                           show_progress=False)
        return build_devices(config)

    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=build, show_progress=False)
    assert result.status == "complete", result.message
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not lock_path(tmp_path / "s.zarr").exists()


def test_unreadable_lock_is_refused(store_path):
    lock_path(store_path).write_text("{half a lock")
    with pytest.raises(StoreLockedError, match="not a readable runner lock"):
        resume_session(store_path, devices_factory=refuse_devices, show_progress=False)
