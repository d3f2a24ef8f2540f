"""Datasets across sessions: labels of an indentation store applied by gelatin batch, one
training set over several stores, roles as the split, Dask across stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_testkit import LABELS, make_swei_store

from analysis.datasets.runners import (
    batch_labels,
    load_dataset,
    roles_split,
    run_displacement_all,
    run_predict_dataset,
    run_train_dataset,
)
from analysis.datasets.spec import DatasetError, load_spec
from analysis.swei_cnn.runners import load_swei_training_set, write_synthetic_store
from lab.gelatin import GELATIN_YOUNGS_MODULUS_KPA
from lab.store import SessionStore
from lab.xr import open_dataset

SHAPE = (35, 14, 18)


def _indentation_store(path: Path) -> Path:
    store = SessionStore.create(path)
    store.root.require_group("labels").attrs["labels"] = LABELS  # 5 % and 10 %
    return path


def _write(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "dataset.toml"
    spec.write_text(text)
    return spec


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    _indentation_store(tmp_path / "indent.zarr")
    for name, seed in (("day2", 0), ("day3", 1), ("day4", 2)):
        write_synthetic_store(tmp_path / f"{name}.zarr", gelatin_percents=(5.0, 10.0),
                              positions=2, pushes=2, shape=SHAPE, seed=seed)
    return _write(tmp_path, """
name = "november"
[[labels]]
store = "indent.zarr"
batch = "G1"
[[stores]]
path = "day2.zarr"
role = "train"
batch = "G1"
[[stores]]
path = "day3.zarr"
role = "validation"
batch = "G1"
[[stores]]
path = "day4.zarr"
role = "test"
""")


def test_labels_by_batch_and_one_training_set(dataset: Path) -> None:
    spec = load_spec(dataset)
    assert [s.role for s in spec.stores] == ["train", "validation", "test"]
    assert batch_labels(spec) == {"G1": {5.0: 17.4, 10.0: 27.0}}
    ds = load_dataset(spec)
    data = ds.data
    one = load_swei_training_set(dataset.parent / "day2.zarr")
    n = len(one)
    assert len(data) == 3 * n and np.shape(data.displacement) == (3 * n, *SHAPE)
    # batch G1 stores take the indentation labels, the store without a batch its own targets
    g1 = ds.store_index < 2
    expected = np.where(data.gelatin_percent == 5.0, 17.4, 27.0)
    np.testing.assert_allclose(data.youngs_modulus_kpa[g1], expected[g1])
    own = np.where(data.gelatin_percent == 5.0, GELATIN_YOUNGS_MODULUS_KPA[5.0],
                   GELATIN_YOUNGS_MODULUS_KPA[10.0])
    np.testing.assert_allclose(data.youngs_modulus_kpa[~g1], own[~g1], rtol=1e-6)
    # sequences read from their own store; phantoms of different sessions never share an index
    np.testing.assert_array_equal(data.displacement[n + 3], load_swei_training_set(
        dataset.parent / "day3.zarr").displacement[3])
    np.testing.assert_array_equal(data.displacement[2, :, 1:3, 4:6],
                                  one.displacement[2, :, 1:3, 4:6])
    assert set(data.phantom_index[:n]).isdisjoint(data.phantom_index[n:2 * n])
    assert data.keys[n].startswith("day3.zarr:")
    split = roles_split(ds)
    np.testing.assert_array_equal(split.train, np.arange(n))
    np.testing.assert_array_equal(split.validation, np.arange(n, 2 * n))
    np.testing.assert_array_equal(split.test, np.arange(2 * n, 3 * n))


def test_train_and_predict_over_stores(dataset: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "m.safetensors"
    out = run_train_dataset(dataset, window_px=5, out_model_path=model_path, max_steps=2,
                            model_overrides={"growth_rate": 4, "head_hidden": 8})
    assert out["card"]["split"]["kind"] == "roles"
    assert out["card"]["split"]["train"] == out["card"]["split"]["validation"] == 8
    assert out["card"]["training_data_source"].endswith("dataset.toml")
    results = run_predict_dataset(dataset, model_path=model_path, roles=("validation", "test"))
    assert sorted(Path(p).name for p in results) == ["day3.zarr", "day4.zarr"]
    maps = open_dataset(dataset.parent / "day3.zarr", "maps").cnn_kpa
    assert maps.sizes["seq"] == 8 and np.isfinite(maps.values[:, 2:-2, 2:-2]).all()


def test_dask_runs_displacement_across_stores(tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_swei_store(tmp_path / f"{name}.zarr", n_seq=2)
    spec = _write(tmp_path, '[[stores]]\npath = "a.zarr"\nrole = "train"\n'
                            '[[stores]]\npath = "b.zarr"\nrole = "predict"\n')
    counts = run_displacement_all(spec, scheduler="threads", num_workers=2)
    assert counts == {str(tmp_path / "a.zarr"): 2, str(tmp_path / "b.zarr"): 2}
    assert run_displacement_all(spec, scheduler="sync") == dict.fromkeys(counts, 0)  # resumable
    assert open_dataset(tmp_path / "b.zarr", "displacement").sizes["seq"] == 2


@pytest.mark.parametrize(("text", "message"), [
    ('[[stores]]\npath = "x.zarr"\nrole = "training"\n', "role must be one of"),
    ('[[stores]]\npath = "x.zarr"\nrole = "train"\nbatch = "G9"\n', "no \\[\\[labels\\]\\] entry"),
    ('[[stores]]\npath = "x.zarr"\nrole = "train"\ncolour = 1\n', "unknown key"),
    ('name = "empty"\n', "at least one"),
])
def test_bad_dataset_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_spec(_write(tmp_path, text))


def test_roles_need_train_and_validation(dataset: Path) -> None:
    text = dataset.read_text().replace('role = "validation"', 'role = "predict"')
    with pytest.raises(DatasetError, match="validation"):
        roles_split(load_dataset(_write(dataset.parent, text)))


def test_cli_dataset_check_and_displacement(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lab.cli import app

    make_swei_store(tmp_path / "a.zarr", n_seq=1)
    spec = _write(tmp_path, '[[stores]]\npath = "a.zarr"\nrole = "predict"\n')
    result = CliRunner().invoke(app, ["dataset", "check", str(spec)])
    assert result.exit_code == 0 and "predict" in result.output
    result = CliRunner().invoke(app, ["dataset", "displacement", str(spec), "--workers", "1"])
    assert result.exit_code == 0 and "sequences computed" in result.output
    assert open_dataset(tmp_path / "a.zarr", "displacement").sizes["seq"] == 1
    bad = _write(tmp_path, '[[stores]]\npath = "a.zarr"\nrole = "nope"\n')
    result = CliRunner().invoke(app, ["dataset", "check", str(bad)])
    assert result.exit_code == 2 and "role must be one of" in result.output
