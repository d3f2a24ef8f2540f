"""Export throughput (UFF, MAT v7.3, HDF5) vs the store's own read throughput, same run.

A store of SWEI sequences (speckle IQ, 36 x 250 x 600 complex64 = 43 MB each; --quick: 8 of
13 x 64 x 96) is read back with ``lab.xr.open_dataset`` (one sequence at a time, the reference)
and exported with ``lab.export.export_store`` in each format. Reported: MB/s of IQ (uncompressed
bytes) for each, and each export's ratio to the read; the target is an export that costs no
more than about twice a read (ratio >= 0.5), i.e. the file writing, not a copy of the data in
memory, is the cost. Peak traced memory of each export is reported against one sequence's size
(streaming: a few sequences, not the whole store).

    .venv/bin/python bench/export.py [--quick]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from lab.export import FORMATS, SUFFIX, export_store
from lab.store import SessionStore
from lab.xr import open_dataset
from protocols.swei import swei_table_arrays


def build_store(path: Path, n_seq: int, shape: tuple[int, int, int]) -> int:
    rng = np.random.default_rng(0)
    frames, depth, lateral = shape
    store = SessionStore.create(path)
    table = store.require_table("swei", row_dim="seq", arrays=swei_table_arrays(
        frames - 1, depth, lateral), attrs={
            "sampling_frequency": 9.625e6, "modulation_frequency": 7.5e6, "sound_speed": 1540.0,
            "PRF": 7000.0, "initial_time": 1.3e-4,
            "depth_m": (5e-3 + 0.08e-3 * np.arange(depth)).tolist(),
            "lateral_m": (0.1e-3 * (np.arange(lateral) - lateral / 2)).tolist()})
    for k in range(n_seq):
        iq = (rng.standard_normal(shape, np.float32)
              + 1j * rng.standard_normal(shape, np.float32)).astype(np.complex64)
        table.append(f"B/pos000/push{k}", {
            "iq": iq[None], "push_index": [k], "push_element": [k], "phantom_index": [0],
            "position_index": [0], "probe_pose": np.zeros((1, 6)), "contact_force_n": [0.2],
            "t_start_s": [float(k)]})
    return n_seq * int(np.prod(shape)) * 8


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_seq, shape = (8, (13, 64, 96)) if args.quick else (12, (36, 250, 600))
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    results: dict[str, object] = {"sequences": n_seq, "sequence_shape": list(shape)}
    try:
        store = tmp / "s.zarr"
        total = build_store(store, n_seq, shape)
        seq_bytes = total // n_seq
        t = time.perf_counter()
        iq = open_dataset(store, "swei").iq
        for k in range(n_seq):
            np.asarray(iq[k].values)
        read_s = time.perf_counter() - t
        results["store_read_mb_s"] = total / read_s / 1e6
        for fmt in FORMATS:
            out = tmp / f"s{SUFFIX[fmt]}"
            tracemalloc.start()
            t = time.perf_counter()
            export_store(store, out, fmt=fmt, what=["iq"],  # type: ignore[arg-type]
                         block_mb=seq_bytes / 2**20)
            seconds = time.perf_counter() - t
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            results[f"{fmt}_export_mb_s"] = total / seconds / 1e6
            results[f"{fmt}_vs_read"] = read_s / seconds
            results[f"{fmt}_peak_memory_sequences"] = peak / seq_bytes
            out.unlink()
        results["target_export_vs_read"] = 0.5
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in results.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    write_results("export", results, args.out)


if __name__ == "__main__":
    main()
