"""The stages of ``elastolab demo`` (see :mod:`lab.demo`). Each returns a JSON-able result."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from analysis.runners import run_displacement, run_labels, run_tof
from analysis.strain.flownet import save_flow_cnn
from analysis.strain.runners import run_strain
from analysis.strain.synthetic import failure_rate_study, train_default_flow_cnn
from analysis.swei_cnn.data import position_fold_split
from analysis.swei_cnn.evaluate import compare_with_tof
from analysis.swei_cnn.io import load_model, save_model
from analysis.swei_cnn.runners import load_swei_training_set, run_predict, run_train
from analysis.swei_cnn.train import finetune
from lab.demo_context import (
    PAPER_MEAN_FILTER_MM,
    PAPER_ROI_MM,
    PAPER_TOF_DISTANCE_MM,
    DemoContext,
    DemoError,
    demo_config,
)
from lab.demo_report import build_report
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
    step_mm = abs(lateral_m[1] - lateral_m[0]) * 1e3
    return {"distance_px": _odd(PAPER_TOF_DISTANCE_MM / step_mm + 1, 5),
            "mean_filter_px": _odd(PAPER_MEAN_FILTER_MM / step_mm, 3)}


def demo_split(ctx: DemoContext) -> dict[str, list[int]]:
    """Fold 0 of the 4-fold position split; inclusion positions split into tune (3/4) and
    evaluate (1/4, at least one)."""
    data = load_swei_training_set(ctx.store_path)
    split = position_fold_split(data, fold=0, seed=ctx.profile.seed)
    inclusion = np.flatnonzero(data.uses_map)
    positions = sorted(set(data.position_index[inclusion].tolist()))
    n_eval = max(1, len(positions) // 4)  # 8 positions: fine-tune on 6, evaluate on 2
    tune_positions = set(positions[: len(positions) - n_eval])
    return {
        "train": sorted(map(int, split.train)), "validation": sorted(map(int, split.validation)),
        "test": sorted(map(int, split.test)),
        "inclusion_tune": [int(i) for i in inclusion
                           if data.position_index[i] in tune_positions],
        "inclusion_eval": [int(i) for i in inclusion
                           if data.position_index[i] not in tune_positions],
        "keys": list(data.keys),
    }


def stage_tof(ctx: DemoContext) -> dict[str, Any]:
    """ToF on the validation, test and inclusion sequences; alpha from validation only."""
    _, lateral_m = _grid(ctx)
    options = tof_options(lateral_m)
    split = demo_split(ctx)
    keys = split["keys"]
    wanted = split["validation"] + split["test"] + split["inclusion_eval"]
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


def stage_cnn(ctx: DemoContext) -> dict[str, Any]:
    """Train on fold 0, fine-tune on half the inclusion positions ([SWEI]: 10 epochs), map the
    held-out test sequences and the other inclusion positions, compare with ToF."""
    import torch


    depth_m, lateral_m = _grid(ctx)
    prof = ctx.profile
    split = ctx.result("tof")["split"]
    roi = _roi_px(depth_m, lateral_m, prof.window_px)
    models = ctx.out_dir / "models"
    models.mkdir(exist_ok=True)
    model_path = models / f"swei-cnn-w{prof.window_px}.safetensors"
    epochs: list[dict[str, Any]] = []
    with _progress(ctx, f"train CNN w{prof.window_px}") as progress:
        trained = run_train(ctx.store_path, window_px=prof.window_px, profile=prof.cnn_profile,
                            out_model_path=model_path, split="positions", fold=0,
                            seed=prof.seed, roi_px=roi, max_steps=prof.cnn_max_steps,
                            on_epoch=lambda m: epochs.append(_epoch_dict(m)),
                            on_progress=progress)
    data = load_swei_training_set(ctx.store_path)
    held_out, inc_eval = split["test"], split["inclusion_eval"]
    with _progress(ctx, "CNN maps (held out)") as progress:
        run_predict(ctx.store_path, model_path=model_path, indices=held_out, tof_path=None,
                    on_progress=progress)
    store = SessionStore.open(ctx.store_path)
    cnn_held = store.read_array("maps/cnn_kpa")[held_out]

    tuned_path = models / f"swei-cnn-w{prof.window_px}-inclusion.safetensors"
    model, card = load_model(model_path)
    torch.manual_seed(prof.seed)
    with _progress(ctx, "fine-tune on inclusions") as progress:
        finetune(model, data, epochs=prof.finetune_epochs,
                 indices=np.asarray(split["inclusion_tune"]), base_profile=prof.cnn_profile,
                 seed=prof.seed, roi_px=roi, on_progress=progress)
    save_model(model, tuned_path, card=card)
    with _progress(ctx, "CNN maps (inclusion)") as progress:
        run_predict(ctx.store_path, model_path=tuned_path, indices=inc_eval, tof_path=None,
                    on_progress=progress)
    store = SessionStore.open(ctx.store_path)
    cnn_inc = store.read_array("maps/cnn_kpa")[inc_eval]
    cnn_all = store.read_array("maps/cnn_kpa")
    cnn_all[held_out] = cnn_held  # one array with both models' maps
    store = SessionStore.open(ctx.store_path, mode="a")
    store.write_array("maps/cnn_kpa", cnn_all, dims=("seq", "depth", "lateral"),
                      chunks=(1, *cnn_all.shape[1:]), overwrite=True, allow_nan=True,
                      attrs={"units": "kPa", "method": "swei-cnn",
                             "models": {"held_out": model_path.name,
                                        "inclusion": tuned_path.name}})
    tof = store.read_array("maps/tof_kpa")
    comparisons = {
        "held_out": compare_with_tof(cnn_held, tof[held_out], data, held_out),
        "inclusion": compare_with_tof(cnn_inc, tof[inc_eval], data, inc_eval),
    }
    return {"model": str(model_path.relative_to(ctx.out_dir)),
            "inclusion_model": str(tuned_path.relative_to(ctx.out_dir)), "roi_px": list(roi),
            "epochs": epochs, "train_metrics": trained["metrics"],
            "held_out": held_out, "inclusion": inc_eval, "comparison": comparisons}


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
