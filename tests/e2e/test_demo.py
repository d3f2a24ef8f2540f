"""The reduced demo: every stage runs, every figure and headline metric exists, the values match
the simulated truth, a second run resumes instead of redoing or mixing, and a foreign directory
is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.demo import STAGE_NAMES, run_demo
from lab.demo_context import DemoError
from lab.gelatin import DICE_THRESHOLD_KPA, youngs_modulus_kpa
from lab.store import SessionStore
from lab.verify import verify_store

# Whole demo runs: minutes on a quiet machine, about ten times that with 12 busy processes
# (`../shared/tools/under-load`); the suite-wide timeout (pyproject) is for everything else.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    run_demo(out, profile="smoke", show_progress=False)
    return out


def _finite_numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    return []


@pytest.mark.slow
def test_every_stage_ran_and_report_is_complete(demo_dir: Path) -> None:
    state = json.loads((demo_dir / "demo-state.json").read_text())
    assert list(state["stages"]) == list(STAGE_NAMES)
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert metrics["all_finite"] is True
    assert set(metrics["timings_s"]) >= set(STAGE_NAMES) - {"report"}
    assert len(metrics["labels"]) == 2
    for lab in metrics["labels"]:
        assert math.isfinite(lab["youngs_modulus_kpa"])
    held = metrics["cnn_vs_tof"]["held_out"]
    for method in ("cnn", "tof"):
        assert math.isfinite(held[method]["overall"]["mae_kpa"])
    assert set(metrics["strain_study"]) == {"dp", "cnn"}
    # the paper's inclusion protocol next to the per-sequence one, and a verdict per comparison
    push_mean = metrics["cnn_vs_tof"]["inclusion_push_mean"]
    for method in ("cnn", "tof"):
        assert 0.0 <= push_mean[method]["dice"] <= 1.0
        assert math.isfinite(push_mean[method]["background"]["mae_kpa"])
    assert push_mean["positions"] == 1 and push_mean["sequences_per_position"] == [3]
    verdicts = metrics["cnn_vs_tof"]["verdicts"]
    assert {"homogeneous", "inclusion_dice", "inclusion_mae", "background_mae"} <= set(verdicts)
    assert all("reproduced" in v or "not measured" in v for v in verdicts.values())
    # inclusion targets from geometry + probe pose + labels agree with the simulated truth
    cnn = state["stages"]["cnn"]["result"]
    assert cnn["geometry_targets_vs_truth"]["dice"] >= 0.98
    assert cnn["geometry_targets_vs_truth"]["sequences"] == 4 * 3  # 1 training + 3 eval block
    # fine-tuning chosen on the validation position by the push-mean protocol, untuned included
    tried = cnn["finetuning"]["tried"]
    assert [(t["learning_rate"], t["inclusion_window_fraction"]) for t in tried] == [
        (0.0, None), (1e-3, 0.5), (1e-3, None)]
    assert cnn["finetuning"]["validation_sequences"] == 3
    assert cnn["finetuning"]["loss"] == "l1"
    for t in tried:  # the score: the worse of the two regions' relative MAE
        true = t["push_mean_true_kpa"]
        assert true["inclusion"] > DICE_THRESHOLD_KPA > true["background"]
        score = max(t["push_mean_inclusion_mae_kpa"] / true["inclusion"],
                    t["push_mean_background_mae_kpa"] / true["background"])
        assert t["push_mean_score"] == pytest.approx(score)
    best = min(tried, key=lambda t: t["push_mean_score"])
    assert cnn["finetuning"]["chosen_learning_rate"] == best["learning_rate"]
    assert cnn["finetuning"]["chosen_inclusion_window_fraction"] == (
        best["inclusion_window_fraction"])

    html = (demo_dir / "report.html").read_text()
    figures = sorted(p.relative_to(demo_dir).as_posix() for p in demo_dir.rglob("*.png"))
    for name in ("figures/stress_strain.png", "figures/bmode.png", "figures/displacement.png",
                 "figures/modulus-0.png"):
        assert name in figures and name in html
    assert "figures/strain-0.png" in figures and "figures/strain-0.png" in html
    assert "src='figures/" not in html and html.count("src='data:image/png;base64,") >= 8
    assert set(metrics["verdicts"]) == {"labels", "swei", "strain"}
    assert "Smoke profile" in html  # the caveat: these numbers are not evidence
    chosen = ("kept the model before fine-tuning" if best["learning_rate"] == 0.0
              else f"learning rate {best['learning_rate']:g}, ")
    assert chosen in html  # the report names the fine-tuning the validation position chose
    assert best["learning_rate"] == 0.0 or "absolute-error loss" in html
    assert verify_store(demo_dir / "session.zarr").clean


@pytest.mark.slow
def test_headline_values_match_the_simulated_truth(demo_dir: Path) -> None:
    """Values, not only finiteness: each stage recovers what the simulated world put in.

    Figures measured on the smoke profile are in the comments; bounds are about 1.5x the error.
    """
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    truths = []
    for lab in metrics["labels"]:  # indentation: within 0.02 % of the gelatin calibration
        truth = youngs_modulus_kpa(lab["gelatin_percent"])
        truths.append(truth)
        assert lab["youngs_modulus_kpa"] == pytest.approx(truth, rel=1e-3)
        assert lab["strain_range"][0] == 0.02 and 0.06 < lab["strain_range"][1] <= 0.07
    assert sorted(truths) == [37.55, 97.21]
    # calibrated on those labels: 0.68 with the 2.5-D shear wave on the smoke grid (its faster
    # decay lowers the displacement SNR and ToF over-reads the speed); 1.03 with a line source
    assert 0.55 < metrics["tof_alpha"] < 1.3
    # Held-out maps. The smoke CNN has had 4 steps: it predicts about the mean of its targets,
    # so its MAE (30.1 kPa) is that of the mean predictor (29.8 kPa), not more; ToF 57.3 kPa.
    held = metrics["cnn_vs_tof"]["held_out"]
    mean_predictor_kpa = (max(truths) - min(truths)) / 2
    assert held["cnn"]["overall"]["mae_kpa"] < 1.2 * mean_predictor_kpa
    assert held["tof"]["overall"]["mae_kpa"] < 80.0
    assert held["cnn"]["failed_fraction"] == 0.0 and held["tof"]["failed_fraction"] == 0.0
    # Strain of the session's compression pairs against the stored truth: mean strain within
    # 6 % (measured 1.8-4.1 %), median |error| below 0.0018 (measured 0.00084-0.0012).
    store = SessionStore.open(demo_dir / "session.zarr")
    truth_strain = store.table("truth/compression").read("axial_strain")
    for coarse in ("dp", "cnn"):
        strain = store.read_array(f"strain/{coarse}/axial_strain")
        assert strain.shape[0] == len(truth_strain) - 1 == 2
        for k, image in enumerate(strain):
            finite = np.isfinite(image)
            step = (truth_strain[k + 1] - truth_strain[k])[finite]
            assert finite.mean() > 0.5
            assert np.mean(image[finite]) == pytest.approx(np.mean(step), rel=0.06)
            assert np.median(np.abs(image[finite] - step)) < 0.0018
        for pair in metrics["strain_session"][coarse]["metrics"]:
            assert pair["mssim"] > 0.2  # measured 0.31-0.34
    study = metrics["strain_study"]
    assert {m: s["n_images"] for m, s in study.items()} == {"dp": 3, "cnn": 3}
    assert all(s["mssim"] > 0.2 for s in study.values())  # measured 0.32 and 0.34


@pytest.mark.slow
def test_every_models_maps_stay_in_the_store(demo_dir: Path) -> None:
    """The maps the report shows (held out: main model; inclusion: tuned model) and those of the
    other models are each in the store, none replaced by a later model's (the unseen-
    concentration model once overwrote maps/cnn_kpa, leaving the report's CNN panels empty)."""
    state = json.loads((demo_dir / "demo-state.json").read_text())
    split = state["stages"]["tof"]["result"]["split"]
    cnn = state["stages"]["cnn"]["result"]
    store = SessionStore.open(demo_dir / "session.zarr")
    shown = store.read_array("maps/cnn_kpa")
    predicted = {"maps/cnn_kpa": cnn["held_out"] + cnn["inclusion"],
                 "maps/cnn_tuned_kpa": cnn["inclusion"],
                 "maps/cnn_untuned_kpa": cnn["inclusion"],
                 "maps/cnn_unseen_kpa": split["unseen_test"]}
    if not split["unseen_test"]:  # the smoke profile has no leave-one-concentration-out model
        assert "maps/cnn_unseen_kpa" not in store.root
        del predicted["maps/cnn_unseen_kpa"]
    for path, indices in predicted.items():
        maps = store.read_array(path)
        assert indices and all(np.isfinite(maps[i]).mean() > 0.5 for i in indices), path
        others = sorted(set(range(len(maps))) - set(indices))
        assert not np.isfinite(maps[others]).any(), path
    np.testing.assert_array_equal(shown[cnn["inclusion"]],
                                  store.read_array("maps/cnn_tuned_kpa")[cnn["inclusion"]])


@pytest.mark.slow
def test_second_run_resumes_without_redoing(demo_dir: Path) -> None:
    before = (demo_dir / "demo-state.json").read_text()
    store_mtime = (demo_dir / "session.zarr" / "zarr.json").stat().st_mtime_ns
    run_demo(demo_dir, profile="smoke", show_progress=False)
    assert (demo_dir / "demo-state.json").read_text() == before
    assert (demo_dir / "session.zarr" / "zarr.json").stat().st_mtime_ns == store_mtime


@pytest.mark.slow
def test_other_profile_into_same_dir_is_refused(demo_dir: Path) -> None:
    with pytest.raises(DemoError, match="profile 'smoke'"):
        run_demo(demo_dir, profile="default", show_progress=False)
    result = CliRunner().invoke(app, ["demo", "--out", str(demo_dir), "--profile", "default",
                                      "--no-progress"])
    assert result.exit_code == 2 and "results are never mixed" in result.output


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="not a demo output directory"):
        run_demo(tmp_path, profile="smoke", show_progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


# -- the CLI on the demo's store -------------------------------------------------------------------
@pytest.mark.slow
def test_cli_analysis_commands_on_demo_store(demo_dir: Path, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "copy.zarr"
    shutil.copytree(demo_dir / "session.zarr", store)
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, f"{args}: {result.output}"
        return result.output

    assert "swei/iq" in ok("info", str(store))
    assert "7.5" in ok("analyze", "labels", str(store), "--plot", str(tmp_path / "ss.png"))
    assert (tmp_path / "ss.png").stat().st_size > 1000
    assert "0 sequences computed" in ok("analyze", "displacement", str(store))  # all done: resume
    assert "alpha = 0.750" in ok("analyze", "tof", str(store), "--alpha", "0.75")
    model = demo_dir / "models" / "swei-cnn-w9.safetensors"
    ok("predict", str(store), "--model", str(model), "--png", str(tmp_path / "maps"))
    assert list((tmp_path / "maps").glob("map-*.png"))
    before = SessionStore.open(store).read_array("maps/cnn_kpa")
    ok("predict", str(store), "--model", str(model), "--map-name", "cnn_again")
    again = SessionStore.open(store)
    np.testing.assert_array_equal(again.read_array("maps/cnn_again_kpa"), before)
    np.testing.assert_array_equal(again.read_array("maps/cnn_kpa"), before)  # kept
    out = ok("strain", str(store), "--coarse", "dp", "--png", str(tmp_path / "strain"))
    assert "failure rate" in out and list((tmp_path / "strain").glob("*.png"))


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_window = runner.invoke(app, ["train", str(tmp_path), "--window", "12"])
    assert bad_window.exit_code == 2 and "is not one of '65', '33'" in bad_window.output
    no_model = runner.invoke(app, ["strain", str(tmp_path), "--coarse", "cnn"])
    assert no_model.exit_code == 2 and "needs --model" in no_model.output
    missing = runner.invoke(app, ["analyze", "labels", str(tmp_path / "none.zarr")])
    assert missing.exit_code == 2 and "not a Zarr v3 store" in missing.output
    for name in ("../swei/iq", "tof", "Cnn", ""):
        bad_name = runner.invoke(app, ["predict", str(tmp_path), "--model", "m.safetensors",
                                       "--map-name", name])
        assert bad_name.exit_code == 2 and "must be maps/NAME_kpa" in bad_name.output, name
    even = runner.invoke(app, ["analyze", "displacement", str(tmp_path), "--axial-kernel", "4"])
    assert even.exit_code == 2 and "axial_kernel must be an odd number" in even.output
    bad_sim = runner.invoke(app, ["sim", "serve", "robot"])
    assert bad_sim.exit_code == 2 and "'robot' is not one of 'hexapod'" in bad_sim.output


def test_train_flow_refuses_to_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "flow.safetensors"
    existing.write_bytes(b"precious")
    result = CliRunner().invoke(app, ["train-flow", "--out", str(existing)])
    assert result.exit_code == 2 and "refusing to overwrite" in result.output
    assert existing.read_bytes() == b"precious"
