"""lab.xr.open_dataset: coordinates, units, distinct frame dimensions, committed rows only."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import xarray as xr
from data_testkit import (
    DEPTH_M,
    FRAMES,
    LATERAL_M,
    N_SEQ,
    PRF,
    T0,
    make_swei_store,
    wave_iq,
    write_uncommitted_row,
)

from analysis.runners import run_displacement
from lab.store import SessionStore, StoreError
from lab.xr import groups, open_dataset

matplotlib.use("Agg")


@pytest.fixture(params=[False, True], ids=["current", "legacy"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = make_swei_store(tmp_path / "s.zarr", legacy=request.param)
    run_displacement(path, num_workers=1)
    return path


def test_swei_coordinates_units_and_frame_dimensions(store_path: Path) -> None:
    swei = open_dataset(store_path, "swei")
    assert swei.iq.dims == ("seq", "acquired_frame", "depth", "lateral")
    assert list(swei.seq.values) == [f"B10/pos000/push{k}" for k in range(N_SEQ)]
    np.testing.assert_allclose(swei.depth_m.values, DEPTH_M)
    np.testing.assert_allclose(swei.lateral_m.values, LATERAL_M)
    assert list(swei.pose.values) == ["x", "y", "z", "rx", "ry", "rz"]
    assert swei.sizes["acquired_frame"] == FRAMES + 1
    assert np.isnan(swei.acquired_time_s.values[0])
    np.testing.assert_allclose(swei.acquired_time_s.values[1:], T0 + np.arange(FRAMES) / PRF)
    for name, var in {**swei.data_vars, **swei.coords}.items():
        if name in swei.data_vars or np.issubdtype(var.dtype, np.floating):
            assert var.attrs.get("units"), name
    for var in swei.data_vars.values():
        assert var.attrs["long_name"]
    assert swei.contact_force_n.attrs["units"] == "N"
    np.testing.assert_array_equal(swei.iq.sel(seq="B10/pos000/push1").values, wave_iq(1))


def test_displacement_aligns_with_iq_frames(store_path: Path) -> None:
    swei = open_dataset(store_path, "swei")
    disp = open_dataset(store_path, "displacement")
    assert disp.displacement_m.dims == ("seq", "frame", "depth", "lateral")
    assert disp.sizes["frame"] == FRAMES
    assert disp.displacement_m.attrs["units"] == "m"
    # tracked frame k is acquired frame k: same index value, same time
    np.testing.assert_array_equal(disp.frame.values, np.arange(1, FRAMES + 1))
    np.testing.assert_allclose(disp.time_s.values,
                               swei.acquired_time_s.sel(acquired_frame=disp.frame.values).values)
    merged = xr.merge([swei.iq, disp.displacement_m])
    assert merged.sizes["frame"] == FRAMES and merged.sizes["acquired_frame"] == FRAMES + 1


def test_sel_nearest_and_plot(store_path: Path) -> None:
    disp = open_dataset(store_path, "displacement").displacement_m
    depth = float(DEPTH_M[3]) + 1e-6
    profile = disp.sel(seq="B10/pos000/push0").sel(depth_m=depth, method="nearest")
    assert profile.dims == ("frame", "lateral")
    np.testing.assert_allclose(float(profile.depth_m), DEPTH_M[3])
    trace = disp.isel(seq=0).sel(time_s=T0 + 4.2 / PRF, method="nearest")
    assert int(trace.frame) == 5
    image = disp.isel(seq=0, frame=3)
    assert image.plot(x="lateral_m", y="depth_m", yincrease=False) is not None
    assert image.plot() is not None
    matplotlib.pyplot.close("all")


def test_uncommitted_rows_hidden(tmp_path: Path) -> None:
    path = make_swei_store(tmp_path / "s.zarr")
    write_uncommitted_row(path)
    raw = xr.open_zarr(path, group="swei", consolidated=False)
    assert raw.sizes["seq"] == N_SEQ + 1  # what a plain xarray reader sees
    swei = open_dataset(path, "swei")
    assert swei.sizes["seq"] == N_SEQ
    assert list(swei.push_index.values) == [0, 1, 2]  # the junk row holds ones
    assert (path / "swei").exists() and SessionStore.open(path).table("swei").committed_rows == 3


def test_groups_and_errors(store_path: Path) -> None:
    assert {"swei", "displacement"} <= set(groups(store_path))
    with pytest.raises(StoreError, match="no group 'nope'"):
        open_dataset(store_path, "nope")
    with pytest.raises(StoreError, match="no labels"):
        open_dataset(store_path, "labels")


def test_new_stores_carry_units_and_names_on_disk(tmp_path: Path) -> None:
    path = make_swei_store(tmp_path / "s.zarr")
    raw = xr.open_zarr(path, group="swei", consolidated=False)
    assert raw.iq.dims == ("seq", "acquired_frame", "depth", "lateral")
    assert raw.contact_force_n.attrs["units"] == "N"


def test_legacy_store_keeps_appending(tmp_path: Path) -> None:
    path = make_swei_store(tmp_path / "s.zarr", legacy=True, n_seq=1)
    store = SessionStore.open(path, "a")
    from data_testkit import DEPTH, LATERAL

    from protocols.swei import swei_table_arrays

    table = store.require_table("swei", row_dim="seq",
                                arrays=swei_table_arrays(FRAMES, DEPTH, LATERAL))
    assert table.schema["iq"]["dims"][1] == "frame"  # stored as it was
    with pytest.raises(StoreError, match="different schema"):
        store.require_table("swei", row_dim="seq",
                            arrays=swei_table_arrays(FRAMES + 1, DEPTH, LATERAL))
