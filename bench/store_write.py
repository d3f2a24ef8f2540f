"""Store write throughput: 35 x 250 x 600 complex64 sequences through the session store vs
``np.save`` of the same bytes on the same disk, and the compression ratio.

Target (issue 2): store throughput >= 0.5 x np.save. Speckle IQ is noise-like and barely
compresses, so the ratio mostly measures the overhead of chunking + Blosc/zstd level 1.

    .venv/bin/python bench/store_write.py [--quick]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from lab.store import ArraySpec, SessionStore


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
    nbytes = n_seq * data[0].nbytes
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=Path(__file__).resolve().parent))
    try:
        t0 = time.perf_counter()
        for k in range(n_seq):
            np.save(tmp / f"seq{k}.npy", data[k % 3])
        npsave_s = time.perf_counter() - t0

        store = SessionStore.create(tmp / "bench.zarr")
        table = store.require_table("swei", row_dim="seq", arrays=[
            ArraySpec("iq", shape, "complex64", ("seq", "frame", "depth", "lateral")),
            ArraySpec("push_element", (), "int16", ("seq",), row_chunk=64),
        ])
        t0 = time.perf_counter()
        for k in range(n_seq):
            table.append(f"s{k}", {"iq": data[k % 3][None], "push_element": [k]})
        store_s = time.perf_counter() - t0
        on_disk = sum(f.stat().st_size for f in (tmp / "bench.zarr" / "swei" / "iq").rglob("*")
                      if f.is_file())

        t0 = time.perf_counter()
        for k in range(n_seq):
            table.read("iq", k)
        read_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results = {
        "sequence_shape": list(shape),
        "sequences": n_seq,
        "npsave_mb_s": nbytes / npsave_s / 1e6,
        "store_write_mb_s": nbytes / store_s / 1e6,
        "store_read_mb_s": nbytes / read_s / 1e6,
        "store_vs_npsave": npsave_s / store_s,
        "compression_ratio": nbytes / on_disk,
        "target_store_vs_npsave": 0.5,
    }
    for k, v in results.items():
        print(f"{k:24s} {v:.3f}" if isinstance(v, float) else f"{k:24s} {v}")
    write_results("store_write", results, args.out)


if __name__ == "__main__":
    main()
