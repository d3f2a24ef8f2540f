"""Benchmark: CPU time of the demo's session stage, this tree against a reference tree.

Runs ``run_demo(OUT, profile=P, stop_after="session")`` in a fresh interpreter for this checkout
and, with ``--reference DIR`` (another checkout, e.g. a ``git worktree`` of main), for that one,
alternately ``--repeats`` times each, and reports the children's CPU time (user + sys, from
``resource.getrusage``) and wall time: CPU time is what compares on a loaded machine, as the
ratio this / reference of the medians (issue 12: the default demo's session stage at most a
third of the issue's 382 s). Prints the figures and writes ``bench/results/session_stage.json``.
``--quick``: the smoke profile, one repeat.

Usage::

    .venv/bin/python bench/session_stage.py [--quick] [--reference /work/main] [--repeats 1]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser, write_results

HERE = Path(__file__).resolve().parents[1]
_CHILD = ("import sys\nfrom lab.demo import run_demo\n"
          "run_demo(sys.argv[1], profile=sys.argv[2], show_progress=False, stop_after='session')\n")


def _run(tree: Path, profile: str) -> dict[str, float]:
    """One session stage in a child interpreter with ``tree`` first on the path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-session-") as out:
        subprocess.run([sys.executable, "-c", _CHILD, out, profile], check=True, cwd=tree,
                       env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, default=None, help="checkout to compare against")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    profile = "smoke" if args.quick else "default"
    trees = {"this": HERE} | ({"reference": args.reference.resolve()} if args.reference else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(1 if args.quick else args.repeats):
        for name, tree in trees.items():  # alternate, so both see the same load
            runs[name].append(_run(tree, profile))
    results: dict[str, Any] = {"profile": profile, "trees": {k: str(v) for k, v in trees.items()}}
    for name, rs in runs.items():
        results[name] = {"cpu_s": float(np.median([r["cpu_s"] for r in rs])),
                         "wall_s": float(np.median([r["wall_s"] for r in rs])), "runs": rs}
        print(f"{name:9s} session stage ({profile}): CPU {results[name]['cpu_s']:.1f} s, "
              f"wall {results[name]['wall_s']:.1f} s")
    if "reference" in runs:
        results["cpu_ratio"] = results["this"]["cpu_s"] / results["reference"]["cpu_s"]
        print(f"CPU ratio this / reference: {results['cpu_ratio']:.3f}")
    write_results("session_stage", results, args.out)


if __name__ == "__main__":
    main()
