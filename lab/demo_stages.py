"""The stages of ``elastolab demo`` (see :mod:`lab.demo`). Each returns a JSON-able result."""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.metrics import dice
from analysis.runners import run_displacement, run_labels, run_tof
from analysis.strain.flownet import save_flow_cnn
from analysis.strain.runners import run_strain
from analysis.strain.synthetic import failure_rate_study, train_default_flow_cnn
from analysis.swei_cnn.data import (
    EXCLUDED_TRAINING_PUSHES,
    concentration_split,
    position_fold_split,
)
from analysis.swei_cnn.evaluate import (
    compare_with_tof,
    predict_sequences,
    push_mean_comparison,
    push_mean_regions,
)
from analysis.swei_cnn.io import load_model, save_model
from analysis.swei_cnn.runners import load_swei_training_set, run_predict, run_train
from analysis.swei_cnn.train import evaluate_windows, finetune, get_profile
from analysis.tof import tof_window_px
from lab.demo_context import (
    EVAL_INCLUSION_BLOCK,
    PAPER_ROI_MM,
    TRAINING_INCLUSION_PREFIX,
    DemoContext,
    DemoError,
    demo_config,
)
from lab.demo_report import build_report
from lab.gelatin import DICE_THRESHOLD_KPA
from lab.progress import COMPILE_NOTE, progress_callback
from lab.session import resume_session, run_session
from lab.store import SessionStore
from lab.verify import verify_store

log = logging.getLogger(__name__)


def _progress(ctx: DemoContext, description: str) -> AbstractContextManager[Any]:
    return progress_callback(description) if ctx.show_progress else nullcontext(None)


def _odd(n: float, minimum: int = 1) -> int:
    k = max(minimum, round(n))
    return k if k % 2 else k + 1


def _grid(ctx: DemoContext) -> tuple[list[float], list[float]]:
    attrs = SessionStore.open(ctx.store_path).table("swei").group.attrs
    return list(attrs["depth_m"]), list(attrs["lateral_m"])


# -- 1. acquisition ------------------------------------------------------------------------------
def stage_session(ctx: DemoContext) -> dict[str, Any]:
    """Run (or resume) the simulated session; the store must verify clean afterwards."""
    config = demo_config(ctx.profile)
    if ctx.store_path.exists():
        result = resume_session(ctx.store_path, show_progress=ctx.show_progress)
    else:
        result = run_session(config, ctx.store_path, show_progress=ctx.show_progress)
    if result.status != "complete":
        raise DemoError(f"the simulated session ended {result.status}: {result.message}")
    report = verify_store(ctx.store_path)
    if not report.clean:
        raise DemoError("session store does not verify: " + "; ".join(map(str, report.problems)))
    return {"status": result.status, "units": result.completed, "verified": True}


# -- 2. labels -----------------------------------------------------------------------------------
def stage_labels(ctx: DemoContext) -> dict[str, Any]:
    labels = run_labels(ctx.store_path, plot_path=ctx.figures / "stress_strain.png")
    return {"labels": labels}


# -- 3. displacement -----------------------------------------------------------------------------
def stage_displacement(ctx: DemoContext) -> dict[str, Any]:
    log.info("Loupas displacement; %s", COMPILE_NOTE)
    with _progress(ctx, "Loupas displacement") as progress:
        n = run_displacement(ctx.store_path, method="loupas", progress=progress)
    return {"sequences": n}


# -- 4. time of flight ---------------------------------------------------------------------------
def tof_options(lateral_m: list[float]) -> dict[str, Any]:
    """ToF settings with the paper's physical distances on this store's lateral grid."""
    return tof_window_px(abs(lateral_m[1] - lateral_m[0]))


def _phantom_id(key: str) -> str:
    return key.split("/", 1)[0]


def demo_split(ctx: DemoContext) -> dict[str, list[int]]:
    """Fold 0 of the 4-fold position split, plus:

    - ``inclusion_train``: the sequences of the training blocks with random inclusions (all
      positions, minus the pushes never trained on), which join training;
    - the evaluation inclusion block's positions split into tune (3/4) and evaluate (1/4, at
      least one); the last tune position validates the fine-tuning (``inclusion_tune_val``);
    - ``unseen_test``: with ``profile.unseen_concentration``, the test sequences of the
      leave-one-concentration-out split.
    """
    prof = ctx.profile
    data = load_swei_training_set(ctx.store_path, targets="geometry")
    split = position_fold_split(data, fold=0, seed=prof.seed)
    phantom = [_phantom_id(k) for k in data.keys]
    excluded = set(EXCLUDED_TRAINING_PUSHES)
    train_inc = [i for i, ph in enumerate(phantom) if ph.startswith(TRAINING_INCLUSION_PREFIX)
                 and int(data.push_index[i]) not in excluded]
    inclusion = [i for i, ph in enumerate(phantom) if ph == EVAL_INCLUSION_BLOCK]
    positions = sorted({int(data.position_index[i]) for i in inclusion})
    n_eval = max(1, len(positions) // 4)  # 8 positions: fine-tune on 6, evaluate on 2
    tune_positions = positions[: len(positions) - n_eval]
    tune_val = tune_positions[-1:] if len(tune_positions) > 1 else []
    unseen: list[int] = []
    if prof.unseen_concentration is not None:
        unseen = sorted(map(int, concentration_split(
            data, held_out_percent=prof.unseen_concentration, seed=prof.seed).test))
    return {
        "train": sorted(map(int, split.train)), "validation": sorted(map(int, split.validation)),
        "test": sorted(map(int, split.test)), "inclusion_train": train_inc,
        "inclusion_tune": [i for i in inclusion if data.position_index[i] in tune_positions
                           and data.position_index[i] not in tune_val],
        "inclusion_tune_val": [i for i in inclusion if data.position_index[i] in tune_val],
        "inclusion_eval": [i for i in inclusion if data.position_index[i] not in tune_positions],
        "unseen_test": unseen,
        "keys": list(data.keys),
    }


def stage_tof(ctx: DemoContext) -> dict[str, Any]:
    """ToF on the validation, test and inclusion sequences; alpha from validation only."""
    _, lateral_m = _grid(ctx)
    options = tof_options(lateral_m)
    split = demo_split(ctx)
    keys = split["keys"]
    wanted = sorted(set(split["validation"] + split["test"] + split["inclusion_eval"]
                        + split["unseen_test"]))
    with _progress(ctx, "time of flight") as progress:
        alpha = run_tof(ctx.store_path, alpha=None, keys=[keys[i] for i in wanted],
                        calibration_keys=[keys[i] for i in split["validation"]],
                        progress=progress, **options)
    return {"alpha": alpha, "split": {k: v for k, v in split.items() if k != "keys"},
            **options}


# -- 5. CNN --------------------------------------------------------------------------------------
def _roi_px(depth_m: list[float], lateral_m: list[float], window_px: int) -> tuple[int, int]:
    """The paper's 10 x 12 mm ROI on this grid, shrunk to fit a window's margin."""
    dz = abs(depth_m[1] - depth_m[0]) * 1e3
    dx = abs(lateral_m[1] - lateral_m[0]) * 1e3
    rows = min(_odd(PAPER_ROI_MM[0] / dz), len(depth_m) - window_px + 1)
    cols = min(_odd(PAPER_ROI_MM[1] / dx), len(lateral_m) - window_px + 1)
    return (rows if rows % 2 else rows - 1, cols if cols % 2 else cols - 1)


def _centre_range(ctx: DemoContext, depth_m: list[float], lateral_m: list[float]
                  ) -> tuple[int, int]:
    """Window-centre region: the paper's ROI, or the whole image (the cache keeps what fits)."""
    if ctx.profile.cnn_window_centres == "roi":
        return _roi_px(depth_m, lateral_m, ctx.profile.window_px)
    return len(depth_m), len(lateral_m)


#: Store arrays of the demo's CNN maps: the held-out and inclusion maps of the main and tuned
#: models (what the report shows), the inclusion maps before fine-tuning, and the maps of the
#: model trained without one concentration. Each model writes its own array, so no model's
#: maps replace another's.
CNN_MAP_PATHS = {"main": "maps/cnn_kpa", "tuned": "maps/cnn_tuned_kpa",
                 "untuned": "maps/cnn_untuned_kpa", "unseen": "maps/cnn_unseen_kpa"}


def _maps(ctx: DemoContext, model_path: Path, indices: list[int], label: str,
          role: str) -> np.ndarray:
    path = CNN_MAP_PATHS[role]
    with _progress(ctx, f"CNN maps ({label})") as progress:
        run_predict(ctx.store_path, model_path=model_path, indices=indices, tof_path=None,
                    on_progress=progress, map_path=path)
    return SessionStore.open(ctx.store_path).read_array(path)[indices]


def _push_mean_score(model: Any, data: Any, val: np.ndarray) -> dict[str, Any]:
    """How a candidate model is chosen: [SWEI]'s push-mean protocol on the validation inclusion
    position (full maps of its push sequences, averaged), scored by the worse of the two
    regions' relative MAE (inclusion and background MAE, each over the region's true modulus).

    Minimax, so neither region is sacrificed: a fine-tuning that buys inclusion contrast by
    shifting the whole background (a bias window-level validation, dominated by per-window
    noise, hardly sees) loses by it, and so does one that leaves the inclusion underestimated
    for a clean background (what the map MAE, dominated by the background's area, chose on the
    default demo: inclusion 16.7 kPa against ToF's 11.3). Relative, because a kPa means more in
    the soft background (37.5 kPa) than in the inclusion (97 kPa). With the same candidates the
    mean of the two MAE in kPa (the score before) chose a background error of 3.2 kPa on study
    seed 0."""
    regions = push_mean_regions(predict_sequences(model, data, val), data, val)
    inc, bg = regions["inclusion"], regions["background"]
    score = (max(inc["mae_kpa"] / inc["true_mean_kpa"], bg["mae_kpa"] / bg["true_mean_kpa"])
             if inc is not None and bg is not None else None)
    return {"push_mean_score": score, "push_mean_dice": regions["dice"],
            "push_mean_inclusion_mae_kpa": inc and inc["mae_kpa"],
            "push_mean_background_mae_kpa": bg and bg["mae_kpa"],
            "push_mean_true_kpa": {"inclusion": inc and inc["true_mean_kpa"],
                                   "background": bg and bg["true_mean_kpa"]}}


def _finetune_by_validation(ctx: DemoContext, model_path: Path, data: Any, split: dict[str, Any],
                            roi: tuple[int, int]) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune at each of the profile's learning rates and inclusion window fractions (early
    stopping on the validation inclusion position's windows) and keep the candidate, the
    untuned model included, with the lowest push-mean score on that position
    (:func:`_push_mean_score`); fine-tuning uses the profile's ``finetune_loss``."""
    prof = ctx.profile
    base = get_profile(prof.cnn_profile)
    val = np.asarray(split["inclusion_tune_val"], dtype=np.intp)
    model, card = load_model(model_path)
    tried: list[dict[str, Any]] = []
    best_mae = evaluate_windows(model, data, val, profile=base, seed=prof.seed,
                                roi_px=roi)[1] if val.size else float("inf")
    score = _push_mean_score(model, data, val) if val.size else {}
    tried.append({"learning_rate": 0.0, "inclusion_window_fraction": None,
                  "val_mae_kpa": best_mae if val.size else None, "epochs": 0, **score})
    best_score = score.get("push_mean_score")
    best_score = float("inf") if best_score is None else best_score
    best: tuple[Any, dict[str, Any]] = (model, tried[0])
    tune = split["inclusion_tune"] + (split["inclusion_train"]
                                      if prof.finetune_with_training_inclusions else [])
    for lr, fraction in itertools.product(prof.finetune_learning_rates,
                                          prof.finetune_inclusion_fractions):
        candidate, _ = load_model(model_path)
        torch.manual_seed(prof.seed)
        recipe = replace(base, learning_rate=lr, inclusion_window_fraction=fraction,
                         loss=prof.finetune_loss,
                         border_window_fraction=(base.border_window_fraction
                                                 if fraction is not None else None))
        strata = "uniform" if fraction is None else f"{fraction:g} inside"
        with _progress(ctx, f"fine-tune on inclusions (lr {lr:g}, {strata})") as progress:
            result = finetune(candidate, data, epochs=prof.finetune_epochs,
                              indices=np.asarray(tune, dtype=np.intp),
                              validation=val if val.size else None, base_profile=recipe,
                              seed=prof.seed, roi_px=roi, on_progress=progress)
        metrics = result.metrics_dict()
        val_mae = metrics["best"]["val_mae_kpa"] if metrics["best"] else None
        score = _push_mean_score(candidate, data, val) if val.size else {}
        tried.append({"learning_rate": lr, "inclusion_window_fraction": fraction,
                      "val_mae_kpa": val_mae, "epochs": len(result.history),
                      "best_epoch": result.best_epoch, **score})
        if not val.size:  # nothing to choose by: the last fine-tuning is kept
            best = (candidate, tried[-1])
        elif score["push_mean_score"] is not None and (
                score["push_mean_score"] < best_score):
            best_score, best = score["push_mean_score"], (candidate, tried[-1])
    return best[0], card, {"tried": tried, "chosen_learning_rate": best[1]["learning_rate"],
                           "chosen_inclusion_window_fraction":
                               best[1]["inclusion_window_fraction"],
                           "chosen_by": "push-mean worse-region relative MAE (max of inclusion "
                                        "and background MAE over their true modulus) on the "
                                        "validation position",
                           "loss": prof.finetune_loss,
                           "validation_sequences": val.size}


def _geometry_vs_truth(ctx: DemoContext, data: Any, indices: list[int]) -> dict[str, Any] | None:
    """Dice (67.38 kPa) of the geometry-derived targets against the simulated truth."""
    store = SessionStore.open(ctx.store_path)
    if not indices or not store.has_table("truth/swei"):
        return None
    truth = store.table("truth/swei").array("youngs_modulus_kpa")
    geo = np.stack([data.target_map_kpa(i) for i in indices])
    true = np.stack([np.asarray(truth[i]) for i in indices])
    return {"dice": dice(geo, true, threshold=DICE_THRESHOLD_KPA),
            "max_abs_kpa": float(np.abs(geo - true).max()), "sequences": len(indices)}


def stage_cnn(ctx: DemoContext) -> dict[str, Any]:
    """Train on fold 0 (plus the inclusion training blocks), fine-tune on the tune inclusion
    positions (learning rate and window strata chosen on a validation position), map the
    held-out test sequences and the other inclusion positions, compare with ToF per sequence
    and with [SWEI]'s push-mean protocol; with ``unseen_concentration`` also train without
    that concentration."""
    depth_m, lateral_m = _grid(ctx)
    prof = ctx.profile
    split = ctx.result("tof")["split"]
    roi = _centre_range(ctx, depth_m, lateral_m)
    models = ctx.out_dir / "models"
    models.mkdir(exist_ok=True)
    model_path = models / f"swei-cnn-w{prof.window_px}.safetensors"
    epochs: list[dict[str, Any]] = []
    with _progress(ctx, f"train CNN w{prof.window_px}") as progress:
        trained = run_train(ctx.store_path, window_px=prof.window_px, profile=prof.cnn_profile,
                            out_model_path=model_path, split="positions", fold=0,
                            seed=prof.seed, roi_px=roi, max_steps=prof.cnn_max_steps,
                            extra_training_indices=split["inclusion_train"], targets="geometry",
                            on_epoch=lambda m: epochs.append(_epoch_dict(m)),
                            on_progress=progress)
    data = load_swei_training_set(ctx.store_path, targets="geometry")
    held_out, inc_eval = split["test"], split["inclusion_eval"]
    cnn_held = _maps(ctx, model_path, held_out, "held out", "main")
    cnn_untuned = _maps(ctx, model_path, inc_eval, "inclusion, before fine-tuning", "untuned")

    tuned_path = models / f"swei-cnn-w{prof.window_px}-inclusion.safetensors"
    model, card, finetuning = _finetune_by_validation(ctx, model_path, data, split, roi)
    save_model(model, tuned_path, card=card)
    cnn_inc = _maps(ctx, tuned_path, inc_eval, "inclusion", "tuned")
    store = SessionStore.open(ctx.store_path)
    cnn_all = store.read_array(CNN_MAP_PATHS["main"])
    cnn_all[inc_eval] = cnn_inc  # one array with both models' maps, for the report
    store = SessionStore.open(ctx.store_path, mode="a")
    store.write_array(CNN_MAP_PATHS["main"], cnn_all, dims=("seq", "depth", "lateral"),
                      chunks=(1, *cnn_all.shape[1:]), overwrite=True, allow_nan=True,
                      attrs={"units": "kPa", "method": "swei-cnn",
                             "models": {"held_out": model_path.name,
                                        "inclusion": tuned_path.name}})
    tof = store.read_array("maps/tof_kpa")
    steps = {"depth_step_m": abs(depth_m[1] - depth_m[0]),
             "lateral_step_m": abs(lateral_m[1] - lateral_m[0])}
    comparisons: dict[str, Any] = {
        "held_out": compare_with_tof(cnn_held, tof[held_out], data, held_out),
        "inclusion": compare_with_tof(cnn_inc, tof[inc_eval], data, inc_eval),
        "inclusion_push_mean": push_mean_comparison(cnn_inc, tof[inc_eval], data, inc_eval,
                                                    **steps),
        "inclusion_push_mean_before_finetuning": push_mean_comparison(
            cnn_untuned, tof[inc_eval], data, inc_eval, **steps),
    }
    held_mae = {m: comparisons["held_out"][m]["overall"]["mae_kpa"] for m in ("cnn", "tof")}
    comparisons["held_out_ratio_tof_over_cnn"] = (held_mae["tof"] / held_mae["cnn"]
                                                  if held_mae["cnn"] else None)
    unseen = _unseen_concentration(ctx, data, split, roi, tof)
    if unseen is not None:
        comparisons["unseen_concentration"] = unseen
        comparisons.update(_seen_vs_unseen(comparisons["held_out"], unseen,
                                           prof.unseen_concentration))
    inclusion_all = np.flatnonzero(data.uses_map).tolist()
    return {"model": str(model_path.relative_to(ctx.out_dir)),
            "inclusion_model": str(tuned_path.relative_to(ctx.out_dir)), "roi_px": list(roi),
            "window_centres": prof.cnn_window_centres,
            "epochs": epochs, "train_metrics": trained["metrics"], "finetuning": finetuning,
            "geometry_targets_vs_truth": _geometry_vs_truth(ctx, data, inclusion_all),
            "held_out": held_out, "inclusion": inc_eval, "comparison": comparisons}


def _unseen_concentration(ctx: DemoContext, data: Any, split: dict[str, Any],
                          roi: tuple[int, int], tof: np.ndarray) -> dict[str, Any] | None:
    """Leave-one-concentration-out: train without ``profile.unseen_concentration`` and compare
    the CNN with ToF on that concentration's test sequences."""
    prof = ctx.profile
    if prof.unseen_concentration is None or not split["unseen_test"]:
        return None
    path = ctx.out_dir / "models" / f"swei-cnn-w{prof.window_px}-unseen.safetensors"
    t0 = time.perf_counter()
    with _progress(ctx, f"train CNN without {prof.unseen_concentration:g} %") as progress:
        trained = run_train(ctx.store_path, window_px=prof.window_px, profile=prof.cnn_profile,
                            out_model_path=path, split="concentration",
                            held_out_percent=prof.unseen_concentration, seed=prof.seed,
                            roi_px=roi, max_steps=prof.cnn_max_steps, targets="geometry",
                            on_progress=progress)
    training = {"seconds": time.perf_counter() - t0, "epochs": trained["metrics"]["epochs"],
                "best_epoch": trained["metrics"]["best_epoch"],
                "train_sequences": trained["card"]["split"]["train"]}
    test = split["unseen_test"]
    maps = _maps(ctx, path, test, "unseen concentration", "unseen")
    return {**compare_with_tof(maps, tof[test], data, test), "training": training,
            "held_out_percent": prof.unseen_concentration}


def _seen_vs_unseen(held_out: dict[str, Any], unseen: dict[str, Any],
                    percent: float | None) -> dict[str, Any]:
    """The unseen-concentration CNN MAE against the seen one: the fold-0 model's held-out MAE
    over all concentrations ([SWEI]'s 9.99 vs 5.01 kPa) and on the same concentration."""
    seen = held_out["cnn"]["overall"]["mae_kpa"]
    unseen_mae = unseen["cnn"]["overall"]["mae_kpa"]
    same = (held_out["cnn"]["by_concentration"].get(f"{percent:g}") or {}).get("mae_kpa")
    return {"seen_mae_kpa": seen, "unseen_over_seen_mae": unseen_mae / seen if seen else None,
            "seen_same_concentration_mae_kpa": same,
            "unseen_over_seen_same_concentration_mae": unseen_mae / same if same else None}


def _epoch_dict(metrics: Any) -> dict[str, Any]:
    if hasattr(metrics, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(metrics)
    return dict(metrics)


# -- 6. strain -----------------------------------------------------------------------------------
def stage_strain(ctx: DemoContext) -> dict[str, Any]:
    """Train the flow CNN, strain images of the session's compression pairs with both coarse
    estimators, and the failure-rate study at PSNR 12.7 dB."""
    prof = ctx.profile
    trained = train_default_flow_cnn(n_pairs=prof.flow_training_pairs, epochs=prof.flow_epochs,
                                     seed=prof.seed, validate=False)
    flow_path = ctx.out_dir / "models" / "gluenet-flow.safetensors"
    flow_path.parent.mkdir(exist_ok=True)
    save_flow_cnn(trained.model, flow_path, card={"pairs": prof.flow_training_pairs,
                                                  "epochs": prof.flow_epochs})
    results = {}
    for coarse in ("dp", "cnn"):
        with _progress(ctx, f"strain {coarse}+GLUE") as progress:
            results[coarse] = run_strain(ctx.store_path, coarse=coarse,
                                         model_path=flow_path if coarse == "cnn" else None,
                                         progress=progress)
    depth, lines = prof.study_shape
    study = failure_rate_study(model=trained.model, repeats=1, n_lines=lines,
                               depth_mm=depth * 1540 / (2 * 40e6) * 1e3,
                               strains=np.linspace(0.005, 0.07, prof.study_pairs).tolist(),
                               seed=prof.seed)
    return {"store": results, "study": {"summary": study.summary, "rows": study.rows,
                                        "settings": study.settings},
            "flow_model": str(flow_path.relative_to(ctx.out_dir)),
            "flow_training_profile": dict(trained.profile)}


# -- 7. report -----------------------------------------------------------------------------------
def stage_report(ctx: DemoContext) -> dict[str, Any]:
    path = build_report(ctx)
    return {"report": str(Path(path).relative_to(ctx.out_dir))}
