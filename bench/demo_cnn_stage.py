"""The demo's CNN stage alone: wall time and headline figures on a copy of a finished demo.

Copies ``DIR`` (a demo output directory whose ``tof`` stage is done, e.g. from
``elastolab demo --out DIR``) to a scratch directory, re-runs the ``cnn`` stage there with the
current code (split recomputed from the store) and reports its wall time, the share of it spent
training, the held-out ratio MAE(ToF) / MAE(CNN), the push-mean inclusion figures and (where the
profile holds a concentration out) the unseen-concentration MAE and its ratio to the seen, next to
the figures recorded in ``DIR`` (the reference: the same data, the code that made it).

    .venv/bin/python bench/demo_cnn_stage.py DIR [--profile default]

Writes ``bench/results/demo_cnn_stage.json``. The original directory is never written. The ToF
maps are the source's: sequences its ToF stage did not compute (e.g. the unseen-concentration
test set of a source made without one) drop out of the comparisons, which score where both
methods estimate.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser, write_results
from lab import demo_stages
from lab.demo_context import PROFILES, STATE_FILE, DemoContext, DemoState


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    comp = result["comparison"]
    held = comp["held_out"]
    out: dict[str, Any] = {
        "held_out_mae_kpa": {m: held[m]["overall"]["mae_kpa"] for m in ("cnn", "tof")}}
    out["held_out_ratio_tof_over_cnn"] = (out["held_out_mae_kpa"]["tof"]
                                          / out["held_out_mae_kpa"]["cnn"])
    if "inclusion_push_mean" in comp:
        pm = comp["inclusion_push_mean"]
        out["inclusion_push_mean"] = {
            m: {"dice": pm[m]["dice"],
                "inclusion_mae_kpa": (pm[m]["inclusion"] or {}).get("mae_kpa"),
                "background_mae_kpa": (pm[m]["background"] or {}).get("mae_kpa")}
            for m in ("cnn", "tof")}
    if "unseen_concentration" in comp:
        unseen = comp["unseen_concentration"]
        out["unseen_concentration_mae_kpa"] = {m: unseen[m]["overall"]["mae_kpa"]
                                               for m in ("cnn", "tof")}
        out["unseen_over_seen_mae"] = comp.get("unseen_over_seen_mae")
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("demo_dir", type=Path)
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    args = p.parse_args()
    source = args.demo_dir
    reference_state = DemoState.load(source / STATE_FILE)
    if "tof" not in reference_state.stages:
        raise SystemExit(f"{source}: the demo's tof stage is not done")
    reference = reference_state.stages.get("cnn")
    with tempfile.TemporaryDirectory(prefix="bench-cnn-stage-") as tmp:
        out = Path(tmp) / "demo"
        shutil.copytree(source, out)
        state = DemoState.load(out / STATE_FILE)
        for stage in ("cnn", "strain", "report"):
            state.stages.pop(stage, None)
        ctx = DemoContext(out, PROFILES[args.profile], state, show_progress=False)
        split = demo_stages.demo_split(ctx)
        state.stages["tof"]["result"]["split"] = {k: v for k, v in split.items() if k != "keys"}
        t0 = time.perf_counter()
        result = demo_stages.stage_cnn(ctx)
        seconds = time.perf_counter() - t0
    train_s = sum(e["duration_s"] for e in result["epochs"])
    figures = {"stage_s": seconds, "training_epochs_s": train_s, "epochs": len(result["epochs"]),
               "current": _headline(result),
               "reference": ({"stage_s": reference["seconds"],
                              **_headline(reference["result"])} if reference else None),
               "source": str(source), "profile": args.profile}
    cur = figures["current"]
    print(f"cnn stage {seconds:.0f} s (training {train_s:.0f} s, {len(result['epochs'])} epochs);"
          f" held-out MAE CNN {cur['held_out_mae_kpa']['cnn']:.2f} vs ToF "
          f"{cur['held_out_mae_kpa']['tof']:.2f} kPa, ratio "
          f"{cur['held_out_ratio_tof_over_cnn']:.2f}")
    if reference:
        ref = figures["reference"]
        print(f"reference: {ref['stage_s']:.0f} s, ratio {ref['held_out_ratio_tof_over_cnn']:.2f}")
    write_results("demo_cnn_stage", figures, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
