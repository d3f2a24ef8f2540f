"""Benchmark: Loupas / Kasai displacement on one 35 x 250 x 600 complex64 sequence.

Compares ``analysis.displacement.loupas`` (the fused Numba kernels for complex64) on 1 and 2
threads with a straightforward NumPy transcription of the same formulas (whole-array complex
arithmetic, ``scipy.ndimage.uniform_filter1d`` for the axial box, ``np.angle``) measured in the
same run, and with the package's own blocked NumPy path (used without Numba); and
``analysis.displacement.kasai`` with ``pymust.iq2doppler`` (MUST's slow-time autocorrelator)
applied pair by pair. The first call (Numba compiling, or loading its on-disk cache) is timed
separately and excluded from the timings.

Prints the figures and writes ``bench/results/loupas.json``. ``--quick`` runs fewer repetitions.

Usage::

    .venv/bin/python bench/loupas.py [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import uniform_filter1d

from analysis import displacement
from analysis.displacement import default_axial_kernel, kasai, loupas

FRAMES, DEPTH, LATERAL = 35, 250, 600
SOUND_SPEED = 1540.0
MODULATION_FREQUENCY = 7.5e6
DZ = 20e-3 / DEPTH
SAMPLING_FREQUENCY = SOUND_SPEED / (2 * DZ)  # 9.625 MHz on the 0.08 mm pixel grid
PRF = 7000.0
RESULTS = Path(__file__).resolve().parent / "results" / "loupas.json"


def reference_loupas(
    iq: NDArray[np.complex64], *, sampling_frequency: float, modulation_frequency: float,
    sound_speed: float, axial_kernel: int,
) -> NDArray[np.floating]:
    """Straightforward NumPy Loupas (fixed reference), the formulas written as array code."""
    ref, cur = iq[0], iq[1:]
    r_t = np.conj(ref)[None] * cur
    lag = np.zeros_like(iq)
    lag[:, :-1] = np.conj(iq[:, :-1]) * iq[:, 1:]
    r_a = lag[1:] + lag[0][None]

    def box(z: NDArray[np.complex64]) -> NDArray[np.complex64]:
        return (uniform_filter1d(z.real, axial_kernel, axis=-2, mode="constant")
                + 1j * uniform_filter1d(z.imag, axial_kernel, axis=-2, mode="constant"))

    r_t, r_a = box(r_t), box(r_a)
    f_mean = modulation_frequency + sampling_frequency * np.angle(r_a) / (2 * np.pi)
    return -sound_speed * np.angle(r_t) / (4 * np.pi * f_mean)


def pymust_kasai(iq: NDArray[np.complex64], *, modulation_frequency: float,
                 sound_speed: float, prf: float) -> NDArray[np.floating]:
    """Kasai displacement of each frame against frame 0 with ``pymust.iq2doppler`` (M = 1)."""
    import pymust

    param = pymust.utils.Param()
    param.fc = modulation_frequency
    param.c = sound_speed
    param.PRF = prf
    out = np.empty((iq.shape[0] - 1, *iq.shape[1:]), np.float32)
    for k in range(1, iq.shape[0]):
        pair = np.stack([iq[0], iq[k]], axis=-1)  # (depth, lateral, slow time)
        velocity, _ = pymust.iq2doppler(pair, param, 1)
        out[k - 1] = -velocity / prf  # MUST: towards the probe positive; ours: away positive
    return out


def seconds_per_call(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm up (allocations, thread start)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min_s": min(times), "median_s": float(np.median(times))}


def cpu_seconds_per_call(fn: Callable[[], Any], repeats: int) -> float:
    """Median process CPU time per call: less sensitive than wall time to a busy machine."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def dtype_comparison(iq: NDArray[np.complex64], kw: dict[str, Any], workers: int,
                     repeats: int) -> dict[str, float]:
    """complex128 input (default single precision, and float64 arithmetic) vs complex64."""
    iq128 = iq.astype(np.complex128)
    loupas(iq128[:, :16, :16], workers=workers, **kw)  # warm
    c64 = seconds_per_call(lambda: loupas(iq, workers=workers, **kw), repeats)
    c128 = seconds_per_call(lambda: loupas(iq128, workers=workers, **kw), repeats)
    double = seconds_per_call(lambda: loupas(iq128, workers=workers, precision="double", **kw),
                              max(2, repeats // 3))
    return {"complex64_ms": c64["median_s"] * 1e3, "complex128_ms": c128["median_s"] * 1e3,
            "complex128_double_ms": double["median_s"] * 1e3,
            "complex128_vs_complex64": c128["median_s"] / c64["median_s"],
            "double_vs_complex64": double["median_s"] / c64["median_s"],
            "target_complex128_vs_complex64": 2.0}


def numpy_path_loupas(iq: NDArray[np.complex64], **kw: Any) -> NDArray[np.floating]:
    """``loupas`` forced onto its NumPy path (what runs without Numba)."""
    kernels = displacement._numba_kernels
    displacement._numba_kernels = lambda: None  # type: ignore[assignment]
    try:
        return loupas(iq, **kw)
    finally:
        displacement._numba_kernels = kernels  # type: ignore[assignment]


def ms(t: dict[str, float]) -> str:
    return f"{t['median_s'] * 1e3:7.1f} ms median {t['min_s'] * 1e3:7.1f} best"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads for the multi-threaded loupas/kasai timings (default 2)")
    parser.add_argument("--dtypes-only", action="store_true",
                        help="only the complex128 vs complex64 comparison")
    args = parser.parse_args()
    repeats = 3 if args.quick else 15

    rng = np.random.default_rng(0)
    shape = (FRAMES + 1, DEPTH, LATERAL)
    iq = (rng.standard_normal(shape, np.float32)
          + 1j * rng.standard_normal(shape, np.float32)).astype(np.complex64)
    # a smooth displacement so the phases are not pure noise
    iq[1:] *= np.exp(-1j * np.linspace(0.0, 1.0, FRAMES, dtype=np.float32))[:, None, None]
    kernel = default_axial_kernel(sampling_frequency=SAMPLING_FREQUENCY,
                                  modulation_frequency=MODULATION_FREQUENCY)
    kw = {"sampling_frequency": SAMPLING_FREQUENCY, "modulation_frequency": MODULATION_FREQUENCY,
          "sound_speed": SOUND_SPEED, "axial_kernel": kernel}

    # first calls: Numba compiles the kernels (or loads them from its on-disk cache)
    t0 = time.perf_counter()
    loupas(iq[:, :16, :16], workers=1, **kw)
    first_call_1_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loupas(iq[:, :16, :16], workers=args.workers, **kw)
    first_call_n_s = time.perf_counter() - t0

    dtypes = dtype_comparison(iq, kw, args.workers, repeats)
    print(f"complex64 {dtypes['complex64_ms']:.1f} ms, complex128 {dtypes['complex128_ms']:.1f} "
          f"ms (x{dtypes['complex128_vs_complex64']:.2f}, target <= 2), complex128 in float64 "
          f"{dtypes['complex128_double_ms']:.1f} ms (x{dtypes['double_vs_complex64']:.2f})")
    if args.dtypes_only:
        out = RESULTS.with_name("loupas_dtypes.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**dtypes, "load_avg": os.getloadavg(),
                                   "repeats": repeats}, indent=2) + "\n")
        print(f"wrote {out}")
        return
    ours = seconds_per_call(lambda: loupas(iq, workers=args.workers, **kw), repeats)
    ours_1 = seconds_per_call(lambda: loupas(iq, workers=1, **kw), repeats)
    ref = seconds_per_call(lambda: reference_loupas(iq, **kw), max(2, repeats // 3))
    blocked = seconds_per_call(lambda: numpy_path_loupas(iq, workers=args.workers, **kw),
                               max(2, repeats // 3))
    ours_q = seconds_per_call(
        lambda: loupas(iq, workers=args.workers, return_quality=True, **kw), repeats)
    ours_cpu = cpu_seconds_per_call(lambda: loupas(iq, workers=1, **kw), repeats)
    ref_cpu = cpu_seconds_per_call(lambda: reference_loupas(iq, **kw), max(2, repeats // 3))
    ours_u = loupas(iq, **kw)
    ref_u = reference_loupas(iq, **kw)
    max_diff = float(np.max(np.abs(ours_u - ref_u)))
    max_diff_numpy_path = float(np.max(np.abs(ours_u - numpy_path_loupas(iq, **kw))))
    ours_kasai = seconds_per_call(lambda: kasai(iq, workers=args.workers, **kw), repeats)
    kasai_k1 = {**kw, "axial_kernel": 1}
    kasai(iq[:, :16, :16], workers=args.workers, **kasai_k1)  # compile kernel length 1
    must = seconds_per_call(
        lambda: pymust_kasai(iq, modulation_frequency=MODULATION_FREQUENCY,
                             sound_speed=SOUND_SPEED, prf=PRF), max(2, repeats // 3))
    ours_kasai_k1 = seconds_per_call(lambda: kasai(iq, workers=args.workers, **kasai_k1), repeats)
    must_diff = float(np.max(np.abs(
        kasai(iq, **kasai_k1) - pymust_kasai(iq, modulation_frequency=MODULATION_FREQUENCY,
                                             sound_speed=SOUND_SPEED, prf=PRF))))

    results = {
        "shape": [FRAMES + 1, DEPTH, LATERAL], "dtype": "complex64", "axial_kernel": kernel,
        "workers": args.workers, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
        "python": platform.python_version(), "numpy": np.__version__, "quick": args.quick,
        "repeats": repeats,
        "first_call_1_thread_s": first_call_1_s, "first_call_n_threads_s": first_call_n_s,
        "loupas_s": ours, "loupas_1_thread_s": ours_1, "reference_numpy_s": ref,
        "numpy_path_s": blocked, "loupas_with_quality_s": ours_q,
        "loupas_ms_per_sequence": {"median": ours["median_s"] * 1e3,
                                   "best": ours["min_s"] * 1e3},
        "loupas_1_thread_ms_per_sequence": {"median": ours_1["median_s"] * 1e3,
                                            "best": ours_1["min_s"] * 1e3},
        "reference_ms_per_sequence": {"median": ref["median_s"] * 1e3,
                                      "best": ref["min_s"] * 1e3},
        "loupas_sequences_per_s": 1.0 / ours["median_s"],
        "loupas_1_thread_sequences_per_s": 1.0 / ours_1["median_s"],
        "reference_sequences_per_s": 1.0 / ref["median_s"],
        "speedup_vs_reference_median": ref["median_s"] / ours["median_s"],
        "speedup_vs_reference_best": ref["min_s"] / ours["min_s"],
        "speedup_1_thread_vs_reference_median": ref["median_s"] / ours_1["median_s"],
        "speedup_1_thread_vs_reference_best": ref["min_s"] / ours_1["min_s"],
        "speedup_vs_numpy_path_median": blocked["median_s"] / ours["median_s"],
        "loupas_1_thread_cpu_s": ours_cpu, "reference_cpu_s": ref_cpu,
        "cpu_time_ratio_1_thread": ref_cpu / ours_cpu,
        "max_abs_difference_vs_reference_m": max_diff,
        "max_abs_difference_vs_numpy_path_m": max_diff_numpy_path,
        "max_abs_displacement_m": float(np.max(np.abs(ref_u))),
        "peak_bytes_loupas": peak_bytes(lambda: loupas(iq, workers=args.workers, **kw)),
        "peak_bytes_reference": peak_bytes(lambda: reference_loupas(iq, **kw)),
        "input_bytes": iq.nbytes, "output_bytes": ours_u.nbytes,
        "kasai_s": ours_kasai, "kasai_kernel1_s": ours_kasai_k1, "pymust_iq2doppler_s": must,
        "speedup_kasai_vs_pymust_median": must["median_s"] / ours_kasai_k1["median_s"],
        "max_abs_difference_kasai_vs_pymust_m": must_diff,
        **dtypes,
    }
    print(f"sequence {FRAMES + 1} x {DEPTH} x {LATERAL} complex64, axial kernel {kernel}, "
          f"{os.cpu_count()} CPUs, load {results['load_avg'][0]:.2f}, {repeats} repeats")
    print(f"first call (compile or cache load): {first_call_1_s:.2f} s (1 thread), "
          f"{first_call_n_s:.2f} s ({args.workers} threads)")
    print(f"loupas {args.workers} thr {ms(ours)}, {results['loupas_sequences_per_s']:.1f} seq/s")
    print(f"loupas 1 thr {ms(ours_1)}, {results['loupas_1_thread_sequences_per_s']:.1f} seq/s")
    print(f"reference    {ms(ref)}, {results['reference_sequences_per_s']:.1f} seq/s")
    print(f"numpy path   {ms(blocked)} (the fallback without Numba, {args.workers} threads)")
    print(f"with quality {ms(ours_q)}")
    print(f"speed-up vs reference: {args.workers} threads "
          f"{results['speedup_vs_reference_median']:.1f}x median, "
          f"{results['speedup_vs_reference_best']:.1f}x best; 1 thread "
          f"{results['speedup_1_thread_vs_reference_median']:.1f}x median, "
          f"{results['speedup_1_thread_vs_reference_best']:.1f}x best")
    print(f"max |diff| vs reference {max_diff:.2e} m, vs numpy path {max_diff_numpy_path:.2e} m"
          f" (max |u| {results['max_abs_displacement_m']:.2e} m)")
    print(f"CPU time   {ours_cpu * 1e3:.1f} ms (1 thread) vs reference {ref_cpu * 1e3:.1f} ms "
          f"-> {results['cpu_time_ratio_1_thread']:.1f}x")
    print(f"peak memory (tracemalloc): loupas {results['peak_bytes_loupas'] / 2**20:.1f} MiB, "
          f"reference {results['peak_bytes_reference'] / 2**20:.1f} MiB (input "
          f"{iq.nbytes / 2**20:.1f} MiB, output {ours_u.nbytes / 2**20:.1f} MiB)")
    print(f"kasai      {ours_kasai['median_s'] * 1e3:7.1f} ms (kernel {kernel}), "
          f"{ours_kasai_k1['median_s'] * 1e3:.1f} ms (kernel 1); pymust.iq2doppler pairwise "
          f"{must['median_s'] * 1e3:.1f} ms -> {results['speedup_kasai_vs_pymust_median']:.1f}x;"
          f" max |diff| {must_diff:.2e} m")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
