"""SWEI CNN inference: positions per second, dense (fully convolutional) vs window by window.

For the 65, 33 and 17 px networks on 2 CPU threads: window-by-window prediction (the reference,
batches of z-normalised windows, as the paper predicts) and dense prediction measured in the same
run, their ratio, the largest relative difference between the two on the positions both computed,
and the time for a full 250 x 600 px map (every pixel whose window fits). Weights are random (speed
does not depend on them).

    .venv/bin/python bench/cnn_inference.py [--quick]

Writes ``bench/results/cnn_inference.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.swei_cnn.dense import _dense_map, _window_map
from analysis.swei_cnn.model import FRAMES, swei_cnn
from analysis.swei_cnn.synthetic import shear_wave_sequence


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small map, fewer windows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "cnn_inference.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    map_shape = (120, 200) if args.quick else (250, 600)
    n_windows = {65: 8, 33: 24, 17: 64} if args.quick else {65: 48, 33: 128, 17: 384}
    rng = np.random.default_rng(0)
    seq = shear_wave_sequence(40.0, shape=(FRAMES, *map_shape), rng=rng, push_lateral_px=-5.0)
    results = []
    for window_px in (65, 33, 17):
        torch.manual_seed(0)
        model = swei_cnn(window_px).eval()  # type: ignore[arg-type]
        model.set_target_scale(60.0, 30.0)  # outputs in the kPa range, as after training
        k = window_px
        _window_map(model, seq[:, :k, :k + 1], np.array([0]), np.array([0, 1]), batch_size=2,
                    device="cpu")  # warm-up
        # window by window on the first rows/columns of origins
        n = n_windows[window_px]
        cols = np.arange(min(n, map_shape[1] - k + 1))
        rows = np.arange(-(-n // len(cols)))
        t0 = time.perf_counter()
        ref = _window_map(model, seq, rows, cols, batch_size=64, device="cpu")
        t_window = time.perf_counter() - t0
        window_rate = ref.size / t_window
        # dense over the whole map
        t0 = time.perf_counter()
        with torch.no_grad():
            dense = _dense_map(model, seq, max_memory_mb=1024.0, device="cpu")
        t_dense = time.perf_counter() - t0
        dense_rate = dense.size / t_dense
        sub = dense[np.ix_(rows, cols)]
        rel = float(np.max(np.abs(sub - ref) / np.abs(ref)))
        row = {"window_px": window_px, "map_shape": list(map_shape),
               "window_positions": int(ref.size), "window_s": t_window,
               "window_positions_per_s": window_rate, "dense_positions": int(dense.size),
               "dense_map_s": t_dense, "dense_positions_per_s": dense_rate,
               "speedup": dense_rate / window_rate, "max_relative_difference": rel}
        results.append(row)
        print(f"{window_px:>2} px: window-by-window {window_rate:9.1f} pos/s | dense "
              f"{dense_rate:9.1f} pos/s | x{dense_rate / window_rate:6.1f} | full "
              f"{map_shape[0]} x {map_shape[1]} map {t_dense:6.2f} s ({dense.size} positions) | "
              f"max rel diff {rel:.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "cnn_inference", "quick": args.quick,
                               "threads": args.threads, "torch": torch.__version__,
                               "machine": platform.machine(), "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
