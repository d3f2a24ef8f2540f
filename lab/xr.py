"""A session store group as an :class:`xarray.Dataset`: coordinates, units, committed rows.

``xarray.open_zarr(store, group=...)`` sees the raw arrays: every row, including rows an
interrupted write left past ``committed_rows``, and no coordinates (the grid and the record keys
live in attributes). :func:`open_dataset` is the public way in::

    from lab.xr import open_dataset
    swei = open_dataset("session.zarr", "swei")
    swei.iq.sel(seq="B10/pos000/push0", depth_m=0.01, method="nearest")
    disp = open_dataset("session.zarr", "displacement").displacement_m
    disp.isel(seq=0, frame=10).plot(x="lateral_m", y="depth_m", yincrease=False)

What it adds, on read, to every store (earlier stores included; nothing is written):

* only the committed rows of a table (data stays lazy, one Dask chunk per stored chunk);
* the record keys as the row coordinate (``seq``, ``step``; ``record_key`` for sample streams),
  and ``phantom_id`` per record where the records name one;
* ``depth_m``/``lateral_m`` on ``depth``/``lateral`` (``line`` for RF lines), ``time_s`` on
  ``frame`` (the F tracked frames, coordinate ``frame`` = 1..F), ``acquired_time_s`` on
  ``acquired_frame`` (0..F, NaN for the pre-push reference), ``pose`` component names and units,
  the channel-RF ``sample_time_s`` where the table records the channel rate; all metre/second
  coordinates are indexed, so ``.sel(depth_m=..., method="nearest")`` works;
* ``units`` and ``long_name`` on every variable (:mod:`lab.variables`);
* today's dimension names for stores written before a rename (``lab.variables.LEGACY_DIMS``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from lab.store import SessionStore, StoreError
from lab.variables import POSE_COMPONENTS, POSE_UNITS, current_dims, variable_attrs

__all__ = ["groups", "open_dataset"]

#: Attributes too bulky or too internal to copy onto the Dataset.
_SKIPPED_ATTRS = ("records", "schema", "committed_rows", "row_dim", "depth_m", "lateral_m")
#: Groups whose image grid is the SWEI grid (their own attributes do not repeat it).
_SWEI_GRID = ("swei", "displacement", "truth/swei", "maps")
#: Groups whose grid is the compression RF grid.
_COMPRESSION_GRID = ("compression", "truth/compression", "strain")


def groups(path: str | os.PathLike[str]) -> list[str]:
    """Groups of a store that :func:`open_dataset` can open (tables and array groups)."""
    store = SessionStore.open(path, "r")
    found: list[str] = []

    def walk(group: zarr.Group, prefix: str) -> None:
        members = sorted(group.members())
        if any(isinstance(m, zarr.Array) and not n.startswith(".") for n, m in members):
            found.append(prefix.rstrip("/"))
        for name, member in members:
            if isinstance(member, zarr.Group) and name != "logs":
                walk(member, f"{prefix}{name}/")

    walk(store.root, "")
    if "labels" in store.root and "labels" in store.root["labels"].attrs:
        found.append("labels")
    return sorted(g for g in found if g)


def open_dataset(path: str | os.PathLike[str], group: str) -> xr.Dataset:
    """One group of a session store as a labelled, lazy Dataset (committed rows only).

    Parameters
    ----------
    path : path
        Session store (a ``.zarr`` directory).
    group : str
        Group inside it: a table (``swei``, ``displacement``, ``truth/swei``, ``indentation``,
        ``force_log``, ``compression``, ``truth/compression``), an array group (``maps``,
        ``strain/dp``) or ``labels``; :func:`groups` lists them.

    Returns
    -------
    xarray.Dataset
        Variables named as in the store with ``units`` and ``long_name``; coordinates and
        dimensions as in the module docstring; the group's attributes (acquisition metadata,
        provenance) as ``attrs``.

    Raises
    ------
    lab.store.StoreError
        Not a session store, or no such group.
    """
    path = Path(path)
    store = SessionStore.open(path, "r")
    if group == "labels":
        return _labels_dataset(store)
    if group not in store.root or not isinstance(store.root[group], zarr.Group):
        raise StoreError(f"{path}: no group {group!r}; groups are {groups(path)}")
    raw = xr.open_zarr(str(path), group=group, consolidated=False, zarr_format=3,
                       mask_and_scale=False)
    zgroup = store.root[group]
    assert isinstance(zgroup, zarr.Group)
    attrs = zgroup.attrs.asdict()
    table = store.table(group) if "row_dim" in attrs else None
    variables: dict[str, xr.DataArray] = {}
    order = list(table.schema) if table is not None else sorted(str(n) for n in raw.data_vars)
    for name in order:
        if name not in raw.data_vars:
            continue
        da = raw[name]
        if name.startswith(".") or (table is not None and name not in table.schema):
            continue  # temporary arrays of an interrupted write_array, strays
        if table is not None:
            da = da.isel({table.row_dim: slice(0, table.committed_rows)})
        dims = current_dims(group, name, tuple(str(d) for d in da.dims))
        variables[name] = xr.DataArray(da.data, dims=dims, attrs=_variable_attrs(name, da.attrs))
    ds = xr.Dataset(variables, attrs={k: v for k, v in attrs.items() if k not in _SKIPPED_ATTRS})
    ds = _add_row_coords(ds, store, group, table)
    ds = _add_grid_coords(ds, store, group, attrs)
    return ds


def _variable_attrs(name: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    out = {**variable_attrs(name), **dict(stored)}
    units = out.get("units")
    if not isinstance(units, str) or len(units) > 24:
        # an older writer put a sentence under "units"; keep it, give the real unit
        out["units_description"] = units
        out["units"] = variable_attrs(name)["units"]
    return out


def _row_dim_name(group: str, row_dim: str) -> str:
    return current_dims(group, "*", (row_dim,))[0]


def _add_row_coords(ds: xr.Dataset, store: SessionStore, group: str, table: Any) -> xr.Dataset:
    if table is None:
        return _add_seq_keys_of_swei(ds, store)
    row_dim = _row_dim_name(group, table.row_dim)
    records = table.records
    keys = np.array([r["key"] for r in records], dtype=object)
    rows = np.array([r["stop"] - r["start"] for r in records], dtype=np.int64)
    if row_dim not in ds.dims:
        return ds
    if rows.size and np.all(rows == 1):
        ds = ds.assign_coords({row_dim: (row_dim, keys, {"long_name": "record key"})})
        phantoms = [r["meta"].get("phantom_id") for r in records]
        if phantoms and all(isinstance(p, str) for p in phantoms):
            ds = ds.assign_coords(phantom_id=(row_dim, np.array(phantoms, dtype=object),
                                              {"long_name": "phantom of the record"}))
    else:
        ds = ds.assign_coords(record_key=(row_dim, np.repeat(keys, rows),
                                          {"long_name": "record the row belongs to"}))
    return ds


def _add_seq_keys_of_swei(ds: xr.Dataset, store: SessionStore) -> xr.Dataset:
    """Array groups indexed by ``seq`` (maps) get the SWEI record keys when the counts match."""
    if "seq" not in ds.dims or not store.has_table("swei"):
        return ds
    keys = store.table("swei").keys()
    if len(keys) != ds.sizes["seq"]:
        return ds
    return ds.assign_coords(seq=("seq", np.array(keys, dtype=object),
                                 {"long_name": "record key"}))


def _grid_attrs(store: SessionStore, group: str, attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    top = group.split("/")[0] if not group.startswith("truth/") else group
    if top in _SWEI_GRID and group != "swei" and store.has_table("swei"):
        return store.table("swei").group.attrs.asdict()
    if top in _COMPRESSION_GRID and group != "compression" and store.has_table("compression"):
        return store.table("compression").group.attrs.asdict()
    return attrs


def _indexed(ds: xr.Dataset, name: str, dim: str, values: Any, attrs: dict[str, str]) -> xr.Dataset:
    values = np.asarray(values, dtype=np.float64)
    if dim not in ds.dims or values.shape != (ds.sizes[dim],):
        return ds
    ds = ds.assign_coords({name: (dim, values, attrs)})
    if np.all(np.isfinite(values)):
        ds = ds.set_xindex(name)
    return ds


def _add_grid_coords(ds: xr.Dataset, store: SessionStore, group: str,
                     attrs: Mapping[str, Any]) -> xr.Dataset:
    grid = _grid_attrs(store, group, attrs)
    if "depth_m" in grid:
        ds = _indexed(ds, "depth_m", "depth", grid["depth_m"],
                      {"units": "m", "long_name": "depth of the pixel centre"})
    if "lateral_m" in grid:
        lateral = {"units": "m", "long_name": "lateral position (0 = probe centre)"}
        ds = _indexed(ds, "lateral_m", "lateral", grid["lateral_m"], lateral)
        ds = _indexed(ds, "lateral_m", "line", grid["lateral_m"], lateral)
    if "pose" in ds.dims and ds.sizes["pose"] == len(POSE_COMPONENTS):
        ds = ds.assign_coords(pose=("pose", list(POSE_COMPONENTS), {"long_name": "pose component"}),
                              pose_units=("pose", list(POSE_UNITS), {"long_name": "unit"}))
    if "PRF" in grid and "initial_time" in grid:
        prf, t0 = float(grid["PRF"]), float(grid["initial_time"])
        for dim, first in (("frame", 1), ("acquired_frame", 0)):
            if dim not in ds.dims:
                continue
            index = np.arange(first, first + ds.sizes[dim])
            times = np.where(index >= 1, t0 + (index - 1) / prf, np.nan)
            ds = ds.assign_coords({dim: (dim, index, {"long_name": "frame index (0 = pre-push "
                                                                   "reference)"})})
            name = "time_s" if dim == "frame" else "acquired_time_s"
            ds = _indexed(ds, name, dim, times, {"units": "s", "long_name": "time after the "
                                                  "push (NaN: the pre-push reference)"})
    if "pairs" in attrs and "pair" in ds.dims and len(attrs["pairs"]) == ds.sizes["pair"]:
        ds = ds.assign_coords(pair=("pair", np.array([f"{a} -> {b}" for a, b in attrs["pairs"]],
                                                     dtype=object),
                                    {"long_name": "pre -> post compression step"}))
    if "channel_sampling_frequency" in grid and "sample" in ds.dims and group == "swei":
        fs, t0 = float(grid["channel_sampling_frequency"]), float(grid.get("channel_t0", 0.0))
        ds = _indexed(ds, "sample_time_s", "sample", t0 + np.arange(ds.sizes["sample"]) / fs,
                      {"units": "s", "long_name": "channel sample time after transmit"})
    return ds


def _labels_dataset(store: SessionStore) -> xr.Dataset:
    if "labels" not in store.root or "labels" not in store.root["labels"].attrs:
        raise StoreError(f"{store.path}: no labels (run `elastolab analyze labels` first)")
    labels = list(store.root["labels"].attrs["labels"])
    percent = np.array([float(lab["gelatin_percent"]) for lab in labels])
    ci = np.array([lab["ci95_kpa"] for lab in labels], dtype=np.float64).reshape(-1, 2)
    strain = np.array([lab["strain_range"] for lab in labels], dtype=np.float64).reshape(-1, 2)
    return xr.Dataset(
        {"youngs_modulus_kpa": ("gelatin_percent",
                                np.array([lab["youngs_modulus_kpa"] for lab in labels], float),
                                {"units": "kPa", "long_name": "Young's modulus label"}),
         "ci95_kpa": (("gelatin_percent", "bound"), ci,
                      {"units": "kPa", "long_name": "95 % confidence interval"}),
         "strain_range": (("gelatin_percent", "bound"), strain,
                          {"units": "1", "long_name": "strain range of the fit"}),
         "runs_used": ("gelatin_percent", np.array([len(lab["runs_used"]) for lab in labels]),
                       {"units": "1", "long_name": "indentation runs used"})},
        coords={"gelatin_percent": ("gelatin_percent", percent,
                                    {"units": "%", "long_name": "gelatin concentration"}),
                "bound": ("bound", ["low", "high"])},
        attrs={"source": "indentation labels"})
