"""Live state, ETA and the monitor's readers, without a browser."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from drivers.base import Wrench
from lab import monitor_data
from lab.clock import SimClock
from lab.eta import EtaEstimator, format_duration
from lab.force_watch import ForceWatch
from lab.live import LIVE_FORCE, LIVE_STATE, PAUSE_REQUEST, LiveState, live_path, request_pause
from lab.monitor import Monitor
from lab.session import resume_session, run_session
from lab.session_progress import SessionConsole
from lab.store import SessionStore
from protocols.plan import build_plan
from protocols.testing import tiny_config, tiny_config_dict

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "session"))
from session_testkit import at_clock, factory  # noqa: E402


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_scales_remaining_plan_by_measured_ratio():
    clock = _Clock()
    eta = EtaEstimator.for_units([("a", 100.0), ("b", 100.0), ("c", 200.0)], wall_clock=clock)
    assert eta.eta_s() is None and eta.ratio is None  # nothing measured yet
    eta.unit_started("a")
    clock.t = 2.0  # simulation: 100 s of lab time in 2 wall seconds
    eta.unit_done("a")
    assert eta.ratio == pytest.approx(0.02)
    assert eta.eta_s() == pytest.approx(0.02 * 300)
    eta.unit_started("b")
    clock.t = 3.0  # one wall second into b
    assert eta.eta_s() == pytest.approx(6.0 - 1.0)
    clock.t = 50.0  # b overran its share: never negative, never more than c alone
    assert eta.eta_s() == pytest.approx(0.02 * 200)
    eta.unit_done("b")
    assert eta.ratio == pytest.approx(50.0 / 200.0)
    assert eta.eta_s() == pytest.approx(0.25 * 200)
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "--:--"


def test_eta_on_hardware_like_timing():
    clock = _Clock()
    eta = EtaEstimator.for_units([(f"u{i}", 60.0) for i in range(10)], wall_clock=clock)
    for i in range(4):  # each unit takes 10 % longer than planned
        eta.unit_started(f"u{i}")
        clock.t += 66.0
        eta.unit_done(f"u{i}")
    assert eta.eta_s() == pytest.approx(6 * 66.0)


class _Sensor:
    name = "fake"

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> Wrench:
        self.n += 1
        return Wrench(np.array([0.0, 0.0, 0.001 * self.n]), np.zeros(3), float(self.n))


class _Guard:
    def __init__(self, watchdog: ForceWatch) -> None:
        self.watchdog = watchdog

    def force_log_view(self):
        return {"probe_sensor": self.watchdog.log_view()}

    @property
    def limits_n(self):
        return {"probe_sensor": self.watchdog.limit_n}


def test_force_ring_follows_watchdog_log_across_drains(tmp_path):
    (tmp_path / "logs").mkdir()
    sensor = _Sensor()
    wd = ForceWatch(sensor, limit_n=5.0, clock=SimClock(), sample_rate_hz=100.0)

    def read() -> None:  # one streamed sample, checked by the watch (as its stream callback does)
        wd._on_sample(sensor.read())
        wd._process(0.0)

    live = LiveState(tmp_path, name="t", units=[], write=False, ring_samples=25)
    live.start(completed=[], guard=_Guard(wd))
    drained = []
    for batch in (7, 3, 12, 0, 9):
        for _ in range(batch):
            read()
        live._collect_forces()  # a writer tick
        for _ in range(2):  # samples read after the tick, then the unit's log is drained
            read()
        drained.append(wd.drain_log()[0])
    live._collect_forces()
    snap = live.force_snapshot()
    total = sum(d.size for d in drained)
    assert snap["samples_seen"] == total  # nothing lost, nothing twice
    all_t = np.concatenate(drained)
    assert snap["sensors"]["probe_sensor"]["t_s"] == all_t[-25:].tolist()  # the last 25, in order
    assert snap["limits_n"] == {"probe_sensor": 5.0}


def _request_pause_at(store_path: Path, t_s: float):
    def install(lab):
        at_clock(lab, lambda t: t >= t_s, lambda: request_pause(store_path))
    return install


def test_pause_request_is_honoured_like_ctrl_c_and_live_files_match_the_store(tmp_path):
    cfg = tiny_config(protocols=("indentation", "swei"))
    path = tmp_path / "s.zarr"
    make, _ = factory(_request_pause_at(path, 8.0))  # during the first indentation's drive
    result = run_session(cfg, path, devices_factory=make, show_progress=False)
    assert result.status == "paused" and result.completed == 1  # the unit finished first
    store = SessionStore.open(path)
    (pause,) = [e for e in store.events("interruptions") if e["kind"] == "pause"]
    assert pause["reason"] == "operator (monitor)"
    assert pause["next_unit"] == "indentation/cyl-17.5"
    assert not live_path(path, PAUSE_REQUEST).exists()  # consumed: resume does not re-pause
    state = json.loads(live_path(path, LIVE_STATE).read_text())
    assert (state["status"], state["k"], state["n"]) == ("paused", 1, 4)
    assert state["protocols"]["indentation"] == {"done": 1, "total": 2}
    assert state["events"][-1]["reason"] == "operator (monitor)"

    assert resume_session(path, show_progress=False).status == "complete"
    state = json.loads(live_path(path, LIVE_STATE).read_text())
    assert (state["status"], state["k"]) == ("complete", 4)
    assert state["fraction_done"] == 1.0 and state["eta_s"] == 0.0
    assert state["wall_per_lab_s"] > 0
    forces = json.loads(live_path(path, LIVE_FORCE).read_text())
    log_table = SessionStore.open(path).table("force_log")
    sensor = log_table.read("sensor")
    t_s = log_table.read("t_s")
    assert forces["samples_seen"] == sensor.size  # every sample the watchdogs read, both runs
    for name, code in (("probe_sensor", 0), ("indenter_sensor", 1)):
        ring = forces["sensors"][name]["t_s"]
        assert ring == pytest.approx(t_s[sensor == code][-len(ring):], abs=1e-4)
    assert forces["limits_n"]["indenter_sensor"] == cfg.safety.indentation_force_limit_n


def test_live_state_can_be_disabled(tmp_path):
    path = tmp_path / "s.zarr"
    result = run_session(tiny_config(protocols=("indentation",)), path, show_progress=False,
                         live_state=False)
    assert result.status == "complete"
    assert not live_path(path, LIVE_STATE).exists() and not live_path(path, LIVE_FORCE).exists()


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("mon") / "s.zarr"
    assert run_session(tiny_config(), path, show_progress=False).status == "complete"
    return path


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=300) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def test_monitor_on_a_finished_store(finished_store):
    store = SessionStore.open(finished_store)
    mon = Monitor(finished_store, port=0)
    url = mon.start()
    try:
        status, state = _get(url + "api/state")
        assert status == 200 and (state["status"], state["k"], state["n"]) == ("complete", 6, 6)
        status, swei = _get(url + "api/swei")
        assert status == 200 and swei["key"] == store.table("swei").keys()[-1]
        bmode = np.array(swei["bmode_db"], dtype=float)
        assert bmode.shape == (len(swei["depth_mm"]), len(swei["lateral_mm"]))
        assert np.nanmax(bmode) == pytest.approx(0.0) and np.nanmin(bmode) >= -50.0
        assert np.isfinite(np.array(swei["displacement_um"], dtype=float)).any()
        status, ind = _get(url + "api/indentation")
        assert status == 200 and ind["key"] == "cyl-17.5"
        # the fitted line passes through the measured curve in the fitted range
        s, stress = np.array(ind["strain"]), np.array(ind["stress_kpa"])
        mid = np.mean(ind["fit_strain"])
        fit_mid = np.interp(mid, ind["fit_strain"], ind["fit_stress_kpa"])
        assert fit_mid == pytest.approx(np.interp(mid, s, stress), rel=0.05)
        status, pos = _get(url + "api/positions")
        assert status == 200 and pos["blocks"]["block-a"]["done"] == [True, True]
        status, _ = _get(url + "api/nothing")
        assert status == 404
        with urllib.request.urlopen(url, timeout=60) as r:
            assert b"/static/plotly.min.js" in r.read()
        with urllib.request.urlopen(url + "static/plotly.min.js", timeout=60) as r:
            assert r.headers["Content-Type"] == "text/javascript" and len(r.read()) > 1e6
        req = urllib.request.Request(url + "api/pause", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        err.value.close()
        assert err.value.code == 409  # nothing to pause
        assert not live_path(finished_store, PAUSE_REQUEST).exists()
    finally:
        mon.stop()


def test_state_without_live_files_and_stale_records(finished_store, tmp_path):
    import shutil

    path = tmp_path / "copy.zarr"
    shutil.copytree(finished_store, path)
    state_file = live_path(path, LIVE_STATE)
    live = json.loads(state_file.read_text())
    state_file.unlink()
    derived = monitor_data.read_state(path)  # an old store, or a runner killed before writing
    assert (derived["source"], derived["status"], derived["k"], derived["n"]) == (
        "store", "complete", 6, 6)
    assert derived["protocols"] == live["protocols"]
    state_file.write_text(json.dumps({**live, "status": "running", "updated_unix": 0.0}))
    stale = monitor_data.read_state(path)  # the runner died without its last write
    assert stale["stale"] and stale["status"] == "complete"


def test_indentation_is_reread_only_when_rows_are_added(finished_store, tmp_path):
    import shutil

    path = tmp_path / "copy.zarr"
    shutil.copytree(finished_store, path)
    cache = monitor_data.IndentationCache(path)
    first = cache()
    assert first == monitor_data.latest_indentation(path) and first["key"] == "cyl-17.5"
    for _ in range(3):  # the page polls every second: no re-read while nothing is committed
        assert cache() is first
    assert cache.reads == 1
    table = SessionStore.open(path, mode="a").table("indentation")
    rec = table.records[0]
    table.append("cyl-again", {name: table.read(name, 0) for name in table.schema},
                 rec["meta"])  # another runner process commits a record
    second = cache()
    assert cache.reads == 2 and second["key"] == "cyl-again" and second["records"] == 3
    assert cache() is second and cache.reads == 2


def test_indentation_cache_before_the_first_record(tmp_path):
    path = tmp_path / "s.zarr"
    SessionStore.create(path)
    cache = monitor_data.IndentationCache(path)
    assert cache() == {"key": None} and cache.reads == 0


def test_monitor_reads_a_store_while_it_is_written(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "open").touch()
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config_dict(positions=3)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("monitor_child.py")),
                             "run", str(cfg), str(store), str(gate)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mon = None
    try:
        while not live_path(store, LIVE_STATE).exists():
            assert proc.poll() is None, proc.communicate()
            proc_wait_briefly(proc)
        mon = Monitor(store, port=0)
        url = mon.start()
        ks, codes = [], set()
        while True:
            running = proc.poll() is None
            for endpoint in ("api/state", "api/force", "api/indentation", "api/positions",
                             "api/swei"):
                code, data = _get(url + endpoint)
                codes.add(code)
                if endpoint == "api/state" and code == 200:
                    ks.append(data["k"])
            if not running:
                break
        out, err = proc.communicate()
        assert "RESULT complete 7/7" in out, err[-2000:]
        assert codes <= {200, 503}, codes  # busy at worst, never a crash
        assert ks == sorted(ks) and ks[-1] == 7  # progress only moves forward
        assert _get(url + "api/state")[1]["status"] == "complete"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if mon is not None:
            mon.stop()


def proc_wait_briefly(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(timeout=0.05)
    except subprocess.TimeoutExpired:
        pass


def test_plain_progress_lines_when_not_a_terminal(tmp_path, caplog):
    cfg = tiny_config()
    plan = build_plan(cfg)
    live = LiveState(tmp_path, name="tiny", units=plan.units, write=False)
    live.start(completed=[])
    console = Console(file=io.StringIO(), force_terminal=False, width=60)
    view = SessionConsole(live, console=console, enabled=True, line_interval_s=float("inf"))
    with caplog.at_level(logging.INFO, logger="lab.session"), view:
        for unit in plan.units:
            live.unit_started(unit)
            live.report(phase="drive", force_n=0.5)
            live.unit_done(unit)
            view.unit_done()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    # the first unit and the last (the interval never elapsed in between)
    assert len(lines) == 2
    assert lines[0].startswith("progress: 1/6 units") and "indentation 1/2" in lines[0]
    assert lines[1].startswith("progress: 6/6 units (100 %") and "compression 2/2" in lines[1]
    assert console.file.getvalue() == ""  # no bar drawn into a log file


def test_info_shows_progress_of_a_running_store(finished_store, tmp_path):
    import shutil
    import time

    from lab.info import print_info

    path = tmp_path / "running.zarr"
    shutil.copytree(finished_store, path)
    state_file = live_path(path, LIVE_STATE)
    live = json.loads(state_file.read_text())
    fault = {"kind": "fault", "unit": "swei/block-a/pos001", "error_type": "SensorTimeout",
             "error": "no F/T record for 0.3 s", "action": "retry"}
    state_file.write_text(json.dumps({
        **live, "status": "running", "k": 3, "updated_unix": time.time(), "eta_s": 65.0,
        "current": {"unit": "swei/block-a/pos001", "phase": "push", "k": 4},
        "last_unit": "swei/block-a/pos000", "events": [fault]}))
    out = io.StringIO()
    print_info(path, Console(file=out, width=200))
    text = out.getvalue()
    assert "progress           3/6 units" in text
    assert "current unit       swei/block-a/pos001 (push, updated 0 s ago); ETA 0:01:05" in text
    assert "last unit          swei/block-a/pos000" in text
    assert "last fault         swei/block-a/pos001: SensorTimeout no F/T record" in text


def test_running_indentation_fit_recovers_the_modulus(tmp_path):
    plan = build_plan(tiny_config(protocols=("indentation",)))
    unit = plan.units[0]
    r_m, l0_mm = unit.params.radius_mm * 1e-3, unit.params.height_mm
    live = LiveState(tmp_path, name="t", units=plan.units, write=False)
    live.start(completed=[])
    live.unit_started(unit)
    e_kpa, contact_mm = 37.55, 0.5
    for pos in np.linspace(0.0, 3.2, 161):  # the protocol reports (travel, force) as it drives
        strain = max(0.0, (pos - contact_mm) / l0_mm)
        live.report(position_mm=float(pos), force_n=e_kpa * 1e3 * strain * np.pi * r_m**2)
    state = live.snapshot()
    assert len(state["current"]["curve"]["force_n"]) == 161
    running = monitor_data.running_indentation(state, plan.to_json()["units"])
    assert running["unit"] == unit.unit_id
    assert running["youngs_modulus_kpa"] == pytest.approx(e_kpa, rel=0.02)
    assert running["fit_strain"][0] >= 0.02 and running["fit_strain"][1] <= 0.07
    live.unit_done(unit)  # no unit under way: nothing running
    after = monitor_data.running_indentation(live.snapshot(), plan.to_json()["units"])
    assert after["unit"] is None
