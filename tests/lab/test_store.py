"""Session store: round trip, schema checks, atomic appends under exceptions, xarray view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from lab.store import ArraySpec, SessionStore, StoreError

SWEI_ARRAYS = [
    ArraySpec("iq", (4, 6, 8), "complex64", ("seq", "frame", "depth", "lateral")),
    ArraySpec("push_element", (), "int16", ("seq",), row_chunk=16),
]


def make_record(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    iq = (rng.standard_normal((1, 4, 6, 8)) + 1j * rng.standard_normal((1, 4, 6, 8)))
    return {"iq": iq.astype(np.complex64), "push_element": np.array([k], np.int16)}


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore.create(tmp_path / "s.zarr", config={"name": "t"}, plan={"units": 3})


def test_round_trip_values_dims_and_provenance(store: SessionStore) -> None:
    rng = np.random.default_rng(0)
    table = store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS, attrs={"PRF": 7000.0})
    records = [make_record(rng, k) for k in range(3)]
    for k, rec in enumerate(records):
        table.append(f"pos{k}", rec, meta={"k": k})

    reopened = SessionStore.open(store.path)
    t = reopened.table("swei")
    assert t.keys() == ["pos0", "pos1", "pos2"]
    np.testing.assert_array_equal(t.read("iq", "pos1"), records[1]["iq"])
    assert t.read("iq").dtype == np.complex64
    assert t.records[2]["meta"] == {"k": 2}
    attrs = reopened.attrs
    assert attrs["config"] == {"name": "t"}
    assert len(attrs["plan_hash"]) == 64
    for key in ("elastolab_version", "host", "created_utc"):
        assert attrs[key]

    ds = xr.open_zarr(store.path, group="swei", consolidated=False)
    assert ds["iq"].dims == ("seq", "frame", "depth", "lateral")
    assert ds.attrs["PRF"] == 7000.0
    np.testing.assert_array_equal(ds["push_element"].values, [0, 1, 2])


def test_one_chunk_row_per_sequence(store: SessionStore) -> None:
    table = store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    assert table.array("iq").chunks == (1, 4, 6, 8)


def test_append_rejects_bad_records_before_writing(store: SessionStore) -> None:
    rng = np.random.default_rng(1)
    table = store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    good = make_record(rng, 0)
    with pytest.raises(StoreError, match="rows must be shaped"):
        table.append("a", {**good, "iq": good["iq"][:, :3]})
    with pytest.raises(StoreError, match="missing"):
        table.append("a", {"iq": good["iq"]})
    with pytest.raises(StoreError, match="cannot store complex128 as int16"):
        table.append("a", {**good, "push_element": np.array([1.5 + 1j])})
    assert len(table) == 0 and table.array("iq").shape[0] == 0
    table.append("a", good)
    with pytest.raises(StoreError, match="already has a record 'a'"):
        table.append("a", good)
    assert len(table) == 1


def test_exception_mid_append_leaves_record_absent(store: SessionStore, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    table = store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    table.append("first", make_record(rng, 0))
    first = table.read("iq")

    from zarr.core.array import AsyncArray  # Table.append writes through the async arrays

    real_setitem = AsyncArray.setitem
    calls = {"n": 0}

    async def failing_setitem(self, key, value, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # while the other arrays of the record are written
            raise OSError("disk full (injected)")
        return await real_setitem(self, key, value, *args, **kwargs)

    monkeypatch.setattr(AsyncArray, "setitem", failing_setitem)
    with pytest.raises(OSError, match="injected"):
        table.append("second", make_record(rng, 1))
    monkeypatch.undo()

    reopened = SessionStore.open(store.path, mode="a")  # trims the partial rows
    t = reopened.table("swei")
    assert t.keys() == ["first"]
    assert t.array("iq").shape[0] == 1
    np.testing.assert_array_equal(t.read("iq"), first)
    t.append("second", make_record(rng, 1))  # and appending continues cleanly
    assert t.keys() == ["first", "second"]


def test_ragged_records_keep_their_rows(store: SessionStore) -> None:
    table = store.require_table("indentation", row_dim="sample", arrays=[
        ArraySpec("force_n", (), "float32", ("sample",), row_chunk=256),
        ArraySpec("run", (), "int32", ("sample",), row_chunk=256),
    ])
    table.append("cyl-a", {"force_n": np.linspace(0, 1, 300), "run": np.zeros(300, np.int32)})
    table.append("cyl-b", {"force_n": np.linspace(0, 2, 50), "run": np.ones(50, np.int32)})
    assert table.read("force_n", "cyl-b").shape == (50,)
    assert table.read("force_n", "cyl-b")[-1] == pytest.approx(2.0)
    assert table.records[1]["start"] == 300


def test_reopen_with_different_schema_is_refused(store: SessionStore) -> None:
    store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    other = [ArraySpec("iq", (4, 6, 9), "complex64", ("seq", "frame", "depth", "lateral")),
             SWEI_ARRAYS[1]]
    with pytest.raises(StoreError, match="different schema"):
        store.require_table("swei", row_dim="seq", arrays=other)


def test_create_refuses_existing_path_and_open_refuses_non_store(tmp_path: Path) -> None:
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(StoreError, match="already exists"):
        SessionStore.create(tmp_path / "x.zarr")
    with pytest.raises(StoreError, match="not a Zarr v3 store"):
        SessionStore.open(tmp_path / "x.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not an elastolab session store"):
        SessionStore.open(tmp_path / "other.zarr")


def test_future_schema_version_is_refused(store: SessionStore) -> None:
    store.set_attrs(schema_version=99)
    with pytest.raises(StoreError, match="schema version 99"):
        SessionStore.open(store.path, mode="a")


def test_write_array_replaces_atomically(store: SessionStore) -> None:
    store.write_array("maps/tof_kpa", np.ones((2, 3, 4), np.float32), dims=("seq", "depth",
                                                                           "lateral"))
    with pytest.raises(StoreError, match="exists"):
        store.write_array("maps/tof_kpa", np.zeros((2, 3, 4)), dims=("seq", "depth", "lateral"))
    store.write_array("maps/tof_kpa", np.full((2, 3, 4), 5.0, np.float32),
                      dims=("seq", "depth", "lateral"), overwrite=True)
    np.testing.assert_array_equal(store.read_array("maps/tof_kpa"), 5.0)
    assert not list(store.path.rglob(".tof_kpa*"))


def test_read_only_store_refuses_writes(store: SessionStore) -> None:
    store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    ro = SessionStore.open(store.path, mode="r")
    with pytest.raises(StoreError, match="read-only"):
        ro.table("swei").append("x", make_record(np.random.default_rng(0), 0))


def test_truncate_discards_a_partial_unit(store: SessionStore) -> None:
    rng = np.random.default_rng(3)
    table = store.require_table("swei", row_dim="seq", arrays=SWEI_ARRAYS)
    recs = [make_record(rng, k) for k in range(4)]
    for k, rec in enumerate(recs):
        table.append(f"r{k}", rec)
    assert table.truncate(2) == 2
    assert table.keys() == ["r0", "r1"] and table.array("iq").shape[0] == 2
    table.append("r2", recs[3])  # the redone unit takes the freed rows
    np.testing.assert_array_equal(table.read("iq", "r2"), recs[3]["iq"])
    with pytest.raises(StoreError, match="cannot keep 5 of 3"):
        table.truncate(5)
