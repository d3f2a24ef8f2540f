"""Cost of the live state for the runner, and how fast the monitor page follows a change.

1. Overhead: the SWEI-only session of ``bench/runner.py`` (trivial ultrasound, so the runner and
   the store are what is timed) run with the live state on and off, interleaved, several times;
   the figure is the median per-sequence wall time with it on over the median with it off
   (target: <= 1.05).
2. Latency: a :class:`lab.live.LiveState` on a finished store announces a new current unit; the
   time until (a) ``/api/state`` of a running :class:`lab.monitor.Monitor` reports it and (b) the
   page in headless Chromium shows it (skipped without chromium/chromedriver). The page polls
   once a second and the writer wakes at once on a unit start (at most four writes a second),
   so (b) should be about a second or less.

    .venv/bin/python bench/monitor.py [--quick]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results
from runner import TrivialUltrasound, _config

from lab.devices import build_devices
from lab.live import LiveState
from lab.monitor import Monitor
from lab.session import run_session
from protocols.testing import tiny_config


def _session(cfg: Any, path: Path, *, live_state: bool) -> float:
    def factory(c: Any) -> Any:
        lab = build_devices(c)
        lab.ultrasound = TrivialUltrasound(lab.ultrasound)
        return lab

    t = time.perf_counter()
    result = run_session(cfg, path, devices_factory=factory, show_progress=False,
                         live_state=live_state)
    elapsed = time.perf_counter() - t
    if result.status != "complete":
        raise RuntimeError(f"benchmark session ended {result.status}: {result.message}")
    return elapsed


def overhead(tmp: Path, *, quick: bool) -> dict[str, Any]:
    positions, pushes, repeats = (3, 4, 2) if quick else (8, 6, 4)
    cfg = _config(positions, pushes, 35, 40, 64)
    n_seq = positions * pushes
    _session(cfg, tmp / "warm.zarr", live_state=True)  # imports, JIT, caches
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for live in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
            times[live].append(_session(cfg, tmp / f"r{r}-{live}.zarr", live_state=live)
                               / n_seq * 1e3)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"runner per sequence: live state on {on:.1f} ms, off {off:.1f} ms (medians of "
          f"{repeats}); ratio {on / off:.3f} (target <= 1.05)")
    return {"sequences_per_run": n_seq, "repeats": repeats, "per_sequence_ms_on": times[True],
            "per_sequence_ms_off": times[False], "median_on_ms": on, "median_off_ms": off,
            "ratio_on_over_off": on / off, "target_ratio": 1.05, "within_target": on / off <= 1.05}


def _unit(i: int) -> Any:
    return SimpleNamespace(unit_id=f"bench/marker{i:03d}", kind="swei", estimated_s=1.0)


def latency(tmp: Path, *, quick: bool) -> dict[str, Any]:
    store = tmp / "latency.zarr"
    assert run_session(tiny_config(protocols=("indentation",)), store,
                       show_progress=False).status == "complete"
    n = 5 if quick else 15
    units = [_unit(i) for i in range(n)]
    live = LiveState(store, name="latency", units=units)
    live.start(completed=[])
    mon = Monitor(store, port=0)
    url = mon.start()
    api: list[float] = []
    page: list[float] = []
    try:
        for u in units:  # (a) the JSON endpoint
            t0 = time.perf_counter()
            live.unit_started(u)
            while True:
                with urllib.request.urlopen(url + "api/state", timeout=30) as r:
                    if json.load(r)["current"].get("unit") == u.unit_id:
                        break
                time.sleep(0.005)
            api.append(time.perf_counter() - t0)
            live.unit_done(u)
        page = _page_latency(url, live, [_unit(100 + i) for i in range(n)])
    finally:
        live.close()
        mon.stop()
    out: dict[str, Any] = {"api_s": api, "api_median_s": statistics.median(api)}
    print(f"monitor: /api/state shows a new unit after {statistics.median(api) * 1e3:.0f} ms "
          f"(median of {n})")
    if page:
        out.update(page_s=page, page_median_s=statistics.median(page), page_max_s=max(page))
        print(f"monitor page shows it after {statistics.median(page):.2f} s (median), "
              f"{max(page):.2f} s at most")
    else:
        out["page_s"] = None
        print("monitor page latency skipped: chromium/chromedriver or selenium missing")
    return out


def _page_latency(url: str, live: LiveState, units: list[Any]) -> list[float]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return []
    if not (chromium and driver_path):
        return []
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    out = []
    try:
        driver.get(url)
        for u in units:
            t0 = time.perf_counter()
            live.unit_started(u)
            while u.unit_id not in (driver.find_element("id", "unit").get_attribute(
                    "textContent") or ""):
                time.sleep(0.01)
            out.append(time.perf_counter() - t0)
            live.unit_done(u)
    finally:
        driver.quit()
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    try:
        results = {"quick": args.quick, "overhead": overhead(tmp, quick=args.quick),
                   "latency": latency(tmp, quick=args.quick)}
        write_results("monitor", results, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
