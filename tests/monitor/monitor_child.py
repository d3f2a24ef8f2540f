"""Run or resume a simulated session that waits at chosen unit starts (for the monitor tests).

Usage: ``monitor_child.py run CONFIG_JSON STORE GATE_DIR`` or ``monitor_child.py resume STORE
GATE_DIR``. Before unit k (1-based, counted over the whole plan) begins, the runner waits until
``GATE_DIR/go-k`` or ``GATE_DIR/open`` exists, so a test can look at the monitor while the session
stands at a known point. The wait is on the test's action, not on time: it gives up (and fails
the run) only after ``GATE_TIMEOUT_S`` without one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lab.config import parse_config
from lab.live import LiveState
from lab.session import resume_session, run_session

GATE_TIMEOUT_S = 300.0


def _install_gate(gate_dir: Path) -> None:
    original = LiveState.unit_started

    def unit_started(self: LiveState, unit: Any) -> None:
        original(self, unit)
        k = self.snapshot()["current"]["k"]
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not ((gate_dir / f"go-{k}").exists() or (gate_dir / "open").exists()):
            if time.monotonic() > deadline:
                raise SystemExit(f"gate go-{k} never opened")
            time.sleep(0.02)

    LiveState.unit_started = unit_started  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if argv[0] == "run":
        config_json, store, gate = argv[1], argv[2], Path(argv[3])
        _install_gate(gate)
        cfg = parse_config(json.loads(Path(config_json).read_text()))
        result = run_session(cfg, store, show_progress=False)
    else:
        store, gate = argv[1], Path(argv[2])
        _install_gate(gate)
        result = resume_session(store, show_progress=False)
    print(f"RESULT {result.status} {result.completed}/{result.total}", flush=True)
    return 0 if result.status in ("complete", "paused") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
