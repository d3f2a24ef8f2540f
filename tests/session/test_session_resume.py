"""kill -9 at several points, then resume: complete, verified, no duplicates, no gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from session_testkit import CHILD, REPO, open_verified_complete, run_child

from lab.session import resume_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.testing import tiny_config_dict

RESULT_TABLES = ("indentation", "swei", "truth/swei")


def _assert_complete_and_exact(path):
    store, plan = open_verified_complete(path)
    for table in RESULT_TABLES:
        keys = store.table(table).keys()
        assert keys == plan.record_keys(table.removeprefix("truth/")), table
    _assert_force_log_complete(store, plan)
    return store


def _assert_force_log_complete(store, plan):
    """Every unit has the force samples of its completed attempt, with samples of the sensor
    its protocol presses with, and the records tile the table's rows."""
    log = store.table("force_log")
    complete = [r for r in log.records if r["meta"]["outcome"] == "complete"]
    assert sorted({r["meta"]["unit_id"] for r in complete}) == sorted(plan.unit_ids())
    sensor = log.read("sensor")
    for r in complete:
        codes = set(sensor[r["start"]:r["stop"]].tolist())
        assert (1 if r["meta"]["unit_id"].startswith("indentation") else 0) in codes, r["key"]
    starts = [r["start"] for r in log.records]
    stops = [r["stop"] for r in log.records]
    assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == log.committed_rows


@pytest.fixture
def config_file(tmp_path):
    data = tiny_config_dict(protocols=("indentation", "swei"), positions=3, push_elements=(48, 80),
                            frames=8)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_kill_at_many_points_then_resume(tmp_path, config_file):
    store = tmp_path / "s.zarr"
    # 1. killed in the middle of the first cylinder's drive (virtual t = 10 s of 30 s)
    out = run_child(["run", str(config_file), str(store), "clock:10"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    s = SessionStore.open(store)
    assert s.attrs["status"] == "running" and s.attrs["progress"]["completed"] == []
    # 2. resumed, killed while writing the 4th SWEI sequence (2nd push of position 1: rows
    #    written, index not yet); the 1st attribute commit of the table is its creation
    out = run_child(["resume", str(store), "commit:swei:5"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    s = SessionStore.open(store)
    assert s.attrs["progress"]["completed"][-1] == "swei/block-a/pos000"
    assert len(s.table("swei")) == 3  # position 1's first push is committed, its unit is not
    assert s.table("swei").array("iq").shape[0] == 4  # the half-written sequence is on disk
    assert not verify_store(store).clean  # ... and verify says so until resume trims it
    # 3. resumed, killed right after the next unit completed (between units)
    out = run_child(["resume", str(store), "progress:1"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    s = SessionStore.open(store)
    assert s.attrs["progress"]["completed"][-1] == "swei/block-a/pos001"
    # 4. resumed, killed while travelling / approaching the last position (t = 3 s)
    out = run_child(["resume", str(store), "clock:3"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    # 5. resumed here to the end
    result = resume_session(store, show_progress=False, retry_delay_s=0.5)
    assert result.status == "complete" and result.completed == result.total == 5
    s = _assert_complete_and_exact(store)
    sessions = s.attrs["sessions"]
    assert len(sessions) == 5 and sessions[-1]["outcome"] == "complete"
    assert [x["resumed"] for x in sessions] == [False, True, True, True, True]
    resumes = [e for e in s.events("interruptions") if e["kind"] == "resume"]
    assert any(e["discarded_records"] > 0 for e in resumes)  # the partial unit was thrown away


def test_kill_around_store_creation_and_inside_the_force_log_write(tmp_path, config_file):
    store = tmp_path / "s.zarr"
    # killed while the store is prepared: nothing at the path, and run starts afresh
    out = run_child(["run", str(config_file), str(store), "staging"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert not store.exists()
    # killed the instant the store became visible: resume accepts it
    out = run_child(["run", str(config_file), str(store), "created"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    s = SessionStore.open(store)
    assert s.attrs["status"] == "running" and s.attrs["progress"]["completed"] == []
    # killed inside the first force-log record commit (rows written, index not yet): the
    # 1st attribute commit of the table is its creation
    out = run_child(["resume", str(store), "commit:force_log:2"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    s = SessionStore.open(store)
    assert s.attrs["progress"]["completed"] == []  # the evidence is written before progress
    # killed inside the force-log write of the unit that would complete next
    out = run_child(["resume", str(store), "commit:force_log:2"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    result = resume_session(store, show_progress=False, retry_delay_s=0.5)
    assert result.status == "complete"
    _assert_complete_and_exact(store)


def test_external_kill_during_a_unit_then_resume(tmp_path, config_file):
    store = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(CHILD), "run", str(config_file), str(store)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # real time: waiting on another process
            if (store / "zarr.json").exists():
                try:
                    done = SessionStore.open(store).attrs.get("progress", {}).get("completed", [])
                except Exception:  # the child may be rewriting zarr.json this very moment
                    done = []
                if len(done) >= 2:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the child session made no progress")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    result = resume_session(store, show_progress=False)
    assert result.status == "complete"
    _assert_complete_and_exact(store)
