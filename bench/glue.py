"""GLUE and DP time per pre/post pair at 2000 x 250 samples, by solver, against references.

Run: ``.venv/bin/python bench/glue.py`` (``--quick`` for a small smoke run). Writes
``bench/results/glue.json``. Target (issue 8): GLUE <= 2 s per 2000 x 250 pair on 2 cores.

Measured in one run:

* the simulated pair (stiff-inclusion block, 2 % strain) and the DP coarse estimate (timed);
* GLUE on the full frame with each iterative solver (``cg-twolevel`` is the default);
* reference 1: the same linear system on a small crop solved densely (``numpy.linalg.solve``)
  vs the default solver on that crop (time ratio and largest difference);
* reference 2: sparse direct LU (``spsolve``) on a medium crop vs the default solver.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from analysis.strain._checks import check_frames
from analysis.strain.dp import dp_displacement
from analysis.strain.glue import _solve, glue, glue_system
from analysis.strain.lsq import lsq_strain
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import simulate_compression_pair

RESULTS = Path(__file__).resolve().parent / "results" / "glue.json"


def _time(fn, repeats: int = 1):  # type: ignore[no-untyped-def]
    best = np.inf
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small frame, one repeat")
    args = parser.parse_args()
    quick = args.quick
    depth_mm, width_mm, n_lines = (10.0, 10.0, 64) if quick else (38.5, 38.0, 250)
    repeats = 1 if quick else 3
    phantom = BlockPhantom("bench", 7.5, inclusions=(Inclusion(0.0, depth_mm / 2,
                                                               depth_mm / 8, 15.0),))
    t_sim, pair = _time(lambda: simulate_compression_pair(
        phantom, applied_strain=0.02, depth_mm=depth_mm, width_mm=width_mm, n_lines=n_lines))
    n, m = pair.rf_pre.shape
    print(f"frame {n} x {m} samples x lines; simulated pair in {t_sim:.2f} s (incl. FEM)")

    t_dp, dp = _time(lambda: dp_displacement(
        pair.rf_pre, pair.rf_post, axial_range=(-int(0.08 * n) - 3, 3), lateral_range=(-3, 3),
        weight=0.1, block=4, line_step=8), repeats)
    dp_err = np.abs(dp.axial - pair.axial_displacement_samples)
    print(f"DP: {t_dp:.2f} s; |error| > 3 samples on {100 * np.mean(dp_err > 3):.2f} % of pixels")

    runs = [("cg-twolevel", 1e-3), ("cg-twolevel", 1e-2), ("cg-line", 1e-3)]
    if not quick:
        runs.append(("cg-jacobi", 1e-3))
    full: dict[str, dict[str, float]] = {}
    for solver, rtol in runs:
        t_g, res = _time(lambda s=solver, r=rtol: glue(pair.rf_pre, pair.rf_post, dp.axial,
                                                       dp.lateral, solver=s, rtol=r), repeats)
        err = np.abs(res.axial - pair.axial_displacement_samples[res.region])
        strain = lsq_strain(res.axial, window=41)
        true = pair.axial_strain[res.region]
        strain_err = np.nanmedian(np.abs(strain - true)) / 0.02
        name = solver if rtol == 1e-3 else f"{solver} rtol={rtol:g}"
        full[name] = {"seconds": t_g, "solver_iterations": res.solver_iterations[0],
                        "median_abs_error_samples": float(np.median(err)),
                        "median_rel_strain_error": float(strain_err)}
        print(f"GLUE {name:20s}: {t_g:.2f} s, {res.solver_iterations[0]} iterations, median "
              f"|error| {np.median(err):.3f} samples, median strain error "
              f"{100 * strain_err:.1f} % of applied")

    i1, i2 = check_frames(pair.rf_pre, pair.rf_post)
    ax0 = dp.axial.astype(np.float64)
    lat0 = dp.lateral.astype(np.float64)

    # Reference 1: dense solve of the same system on a small crop (same matrix).
    small = (slice(10, 130), slice(2, 26))
    a_s, b_s = glue_system(i1, i2, ax0, lat0, small, alpha1=5, alpha2=1, beta1=5, beta2=1)
    t_dense, x_dense = _time(lambda: np.linalg.solve(a_s.toarray(), b_s))
    t_small, (x_small, _) = _time(lambda: _solve(a_s, b_s, "cg-twolevel", shape=(120, 24),
                                                 segment=20, rtol=1e-8, maxiter=2000), repeats)
    dense_diff = float(np.max(np.abs(x_small - x_dense)))
    print(f"crop 120 x 24 ({b_s.size} unknowns): dense solve {t_dense:.3f} s, default solver "
          f"{t_small:.3f} s (ratio {t_dense / t_small:.1f}x), max difference {dense_diff:.2e}")

    # Reference 2: sparse direct LU of the same system on a medium crop.
    rows = min(n - 20, 400)
    med = (slice(10, 10 + rows), slice(2, m - 2))
    a_m, b_m = glue_system(i1, i2, ax0, lat0, med, alpha1=5, alpha2=1, beta1=5, beta2=1)
    t_direct, (x_direct, _) = _time(lambda: _solve(a_m, b_m, "direct", shape=(rows, m - 4),
                                                   segment=20, rtol=0.0, maxiter=0))
    t_iter, (x_iter, _) = _time(lambda: _solve(a_m, b_m, "cg-twolevel", shape=(rows, m - 4),
                                               segment=20, rtol=1e-3, maxiter=500), repeats)
    direct_diff = float(np.max(np.abs(x_direct - x_iter)))
    print(f"crop {rows} x {m - 4} ({b_m.size} unknowns): sparse direct LU {t_direct:.2f} s, "
          f"default solver {t_iter:.2f} s (ratio {t_direct / t_iter:.1f}x), max difference "
          f"{direct_diff:.2e} samples")

    target_met = full["cg-twolevel"]["seconds"] <= 2.0
    doc = {
        "frame": [n, m], "quick": quick, "repeats_best_of": repeats,
        "host": platform.node(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "simulate_pair_seconds": t_sim, "dp_seconds": t_dp,
        "dp_fraction_error_over_3_samples": float(np.mean(dp_err > 3)),
        "glue": full, "default_solver": "cg-twolevel",
        "reference_dense_crop": {"unknowns": int(b_s.size), "dense_seconds": t_dense,
                                 "default_seconds": t_small, "ratio": t_dense / t_small,
                                 "max_difference_samples": dense_diff},
        "reference_sparse_direct_crop": {"shape": [rows, m - 4], "direct_seconds": t_direct,
                                         "default_seconds": t_iter,
                                         "ratio": t_direct / t_iter,
                                         "max_difference_samples": direct_diff},
        "target_seconds": 2.0, "target_met": bool(target_met),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(f"GLUE default {full['cg-twolevel']['seconds']:.2f} s per pair "
          f"({'meets' if target_met else 'misses'} the 2 s target); wrote {RESULTS}")


if __name__ == "__main__":
    main()
