"""SWEI CNN training loader: windows per second from the in-memory ROI cache vs from Zarr.

Builds a synthetic session store (250 x 600 px sequences by default, 35 frames), then measures
(1) the one-off cost of caching the 121 x 181 px ROI (+ margin) of every sequence, (2) augmented,
z-normalised batches per second from :class:`WindowCache` and (3) the reference: each window read
from the Zarr store on demand (what a loader without the cache would do), same batch size.

    .venv/bin/python bench/cnn_loader.py [--quick] [--window 33]

Writes ``bench/results/cnn_loader.json``. Target (issue 13): >= 5000 augmented 33 px windows/s on
2 cores (``target_windows_per_s``, ``meets_target`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.swei_cnn.data import (
    Augmentation,
    WindowCache,
)
from analysis.swei_cnn.dense import zscore_windows
from analysis.swei_cnn.runners import load_swei_training_set, write_synthetic_store

#: Issue 13: the loader should feed >= 5000 augmented 33 px windows per second on 2 cores.
TARGET_WINDOWS_PER_S = 5000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--window", type=int, default=65)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "cnn_loader.json"))
    args = parser.parse_args()
    shape = (35, 180, 260) if args.quick else (35, 250, 600)
    n_seq_args = {"gelatin_percents": (5.0, 10.0, 15.0), "positions": 2 if args.quick else 4,
                  "pushes": 3 if args.quick else 5}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        write_synthetic_store(store, shape=shape, **n_seq_args)
        data = load_swei_training_set(store)
        n = len(data)
        t0 = time.perf_counter()
        cache = WindowCache(data, np.arange(n), window_px=args.window)
        t_cache = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        aug = Augmentation()
        n_batches = 4 if args.quick else 12
        t0 = time.perf_counter()
        done = 0
        while done < n_batches * args.batch:
            draw = cache.draw(rng, windows_per_sequence=-(-args.batch // n), augmentation=aug)
            cache.batch(draw.subset(slice(0, args.batch)))
            done += args.batch
        cached_rate = done / (time.perf_counter() - t0)
        # reference: read each window from the store
        half = args.window // 2
        r0, r1, c0, c1 = cache.roi
        n_ref = args.batch if args.quick else 2 * args.batch
        t0 = time.perf_counter()
        windows = []
        for _ in range(n_ref):
            s = int(rng.integers(n))
            i, j = int(rng.integers(r0, r1)), int(rng.integers(c0, c1))
            windows.append(np.asarray(data.displacement[s, :, i - half : i + half + 1,
                                                        j - half : j + half + 1]))
        zscore_windows(np.stack(windows))
        zarr_rate = n_ref / (time.perf_counter() - t0)
    result = {"benchmark": "cnn_loader", "quick": args.quick, "window_px": args.window,
              "sequence_shape": list(shape), "sequences": n, "cache_mb": cache.nbytes / 2**20,
              "cache_build_s": t_cache, "cached_windows_per_s": cached_rate,
              "zarr_windows_per_s": zarr_rate, "ratio": cached_rate / zarr_rate,
              "target_windows_per_s": TARGET_WINDOWS_PER_S,
              "meets_target": cached_rate >= TARGET_WINDOWS_PER_S,
              "torch_threads": torch.get_num_threads()}
    print(f"{n} sequences {shape}, window {args.window}: cache {cache.nbytes / 2**20:.0f} MB "
          f"built in {t_cache:.2f} s | cached (augmented) {cached_rate:.0f} windows/s | "
          f"from zarr {zarr_rate:.0f} windows/s | x{cached_rate / zarr_rate:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
