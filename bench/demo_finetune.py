"""The demo's inclusion fine-tuning alone: push-mean inclusion figures of recipe variants.

Re-runs only what follows the training in the demo's ``cnn`` stage for the inclusion block, on a
finished demo directory ``DIR`` (``cnn`` stage done, its trained model in ``DIR/models``): the
fine-tuning at each learning rate of the profile with the choice on the validation position, the
maps of the evaluation positions and [SWEI]'s push-mean comparison with the stored ToF maps.
Nothing is written into ``DIR``. Variants are overrides of the training profile's fields
(``--training KEY=VALUE``, e.g. ``validation_inclusion_fraction=0.5``) or the demo profile's
(``--demo KEY=VALUE``, e.g. ``finetune_with_training_inclusions=true``); values are JSON.

    .venv/bin/python bench/demo_finetune.py DIR [--profile P] [--seed N] [--training K=V ...]
        [--demo K=V ...]

``--profile`` and ``--seed`` are those the demo ran with (checked against its state; the
fine-tuning is seeded with the seed, as in the demo).

Writes ``bench/results/demo_finetune.json`` (the variant, the learning rates tried with their
validation MAE, the CNN and ToF Dice / inclusion / background MAE, the wall time). The training
is the reference's: the same model before fine-tuning, so variants compare like for like.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.swei_cnn.evaluate import predict_sequences, push_mean_comparison
from analysis.swei_cnn.runners import load_swei_training_set
from bench._common import parser, write_results
from lab import demo_stages
from lab.demo_context import PROFILES, STATE_FILE, DemoContext, DemoState, profile_hash
from lab.store import SessionStore

#: The module (the package's ``train`` name is the function): its PROFILES are overridden.
_TRAIN_MODULE = importlib.import_module("analysis.swei_cnn.train")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"override {pair!r}: expected KEY=VALUE")
        out[key] = json.loads(value)
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("demo_dir", type=Path)
    p.add_argument("--profile", default="default", choices=sorted(PROFILES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--training", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--demo", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    training, demo = _overrides(args.training), _overrides(args.demo)
    ran_with = replace(PROFILES[args.profile], seed=args.seed)
    state = DemoState.load(args.demo_dir / STATE_FILE)
    if state.profile_hash != profile_hash(ran_with):
        raise SystemExit(f"{args.demo_dir} was not made with --profile {args.profile} --seed "
                         f"{args.seed} (or with another version of that profile)")
    profile = replace(ran_with, **demo)
    base = _TRAIN_MODULE.PROFILES[profile.cnn_profile]
    _TRAIN_MODULE.PROFILES[profile.cnn_profile] = replace(base, **training)
    if "cnn" not in state.stages:
        raise SystemExit(f"{args.demo_dir}: the demo's cnn stage is not done")
    ctx = DemoContext(args.demo_dir, profile, state, show_progress=False)
    split = state.stages["tof"]["result"]["split"]
    depth_m, lateral_m = demo_stages._grid(ctx)
    roi = demo_stages._centre_range(ctx, depth_m, lateral_m)
    data = load_swei_training_set(ctx.store_path, targets="geometry")
    model_path = args.demo_dir / state.stages["cnn"]["result"]["model"]
    t0 = time.perf_counter()
    model, _, finetuning = demo_stages._finetune_by_validation(ctx, model_path, data, split, roi)
    evaluate = split["inclusion_eval"]
    cnn = predict_sequences(model, data, evaluate)
    tof = SessionStore.open(ctx.store_path).read_array("maps/tof_kpa")[evaluate]
    pm = push_mean_comparison(cnn, tof, data, evaluate,
                              depth_step_m=abs(depth_m[1] - depth_m[0]),
                              lateral_step_m=abs(lateral_m[1] - lateral_m[0]))
    seconds = time.perf_counter() - t0
    figures = {
        "source": str(args.demo_dir), "profile": args.profile, "training_overrides": training,
        "demo_overrides": demo, "seconds": seconds, "finetuning": finetuning,
        "push_mean": {m: {"dice": pm[m]["dice"],
                          "inclusion_mae_kpa": (pm[m]["inclusion"] or {}).get("mae_kpa"),
                          "background_mae_kpa": (pm[m]["background"] or {}).get("mae_kpa")}
                      for m in ("cnn", "tof")}}
    for m in ("cnn", "tof"):
        f = figures["push_mean"][m]
        print(f"{m}: Dice {f['dice']:.3f}, inclusion MAE {f['inclusion_mae_kpa']:.2f} kPa, "
              f"background MAE {f['background_mae_kpa']:.2f} kPa")
    fraction = finetuning["chosen_inclusion_window_fraction"]
    print(f"chosen learning rate {finetuning['chosen_learning_rate']:g}, inclusion window "
          f"fraction {'uniform' if fraction is None else fraction}, "
          f"{finetuning.get('loss', 'mse')} loss; {seconds:.0f} s")
    write_results("demo_finetune", figures, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
