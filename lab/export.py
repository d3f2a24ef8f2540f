"""Export a session store to UFF (USTB), MATLAB v7.3 or HDF5, streamed block by block.

What can be exported (``what``):

``iq``            ``swei``: beamformed IQ (seq, acquired_frame, depth, lateral) and the
                  per-sequence metadata (pose, force, push element, ...)
``displacement``  the ``displacement`` table (seq, frame, depth, lateral)
``maps``          the ``maps`` group (seq, depth, lateral), one variable per method
``labels``        the Young's-modulus labels per gelatin concentration

Formats:

``hdf5``  plain HDF5 (h5py): one group per item, arrays in the store's axis order (C order),
          coordinates as HDF5 dimension scales attached to the arrays' axes, ``units`` /
          ``long_name`` / ``dims`` attributes, the acquisition metadata as group attributes.
``mat``   MATLAB v7.3 (hdf5storage + h5py): one struct per item (``swei``, ``displacement``,
          ``maps``, ``labels``) whose fields are the arrays and coordinates, plus the structs
          ``units``, ``long_name``, ``dims`` (field -> text) and ``attrs``. Axes keep the
          store's order in MATLAB: ``swei.iq`` is ``[seq x acquired_frame x depth x lateral]``.
``uff``   USTB's UFF (pyuff-ustb): one ``uff.beamformed_data`` per SWEI sequence
          (``b_data_iq_0001``, ``b_data_displacement_0001``, ...) and one per map method
          (``b_data_map_tof_kpa``, frames = sequences), each with its ``uff.linear_scan``
          (x = lateral, z = depth), sampling and modulation frequency and frame rate; the record
          key, sound speed, ``initial_time`` and units are in ``info`` (JSON). Data is
          ``[pixel x channel x wave x frame]`` in MATLAB (USTB's layout), pixels z-fastest as
          USTB's linear scan orders them. Labels are not images: UFF refuses them.

Every array is read from the store and written one block of rows at a time (at most
``block_mb`` of data in memory), so an export larger than memory works. The output is written
under ``NAME.partial`` and renamed when complete: a failed export leaves no file that looks done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import xarray as xr

from lab.store import SessionStore, StoreError
from lab.xr import open_dataset

__all__ = ["FORMATS", "WHAT", "available", "export_store"]

Format = Literal["uff", "mat", "hdf5"]
FORMATS: tuple[str, ...] = ("uff", "mat", "hdf5")
#: Export item -> store group.
WHAT: dict[str, str] = {"iq": "swei", "displacement": "displacement", "maps": "maps",
                        "labels": "labels"}
SUFFIX: dict[str, str] = {"uff": ".uff", "mat": ".mat", "hdf5": ".h5"}
#: Variables of a group that an item leaves out (channel RF is not beamformed data).
_LEFT_OUT = {"iq": ("rf",)}
_MAT_COMPLEX = {np.dtype(np.complex64): np.dtype([("real", "<f4"), ("imag", "<f4")]),
                np.dtype(np.complex128): np.dtype([("real", "<f8"), ("imag", "<f8")])}
_MAT_CLASS = {"f4": "single", "f8": "double", "c8": "single", "c16": "double", "i1": "int8",
              "i2": "int16", "i4": "int32", "i8": "int64", "u1": "uint8", "u2": "uint16",
              "u4": "uint32", "u8": "uint64", "b1": "logical"}

Progress = Callable[[int, int], None]


def available(store_path: str | os.PathLike[str]) -> list[str]:
    """Export items present in a store (see the module docstring)."""
    store = SessionStore.open(store_path, "r")
    out = []
    if store.has_table("swei") and "iq" in store.table("swei").schema:
        out.append("iq")
    if store.has_table("displacement"):
        out.append("displacement")
    if "maps" in store.root and any(True for _ in store.root["maps"].array_keys()):
        out.append("maps")
    if "labels" in store.root and "labels" in store.root["labels"].attrs:
        out.append("labels")
    return out


def export_store(
    store_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    fmt: Format,
    what: Sequence[str] | None = None,
    block_mb: float = 64.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write items of a store to one UFF, MAT v7.3 or HDF5 file.

    Parameters
    ----------
    store_path : path
        Session store.
    out_path : path
        File to create; refuses to overwrite an existing one.
    fmt : {"uff", "mat", "hdf5"}
        Output format (module docstring).
    what : sequence of str, optional
        Items among ``iq``, ``displacement``, ``maps``, ``labels``; default every item the store
        has (for UFF: every image item).
    block_mb : float, optional
        Largest block of rows held in memory, in MiB (at least one row is read at a time).
    progress : callable, optional
        ``progress(done, total)`` in blocks written.

    Returns
    -------
    dict
        ``{"path", "format", "what", "bytes_read"}``: ``bytes_read`` counts the array data read
        from the store (uncompressed).

    Raises
    ------
    lab.store.StoreError
        Unknown or absent item, existing output, an item the format cannot hold.
    """
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if block_mb <= 0:
        raise StoreError(f"block_mb must be > 0, got {block_mb}")
    out = Path(out_path)
    if out.exists():
        raise StoreError(f"{out} exists; refusing to overwrite it (choose another output)")
    have = available(store_path)
    items = list(what) if what else [w for w in have if not (fmt == "uff" and w == "labels")]
    unknown = [w for w in items if w not in WHAT]
    if unknown:
        raise StoreError(f"unknown export item(s) {unknown}; choose among {', '.join(WHAT)}")
    missing = [w for w in items if w not in have]
    if missing:
        raise StoreError(f"{store_path}: nothing to export for {missing} (the store has "
                         f"{', '.join(have) or 'none of them'})")
    if fmt == "uff" and "labels" in items:
        raise StoreError("UFF holds beamformed images, not labels; export labels with "
                         "--format mat or hdf5")
    if not items:
        raise StoreError(f"{store_path}: nothing to export")
    datasets = {w: _item_dataset(store_path, w) for w in items}
    writer = _Writer(block_bytes=int(block_mb * 2**20), progress=progress,
                     total=sum(_n_blocks(ds, int(block_mb * 2**20)) for ds in datasets.values()))
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        if fmt == "hdf5":
            with h5py.File(partial, "w") as f:
                f.attrs["source_store"] = str(Path(store_path).resolve())
                for item, ds in datasets.items():
                    writer.hdf5_group(f.create_group(item), ds)
        elif fmt == "mat":
            writer.mat_file(partial, datasets)
        else:
            for item, ds in datasets.items():
                writer.uff_item(partial, item, ds)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {"path": str(out), "format": fmt, "what": items, "bytes_read": writer.bytes_read}


def _item_dataset(store_path: str | os.PathLike[str], item: str) -> xr.Dataset:
    ds = open_dataset(store_path, WHAT[item])
    return ds.drop_vars([v for v in _LEFT_OUT.get(item, ()) if v in ds.data_vars])


def _row_step(da: xr.DataArray, block_bytes: int) -> int:
    if da.ndim == 0:
        return 1
    row = max(1, da.nbytes // max(1, da.shape[0]))
    return max(1, block_bytes // row)


def _n_blocks(ds: xr.Dataset, block_bytes: int) -> int:
    return sum(-(-da.shape[0] // _row_step(da, block_bytes)) if da.ndim else 1
               for da in ds.data_vars.values())


def _json_attr(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, np.number)):
        return value
    return json.dumps(value, default=str)


def _dims_text(da: xr.DataArray) -> str:
    return ",".join(str(d) for d in da.dims)


class _Writer:
    """Streams the variables of Datasets into HDF5-based files, counting what it reads."""

    def __init__(self, *, block_bytes: int, progress: Progress | None, total: int) -> None:
        self.block_bytes = block_bytes
        self.progress = progress
        self.total = total
        self.done = 0
        self.bytes_read = 0

    def blocks(self, da: xr.DataArray) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, values) blocks of `da` along its first axis, read from the store lazily."""
        if da.ndim == 0:
            value = np.asarray(da.values)
            self.bytes_read += value.nbytes
            yield slice(None), value
            self._tick()
            return
        step = _row_step(da, self.block_bytes)
        for start in range(0, da.shape[0], step):
            rows = slice(start, min(start + step, da.shape[0]))
            value = np.asarray(da[rows].values)
            self.bytes_read += value.nbytes
            yield rows, value
            self._tick()

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    # -- plain HDF5 ------------------------------------------------------------------------
    def hdf5_group(self, group: h5py.Group, ds: xr.Dataset) -> None:
        for key, value in ds.attrs.items():
            group.attrs[key] = _json_attr(value)
        scales: dict[str, list[h5py.Dataset]] = {}
        for name, coord in ds.coords.items():
            values = np.asarray(coord.values)
            if values.dtype.kind in "OU":
                values = values.astype(h5py.string_dtype())
            dset = group.create_dataset(str(name), data=values)
            self._attrs(dset, coord)
            if coord.ndim == 1:
                dset.make_scale(str(name))
                scales.setdefault(str(coord.dims[0]), []).append(dset)
        for name, da in ds.data_vars.items():
            rows_per_chunk = _row_step(da, self.block_bytes)
            dset = group.create_dataset(str(name), shape=da.shape, dtype=da.dtype,
                                        chunks=_h5_chunks(da.shape, rows_per_chunk))
            for rows, value in self.blocks(da):
                dset[rows] = value
            self._attrs(dset, da)
            for axis, dim in enumerate(da.dims):
                for scale in scales.get(str(dim), []):
                    dset.dims[axis].attach_scale(scale)
                dset.dims[axis].label = str(dim)

    @staticmethod
    def _attrs(dset: h5py.Dataset, da: xr.DataArray) -> None:
        for key, value in da.attrs.items():
            dset.attrs[key] = _json_attr(value)
        dset.attrs["dims"] = _dims_text(da)

    # -- MATLAB v7.3 -----------------------------------------------------------------------
    def mat_file(self, path: Path, datasets: dict[str, xr.Dataset]) -> None:
        import hdf5storage

        structs: dict[str, dict[str, Any]] = {}
        for item, ds in datasets.items():
            fields: dict[str, Any] = {}
            for name, coord in ds.coords.items():
                fields[_mat_name(name)] = _mat_small(np.asarray(coord.values))
            for name, da in ds.data_vars.items():  # placeholders, streamed in below
                fields[_mat_name(name)] = np.zeros((1, 1), da.dtype)
            every = {**ds.coords, **ds.data_vars}
            fields["units"] = {_mat_name(n): str(v.attrs.get("units", "")) for n, v in
                               every.items()}
            fields["long_name"] = {_mat_name(n): str(v.attrs.get("long_name", n)) for n, v in
                                   every.items()}
            fields["dims"] = {_mat_name(n): _dims_text(v) for n, v in every.items()}
            fields["attrs"] = {_mat_name(k): _mat_attr(v) for k, v in ds.attrs.items()}
            structs[item] = fields
        hdf5storage.savemat(str(path), structs, appendmat=False, store_python_metadata=False,
                            truncate_existing=True)
        with h5py.File(path, "a") as f:
            for item, ds in datasets.items():
                for name, da in ds.data_vars.items():
                    self._mat_stream(f[item], _mat_name(name), da)

    def _mat_stream(self, group: h5py.Group, name: str, da: xr.DataArray) -> None:
        """Replace the placeholder `name` by `da`, axes reversed (MATLAB sees the store order)."""
        del group[name]
        stored = _MAT_COMPLEX.get(da.dtype, da.dtype)
        shape = da.shape[::-1] or (1, 1)
        step = _row_step(da, self.block_bytes)
        dset = group.create_dataset(name, shape=shape, dtype=stored,
                                    chunks=_h5_chunks(da.shape, step)[::-1] if da.ndim else None)
        dset.attrs["MATLAB_class"] = np.bytes_(_MAT_CLASS[da.dtype.str[1:]])
        for rows, value in self.blocks(da):
            block = np.ascontiguousarray(value.T if value.ndim else value.reshape(1, 1))
            if da.dtype.kind == "c":
                block = block.view(stored).reshape(block.shape)
            if da.ndim:
                dset[..., rows] = block
            else:
                dset[...] = block

    # -- UFF (USTB) ------------------------------------------------------------------------
    def uff_item(self, path: Path, item: str, ds: xr.Dataset) -> None:
        import pyuff_ustb as uff

        if "depth_m" not in ds.coords or "lateral_m" not in ds.coords:
            raise StoreError(f"{item}: the store has no depth_m/lateral_m grid; UFF needs a scan")
        scan = uff.LinearScan(x_axis=np.asarray(ds.lateral_m.values, np.float64),
                              z_axis=np.asarray(ds.depth_m.values, np.float64))
        attrs = ds.attrs
        base = {"sound_speed": attrs.get("sound_speed"), "initial_time": attrs.get("initial_time"),
                "PRF": attrs.get("PRF")}
        if item == "maps":
            for name, da in ds.data_vars.items():
                self._uff_beamformed(path, f"b_data_map_{name}", da, scan, attrs, {
                    **base, "variable": name, "units": da.attrs.get("units"),
                    "frames": "SWEI sequences", "keys": [str(k) for k in ds.seq.values]})
            return
        var = "iq" if item == "iq" else "displacement_m"
        da = ds[var]
        for i in range(da.shape[0]):
            self._uff_beamformed(path, f"b_data_{item}_{i + 1:04d}", da[i], scan, attrs, {
                **base, "variable": var, "units": da.attrs.get("units"),
                "record_key": str(ds.seq.values[i]), "frames": str(da.dims[1])})

    def _uff_beamformed(self, path: Path, location: str, da: xr.DataArray, scan: Any,
                        attrs: dict[str, Any], info: dict[str, Any]) -> None:
        """One ``uff.beamformed_data`` of `da` (frame, depth, lateral), streamed by frames."""
        import pyuff_ustb as uff

        n_frames, depth, lateral = da.shape
        bf = uff.BeamformedData(scan=scan, data=np.zeros((1, 1, 1, 1), da.dtype),
                                name=info.get("record_key", location), info=json.dumps(info))
        for key in ("sampling_frequency", "modulation_frequency"):
            if key in attrs:
                setattr(bf, key, float(attrs[key]))
        if "PRF" in attrs:
            bf.frame_rate = round(float(attrs["PRF"]))
        bf.write(str(path), location)
        shape = (n_frames, 1, 1, depth * lateral)
        step = _row_step(da, self.block_bytes)
        with h5py.File(path, "a") as f:
            group = f[location]
            parts = ("real", "imag") if da.dtype.kind == "c" else (None,)
            targets = {}
            for part in parts:
                old = group["data"][part] if part else group["data"]
                kept = dict(old.attrs)
                parent = group["data"] if part else group
                leaf = part or "data"
                del parent[leaf]
                real = np.zeros((), da.dtype).real.dtype
                targets[part] = parent.create_dataset(leaf, shape=shape, dtype=real,
                                                      chunks=(min(step, n_frames), 1, 1,
                                                              depth * lateral))
                targets[part].attrs.update(kept)
            for rows, value in self.blocks(da):
                # pixels z-fastest (USTB linear scan): (frame, lateral, depth) flattened
                pixels = value.transpose(0, 2, 1).reshape(value.shape[0], 1, 1, -1)
                for part, dset in targets.items():
                    dset[rows] = pixels.imag if part == "imag" else pixels.real


def _h5_chunks(shape: tuple[int, ...], rows: int) -> tuple[int, ...] | None:
    if not shape or 0 in shape:
        return None
    return (min(rows, shape[0]), *shape[1:])


def _mat_name(name: Any) -> str:
    """A valid MATLAB identifier (letters, digits, underscores; starts with a letter)."""
    text = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))
    if not text or not text[0].isalpha():
        text = "v_" + text
    return text[:63]


def _mat_small(values: np.ndarray) -> Any:
    if values.dtype.kind in "OU":
        return np.array([str(v) for v in values.ravel()], dtype=object)
    return values


def _mat_attr(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value, dtype=np.float64)
    return json.dumps(value, default=str)
