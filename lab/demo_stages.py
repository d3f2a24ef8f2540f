"""The stages of ``elastolab demo`` (see :mod:`lab.demo`). Each returns a JSON-able result."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from lab.demo import (
    PAPER_MEAN_FILTER_MM,
    PAPER_ROI_MM,
    PAPER_TOF_DISTANCE_MM,
    DemoContext,
    DemoError,
    demo_config,
)

log = logging.getLogger(__name__)


def _progress(ctx: DemoContext, description: str) -> AbstractContextManager[Any]:
    from lab.progress import progress_callback

    return progress_callback(description) if ctx.show_progress else nullcontext(None)


def _odd(n: float, minimum: int = 1) -> int:
    k = max(minimum, round(n))
    return k if k % 2 else k + 1


def _grid(ctx: DemoContext) -> tuple[list[float], list[float]]:
    from lab.store import SessionStore

    attrs = SessionStore.open(ctx.store_path).table("swei").group.attrs
    return list(attrs["depth_m"]), list(attrs["lateral_m"])


# -- 1. acquisition ------------------------------------------------------------------------------
def stage_session(ctx: DemoContext) -> dict[str, Any]:
    """Run (or resume) the simulated session; the store must verify clean afterwards."""
    from lab.session import resume_session, run_session
    from lab.verify import verify_store

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
    from analysis.runners import run_labels

    labels = run_labels(ctx.store_path, plot_path=ctx.figures / "stress_strain.png")
    return {"labels": labels}


# -- 3. displacement -----------------------------------------------------------------------------
def stage_displacement(ctx: DemoContext) -> dict[str, Any]:
    from analysis.runners import run_displacement

    with _progress(ctx, "Loupas displacement") as progress:
        n = run_displacement(ctx.store_path, method="loupas", progress=progress)
    return {"sequences": n}


# -- 4. time of flight ---------------------------------------------------------------------------
def tof_options(lateral_m: list[float]) -> dict[str, Any]:
    """ToF settings with the paper's physical distances on this store's lateral grid."""
    step_mm = abs(lateral_m[1] - lateral_m[0]) * 1e3
    return {"distance_px": _odd(PAPER_TOF_DISTANCE_MM / step_mm + 1, 5),
            "mean_filter_px": _odd(PAPER_MEAN_FILTER_MM / step_mm, 3)}


def stage_tof(ctx: DemoContext) -> dict[str, Any]:
    from analysis.runners import run_tof

    _, lateral_m = _grid(ctx)
    options = tof_options(lateral_m)
    with _progress(ctx, "time of flight") as progress:
        alpha = run_tof(ctx.store_path, alpha=None, progress=progress, **options)
    return {"alpha": alpha, **options}


# -- 5. CNN --------------------------------------------------------------------------------------
def _roi_px(depth_m: list[float], lateral_m: list[float], window_px: int) -> tuple[int, int]:
    """The paper's 10 x 12 mm ROI on this grid, shrunk to fit a window's margin."""
    dz = abs(depth_m[1] - depth_m[0]) * 1e3
    dx = abs(lateral_m[1] - lateral_m[0]) * 1e3
    rows = min(_odd(PAPER_ROI_MM[0] / dz), len(depth_m) - window_px + 1)
    cols = min(_odd(PAPER_ROI_MM[1] / dx), len(lateral_m) - window_px + 1)
    return (rows if rows % 2 else rows - 1, cols if cols % 2 else cols - 1)


def stage_cnn(ctx: DemoContext) -> dict[str, Any]:
    from analysis.swei_cnn import run_predict, run_train
    from analysis.swei_cnn.data import load_swei_training_set, position_fold_split

    depth_m, lateral_m = _grid(ctx)
    prof = ctx.profile
    roi = _roi_px(depth_m, lateral_m, prof.window_px)
    model_path = ctx.out_dir / "models" / f"swei-cnn-w{prof.window_px}.safetensors"
    model_path.parent.mkdir(exist_ok=True)
    epochs: list[dict[str, Any]] = []
    with _progress(ctx, f"train CNN w{prof.window_px}") as progress:
        trained = run_train(ctx.store_path, window_px=prof.window_px, profile=prof.cnn_profile,
                            out_model_path=model_path, split="positions", fold=0,
                            seed=prof.seed, roi_px=roi, max_steps=prof.cnn_max_steps,
                            on_epoch=lambda m: epochs.append(_epoch_dict(m)),
                            on_progress=progress)
    data = load_swei_training_set(ctx.store_path)
    split = position_fold_split(data, fold=0, seed=prof.seed)
    inclusion = [int(i) for i in np.flatnonzero(data.uses_map)]
    held_out = sorted(int(i) for i in split.test)
    with _progress(ctx, "CNN maps") as progress:
        predicted = run_predict(ctx.store_path, model_path=model_path,
                                indices=held_out + inclusion, on_progress=progress)
    from analysis.swei_cnn.evaluate import compare_with_tof
    from lab.store import SessionStore

    store = SessionStore.open(ctx.store_path)
    cnn = store.read_array("maps/cnn_kpa")
    tof = store.read_array("maps/tof_kpa")
    comparisons = {
        "held_out": compare_with_tof(cnn[held_out], tof[held_out], data, held_out),
        "inclusion": compare_with_tof(cnn[inclusion], tof[inclusion], data, inclusion),
    }
    return {"model": str(model_path.relative_to(ctx.out_dir)), "roi_px": list(roi),
            "epochs": epochs, "train_metrics": trained["metrics"],
            "held_out": held_out, "inclusion": inclusion,
            "cnn_metrics": predicted["metrics"], "comparison": comparisons}


def _epoch_dict(metrics: Any) -> dict[str, Any]:
    if hasattr(metrics, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(metrics)
    return dict(metrics)


# -- 6. strain -----------------------------------------------------------------------------------
def stage_strain(ctx: DemoContext) -> dict[str, Any]:
    from analysis.strain.flownet import save_flow_cnn
    from analysis.strain.pipeline import run_strain
    from analysis.strain.study import failure_rate_study
    from analysis.strain.train import simulate_training_pairs, train_flow_cnn

    prof = ctx.profile
    rng = np.random.default_rng(prof.seed)
    pairs = simulate_training_pairs(prof.flow_training_pairs, rng=rng)
    trained = train_flow_cnn(pairs, epochs=prof.flow_epochs, batch=8, lr=1e-3, seed=prof.seed)
    flow_path = ctx.out_dir / "models" / "gluenet-flow.safetensors"
    flow_path.parent.mkdir(exist_ok=True)
    save_flow_cnn(trained.model, flow_path, card={"pairs": prof.flow_training_pairs,
                                                  "epochs": prof.flow_epochs})
    png_dir = ctx.figures / "strain"
    results = {}
    for coarse in ("dp", "cnn"):
        results[coarse] = run_strain(ctx.store_path, coarse=coarse,
                                     model_path=flow_path if coarse == "cnn" else None,
                                     out_png_dir=png_dir)
    depth, lines = prof.study_shape
    study = failure_rate_study(model=trained.model, repeats=1, n_lines=lines,
                               depth_mm=depth * 1540 / (2 * 40e6) * 1e3,
                               strains=np.linspace(0.005, 0.07, prof.study_pairs).tolist(),
                               seed=prof.seed)
    return {"store": results, "study": {"summary": study.summary, "rows": study.rows,
                                        "settings": study.settings},
            "flow_model": str(flow_path.relative_to(ctx.out_dir))}


# -- 7. report -----------------------------------------------------------------------------------
def stage_report(ctx: DemoContext) -> dict[str, Any]:
    from lab.demo_report import build_report

    path = build_report(ctx)
    return {"report": str(Path(path).relative_to(ctx.out_dir))}
