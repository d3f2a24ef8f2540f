"""Failure-rate study of DP+GLUE (GLUE) vs CNN+GLUE (GLUENet) at PSNR 12.7 dB, with training time.

Run: ``.venv/bin/python bench/strain_study.py`` (full: default flow CNN training, then 8 strains
0.5-7 % x 2 repeats of 2000 x 250 frames) or ``--quick`` (tiny training, 4 pairs of 600 x 96).
Writes ``bench/results/strain_study.json``: the per-method summary (failure rate, MSSIM, SNR,
CNR, share of coarse-estimate outliers, seconds per pair), every row, the settings, the training
recipe/profile and the network's held-out validation.

The reference of this benchmark is the DP start measured in the same run on the same pairs; the
paper's numbers (Table 1: phantom GLUE 58 % vs GLUENet 19 % failures) come from phantom and
in-vivo data, not from this kind of simulation (see :mod:`analysis.strain.study`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.strain.synthetic import failure_rate_study, train_default_flow_cnn
from bench._common import parser, write_results


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        train_kw = dict(n_pairs=8, epochs=1, seed=0)
        study_kw = dict(strains=(0.01, 0.03, 0.05, 0.07), repeats=1, depth_mm=11.55, n_lines=96)
    else:
        train_kw = dict(seed=0)
        study_kw = dict(strains=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07), repeats=2)
    t0 = time.perf_counter()
    trained = train_default_flow_cnn(
        **train_kw, progress=lambda e, loss: print(f"epoch {e}: loss {loss:.3f}", flush=True))
    t_train = time.perf_counter() - t0
    before = trained.validation["untrained"]
    print(f"training {t_train:.1f} s; held-out (12.7 dB) median axial error "
          f"{before['median_axial_error_samples']:.2f} -> "
          f"{trained.validation['median_axial_error_samples']:.2f} samples, outliers "
          f"{100 * before['outlier_fraction']:.1f} -> "
          f"{100 * trained.validation['outlier_fraction']:.1f} % (untrained -> trained)",
          flush=True)
    t1 = time.perf_counter()
    study = failure_rate_study(model=trained.model, psnr_db=12.7, seed=0,
                               progress=lambda s: print(s, flush=True), **study_kw)
    t_study = time.perf_counter() - t1
    for method, summ in study.summary.items():
        print(f"{method}: failure rate {100 * summ['failure_rate']:.1f} % | MSSIM "
              f"{summ['mssim']:.3f} | SNR {summ['snr']:.2f} | CNR {summ['cnr']:.2f} | coarse "
              f"outliers {100 * summ['coarse_outliers']:.1f} % | {summ['seconds_per_pair']:.1f} s")
    by_strain: dict[str, dict[str, float]] = {}
    for method in study.summary:
        rows = [r for r in study.rows if r["method"] == method]
        by_strain[method] = {
            f"{s:.3f}": float(np.mean([r["failed"] for r in rows if r["applied_strain"] == s]))
            for s in sorted({r["applied_strain"] for r in rows})
        }
    write_results("strain_study", {
        "quick": bool(args.quick),
        "summary": study.summary,
        "failure_rate_by_strain": by_strain,
        "settings": {k: (v if isinstance(v, int | float | str | list | None) else str(v))
                     for k, v in study.settings.items()},
        "train": {"seconds": t_train, "recipe": trained.recipe, "profile": trained.profile,
                  "validation": trained.validation, "loss": trained.loss_history},
        "study_seconds": t_study,
        "rows": study.rows,
        "paper_reference": {"note": "GLUENet Table 1 (phantom / in vivo, not simulation)",
                            "phantom_failure_glue": 0.5806, "phantom_failure_gluenet": 0.1935},
    }, args.out)


if __name__ == "__main__":
    main()
