"""The demo's report: figures from the store, tables from the stage results, metrics.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.swei_cnn.evaluate import paper_verdicts
from lab.demo_context import DemoContext
from lab.figures import (
    bmode,
    displacement_frames,
    error_panels,
    image_panels,
    learning_curves,
    predicted_vs_true,
    space_time,
)
from lab.gelatin import DICE_THRESHOLD_KPA, youngs_modulus_kpa
from lab.report import ReportSection, ReportTable, write_report
from lab.report_verdicts import PROFILE_CAVEATS, section_verdict
from lab.store import SessionStore
from lab.store_figures import strain_figures


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _mae(entry: dict[str, Any] | None) -> float:
    return _num(entry["mae_kpa"]) if entry else math.nan


def _rel(ctx: DemoContext, path: Path) -> str:
    return str(path.relative_to(ctx.out_dir))


def _labels_section(ctx: DemoContext) -> tuple[ReportSection, dict[str, Any]]:
    labels = ctx.result("labels")["labels"]
    rows = []
    for lab in labels:
        truth = youngs_modulus_kpa(lab["gelatin_percent"])
        lo, hi = lab["ci95_kpa"]
        s0, s1 = lab["strain_range"]
        # With one cylinder the "interval" would be a regression CI over correlated samples of
        # one run, not a between-run spread: say n/a instead.
        interval = f"{lo:.2f} - {hi:.2f}" if len(lab["runs_used"]) >= 2 else "n/a (one run)"
        rows.append([f"{lab['gelatin_percent']:g} %", lab["youngs_modulus_kpa"], truth,
                     interval, len(lab["runs_used"]), len(lab["runs_rejected"]),
                     f"{100 * s0:.1f} - {100 * s1:.1f} %"])
    section = ReportSection(
        "1. Indentation labels",
        "Unconfined compression of cylinders (r = 10 mm, l0 = 40 mm) at 0.01 mm/s, force at "
        "200 Hz, stop at 7 % strain or the 2 N force limit; E by linear regression of stress on "
        "strain over 2-7 % pooled over the runs of each concentration (stiff phantoms reach the "
        "force limit first, so their fit range is shorter and reported).",
        tables=[ReportTable("Young's modulus per gelatin concentration",
                            ["gelatin", "E (kPa)", "simulated truth (kPa)",
                             "95 % interval between runs (kPa)",
                             "runs used", "runs rejected", "strain range"], rows)],
        figures=[("figures/stress_strain.png", "Stress-strain curves of all runs with the fits")],
    )
    errors = [abs(lab["youngs_modulus_kpa"] - youngs_modulus_kpa(lab["gelatin_percent"]))
              / youngs_modulus_kpa(lab["gelatin_percent"]) for lab in labels]
    return section, {"labels": labels,
                     "labels_max_relative_error": max(errors) if errors else math.nan}


def _swei_figures(ctx: DemoContext, store: SessionStore) -> list[tuple[str, str]]:
    swei = store.table("swei")
    attrs = swei.group.attrs
    depth_m, lateral_m = list(attrs["depth_m"]), list(attrs["lateral_m"])
    cnn = ctx.result("cnn")
    seq = cnn["inclusion"][len(cnn["inclusion"]) // 2] if cnn["inclusion"] else 0
    key = swei.keys()[seq]
    iq = store.table("swei").read("iq", key)[0]
    figs = [(_rel(ctx, bmode(iq[0], ctx.figures / "bmode.png", depth_m=depth_m,
                             lateral_m=lateral_m, title=f"B-mode {key}")),
             f"B-mode of {key} (pre-push reference frame)")]
    disp = store.table("displacement").read("displacement_m", key)[0]
    n = disp.shape[0]
    frames = sorted({max(0, n // 8), n // 3, n // 2, (3 * n) // 4})
    path = displacement_frames(disp, ctx.figures / "displacement.png", depth_m=depth_m,
                               lateral_m=lateral_m, frames=frames,
                               frame_rate_hz=float(attrs["PRF"]),
                               initial_time_s=float(attrs["initial_time"]))
    figs.append((_rel(ctx, path), f"Loupas axial displacement of {key}: the shear wave leaves "
                                  "the push and is disturbed by the stiff inclusion"))
    path = space_time(disp, ctx.figures / "space_time.png", lateral_m=lateral_m,
                      frame_rate_hz=float(attrs["PRF"]),
                      initial_time_s=float(attrs["initial_time"]),
                      title=f"depth-averaged displacement, {key}")
    figs.append((_rel(ctx, path), f"Space-time plot of {key}: displacement averaged over depth; "
                                  "the slope of the ridge is the shear-wave speed (mm/ms = m/s)"))
    truth = store.table("truth/swei") if store.has_table("truth/swei") else None
    cnn_map = store.read_array("maps/cnn_kpa")
    tof_map = store.read_array("maps/tof_kpa")
    # Show central pushes (the edge pushes 0 and 6 are never trained on, as in the paper).
    push = swei.read("push_index")
    middle = float(np.median(push))

    def central(indices: list[int], n: int) -> list[int]:
        return sorted(indices, key=lambda i: (abs(push[i] - middle), i))[:n]

    chosen = central(cnn["held_out"], 2) + central(cnn["inclusion"], 2)
    for i, s in enumerate(chosen):
        k = swei.keys()[s]
        panels = {"CNN": cnn_map[s], "ToF": tof_map[s]}
        if truth is not None:
            panels["truth"] = truth.read("youngs_modulus_kpa", k)[0]
        path = image_panels(panels, ctx.figures / f"modulus-{i}.png", depth_m=depth_m,
                            lateral_m=lateral_m, label="Young's modulus (kPa)", vmin=0,
                            vmax=140, title=k)
        figs.append((_rel(ctx, path), f"Young's modulus maps of {k}: CNN vs ToF vs truth "
                                      "(grey: no estimate)"))
        if truth is not None:
            path = error_panels({"CNN": cnn_map[s], "ToF": tof_map[s]}, panels["truth"],
                                ctx.figures / f"modulus-error-{i}.png", depth_m=depth_m,
                                lateral_m=lateral_m, title=k)
            figs.append((_rel(ctx, path), f"Per-pixel error of {k} (estimate - truth, kPa; "
                                          "red: too stiff, blue: too soft)"))
    figs += _cnn_summary_figures(ctx, store, cnn_map, tof_map)
    return figs


def _cnn_summary_figures(ctx: DemoContext, store: SessionStore, cnn_map: np.ndarray,
                         tof_map: np.ndarray) -> list[tuple[str, str]]:
    """Learning curves and predicted vs true E per concentration (held-out sequences)."""
    cnn = ctx.result("cnn")
    figs = []
    if cnn.get("epochs"):
        path = learning_curves(cnn["epochs"], ctx.figures / "learning_curves.png",
                               title=f"CNN w{ctx.profile.window_px} ({ctx.profile.cnn_profile})")
        figs.append((_rel(ctx, path), "Learning curves of the CNN (window-centre MAE per epoch; "
                                      "validation = held-out positions of the training fold)"))
    phantoms = store.root["phantoms"].attrs.get("phantoms", [])
    phantom_index = store.table("swei").read("phantom_index")
    groups: dict[str, dict[float, list[float]]] = {"CNN": {}, "ToF": {}}
    for s in cnn["held_out"]:
        pct = float(phantoms[int(phantom_index[s])]["gelatin_percent"])
        for name, maps in (("CNN", cnn_map), ("ToF", tof_map)):
            values = maps[s][np.isfinite(maps[s])]
            if values.size:
                groups[name].setdefault(pct, []).append(float(np.median(values)))
    if any(groups.values()):
        truth = {pct: youngs_modulus_kpa(pct) for g in groups.values() for pct in g}
        path = predicted_vs_true(groups, ctx.figures / "predicted_vs_true.png", truth_kpa=truth,
                                 title="held-out homogeneous sequences")
        figs.append((_rel(ctx, path), "Predicted vs true Young's modulus per concentration: "
                                      "median of each held-out sequence's map"))
    return figs


def _loco_sentence(ctx: DemoContext) -> str:
    pct = ctx.profile.unseen_concentration
    if pct is None:
        return ""
    return (f"Leave-one-concentration-out: a second model trained without {pct:g} % gelatin "
            "is scored with ToF on that concentration's held-out positions. ")


def _finetuning_sentence(finetuning: dict[str, Any] | None) -> str:
    """Which fine-tuning the validation position chose (learning rate, window strata)."""
    if not finetuning or "chosen_learning_rate" not in finetuning:
        return ""
    lr = finetuning["chosen_learning_rate"]
    if not lr:
        return "; the validation position kept the model before fine-tuning"
    fraction = finetuning.get("chosen_inclusion_window_fraction")
    strata = ("window centres uniform over the field" if fraction is None
              else f"{fraction:g} of the windows centred inside the inclusion")
    loss = {"l1": "absolute-error loss", "mse": "squared-error loss"}.get(
        finetuning.get("loss", "mse"), "")
    return (f"; chosen on a validation position by the push-mean protocol (the worse of the "
            f"inclusion's and the background's relative MAE): learning rate {lr:g}, {strata}, "
            f"{loss}")


def _cnn_section(ctx: DemoContext, store: SessionStore) -> tuple[ReportSection, dict[str, Any]]:
    cnn = ctx.result("cnn")
    tof = ctx.result("tof")
    # verdicts are presentation: made anew, so re-running the report stage updates their text
    comp = {**cnn["comparison"], "verdicts": paper_verdicts(cnn["comparison"])}
    rows = []
    for name, group in (("held-out homogeneous", "held_out"), ("inclusion phantom", "inclusion"),
                        ("inclusion, paper protocol (push mean)", "inclusion_push_mean"),
                        ("unseen concentration (left out of training)",
                         "unseen_concentration")):
        if group not in comp:
            continue
        for method in ("cnn", "tof"):
            m = comp[group][method]
            rows.append([name, method.upper(), _mae(m.get("overall")),
                         _num(m.get("pcc")), _mae(m.get("inclusion")),
                         _mae(m.get("background")), _num(m.get("dice")),
                         comp[group]["coverage"][method]])
    conc_rows = []
    for pct, entry in sorted(comp["held_out"]["cnn"]["by_concentration"].items(),
                             key=lambda kv: float(kv[0])):
        tof_entry = comp["held_out"]["tof"]["by_concentration"].get(pct)
        conc_rows.append([f"{pct} %", _mae(entry), _mae(tof_entry)])
    section = ReportSection(
        "2. Shear-wave elasticity: CNN vs time of flight",
        f"SWEI on homogeneous blocks and a 7.5 % block with a 15 % inclusion (push + "
        f"{ctx.profile.push_elements.__len__()} push locations, plane-wave frames at 7 kHz). "
        f"Loupas displacement; ToF with alpha = {tof['alpha']:.3f} calibrated on the indentation "
        f"labels (the paper's 0.75 compensates the same kind of bias); the 3D DenseNet with "
        f"{ctx.profile.window_px} x {ctx.profile.window_px} px windows trained on fold 0 of the "
        f"4-fold position split ({ctx.profile.cnn_profile} profile), maps by dense inference; "
        f"for the inclusion phantom it is fine-tuned ({ctx.profile.finetune_epochs} epochs, as "
        f"in the paper{_finetuning_sentence(cnn.get('finetuning'))}) on 3/4 of the inclusion "
        f"probe positions and evaluated on the others. "
        f"{_loco_sentence(ctx)}Metrics over pixels where both methods gave an estimate; Dice at "
        f"{DICE_THRESHOLD_KPA} kPa.",
        tables=[
            ReportTable("Modulus maps against the simulated truth",
                        ["sequences", "method", "MAE (kPa)", "PCC", "inclusion MAE",
                         "background MAE", "Dice", "coverage"], rows),
            ReportTable("Held-out MAE by concentration (kPa)", ["gelatin", "CNN", "ToF"],
                        conc_rows),
        ],
        figures=_swei_figures(ctx, store),
    )
    metrics = {"tof_alpha": tof["alpha"], "cnn_vs_tof": comp, "cnn_training": cnn["epochs"],
               "cnn_train_metrics": cnn["train_metrics"]}
    return section, metrics


def _strain_section(ctx: DemoContext) -> tuple[ReportSection, dict[str, Any]]:
    strain = ctx.result("strain")
    rows = []
    for coarse, res in strain["store"].items():
        for (key_a, key_b), m in zip(res["pairs"], res["metrics"], strict=True):
            rows.append([f"{key_a} -> {key_b.rsplit('/', 1)[-1]}", coarse.upper() + "+GLUE",
                         _num(m.get("snr")), _num(m.get("cnr")), _num(m.get("mssim"))])
    study = strain["study"]["summary"]
    study_rows = [[method.upper() + "+GLUE", _num(s.get("failure_rate")), _num(s.get("mssim")),
                   _num(s.get("snr")), _num(s.get("cnr")), s.get("n_images")]
                  for method, s in study.items()]
    figs = _strain_figures(ctx)
    section = ReportSection(
        "3. Strain imaging: DP+GLUE vs CNN+GLUE (GLUENet)",
        "Quasi-static compression of the inclusion block in steps; consecutive frames form "
        "pre/post pairs. Coarse displacement by dynamic programming (DP) or the flow CNN, refined "
        "by GLUE, axial strain by least squares. Quasi-static strain is relative. The failure-rate "
        "study uses simulated pairs at PSNR 12.7 dB over 0.5-7 % strain; a failure is a strain "
        "image whose NCC with the best image of its set is below 0.6.",
        tables=[
            ReportTable("Compression pairs of the session", ["pair", "method", "SNR", "CNR",
                                                             "MSSIM"], rows),
            ReportTable("Failure-rate study (PSNR 12.7 dB)",
                        ["method", "failure rate", "MSSIM", "SNR", "CNR", "images"], study_rows),
        ],
        figures=figs,
    )
    return section, {"strain_session": strain["store"], "strain_study": study}


def _strain_figures(ctx: DemoContext) -> list[tuple[str, str]]:
    """Each session pair's strain by both methods beside the simulated truth, in mm."""
    store = SessionStore.open(ctx.store_path)
    if not any(f"strain/{c}/axial_strain" in store.root for c in ("dp", "cnn")):
        return []
    figs = []
    for fig in strain_figures(ctx.store_path, ctx.figures, limit=4):
        beside = " beside the simulated truth" if fig.with_truth else ""
        figs.append((_rel(ctx, fig.path), f"Axial strain of {fig.pre_key} -> {fig.post_key} (%, "
                                          f"negative = compression) by both methods{beside}"))
    return figs


def build_report(ctx: DemoContext) -> Path:
    store = SessionStore.open(ctx.store_path)
    sections, metrics = [], {"profile": ctx.profile.name}
    builders = (("labels", _labels_section), ("swei", lambda c: _cnn_section(c, store)),
                ("strain", _strain_section))
    for _, build in builders:
        section, m = build(ctx)
        sections.append(section)
        metrics.update(m)
    caveat = PROFILE_CAVEATS.get(ctx.profile.name, "")
    verdicts = {}
    for (key, _), section in zip(builders, sections, strict=True):
        section.verdict = section_verdict(key, metrics)
        section.caveat = caveat
        verdicts[key] = section.verdict.outcome
    metrics["verdicts"] = verdicts
    timings = {name: float(done["seconds"]) for name, done in ctx.state.stages.items()}
    finite = _check_finite(metrics)
    metrics["all_finite"] = finite
    return write_report(
        ctx.out_dir, "elastolab demo: a simulated elasticity study",
        f"Profile {ctx.profile.name!r}. Everything below was acquired on simulated instruments "
        "(UR3, PI H-820, ATI Nano17/Nano43, Cicada) sharing one physical world on a virtual "
        "clock, stored in session.zarr (elastolab verify: clean) and analysed by elastolab.",
        sections, timings, metrics, metadata=_run_metadata(ctx, store))


def _run_metadata(ctx: DemoContext, store: SessionStore) -> dict[str, Any]:
    """Version, commit, host, dates and the main config facts of the run."""
    attrs = store.attrs
    config = store.config
    plan = store.plan or {}
    return {
        "profile": ctx.profile.name, "elastolab version": attrs.get("elastolab_version"),
        "git commit": attrs.get("git_commit"), "host": attrs.get("host"),
        "python": attrs.get("python"), "session created (UTC)": attrs.get("created_utc"),
        "session status": attrs.get("status"), "session name": config.get("name"),
        "phantoms": len(config.get("phantoms", [])),
        "protocols": ", ".join(p.get("kind", "?") for p in config.get("protocols", [])),
        "units in the plan": len(plan.get("units", [])) if isinstance(plan, dict) else "?",
        "plan hash": attrs.get("plan_hash"), "simulation seed": (config.get("lab") or {})
        .get("sim_seed"),
    }


def _check_finite(metrics: dict[str, Any]) -> bool:
    """True when the headline figures are finite numbers (NaN would mean a stage failed)."""
    comp = metrics["cnn_vs_tof"]
    values = [metrics["tof_alpha"], comp["held_out"]["cnn"]["overall"]["mae_kpa"],
              comp["held_out"]["tof"]["overall"]["mae_kpa"]]
    values += [lab["youngs_modulus_kpa"] for lab in metrics["labels"]]
    values += [s["failure_rate"] for s in metrics["strain_study"].values()]
    return bool(np.all(np.isfinite(np.asarray(values, dtype=float))))
