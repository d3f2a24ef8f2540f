"""Inclusion contrast, the store runner, the flow CNN (save/load, training) and the study."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.metrics import cnr
from analysis.strain.flownet import (
    FlowConfig,
    flow_cnn,
    load_flow_cnn,
    predict_displacement,
    save_flow_cnn,
)
from analysis.strain.pipeline import estimate_strain
from analysis.strain.runners import run_strain
from analysis.strain.synthetic import failure_rate_study, simulate_training_pairs
from analysis.strain.train import train_flow_cnn
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import simulate_compression_pair, simulate_rf_frame
from lab.store import ArraySpec, SessionStore

INCLUSION = BlockPhantom("inc", 7.5, size_mm=(24.0, 24.0, 24.0), speckle_seed=4,
                         inclusions=(Inclusion(0.0, 5.0, 2.0, 17.5),))
GEOM = dict(depth_mm=10.0, width_mm=10.0, n_lines=48, element_mm=0.5)
#: CNR threshold for the stiff inclusion at 2 % strain, PSNR 30 dB, 41-sample LSQ window.
CNR_THRESHOLD = 3.0


def _windows(n: int, m: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    dz = 10.0 / n
    dx = 10.0 / m
    target = (slice(int(4.2 / dz), int(5.8 / dz)), slice(int(4.2 / dx), int(5.8 / dx)))
    background = (slice(int(4.2 / dz), int(5.8 / dz)), slice(int(0.6 / dx), int(2.2 / dx)))
    return target, background


def test_stiff_inclusion_has_lower_strain_and_contrast() -> None:
    pair = simulate_compression_pair(INCLUSION, applied_strain=0.02, psnr_db=30.0,
                                     rng=np.random.default_rng(0), **GEOM)
    res = estimate_strain(pair.rf_pre, pair.rf_post, coarse="dp", max_strain=0.05)
    target, background = _windows(*pair.rf_pre.shape)
    s = -res.axial_strain
    assert np.all(np.isfinite(s[target])) and np.all(np.isfinite(s[background]))
    assert s[target].mean() < 0.8 * s[background].mean()
    assert cnr(s, background=background, target=target) > CNR_THRESHOLD


def _make_store(tmp_path, n_steps: int = 3):
    store = SessionStore.create(tmp_path / "s.zarr")
    frames = [simulate_rf_frame(INCLUSION, applied_strain=0.01 * k, psnr_db=35.0,
                                rng_noise=np.random.default_rng(k), **GEOM)
              for k in range(n_steps)]
    shape = frames[0].rf.shape
    attrs = {"sampling_frequency": 40e6, "center_frequency": 6.67e6, "sound_speed": 1540.0,
             "depth_m": frames[0].depth_m.tolist(), "lateral_m": frames[0].lateral_m.tolist()}
    table = store.require_table("compression", row_dim="frame", arrays=[
        ArraySpec("rf", shape, "float32", ("frame", "depth", "line")),
        ArraySpec("applied_strain", (), "float32", ("frame",)),
    ], attrs=attrs)
    truth = store.require_table("truth/compression", row_dim="frame", arrays=[
        ArraySpec(name, shape, "float32", ("frame", "depth", "line"))
        for name in ("axial_displacement_m", "lateral_displacement_m", "axial_strain")
    ])
    for k, f in enumerate(frames):
        key = f"inc/step{k:02d}"
        table.append(key, {"rf": f.rf[None], "applied_strain": np.float32([f.applied_strain])})
        truth.append(key, {"axial_displacement_m": f.axial_displacement_m[None],
                           "lateral_displacement_m": f.lateral_displacement_m[None],
                           "axial_strain": f.axial_strain[None]})
    return store


def test_run_strain_writes_arrays_metrics_and_pngs(tmp_path) -> None:
    _make_store(tmp_path)
    out = run_strain(tmp_path / "s.zarr", coarse="dp", out_png_dir=tmp_path / "png",
                     max_strain=0.03)
    assert out["pairs"] == [["inc/step00", "inc/step01"], ["inc/step01", "inc/step02"]]
    store = SessionStore.open(tmp_path / "s.zarr")
    strain = store.read_array("strain/dp/axial_strain")
    assert strain.shape == (2, 519, 48) and strain.dtype == np.float32
    attrs = dict(store.root["strain/dp/axial_strain"].attrs)
    assert set(attrs["metrics"][0]) >= {"snr", "mssim", "cnr"}
    # Each pair is a 1 % step: the estimated mean strain matches the true step strain.
    truth = store.table("truth/compression").read("axial_strain")
    for k in range(2):
        finite = np.isfinite(strain[k])
        step = truth[k + 1] - truth[k]
        assert np.mean(strain[k][finite]) == pytest.approx(np.mean(step[finite]), rel=0.05)
        assert np.mean(step[finite]) == pytest.approx(-0.009, abs=0.001)
    assert attrs["metrics"][0]["mssim"] > 0.3
    assert "inc" in attrs["failure_rate"]
    assert len(list((tmp_path / "png").glob("dp_*.png"))) == 2
    with pytest.raises(ValueError, match="model_path"):
        run_strain(tmp_path / "s.zarr", coarse="cnn")


TINY_CFG = FlowConfig(channels=(8, 8, 8), strides=((2, 1), (2, 2), (2, 2)), coarse_search=(3, 1),
                      search=(1, 1), estimator_width=8)


@pytest.fixture(scope="module")
def tiny_pairs():
    return simulate_training_pairs(4, rng=np.random.default_rng(1), depth_mm=10.0, n_lines=32,
                                   pairs_per_view=4, views_per_phantom=1, block_mm=24.0)


def test_training_is_seeded_and_learns(tiny_pairs) -> None:
    kw = dict(epochs=4, batch=2, lr=3e-3, seed=3, config=TINY_CFG, patch=(64, 16))
    a = train_flow_cnn(tiny_pairs, **kw)
    b = train_flow_cnn(tiny_pairs, **kw)
    assert a.loss_history == b.loss_history
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                                  strict=True):
        assert ka == kb and np.array_equal(va.numpy(), vb.numpy())
    assert a.loss_history[-1] < a.loss_history[0]
    assert set(a.profile) >= {"seconds_per_epoch", "seconds_per_batch"}


def test_weights_round_trip_and_hash_check(tmp_path, tiny_pairs) -> None:
    model = flow_cnn(channels=(8, 8, 8), strides=((2, 1), (2, 2), (2, 2)), coarse_search=(3, 1),
                     search=(1, 1), estimator_width=8)
    path = save_flow_cnn(model, tmp_path / "m", card={"note": "test"})
    assert path.suffix == ".safetensors"
    loaded, card = load_flow_cnn(path)
    assert card["note"] == "test" and tuple(card["config"]["channels"]) == (8, 8, 8)
    p = tiny_pairs[0]
    a1, l1 = predict_displacement(model, p.rf_pre, p.rf_post)
    a2, l2 = predict_displacement(loaded, p.rf_pre, p.rf_post)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(l1, l2)
    assert a1.shape == p.rf_pre.shape and a1.dtype == np.float32
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        load_flow_cnn(path)
    card_path = path.with_suffix(".json")
    assert json.loads(card_path.read_text())["model"] == "FlowCNN"


def test_small_failure_rate_study_reports_both_methods(tiny_pairs) -> None:
    trained = train_flow_cnn(tiny_pairs, epochs=2, batch=2, lr=3e-3, seed=0, config=TINY_CFG,
                             patch=(64, 16))
    result = failure_rate_study(model=trained.model, strains=(0.01, 0.03), repeats=1,
                                depth_mm=6.0, width_mm=6.0, n_lines=24, psnr_db=12.7, seed=1,
                                max_strain=0.05)
    assert set(result.summary) == {"dp", "cnn"}
    for summary in result.summary.values():
        assert 0.0 <= summary["failure_rate"] <= 1.0
        assert summary["n_images"] == 2
        assert np.isfinite(summary["mssim"]) and np.isfinite(summary["cnr"])
    assert len(result.rows) == 4
