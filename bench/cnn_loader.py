"""SWEI CNN training loader: windows per second from the in-memory ROI cache vs from Zarr.

Builds a synthetic session store (250 x 600 px sequences by default, 35 frames), then measures
(1) the one-off cost of caching the 121 x 181 px ROI (+ margin) of every sequence, (2) augmented
(the default :class:`Augmentation`), z-normalised batches per second from :class:`WindowCache`
(after one untimed warm-up batch), by wall clock and per CPU second of this process, and (3) the
reference in the same run: each window read from the Zarr store on demand and z-normalised (what a
loader without the cache would do).

    .venv/bin/python bench/cnn_loader.py [--quick] [--window 33] [--batch 250] [--threads 2]

Writes ``bench/results/cnn_loader.json``. Target (issue 13): >= 5000 augmented 33 px windows/s on
2 cores (``target_windows_per_s``, ``meets_target`` in the JSON: the wall-clock rate). The machine
may be shared: the JSON records the 1-minute load average before and after the timed loop, and
the CPU-time rate, which other processes disturb much less than the wall-clock one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.swei_cnn.data import Augmentation, WindowCache
from analysis.swei_cnn.dense import zscore_windows
from analysis.swei_cnn.runners import load_swei_training_set, write_synthetic_store
from bench._common import parser, write_results

#: Issue 13: the loader should feed >= 5000 augmented 33 px windows per second on 2 cores.
TARGET_WINDOWS_PER_S = 5000.0


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=33, help="window side, px (odd)")
    p.add_argument("--batch", type=int, default=250, help="windows per batch")
    p.add_argument("--threads", type=int, default=None,
                   help="loader threads (WindowCache's default: 2, or 1 on a one-CPU machine)")
    args = p.parse_args()
    shape = (35, 180, 260) if args.quick else (35, 250, 600)
    n_seq_args = {"gelatin_percents": (5.0, 10.0, 15.0), "positions": 2 if args.quick else 4,
                  "pushes": 3 if args.quick else 5}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        write_synthetic_store(store, shape=shape, **n_seq_args)
        data = load_swei_training_set(store)
        n = len(data)
        t0 = time.perf_counter()
        cache = WindowCache(data, np.arange(n), window_px=args.window, threads=args.threads)
        t_cache = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        aug = Augmentation()

        def one_batch() -> None:
            draw = cache.draw(rng, windows_per_sequence=-(-args.batch // n), augmentation=aug)
            cache.batch(draw.subset(slice(0, args.batch)))

        one_batch()  # warm-up: first allocations, the BLAS thread controller
        n_batches = 8 if args.quick else 40
        load_before = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            one_batch()
        wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        load_after = os.getloadavg()[0]
        done = n_batches * args.batch
        cached_rate, cached_cpu_rate = done / wall_s, done / cpu_s
        # reference: read each window from the store
        half = args.window // 2
        r0, r1, c0_, c1 = cache.roi
        n_ref = args.batch if args.quick else 2 * args.batch
        t0 = time.perf_counter()
        windows = []
        for _ in range(n_ref):
            s = int(rng.integers(n))
            i, j = int(rng.integers(r0, r1)), int(rng.integers(c0_, c1))
            windows.append(np.asarray(data.displacement[s, :, i - half : i + half + 1,
                                                        j - half : j + half + 1]))
        zscore_windows(np.stack(windows))
        zarr_rate = n_ref / (time.perf_counter() - t0)
    result = {"quick": args.quick, "window_px": args.window, "batch": args.batch,
              "loader_threads": cache.threads,
              "sequence_shape": list(shape), "sequences": n, "cache_mb": cache.nbytes / 2**20,
              "cache_build_s": t_cache, "timed_windows": done,
              "cached_windows_per_s": cached_rate, "cached_windows_per_cpu_s": cached_cpu_rate,
              "zarr_windows_per_s": zarr_rate, "ratio": cached_rate / zarr_rate,
              "load_average_1min": {"before": load_before, "after": load_after},
              "target_windows_per_s": TARGET_WINDOWS_PER_S,
              "meets_target": cached_rate >= TARGET_WINDOWS_PER_S,
              "torch_threads": torch.get_num_threads()}
    print(f"{n} sequences {shape}, window {args.window}: cache {cache.nbytes / 2**20:.0f} MB "
          f"built in {t_cache:.2f} s | cached (augmented) {cached_rate:.0f} windows/s "
          f"({cached_cpu_rate:.0f} per CPU s) | from zarr {zarr_rate:.0f} windows/s | "
          f"x{cached_rate / zarr_rate:.1f} | load {load_before:.2f} -> {load_after:.2f} | "
          f"meets target {result['meets_target']}")
    write_results("cnn_loader", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
