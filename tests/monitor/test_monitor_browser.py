"""The monitor page in a real (headless) browser follows a session run by another process.

A gated child process runs a tiny simulated session that waits before chosen units, so every
check looks at a known state: progress advances unit by unit, the force trace grows, the pause
button pauses the session after the current unit, and ``resume`` completes it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium, text, wait_for

from lab.monitor import Monitor
from lab.store import SessionStore
from protocols.testing import tiny_config_dict

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("monitor_child.py")
#: Set to a path to keep the screenshot (how docs/monitor.png is made).
SCREENSHOT_ENV = "ELASTOLAB_MONITOR_SCREENSHOT"


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(CHILD), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], expected: str) -> None:
    out, err = proc.communicate(timeout=600)
    assert f"RESULT {expected}" in out, f"child: {out!r}\n{err[-3000:]}"


def _int(driver, element_id: str) -> int:
    return int(text(driver, element_id) or 0)


def test_page_follows_pause_and_resume(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config_dict()))  # 6 units: 2 indentation, 2 SWEI, 2 compression
    proc = _child("run", str(cfg), str(store), str(gate))
    monitor = None
    try:
        with chromium() as driver:
            # the store exists once the runner created it (before the first motion)
            import time
            deadline = time.monotonic() + 300
            while not (store / "logs" / "live-state.json").exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the runner never wrote its live state"
                time.sleep(0.05)
            monitor = Monitor(store, port=0)
            driver.get(monitor.start())
            wait_for(driver, lambda d: text(d, "status") == "running" and
                     text(d, "unit").startswith("1/6 indentation/"), "unit 1/6 running")
            assert _int(driver, "k") == 0 and text(driver, "n") == "6"

            (gate / "go-1").touch()
            wait_for(driver, lambda d: _int(d, "k") == 1 and text(d, "unit").startswith("2/6"),
                     "unit 1 done, unit 2 current")
            assert text(driver, "count-indentation") == "1/2"
            wait_for(driver, lambda d: _int(d, "force-seen") > 0, "force samples of unit 1")
            seen_1 = _int(driver, "force-seen")
            wait_for(driver, lambda d: text(d, "ss-key").startswith("cyl-7.5"),
                     "the first stress-strain curve")
            assert "kPa" in text(driver, "ss-key")

            (gate / "go-2").touch()
            wait_for(driver, lambda d: _int(d, "k") == 2 and text(d, "unit").startswith("3/6 swei"),
                     "unit 2 done")
            wait_for(driver, lambda d: _int(d, "force-seen") > seen_1, "a growing force trace")
            assert int(driver.find_element("id", "force-plot").get_attribute("data-samples")) > 0

            # pause after this unit: the request is honoured when unit 3 ends
            button = driver.find_element("id", "pause")
            assert button.is_enabled()
            button.click()
            wait_for(driver, lambda d: "pause requested" in text(d, "pause-note"),
                     "the pause request acknowledged")
            assert (store / "logs" / "pause-request.json").exists()
            (gate / "go-3").touch()
            _finish(proc, "paused 3/6")
            wait_for(driver, lambda d: text(d, "status") == "paused" and _int(d, "k") == 3,
                     "paused after unit 3")
            assert not driver.find_element("id", "pause").is_enabled()
            assert "pause: operator (monitor)" in text(driver, "events")
            assert not (store / "logs" / "pause-request.json").exists()  # consumed

            # resume (gated before unit 4): the page follows the new run of the runner
            proc = _child("resume", str(store), str(gate))
            wait_for(driver, lambda d: text(d, "status") == "running" and
                     text(d, "unit").startswith("4/6 swei"), "the resumed run at unit 4")
            wait_for(driver, lambda d: text(d, "swei-key").startswith("block-a/pos000"),
                     "the SWEI frames of unit 3")
            wait_for(driver, lambda d: d.find_element("id", "pos-plot").get_attribute(
                "data-current") == "swei/block-a/pos001", "the current probe position marked")
            shot = tmp_path / "monitor.png"
            driver.save_screenshot(str(shot))
            if os.environ.get(SCREENSHOT_ENV):
                shutil.copy(shot, os.environ[SCREENSHOT_ENV])
            (gate / "open").touch()
            _finish(proc, "complete 6/6")
            wait_for(driver, lambda d: text(d, "status") == "complete" and _int(d, "k") == 6,
                     "the complete session")
            assert text(driver, "eta") == "done"
            assert text(driver, "count-swei") == "2/2"
            assert text(driver, "count-compression") == "2/2"
            wait_for(driver, lambda d: d.find_element("id", "pos-plot").get_attribute(
                "data-done") == "2", "both probe positions done")
            assert not driver.find_element("id", "pause").is_enabled()
            # every plot was drawn by plotly.js served from the Python package
            drawn = driver.execute_script(
                "return ['force-plot','ss-plot','bmode-plot','disp-plot','pos-plot']"
                ".map(id => document.getElementById(id).data.length)")
            assert all(n >= 1 for n in drawn), drawn
            png = driver.execute_script("return document.getElementById('status').textContent")
            assert png == "complete"
    finally:
        if proc.poll() is None:
            (gate / "open").touch()
            proc.communicate(timeout=600)
        if monitor is not None:
            monitor.stop()
    assert base64.b64encode(shot.read_bytes()[:8]) == base64.b64encode(b"\x89PNG\r\n\x1a\n")
    events = SessionStore.open(store).events("interruptions")
    assert [e["reason"] for e in events if e["kind"] == "pause"] == ["operator (monitor)"]


@pytest.fixture(autouse=True)
def _no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
