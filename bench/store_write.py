"""Store write throughput: 35 x 250 x 600 complex64 sequences through the session store vs
``np.save`` of the same bytes on the same disk, and the compression ratio.

Target (issue 2): store throughput >= 0.5 x np.save. Speckle IQ is noise-like and barely
compresses, so the ratio mostly measures the overhead of chunking + Blosc/zstd level 1.

Two comparisons, writers interleaved sequence by sequence, medians per sequence:
- "buffered": np.save vs a store append, both returning once the bytes are in the page cache
  (on a VM with a large cache np.save is then a memcpy at several GB/s);
- "durable": each followed by os.sync() inside the timed region, i.e. until the bytes are on
  the disk, which is what "a completed sequence is durable before the next one" needs.

    .venv/bin/python bench/store_write.py [--quick]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from lab.store import SessionStore
from protocols.swei import swei_table_arrays


def speckle_iq(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """IQ-like data: complex Gaussian speckle quantised as a 16-bit ADC would."""
    iq = rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)
    return (np.round(iq * 2000) / 2000).astype(np.complex64)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_seq = 4 if args.quick else 12
    shape = (35, 250, 600)
    rng = np.random.default_rng(0)
    data = [speckle_iq(rng, shape) for _ in range(3)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=Path(__file__).resolve().parent))
    npsave_s: list[float] = []
    store_s: list[float] = []
    npsave_sync_s: list[float] = []
    store_sync_s: list[float] = []
    read_s: list[float] = []
    try:
        store = SessionStore.create(tmp / "bench.zarr")
        table = store.require_table(
            "swei", row_dim="seq", arrays=swei_table_arrays(shape[0] - 1, *shape[1:]))
        iq_chunks = list(table.array("iq").chunks)
        # Interleaved, so both writers see the same disk and page-cache state; medians per
        # sequence, because a shared machine makes single timings noisy.
        for k in range(2 * n_seq):
            durable = k >= n_seq
            t0 = time.perf_counter()
            np.save(tmp / f"seq{k}.npy", data[k % 3])
            if durable:
                os.sync()
            (npsave_sync_s if durable else npsave_s).append(time.perf_counter() - t0)
            record = {name: np.zeros((1, *spec["row_shape"]), spec["dtype"])
                      for name, spec in table.schema.items()}
            record["iq"] = data[k % 3][None]
            t0 = time.perf_counter()
            table.append(f"s{k}", record)
            if durable:
                os.sync()
            (store_sync_s if durable else store_s).append(time.perf_counter() - t0)
        on_disk = sum(f.stat().st_size for f in (tmp / "bench.zarr" / "swei" / "iq").rglob("*")
                      if f.is_file() and f.name != "zarr.json")
        for k in range(n_seq):
            t0 = time.perf_counter()
            table.read("iq", k)
            read_s.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seq_bytes = data[0].nbytes
    npsave_med, store_med, read_med, npsave_sync_med, store_sync_med = (
        float(np.median(v)) for v in (npsave_s, store_s, read_s, npsave_sync_s, store_sync_s))

    results = {
        "sequence_shape": list(shape),
        "sequences": n_seq,
        "iq_chunks": iq_chunks,
        "npsave_mb_s": seq_bytes / npsave_med / 1e6,
        "store_write_mb_s": seq_bytes / store_med / 1e6,
        "store_read_mb_s": seq_bytes / read_med / 1e6,
        "store_vs_npsave": npsave_med / store_med,
        "durable_npsave_mb_s": seq_bytes / npsave_sync_med / 1e6,
        "durable_store_write_mb_s": seq_bytes / store_sync_med / 1e6,
        "durable_store_vs_npsave": npsave_sync_med / store_sync_med,
        "compression_ratio": 2 * n_seq * seq_bytes / on_disk,
        "target_store_vs_npsave": 0.5,
    }
    for k, v in results.items():
        print(f"{k:24s} {v:.3f}" if isinstance(v, float) else f"{k:24s} {v}")
    write_results("store_write", results, args.out)


if __name__ == "__main__":
    main()
