"""kill -9 loses no force sample: the force journal holds what force_log lacks, resume moves it.

The killed attempt's samples must reach ``force_log`` up to (within a sample period of) the last
sample the killed process checked, which the child reports through a side channel.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
from session_testkit import open_verified_complete, run_child

from lab.clock import WallClock
from lab.config import parse_config
from lab.force_journal import (
    HEADER_BYTES,
    RECORD_BYTES,
    SENSOR_CODES,
    ForceJournal,
    append_force_record,
    journal_path,
    read_journal,
    recover_journal,
)
from lab.session import resume_session, run_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.plan import Plan
from protocols.testing import tiny_config_dict

#: Sample periods of the tiny config's watches (probe 100 Hz, indenter 50 Hz), s.
PERIOD_S = {"probe_sensor": 0.01, "indenter_sensor": 0.02}


def _config_dict():
    return tiny_config_dict(protocols=("indentation", "swei"), positions=2, push_elements=(48,),
                            frames=8)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config_dict()))
    return path


@pytest.fixture(scope="module")
def reference_t(tmp_path_factory):
    """Per sensor name, the sample times of an uninterrupted run of the same session (virtual
    time is deterministic: a killed run's samples are a prefix of these)."""
    path = tmp_path_factory.mktemp("reference") / "s.zarr"
    assert run_session(parse_config(_config_dict()), path, show_progress=False,
                       live_state=False).status == "complete"
    log = SessionStore.open(path).table("force_log")
    t, code = log.read("t_s"), log.read("sensor")
    return {name: t[code == c] for name, c in SENSOR_CODES.items()}


def _records_of(store, unit_id, attempt):
    """The force_log records of ``unit_id``'s ``attempt`` in the killed run: up to the one
    recovered from the journal (a resumed run counts its attempts from 0 again)."""
    log = store.table("force_log")
    out = []
    for r in log.records:
        if r["meta"]["unit_id"] == unit_id and r["meta"]["attempt"] == attempt:
            out.append(r)
            if r["meta"]["outcome"] == "recovered":
                break
    return out


def _assert_killed_run_logged_everything(store, reference_t, seen):
    """Per sensor, the killed run's force_log (its records end with the one recovered from the
    journal, which the resumed run writes first) holds exactly the samples of an uninterrupted
    run (none lost, none doubled), up to within a period of the last one the killed process
    checked (``seen``; empty: not checked)."""
    (last,) = [r for r in store.table("force_log").records if r["meta"]["outcome"] == "recovered"]
    log = store.table("force_log")
    t_all, code_all = log.read("t_s")[:last["stop"]], log.read("sensor")[:last["stop"]]
    for name, code in SENSOR_CODES.items():
        t = t_all[code_all == code]
        np.testing.assert_array_equal(t, reference_t[name][:t.size])
        if name in seen:
            assert seen[name] - PERIOD_S[name] * 1.001 <= t[-1] <= seen[name], (name, seen)
    return last


def _assert_complete_with_force_log(path):
    store, plan = open_verified_complete(path)
    log = store.table("force_log")
    complete = {r["meta"]["unit_id"] for r in log.records if r["meta"]["outcome"] == "complete"}
    assert complete == set(plan.unit_ids())
    starts, stops = [r["start"] for r in log.records], [r["stop"] for r in log.records]
    assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == log.committed_rows
    assert not journal_path(path).with_name("force-journal.bin.new").exists()
    return store


def test_kill_mid_attempt_keeps_every_sample_up_to_the_kill(tmp_path, config_file, reference_t):
    """Killed at virtual t = 9.3 s of the first cylinder's drive, before any flush of the
    attempt: without the journal all its samples would be lost."""
    store, seen_path = tmp_path / "s.zarr", tmp_path / "seen.json"
    out = run_child(["run", str(config_file), str(store), "clock:9.3"],
                    env={"SESSION_CHILD_SEEN": str(seen_path)})
    assert out.returncode == -signal.SIGKILL, out.stderr
    seen = json.loads(seen_path.read_text())
    assert seen["indenter_sensor"] > 9.0
    result = resume_session(store, show_progress=False, retry_delay_s=0.5)
    assert result.status == "complete"
    s = _assert_complete_with_force_log(store)
    unit = Plan.from_json(s.plan).unit_ids()[0]
    records = _records_of(s, unit, 0)
    assert [r["meta"]["outcome"] for r in records][-1] == "recovered"
    assert records[-1]["meta"]["limits_n"]["indenter_sensor"] == pytest.approx(
        s.config["safety"]["indentation_force_limit_n"])
    _assert_killed_run_logged_everything(s, reference_t, seen)
    resume_event = next(e for e in s.events("interruptions") if e["kind"] == "resume")
    assert resume_event["recovered_force_samples"] == records[-1]["stop"] - records[-1]["start"]


def _kill_then_resume(tmp_path, config_file, kill: str, *, before_resume=None):
    """Run the session in a child killed at ``kill``, resume it to completion; returns the
    samples the child had checked per sensor (``seen``) and the completed store."""
    store, seen_path = tmp_path / "s.zarr", tmp_path / "seen.json"
    out = run_child(["run", str(config_file), str(store), kill],
                    env={"SESSION_CHILD_SEEN": str(seen_path)})
    assert out.returncode == -signal.SIGKILL, out.stderr
    if before_resume is not None:
        before_resume(store)
    seen = json.loads(seen_path.read_text())
    result = resume_session(store, show_progress=False, retry_delay_s=0.5)
    assert result.status == "complete"
    return seen, _assert_complete_with_force_log(store)


@pytest.mark.parametrize("t_kill_s", [0.05, 15.5, 31.0, 47.3, 62.9, 78.1])
def test_kill_at_many_instants_loses_no_force_sample(tmp_path, config_file, reference_t,
                                                     t_kill_s):
    """Killed anywhere in the session (units, travels, between units): per sensor, the killed
    run's force_log holds exactly the samples of an uninterrupted run up to the last one it
    checked (within a period): none lost, none doubled."""
    seen, s = _kill_then_resume(tmp_path, config_file, f"clock:{t_kill_s}")
    _assert_killed_run_logged_everything(s, reference_t, seen)


@pytest.mark.parametrize(("kill", "in_unit"), [("journal:1", False), ("journal:40", True),
                                              ("journal-torn:3", True),
                                              ("journal-torn:300", True)])
def test_kill_inside_or_after_a_journal_write(tmp_path, config_file, reference_t, kill,
                                              in_unit):
    """Killed right after the journal's first write (the streams' first samples, before the
    first attempt), after the N-th write, or inside it (a torn record): resume completes and
    force_log gets every sample the journal holds, in one ``recovered`` record."""
    torn = kill.startswith("journal-torn")

    def journal_as_killed(store):
        content = read_journal(journal_path(store))
        assert content is not None
        assert (content.torn_bytes > 0) == torn

    seen, s = _kill_then_resume(tmp_path, config_file, kill, before_resume=journal_as_killed)
    recovered = [r for r in s.table("force_log").records if r["meta"]["outcome"] == "recovered"]
    assert len(recovered) == 1
    unit = Plan.from_json(s.plan).unit_ids()[0] if in_unit else None
    assert recovered[0]["meta"]["unit_id"] == unit
    # a torn write loses its own samples (the kill came inside it), none before it
    _assert_killed_run_logged_everything(s, reference_t, {} if torn else seen)


def test_verify_warns_and_repair_moves_the_journal(tmp_path, config_file):
    store = tmp_path / "s.zarr"
    out = run_child(["run", str(config_file), str(store), "clock:9.3"])
    assert out.returncode == -signal.SIGKILL, out.stderr
    SessionStore.open(store, mode="a")  # trims the uncommitted rows (not this test's subject)
    report = verify_store(store)
    assert report.clean  # a warning, not an error
    (warning,) = [p for p in report.problems if "force-journal" in p.where]
    assert "not yet in force_log" in warning.message
    before = SessionStore.open(store)
    n_before = len(before.table("force_log")) if before.has_table("force_log") else 0
    repaired = verify_store(store, repair=True)
    assert any("moved" in line and "force samples" in line for line in repaired.repaired)
    s = SessionStore.open(store)
    assert len(s.table("force_log")) == n_before + 1
    assert s.table("force_log").records[-1]["meta"]["outcome"] == "recovered"
    assert not any("force-journal" in p.where for p in verify_store(store).problems)
    result = resume_session(store, show_progress=False, retry_delay_s=0.5)
    assert result.status == "complete"
    s = _assert_complete_with_force_log(store)
    assert sum(r["meta"]["outcome"] == "recovered" for r in s.table("force_log").records) == 1


def test_kill_inside_the_force_log_commit_recovers_its_samples(tmp_path, config_file,
                                                              reference_t):
    """Killed inside a force_log commit (rows written, index not): the record is trimmed on
    resume, and its samples come back from the journal (none lost, none doubled)."""
    # the 1st attribute commit of the table is its creation, the 2nd its first record (the
    # first unit's whole attempt: no unit reaches FORCE_LOG_FLUSH_SAMPLES, so none is partial)
    seen, s = _kill_then_resume(tmp_path, config_file, "commit:force_log:2")
    unit = Plan.from_json(s.plan).unit_ids()[0]
    records = _records_of(s, unit, 0)
    assert [r["meta"]["outcome"] for r in records] == ["recovered"]
    _assert_killed_run_logged_everything(s, reference_t, seen)


# -- the journal on its own ------------------------------------------------------------------------
def _store(tmp_path):
    return SessionStore.create(tmp_path / "j.zarr", config={}, plan=None)


def test_journal_recovery_is_exact_idempotent_and_drops_a_torn_record(tmp_path):
    store = _store(tmp_path)
    path = journal_path(store.path)
    views = {"probe_sensor": ([], []), "indenter_sensor": ([], [])}
    journal = ForceJournal.start(path)
    journal.follow(lambda: dict(views))
    journal.begin_attempt(1, 2)

    def log(i):
        views["probe_sensor"][0].append(0.01 * i)
        views["probe_sensor"][1].append(0.1 * i)
        journal.pump()

    def drain():  # as the watch does: all logged samples, then new lists
        t, f = views["probe_sensor"]
        views["probe_sensor"] = ([], [])
        return {"probe_sensor": (np.asarray(t), np.asarray(f, np.float32))}

    for i in range(6):
        log(i)
    # a record of the 6 samples is committed (meta journal = the generation), then the kill
    # comes before the new generation; 4 more samples are journalled meanwhile
    with pytest.raises(KeyboardInterrupt), journal.drain(drain) as (logs, generation):
        append_force_record(store, logs, {"unit_id": "u1", "attempt": 2, "outcome": "partial",
                                          "journal": generation}, unit_id="u1")
        raise KeyboardInterrupt  # the kill: the block does not finish, no new generation
    for i in range(6, 10):
        log(i)
    with open(path, "ab") as f:
        f.write(b"\x01\x00\x00")  # a torn record
    assert (path.stat().st_size - HEADER_BYTES) % RECORD_BYTES == 3
    assert recover_journal(store, ["u0", "u1"]) == 4
    log = store.table("force_log")
    assert [r["meta"]["outcome"] for r in log.records] == ["partial", "recovered"]
    assert log.records[1]["meta"]["unit_id"] == "u1" and log.records[1]["meta"]["attempt"] == 2
    np.testing.assert_allclose(log.read("t_s"), 0.01 * np.arange(10))
    assert recover_journal(store, ["u0", "u1"]) == 0  # the file is gone: nothing twice
    assert len(store.table("force_log")) == 2


def test_a_committed_drain_starts_an_empty_generation(tmp_path):
    store = _store(tmp_path)
    path = journal_path(store.path)
    views = {"probe_sensor": ([0.0, 0.01], [1.0, 1.1])}
    journal = ForceJournal.start(path)
    journal.follow(lambda: views)
    journal.pump()
    first = journal.generation

    def drain():
        out = {"probe_sensor": (np.asarray(views["probe_sensor"][0]),
                                np.asarray(views["probe_sensor"][1], np.float32))}
        views["probe_sensor"] = ([], [])
        return out

    with journal.drain(drain) as (logs, generation):
        assert generation == first and logs["probe_sensor"][0].size == 2
    assert journal.generation != first
    assert read_journal(path).samples == {}
    journal.close(discard=False)
    assert recover_journal(store, []) == 0


@pytest.mark.parametrize("content", [b"", b"ELF", b"XXXX" + bytes(40)])
def test_a_damaged_journal_is_ignored_not_fatal(tmp_path, content):
    store = _store(tmp_path)
    journal_path(store.path).write_bytes(content)
    assert recover_journal(store, []) == 0


def test_on_the_wall_clock_a_thread_pumps_the_journal(tmp_path):
    """Hardware mode: no clock steps; a thread journals new samples every 20 ms."""
    store = _store(tmp_path)
    path = journal_path(store.path)
    views = {"probe_sensor": ([], [])}
    journal = ForceJournal.start(path)
    journal.follow(lambda: views)
    journal.attach(WallClock())
    try:
        for i in range(5):
            views["probe_sensor"][0].append(0.005 * i)
            views["probe_sensor"][1].append(0.2)
        deadline = time.monotonic() + 30.0  # real time: the thread runs when the host lets it
        while time.monotonic() < deadline:
            content = read_journal(path)
            if content is not None and content.samples and content.samples[0][0].size == 5:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the pump thread journalled nothing")
    finally:
        journal.close(discard=False)
    assert recover_journal(store, []) == 5
