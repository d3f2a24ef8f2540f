"""Map metrics and the store runners."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.swei_cnn.data import SweiTrainingSet
from analysis.swei_cnn.evaluate import compare_with_tof, map_metrics, push_mean_comparison
from analysis.swei_cnn.runners import (
    MAP_PATH,
    load_swei_training_set,
    run_predict,
    run_train,
    write_synthetic_store,
)


def _maps_set() -> SweiTrainingSet:
    """Two homogeneous sequences (20, 60 kPa) and one inclusion sequence (40 kPa + 100 kPa)."""
    truth = np.full((3, 6, 8), 0.0, np.float32)
    truth[2] = 40.0
    truth[2, 2:4, 3:6] = 100.0
    return SweiTrainingSet(
        displacement=np.zeros((3, 35, 6, 8), np.float32),
        youngs_modulus_kpa=np.array([20.0, 60.0, 40.0]), push_index=np.array([1, 2, 3]),
        position_index=np.zeros(3, int), phantom_index=np.array([0, 1, 2]),
        gelatin_percent=np.array([5.0, 12.5, 7.5]), uses_map=np.array([False, False, True]),
        modulus_maps_kpa=truth)


def test_map_metrics_against_hand_values() -> None:
    data = _maps_set()
    est = np.stack([data.target_map_kpa(s) for s in range(3)]).astype(np.float64)
    est[0] += 2.0          # 2 kPa error everywhere on sequence 0
    est[1, 0, :] = np.nan  # a failed row on sequence 1
    est[2, 2:4, 3:6] = 70.0  # inclusion under-estimated by 30 kPa, still above 67.38
    m = map_metrics(est, data, [0, 1, 2])
    n_inc = 6
    n_valid = 3 * 48 - 8
    assert m["overall"]["mae_kpa"] == pytest.approx((48 * 2 + n_inc * 30) / n_valid)
    assert m["by_concentration"]["5"]["mae_kpa"] == pytest.approx(2.0)
    assert m["by_concentration"]["12.5"]["mae_kpa"] == 0.0
    assert m["by_push"]["3"]["mae_kpa"] == pytest.approx(n_inc * 30 / 48)
    assert m["inclusion"]["mae_kpa"] == pytest.approx(30.0)
    assert m["background"]["mae_kpa"] == 0.0
    assert m["dice"] == pytest.approx(1.0)
    assert m["failed_fraction"] == pytest.approx(8 / 144)
    assert 0.9 < m["pcc"] < 1.0


def test_tof_comparison_uses_common_pixels() -> None:
    data = _maps_set()
    truth = np.stack([data.target_map_kpa(s) for s in range(3)])
    tof = truth + 5.0
    tof[:, :, :2] = np.nan  # ToF fails near the push
    cmp = compare_with_tof(truth, tof, data, [0, 1, 2])
    assert cmp["cnn"]["overall"]["mae_kpa"] == 0.0
    assert cmp["tof"]["overall"]["mae_kpa"] == pytest.approx(5.0)
    assert cmp["cnn"]["overall"]["pixels"] == cmp["tof"]["overall"]["pixels"] == 3 * 6 * 6
    assert cmp["coverage"]["tof"] == pytest.approx(0.75)


def test_run_train_then_predict_writes_maps(tmp_path) -> None:
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, gelatin_percents=(5.0, 15.0), positions=8, pushes=2,
                          shape=(35, 14, 18))
    model_path = tmp_path / "m.safetensors"
    epochs = []
    out = run_train(store, window_px=5, out_model_path=model_path, max_steps=3,
                    model_overrides={"growth_rate": 4, "head_hidden": 8}, on_epoch=epochs.append)
    assert out["card"]["split"]["kind"] == "positions" and epochs
    result = run_predict(store, model_path=model_path, stride=1)
    from lab.store import SessionStore

    maps = SessionStore.open(store).read_array(MAP_PATH)
    data = load_swei_training_set(store)
    assert maps.shape == (len(data), 14, 18) and maps.dtype == np.float32
    valid = np.zeros((14, 18), bool)
    valid[2:-2, 2:-2] = True
    assert np.isfinite(maps[:, valid]).all() and np.isnan(maps[:, ~valid]).all()
    assert result["metrics"]["overall"]["pixels"] == len(data) * valid.sum()
    # a second model's maps of some sequences go to their own array; the first stay whole
    second = run_predict(store, model_path=model_path, indices=[0, 1], tof_path=None,
                         map_path="maps/cnn_other_kpa")
    assert second["path"] == "maps/cnn_other_kpa"
    other = SessionStore.open(store).read_array("maps/cnn_other_kpa")
    np.testing.assert_array_equal(other[:2], maps[:2])
    assert np.isnan(other[2:]).all()
    np.testing.assert_array_equal(SessionStore.open(store).read_array(MAP_PATH), maps)
    # a map path that would replace a table's array or the ToF maps is refused, nothing written
    disp = SessionStore.open(store).table("displacement").read("displacement_m")
    for bad in ("displacement/displacement_m", "maps/tof_kpa", "maps/../swei_kpa", "maps/cnn"):
        with pytest.raises(ValueError, match="must be maps/NAME_kpa"):
            run_predict(store, model_path=model_path, map_path=bad)
    np.testing.assert_array_equal(
        SessionStore.open(store).table("displacement").read("displacement_m"), disp)


def test_inclusion_mask_comes_from_the_truth_map_not_the_label() -> None:
    """An indentation label (39.98 kPa) differs slightly from the simulated background (40 kPa):
    the background must still be recognised, or every pixel would count as inclusion."""
    from dataclasses import replace

    data = replace(_maps_set(), youngs_modulus_kpa=np.array([20.0, 60.0, 39.98]))
    est = np.stack([data.target_map_kpa(s) for s in range(3)]).astype(np.float64)
    est[2, 2:4, 3:6] = 70.0
    m = map_metrics(est[2:], data, [2])
    assert m["inclusion"]["pixels"] == 6
    assert m["inclusion"]["mae_kpa"] == pytest.approx(30.0)
    assert m["background"]["mae_kpa"] == 0.0 and m["background"]["pixels"] == 42


def _inclusion_positions() -> SweiTrainingSet:
    """One probe position of an inclusion phantom seen by three pushes: 40 kPa with a 100 kPa
    8 x 10 px inclusion in 20 x 30 px."""
    truth = np.full((3, 20, 30), 40.0, np.float32)
    truth[:, 6:14, 10:20] = 100.0
    return SweiTrainingSet(
        displacement=np.zeros((3, 35, 20, 30), np.float32),
        youngs_modulus_kpa=np.full(3, 40.0), push_index=np.array([1, 3, 5]),
        position_index=np.zeros(3, int), phantom_index=np.zeros(3, int),
        gelatin_percent=np.full(3, 7.5), uses_map=np.ones(3, bool), modulus_maps_kpa=truth)


def test_push_mean_protocol_averages_pushes_and_closes_tof_holes() -> None:
    data = _inclusion_positions()
    truth = data.modulus_maps_kpa.astype(np.float64)
    cnn = truth + np.array([6.0, -6.0, 0.0])[:, None, None]  # errors cancel in the push mean
    cnn[:, :, :2] = np.nan  # the CNN has no estimate in the two left columns
    tof = truth.copy()
    tof[:, 2, 25] = np.nan  # a hole in every ToF map, in the background
    per_seq = compare_with_tof(cnn, tof, data, [0, 1, 2])
    assert per_seq["cnn"]["background"]["mae_kpa"] == pytest.approx(4.0)
    result = push_mean_comparison(cnn, tof, data, [0, 1, 2], depth_step_m=2.5e-4,
                                  lateral_step_m=2.5e-4)
    assert result["positions"] == 1 and result["sequences_per_position"] == [3]
    assert result["cnn"]["background"]["mae_kpa"] == pytest.approx(0.0, abs=1e-9)
    assert result["cnn"]["inclusion"]["mae_kpa"] == pytest.approx(0.0, abs=1e-9)
    assert result["cnn"]["dice"] == pytest.approx(1.0)
    # the hole is closed by the Gaussian (from its 40 kPa neighbours), so ToF covers everything
    assert result["coverage"]["tof"] == 1.0
    assert result["coverage"]["both"] == pytest.approx(28 / 30)
    assert result["cnn"]["overall"]["pixels"] == result["tof"]["overall"]["pixels"] == 20 * 28
    # smoothing blurs the ToF inclusion edge (sigma 0.5 mm = 2 px): inclusion error > 0
    assert result["tof"]["inclusion"]["mae_kpa"] > 5.0
    assert 0.8 < result["tof"]["dice"] < 1.0


def test_push_mean_protocol_groups_positions() -> None:
    data = _inclusion_positions()
    data.position_index[:] = [0, 0, 1]
    cnn = data.modulus_maps_kpa.astype(np.float64) + np.array([2.0, 4.0, 10.0])[:, None, None]
    result = push_mean_comparison(cnn, cnn.copy(), data, [0, 1, 2], depth_step_m=1e-4,
                                  lateral_step_m=1e-4, tof_sigma_mm=0.0)
    assert result["sequences_per_position"] == [2, 1]
    # position 0 errs by 3 kPa (mean of 2 and 4), position 1 by 10 kPa: equal pixel counts
    assert result["cnn"]["overall"]["mae_kpa"] == pytest.approx(6.5)
    with pytest.raises(ValueError, match="must both be shaped"):
        push_mean_comparison(cnn[:2], cnn[:2], data, [0, 1, 2], depth_step_m=1e-4,
                             lateral_step_m=1e-4)


def test_push_mean_regions_see_a_background_shift_that_noise_hides() -> None:
    """The fine-tuning choice: push-mean regions of the CNN alone. Per-push noise of +-6 kPa
    cancels; a 3 kPa shift of the whole background does not."""
    from analysis.swei_cnn.evaluate import push_mean_regions

    data = _inclusion_positions()
    truth = data.modulus_maps_kpa.astype(np.float64)
    noisy = truth + np.array([6.0, -6.0, 0.0])[:, None, None]
    noisy[:, :, :2] = np.nan
    clean = push_mean_regions(noisy, data, [0, 1, 2])
    assert clean["background"]["mae_kpa"] == pytest.approx(0.0, abs=1e-9)
    assert clean["inclusion"]["mae_kpa"] == pytest.approx(0.0, abs=1e-9)
    assert clean["overall"]["pixels"] == 20 * 28 and clean["dice"] == pytest.approx(1.0)
    shifted = np.where(truth == 40.0, truth + 3.0, truth) + np.array([6.0, -6.0, 0.0])[
        :, None, None]
    result = push_mean_regions(shifted, data, [0, 1, 2])
    assert result["background"]["mae_kpa"] == pytest.approx(3.0)
    assert result["inclusion"]["mae_kpa"] == pytest.approx(0.0, abs=1e-9)
    # per sequence the shift is mostly lost in the noise: 4 kPa background MAE without it, 5 with
    per_seq = map_metrics(shifted, data, [0, 1, 2])["background"]["mae_kpa"]
    assert per_seq == pytest.approx(map_metrics(noisy, data, [0, 1, 2])["background"]["mae_kpa"],
                                    abs=1.1)
    with pytest.raises(ValueError, match="maps must be shaped"):
        push_mean_regions(shifted[:2], data, [0, 1, 2])


def test_paper_verdicts_say_whether_the_direction_is_reproduced() -> None:
    from analysis.swei_cnn.evaluate import paper_verdicts

    def entry(mae):
        return {"mae_kpa": mae, "std_kpa": 1.0, "pixels": 10}

    comparison = {
        "held_out": {"cnn": {"overall": entry(5.0)}, "tof": {"overall": entry(12.0)}},
        "inclusion_push_mean": {
            "cnn": {"dice": 0.5, "inclusion": entry(30.0), "background": entry(3.0)},
            "tof": {"dice": 0.7, "inclusion": entry(20.0), "background": entry(9.0)}},
        "unseen_concentration": {"cnn": {"overall": entry(14.0)}, "tof": {"overall": entry(12.0)}},
        "seen_mae_kpa": 5.0,
    }
    v = paper_verdicts(comparison)
    assert v["homogeneous"].startswith("homogeneous MAE: reproduced")
    assert "ratio ToF/CNN 2.40 (paper 2.32: reached)" in v["homogeneous"]
    assert "weaker baseline" not in v["homogeneous"]  # 12.0 kPa is about the paper's 11.61
    assert "NOT reproduced" in v["inclusion_dice"] and "CNN 0.5 vs ToF 0.7" in v["inclusion_dice"]
    assert "NOT reproduced" in v["inclusion_mae"]
    assert v["background_mae"].startswith("background MAE (push mean): reproduced")
    assert "NOT reproduced" in v["unseen_concentration"]
    assert "unseen / seen CNN MAE 2.80" in v["unseen_concentration"]
    comparison["inclusion_push_mean"]["cnn"]["background"] = None
    assert "not measured" in paper_verdicts(comparison)["background_mae"]
    comparison["held_out"]["tof"]["overall"] = entry(21.0)  # a ToF 1.8x the paper's error
    assert "this ToF errs 1.8x as much as the paper's" in paper_verdicts(comparison)["homogeneous"]
