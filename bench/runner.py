"""Session runner overhead per SWEI sequence on the simulated lab, and a 1000-sequence RSS soak.

The ultrasound simulator is swapped for a trivial system (same role, instant frames of the
configured shape), so what is timed is the runner: planning, guard, force watchdog, simulated
robot and force sensor on their wire protocols, contact control, store appends, progress. The
reference is the bare store: appending the same records with ``Table.append`` in a loop, measured
in the same run; the ratio says how much the rest of the machinery costs on top of the writes.

The soak runs 1000 small sequences (100 positions x 10 pushes; ``--quick``: 100) through one
session and samples the resident set size every 50 sequences; growth is measured from the
sample after the first 10 % (warm-up: imports, caches, first chunks) to the end.

    .venv/bin/python bench/runner.py [--quick]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from drivers.ultrasound.base import SweiAcquisition, swei_metadata
from lab.config import parse_config
from lab.devices import build_devices
from lab.session import run_session
from lab.store import SessionStore
from protocols.swei import swei_table_arrays
from protocols.testing import tiny_config_dict


class TrivialUltrasound:
    """Same role as the simulator, no physics: IQ of the right shape, instantly."""

    def __init__(self, system: Any, on_acquire: Any = None) -> None:
        self._system = system
        self.name, self.probe, self.limits = system.name, system.probe, system.limits
        self._on_acquire = on_acquire
        self.calls = 0
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)

    def acquire_swei(self, push: Any, imaging: Any) -> SweiAcquisition:
        t = time.perf_counter()
        self._system.check(push, imaging)  # the duty cycle stays the system's
        t_push = self._system._guard.record_push()
        iq = np.ones((imaging.n_frames + 1, imaging.n_depth, imaging.n_lateral), np.complex64)
        meta = swei_metadata(push, imaging, probe=self.probe, t_push_s=t_push, fidelity="image")
        self.calls += 1
        self.seconds += time.perf_counter() - t
        if self._on_acquire is not None:
            self._on_acquire(self.calls)
        return SweiAcquisition(iq=iq, metadata=meta)


def _config(positions: int, pushes: int, frames: int, depth: int, lateral: int) -> Any:
    data = tiny_config_dict(protocols=("swei",), positions=positions, frames=frames,
                            push_elements=tuple(np.linspace(20, 107, pushes).astype(int).tolist()))
    data["protocols"][0].update(depth_px=depth, lateral_px=lateral, position_margin_mm=30.0)
    data["lab"]["probe_force_sensor"]["rate_hz"] = 200.0
    return parse_config(data)


def _run(cfg: Any, path: Path, on_acquire: Any = None) -> tuple[float, TrivialUltrasound]:
    holder: list[TrivialUltrasound] = []

    def factory(c: Any) -> Any:
        lab = build_devices(c)
        lab.ultrasound = TrivialUltrasound(lab.ultrasound, on_acquire)
        holder.append(lab.ultrasound)
        return lab

    t = time.perf_counter()
    result = run_session(cfg, path, devices_factory=factory, show_progress=False)
    elapsed = time.perf_counter() - t
    if result.status != "complete":
        raise RuntimeError(f"benchmark session ended {result.status}: {result.message}")
    return elapsed, holder[0]


def _bare_appends(path: Path, n: int, shape: tuple[int, int, int]) -> float:
    """Reference: the same swei + force_log records appended directly to a store."""
    store = SessionStore.create(path)
    table = store.require_table(
        "swei", row_dim="seq", arrays=swei_table_arrays(shape[0] - 1, *shape[1:]))
    iq = np.ones(shape, np.complex64)
    t = time.perf_counter()
    for k in range(n):
        table.append(f"k{k}", {
            "iq": iq[None], "push_index": np.array([0], np.int16),
            "push_element": np.array([64], np.int16), "phantom_index": np.array([0], np.int32),
            "position_index": np.array([k], np.int32), "probe_pose": np.zeros((1, 6)),
            "contact_force_n": np.array([0.2], np.float32), "t_start_s": np.array([float(k)]),
        }, {"unit_id": f"u{k}"})
    return time.perf_counter() - t


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runner-"))
    try:
        # -- overhead per step
        positions, pushes = (3, 4) if args.quick else (10, 7)
        frames, depth, lateral = 35, 40, 64
        cfg = _config(positions, pushes, frames, depth, lateral)
        elapsed, us = _run(cfg, tmp / "overhead.zarr")
        n_seq = positions * pushes
        bare = _bare_appends(tmp / "bare.zarr", n_seq, (frames + 1, depth, lateral))
        per_step_ms = (elapsed - us.seconds) / n_seq * 1e3
        bare_ms = bare / n_seq * 1e3
        print(f"runner: {n_seq} sequences in {elapsed:.2f} s ({per_step_ms:.1f} ms per sequence "
              f"excluding {us.seconds * 1e3:.1f} ms of trivial acquisition)")
        print(f"reference (bare store appends): {bare_ms:.2f} ms per sequence; "
              f"ratio runner / bare = {per_step_ms / bare_ms:.1f}")

        # -- soak
        soak_positions, soak_pushes = (10, 10) if args.quick else (100, 10)
        total = soak_positions * soak_pushes
        proc = psutil.Process()
        samples: list[tuple[int, int]] = []

        def sample(calls: int) -> None:
            if calls % 50 == 0 or calls == 1:
                samples.append((calls, proc.memory_info().rss))

        soak_cfg = _config(soak_positions, soak_pushes, 6, 16, 32)
        soak_s, _ = _run(soak_cfg, tmp / "soak.zarr", on_acquire=sample)
        warm = next(r for c, r in samples if c >= total // 10)
        end = samples[-1][1]
        growth = (end - warm) / warm
        print(f"soak: {total} sequences in {soak_s:.1f} s; RSS {warm / 2**20:.1f} MiB after "
              f"warm-up -> {end / 2**20:.1f} MiB at the end ({growth * 100:+.1f} %)")
        write_results("runner", {
            "quick": args.quick,
            "overhead": {"sequences": n_seq, "grid": [frames + 1, depth, lateral],
                         "wall_s": elapsed, "acquisition_s": us.seconds,
                         "per_sequence_ms": per_step_ms, "reference_bare_append_ms": bare_ms,
                         "ratio_runner_over_bare": per_step_ms / bare_ms},
            "soak": {"sequences": total, "wall_s": soak_s,
                     "rss_mib": [[c, r / 2**20] for c, r in samples],
                     "rss_growth_fraction": growth, "flat": growth < 0.10},
        }, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
