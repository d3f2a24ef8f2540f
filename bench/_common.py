"""Shared helpers of the benchmarks: argument parsing and writing results as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    return p


def write_results(name: str, results: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``results`` plus machine info to ``bench/results/<name>.json`` (or ``out``)."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        **results,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path
