"""Cost of the force journal (``lab/force_journal.py``): per pump, and on a whole session.

1. Micro: one pump as the session does it in simulation, after every clock step: one new sample
   on each of two sensors (the worst case: two ``struct.pack`` and one ``os.write``), and a pump
   with nothing new (most clock steps of one 100 Hz and one 50 Hz stream).
2. Session: the tiny indentation + SWEI session (``protocols.testing``), run with the journal
   and with its pump replaced by a no-op, alternating, best of 3 each (the ratio is noisy on a
   busy host); and the pumps of one session times the worst-case pump cost, as a share of it.

Run: ``PYTHONPATH=. python bench/force_journal.py [--quick]``; writes
``bench/results/force_journal.json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from lab import force_journal
from lab.force_journal import ForceJournal, read_journal
from lab.session import run_session
from protocols.testing import tiny_config


def _micro(n: int, tmp: Path) -> dict[str, float]:
    views: dict[str, tuple[list[float], list[float]]] = {
        "probe_sensor": ([], []), "indenter_sensor": ([], [])}
    journal = ForceJournal.start(tmp / "micro.bin")
    journal.follow(lambda: views)
    t0 = time.perf_counter()
    for i in range(n):
        for t_list, f_list in views.values():
            t_list.append(i * 0.005)
            f_list.append(0.5)
        journal.pump()
    with_samples_s = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        journal.pump()
    empty_s = (time.perf_counter() - t0) / n
    journal.close(discard=False)
    content = read_journal(tmp / "micro.bin")
    assert content is not None and all(t.size == n for t, _ in content.samples.values())
    return {"pump_two_samples_us": with_samples_s * 1e6, "pump_nothing_new_us": empty_s * 1e6}


def _session_s(tmp: Path, name: str, *, journal_on: bool, pumps: list[int]) -> float:
    original = ForceJournal.pump

    def counted(self: ForceJournal) -> None:
        pumps.append(1)
        original(self)

    ForceJournal.pump = counted if journal_on else (  # type: ignore[method-assign]
        lambda self: None)
    try:
        cfg = tiny_config(protocols=("indentation", "swei"), positions=2)
        t0 = time.perf_counter()
        result = run_session(cfg, tmp / name, show_progress=False, live_state=False)
        elapsed = time.perf_counter() - t0
    finally:
        ForceJournal.pump = original  # type: ignore[method-assign]
    assert result.status == "complete", result.message
    return elapsed


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    n = 2_000 if args.quick else 50_000
    repeats = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        micro = _micro(n, tmp)
        on, off, pumps = [], [], []
        for i in range(repeats):
            off.append(_session_s(tmp, f"off{i}.zarr", journal_on=False, pumps=[]))
            pumps.clear()
            on.append(_session_s(tmp, f"on{i}.zarr", journal_on=True, pumps=pumps))
    results: dict[str, Any] = {
        **micro, "record_bytes": force_journal.RECORD_BYTES,
        "session_with_journal_s": min(on), "session_without_journal_s": min(off),
        "session_ratio": min(on) / min(off), "repeats": repeats, "pumps_timed": n,
        "pumps_per_session": len(pumps),
        # pumps x the worst-case pump cost: the journal's cost, free of the sessions' noise
        "estimated_journal_s": len(pumps) * micro["pump_two_samples_us"] * 1e-6,
    }
    results["estimated_share_of_session"] = results["estimated_journal_s"] / min(on)
    for key, value in results.items():
        print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    write_results("force_journal", results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
