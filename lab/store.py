"""The session store: one Zarr v3 group per session, append-only tables with atomic commits.

Layout and guarantees are documented in ``docs/dataset.md``. In short:

* A *table* is a Zarr group whose arrays share a leading row axis (``seq`` for SWEI sequences,
  ``sample`` for indentation samples, ``pair`` for compression pairs, ...). Every array carries
  ``dimension_names`` so ``xarray.open_zarr(path, group=table)`` gives labelled arrays.
* :meth:`Table.append` adds one *record* (one unit of work: a sequence, an indentation run)
  of ``n_rows`` rows to every array of a table. Data is written first; the record becomes visible
  only when the table's commit attributes (``committed_rows``, ``records``) are rewritten. Zarr's
  local store replaces ``zarr.json`` atomically (temp file + rename), so after an exception or a
  ``kill -9`` a record is either complete and listed, or absent. Rows written past the committed
  length by an interrupted append are trimmed when the store is reopened for append (or by
  ``elastolab verify --repair``).
* Group attributes hold provenance (:mod:`lab.provenance`): the config, package version, git
  commit, host, times.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.core.sync import sync as _sync

from lab.provenance import package_version, plan_hash, provenance, utc_now
from lab.variables import current_dims, variable_attrs

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STORE_FORMAT = "elastolab-session"
LOG_DIR = "logs"


class StoreError(RuntimeError):
    """A problem with a session store: missing, incompatible, or given inconsistent data."""


@dataclass(frozen=True)
class ArraySpec:
    """One array of a table.

    Parameters
    ----------
    name : str
        Array name inside the table group.
    row_shape : tuple of int
        Shape of one row (everything after the leading row axis).
    dtype : str
        NumPy dtype string, e.g. ``"complex64"``, ``"int16"``, ``"float32"``.
    dims : tuple of str
        Dimension names of the *whole* array, row axis first, e.g.
        ``("seq", "frame", "depth", "lateral")``.
    row_chunk : int, optional
        Rows per chunk along the row axis. Default: 1 for image-like rows (2-D or more, so one
        sequence is one chunk-row), otherwise enough rows for about 256 KiB per chunk (scalar
        samples such as force streams would otherwise cost one file per sample).
    inner_chunks : tuple of int, optional
        Chunk shape of the other axes; default the full row shape.
    attrs : mapping
        Extra attributes (units, grids) stored on the array.
    """

    name: str
    row_shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    row_chunk: int | None = None
    inner_chunks: tuple[int, ...] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.row_shape) + 1:
            raise StoreError(
                f"array {self.name!r}: {len(self.dims)} dimension names for "
                f"{len(self.row_shape) + 1} axes (row axis + {self.row_shape})"
            )
        if self.row_chunk is not None and self.row_chunk < 1:
            raise StoreError(f"array {self.name!r}: row_chunk must be >= 1")
        np.dtype(self.dtype)  # raises TypeError on nonsense
        if self.row_chunk is None:
            n_values = int(np.prod(self.row_shape, dtype=np.int64))
            row_nbytes = n_values * np.dtype(self.dtype).itemsize
            auto = 1 if len(self.row_shape) >= 2 else max(1, (256 * 1024) // max(row_nbytes, 1))
            object.__setattr__(self, "row_chunk", auto)

    @property
    def chunks(self) -> tuple[int, ...]:
        inner = self.inner_chunks if self.inner_chunks is not None else self.row_shape
        inner = tuple(max(1, c) for c in inner)
        assert self.row_chunk is not None  # set in __post_init__
        return (self.row_chunk, *inner)

    def schema(self) -> dict[str, Any]:
        return {"row_shape": list(self.row_shape), "dtype": np.dtype(self.dtype).str,
                "dims": list(self.dims)}


def _compressor(dtype: np.dtype) -> BloscCodec:
    # zstd level 1 with byte shuffle: fast enough to keep up with acquisition (bench/store_write.py)
    # and still compresses int16 RF and quantised force samples well.
    return BloscCodec(cname="zstd", clevel=1, shuffle=BloscShuffle.shuffle,
                      typesize=dtype.itemsize if dtype.kind != "c" else dtype.itemsize // 2)


def _to_json(value: Any) -> Any:
    """Round-trip through JSON so attributes never hold NumPy scalars or tuples."""
    return json.loads(json.dumps(value, default=json_default))


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays, paths and datetimes."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class Table:
    """An append-only table of a :class:`SessionStore` (see module docstring)."""

    def __init__(self, group: zarr.Group, writable: bool) -> None:
        self._group = group
        self._writable = writable

    @property
    def name(self) -> str:
        return self._group.basename

    @property
    def group(self) -> zarr.Group:
        return self._group

    @property
    def row_dim(self) -> str:
        return str(self._group.attrs["row_dim"])

    @property
    def schema(self) -> dict[str, dict[str, Any]]:
        return dict(self._group.attrs["schema"])

    @property
    def committed_rows(self) -> int:
        """Rows that belong to committed records; arrays may be longer after an interruption."""
        return int(self._group.attrs["committed_rows"])

    @property
    def records(self) -> list[dict[str, Any]]:
        """Committed records in order: ``{"key", "start", "stop", "meta"}`` (rows [start, stop))."""
        return list(self._group.attrs["records"])

    def __len__(self) -> int:
        return len(self._group.attrs["records"])

    def keys(self) -> list[str]:
        return [r["key"] for r in self.records]

    def __contains__(self, key: str) -> bool:
        return key in set(self.keys())

    def array(self, name: str) -> zarr.Array:
        if name not in self.schema:
            raise StoreError(
                f"table {self.name!r} has no array {name!r}; has {sorted(self.schema)}"
            )
        return _with_all_chunks(self._group[name])  # type: ignore[arg-type]

    def read(self, name: str, record: int | str | None = None) -> NDArray[Any]:
        """Committed rows of array ``name``: all of them, or those of one record (index or key)."""
        arr = self.array(name)
        if record is None:
            return np.asarray(arr[: self.committed_rows])
        rec = self._record(record)
        return np.asarray(arr[rec["start"] : rec["stop"]])

    def _record(self, record: int | str) -> dict[str, Any]:
        records = self.records
        if isinstance(record, str):
            for r in records:
                if r["key"] == record:
                    return r
            raise KeyError(f"table {self.name!r} has no record {record!r}")
        return records[record]

    def append(
        self, key: str, data: Mapping[str, ArrayLike], meta: Mapping[str, Any] | None = None
    ) -> int:
        """Append one record atomically; returns its index.

        ``data`` must give every array of the table, each shaped ``(n_rows, *row_shape)`` with the
        same ``n_rows`` >= 1 (for one-row-per-record tables, ``n_rows`` = 1). Values are cast to
        the array's dtype only when that is lossless for the kind (int into int, float into
        float, ...); anything else raises before a byte is written.
        """
        if not self._writable:
            raise StoreError(f"table {self.name!r} is open read-only")
        if key in self:
            raise StoreError(f"table {self.name!r} already has a record {key!r}")
        schema = self.schema
        missing = set(schema) - set(data)
        extra = set(data) - set(schema)
        if missing or extra:
            raise StoreError(
                f"table {self.name!r}: record {key!r} is missing {sorted(missing)}"
                f" and has unknown {sorted(extra)}" if extra else
                f"table {self.name!r}: record {key!r} is missing arrays {sorted(missing)}"
            )
        arrays: dict[str, np.ndarray] = {}
        n_rows: int | None = None
        for name, spec in schema.items():
            value = np.asarray(data[name])
            want = tuple(spec["row_shape"])
            dtype = np.dtype(spec["dtype"])
            if value.shape[1:] != want or value.ndim != len(want) + 1:
                raise StoreError(
                    f"table {self.name!r}, array {name!r}: rows must be shaped (n, {want}), "
                    f"got {value.shape}"
                )
            if n_rows is None:
                n_rows = value.shape[0]
            elif value.shape[0] != n_rows:
                raise StoreError(
                    f"table {self.name!r}: arrays of record {key!r} have different row counts "
                    f"({name!r} has {value.shape[0]}, others {n_rows})"
                )
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise StoreError(
                    f"table {self.name!r}, array {name!r}: cannot store {value.dtype} as {dtype}"
                )
            arrays[name] = value.astype(dtype, copy=False)
        assert n_rows is not None
        if n_rows < 1:
            raise StoreError(f"table {self.name!r}: record {key!r} has no rows")

        start = self.committed_rows
        stop = start + n_rows
        _sync(_write_rows(self._group, arrays, start, stop))
        # The commit: one atomic rewrite of the table's zarr.json. (Not ``attrs.update``: zarr's
        # Attributes inherits MutableMapping.update, which rewrites the file once per key.)
        records = self.records
        meta_json = _to_json(dict(meta or {}))
        records.append({"key": key, "start": start, "stop": stop, "meta": meta_json})
        self._group.update_attributes({"committed_rows": stop, "records": records})
        return len(records) - 1

    def discard_uncommitted(self) -> int:
        """Trim rows past the committed length (left by an interrupted append); returns how many."""
        committed = self.committed_rows
        trimmed = 0
        for name in self.schema:
            arr = self._group[name]
            if arr.shape[0] > committed:
                trimmed = max(trimmed, arr.shape[0] - committed)
                arr.resize((committed, *arr.shape[1:]))
        return trimmed

    def truncate(self, n_records: int) -> int:
        """Keep only the first ``n_records`` committed records; returns how many were dropped.

        Used to discard the records of a unit of work that was interrupted before it completed
        (the session runner rolls every table back to the lengths saved with the last completed
        unit). The index is rewritten first (atomic), then the arrays are trimmed; a crash in
        between leaves uncommitted rows that the next append-mode open trims.
        """
        if not self._writable:
            raise StoreError(f"table {self.name!r} is open read-only")
        records = self.records
        if not 0 <= n_records <= len(records):
            raise StoreError(f"table {self.name!r}: cannot keep {n_records} of {len(records)} "
                             "records")
        dropped = len(records) - n_records
        if dropped:
            kept = records[:n_records]
            rows = kept[-1]["stop"] if kept else 0
            self._group.update_attributes({"committed_rows": rows, "records": kept})
            self.discard_uncommitted()
        return dropped

    def update_meta(self, key: str, **values: Any) -> None:
        """Add fields to a committed record's metadata (e.g. analysis results)."""
        records = self.records
        for r in records:
            if r["key"] == key:
                r["meta"].update(_to_json(values))
                self._group.attrs["records"] = records
                return
        raise KeyError(f"table {self.name!r} has no record {key!r}")


def _damaged(path: Path, where: str, what: str) -> StoreError:
    return StoreError(f"{path}: damaged store: {where}: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_table_attrs(path: Path, where: str, attrs: Mapping[str, Any]) -> None:
    """The bookkeeping attributes of a table group have the types the store writes."""
    if not isinstance(attrs.get("row_dim"), str):
        raise _damaged(path, where, f"row_dim {attrs.get('row_dim')!r} is not a name")
    rows = attrs.get("committed_rows")
    if not _is_int(rows) or rows < 0:
        raise _damaged(path, where, f"committed_rows {rows!r} is not a non-negative integer")
    schema = attrs.get("schema")
    if not isinstance(schema, dict) or not all(isinstance(v, dict) for v in schema.values()):
        raise _damaged(path, where, "schema attribute is not a mapping of array specs")
    records = attrs.get("records")
    if not isinstance(records, list):
        raise _damaged(path, where, f"records attribute is a {type(records).__name__}, "
                                    "not a list")
    for k, rec in enumerate(records):
        if not (isinstance(rec, dict) and isinstance(rec.get("key"), str)
                and _is_int(rec.get("start")) and _is_int(rec.get("stop"))):
            raise _damaged(path, where, f"record {k} is not {{key: str, start: int, stop: int}}: "
                                        f"{str(rec)[:80]}")


def _members(group: zarr.Group) -> list[tuple[str, Any]]:
    """A group's members. Plain files beside them are expected and not warned about: the
    session log, the runner lock, and the ``*.partial`` files zarr writes a chunk to before
    renaming it (seen by a reader, such as the monitor, while a session writes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        return list(group.members())


def _check_session_attrs(path: Path, attrs: Mapping[str, Any]) -> None:
    """Root attributes the runner reads back: progress, config, plan."""
    progress = attrs.get("progress")
    if progress is not None:
        ok = (isinstance(progress, dict) and isinstance(progress.get("completed", []), list)
              and all(isinstance(u, str) for u in progress.get("completed", []))
              and isinstance(progress.get("table_records", {}), dict))
        if not ok:
            raise _damaged(path, "/", f"progress attribute is not {{completed: [unit ids], "
                                      f"table_records: {{}}}}: {str(progress)[:80]}")
    if not isinstance(attrs.get("config", {}), dict):
        raise _damaged(path, "/", "config attribute is not a mapping")
    if not isinstance(attrs.get("plan") or {}, dict | list):
        raise _damaged(path, "/", "plan attribute is neither a mapping nor a list")


def _check_structure(path: Path, root: zarr.Group) -> None:
    """Read the metadata of every group and array once, and the bookkeeping attributes.

    Raises
    ------
    StoreError
        Naming the first member whose ``zarr.json`` cannot be read (malformed JSON, a symlink
        loop, an unreadable file) or whose attributes have the wrong types.
    """
    _check_session_attrs(path, root.attrs.asdict())

    def walk(group: zarr.Group, where: str) -> None:
        try:
            members = _members(group)
        except Exception as exc:  # JSON, OSError (ELOOP, EACCES), zarr metadata errors
            raise _damaged(path, where or "/", f"metadata of a member cannot be read "
                                               f"({type(exc).__name__}: {exc})") from exc
        arrays = {name for name, member in members if isinstance(member, zarr.Array)}
        for name, member in members:
            if isinstance(member, zarr.Group) and not (where == "" and name == LOG_DIR):
                attrs = member.attrs.asdict()
                if "row_dim" in attrs:
                    _check_table_attrs(path, f"{where}{name}", attrs)
                walk(member, f"{where}{name}/")
        attrs = group.attrs.asdict()
        for name in attrs.get("schema", {}) if "row_dim" in attrs else ():
            # an array written but unreadable (zarr skips it with a warning) is damage; one
            # never written is for verify to report
            if name not in arrays and (path / where / name / "zarr.json").exists():
                raise _damaged(path, f"{where}{name}", "array metadata (zarr.json) is not a "
                                                       "readable Zarr array")

    walk(root, "")


class SessionStore:
    """A session's Zarr v3 store. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, path: Path, root: zarr.Group, mode: Literal["r", "a"]) -> None:
        self.path = path
        self.root = root
        self.mode = mode

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        plan: Any = None,
        kind: str = "session",
        prepare: Callable[[SessionStore], None] | None = None,
    ) -> SessionStore:
        """Create a new store at ``path``; refuses to touch anything that already exists.

        Creation is atomic: the store is built in a hidden sibling directory
        (``.NAME.creating-PID``), ``prepare`` (if given) adds what the store must hold before
        anyone may see it (the runner's status and progress), and one rename puts it at
        ``path``. A kill at any instant leaves either no store at ``path`` or a complete one
        (a leftover hidden directory is harmless and can be deleted).
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} already exists; refusing to overwrite it (resume it or pick "
                             "another path)")
        staging = path.with_name(f".{path.name}.creating-{os.getpid()}")
        if staging.exists():
            _rmtree(staging)
        root = zarr.open_group(str(staging), mode="w-", zarr_format=3)
        try:
            root.update_attributes(
                {
                    "format": STORE_FORMAT,
                    "schema_version": SCHEMA_VERSION,
                    "kind": kind,
                    **provenance(),
                    "config": _to_json(dict(config or {})),
                    "plan_hash": plan_hash(plan) if plan is not None else None,
                    "plan": _to_json(plan) if plan is not None else None,
                    "sessions": [],
                }
            )
            root.require_group(LOG_DIR).attrs["description"] = "plain-text session logs"
            if prepare is not None:
                prepare(cls(staging, root, "a"))
            if path.exists():
                raise StoreError(f"{path} appeared while the store was being created; left it "
                                 "alone")
            os.rename(staging, path)
        except BaseException:
            _rmtree(staging)
            raise
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: Literal["r", "a"] = "r") -> SessionStore:
        """Open an existing store. ``mode="a"`` checks the schema and trims interrupted appends."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a Zarr v3 store (no zarr.json); nothing opened")
        try:
            root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{path}: cannot open as a Zarr v3 group: {exc}") from exc
        attrs = root.attrs.asdict()
        if attrs.get("format") != STORE_FORMAT:
            raise StoreError(f"{path} is a Zarr group but not an elastolab session store "
                             f"(format attribute {attrs.get('format')!r})")
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store schema version {version}; this elastolab reads version "
                f"{SCHEMA_VERSION}. Use a matching elastolab version or convert the store."
            )
        _check_structure(path, root)
        store = cls(path, root, mode)
        if mode == "a":
            for table in store.tables():
                trimmed = store.table(table).discard_uncommitted()
                if trimmed:
                    log.warning("%s: discarded %d uncommitted rows of table %r left by an "
                                "interrupted write", path, trimmed, table)
        return store

    # -- attributes ------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return self.root.attrs.asdict()

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.root.attrs.get("config", {}))

    @property
    def plan(self) -> Any:
        return self.root.attrs.get("plan")

    def set_attrs(self, **values: Any) -> None:
        self._check_writable()
        self.root.update_attributes(_to_json(values))

    def log_path(self) -> Path:
        """File that session logs go to (a plain text file inside the store directory)."""
        return self.path / LOG_DIR / "session.log"

    # -- tables ----------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Paths of all tables (groups with a ``row_dim`` attribute), nested ones included."""
        found: list[str] = []

        def walk(group: zarr.Group, prefix: str) -> None:
            for name, member in sorted(_members(group)):
                if isinstance(member, zarr.Group) and not (prefix == "" and name == LOG_DIR):
                    path = f"{prefix}{name}"
                    if "row_dim" in member.attrs:
                        found.append(path)
                    walk(member, path + "/")

        walk(self.root, "")
        return found

    def has_table(self, path: str) -> bool:
        return path in self.tables()

    def table(self, path: str) -> Table:
        try:
            group = self.root[path]
        except KeyError:
            raise StoreError(
                f"{self.path}: no table {path!r}; tables are {self.tables()}"
            ) from None
        if not isinstance(group, zarr.Group) or "row_dim" not in group.attrs:
            raise StoreError(f"{self.path}: {path!r} is not a table")
        return Table(group, writable=self.mode == "a")

    def require_table(
        self, path: str, *, row_dim: str, arrays: Sequence[ArraySpec],
        attrs: Mapping[str, Any] | None = None,
    ) -> Table:
        """Create table ``path`` or check that the existing one has exactly this schema."""
        for spec in arrays:
            if spec.dims[0] != row_dim:
                raise StoreError(f"array {spec.name!r}: first dimension must be {row_dim!r}")
        schema = {s.name: s.schema() for s in arrays}
        if path in self.root:
            table = self.table(path)
            if table.row_dim != row_dim or not _same_schema(path, table.schema, schema):
                raise StoreError(
                    f"{self.path}: table {path!r} exists with a different schema; this store was "
                    f"written by another configuration or version.\n  stored:   "
                    f"{json.dumps(table.schema, sort_keys=True)}\n  expected: "
                    f"{json.dumps(schema, sort_keys=True)}"
                )
            return table
        self._check_writable()
        group = self.root.require_group(path)
        for spec in arrays:
            dtype = np.dtype(spec.dtype)
            group.create_array(
                spec.name,
                shape=(0, *spec.row_shape),
                chunks=spec.chunks,
                dtype=dtype,
                dimension_names=spec.dims,
                compressors=_compressor(dtype),
                fill_value=0,
                config={"write_empty_chunks": True},
                attributes=_to_json({**variable_attrs(spec.name), **dict(spec.attrs)}),
            )
        group.update_attributes({"row_dim": row_dim, "schema": schema, "committed_rows": 0,
                            "records": [], **_to_json(dict(attrs or {}))})
        return Table(group, writable=True)

    # -- whole arrays written by analysis ---------------------------------------------------
    def write_array(
        self, path: str, data: ArrayLike, *, dims: Sequence[str],
        chunks: Sequence[int] | None = None, attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False, allow_nan: bool = False,
    ) -> zarr.Array:
        """Write a complete array (analysis output) with dimension names and attributes.

        The array is written under a temporary name and renamed into place only when complete,
        so a crash never leaves a half-written result under ``path``. ``allow_nan`` marks arrays
        where NaN means "no estimate" (rejected pixels of a map), so ``verify`` accepts it there.
        """
        self._check_writable()
        value = np.asarray(data)
        if len(dims) != value.ndim:
            raise StoreError(f"{path}: {len(dims)} dimension names for a {value.ndim}-d array")
        if path in self.root and not overwrite:
            raise StoreError(f"{self.path}: {path!r} exists; pass overwrite=True to replace it")
        parent, _, name = path.rpartition("/")
        group = self.root.require_group(parent) if parent else self.root
        tmp_name = f".{name}.writing"
        if tmp_name in group:
            del group[tmp_name]
        arr = group.create_array(
            tmp_name, shape=value.shape, dtype=value.dtype,
            chunks=tuple(chunks) if chunks is not None else value.shape or (1,),
            dimension_names=tuple(dims), compressors=_compressor(value.dtype),
            fill_value=0, config={"write_empty_chunks": True},
            attributes=_to_json({**variable_attrs(name), **dict(attrs or {}),
                                 "allow_nan": allow_nan,
                                 "written_utc": utc_now(),
                                 "elastolab_version": package_version()}),
        )
        _with_all_chunks(arr)[...] = value
        final_dir = self.path / path
        tmp_dir = self.path / (f"{parent}/{tmp_name}" if parent else tmp_name)
        if final_dir.exists():
            old = final_dir.with_name(f".{name}.old")
            os.replace(final_dir, old)
            os.replace(tmp_dir, final_dir)
            _rmtree(old)
        else:
            os.replace(tmp_dir, final_dir)
        return self.root[path]  # type: ignore[return-value]

    def read_array(self, path: str) -> NDArray[Any]:
        try:
            return np.asarray(self.root[path][...])
        except KeyError:
            raise StoreError(f"{self.path}: no array {path!r}") from None

    # -- small JSON documents (phantom table, interruptions, labels) ------------------------
    def append_event(self, group: str, event: Mapping[str, Any]) -> None:
        """Append a JSON event to ``group``'s ``events`` attribute (interruptions, pauses, ...)."""
        self._check_writable()
        g = self.root.require_group(group)
        events = list(g.attrs.get("events", []))
        events.append(_to_json({"utc": utc_now(), **dict(event)}))
        g.attrs["events"] = events

    def events(self, group: str) -> list[dict[str, Any]]:
        if group not in self.root:
            return []
        return list(self.root[group].attrs.get("events", []))

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")


def _same_schema(path: str, stored: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Whether a stored table schema is `expected`, allowing dimension names of earlier versions
    (:data:`lab.variables.LEGACY_DIMS`): a store written before a rename keeps appending."""
    stored, expected = _to_json(dict(stored)), _to_json(dict(expected))
    if stored == expected:
        return True
    if set(stored) != set(expected):
        return False
    for name, spec in stored.items():
        renamed = {**spec, "dims": list(current_dims(path, name, tuple(spec["dims"])))}
        if renamed != expected[name]:
            return False
    return True


async def _write_rows(group: zarr.Group, arrays: Mapping[str, NDArray[Any]], start: int,
                      stop: int) -> None:
    """Write rows ``[start, stop)`` of every array of a table group, all arrays at once (one
    trip to Zarr's event loop, their chunk writes concurrent); raises the first error after
    every write has ended, so nothing is still writing when the caller handles it."""

    async def write(name: str, value: NDArray[Any]) -> None:
        member = await group._async_group.getitem(name)  # the sync Group wraps this AsyncGroup
        array = member.with_config({"write_empty_chunks": True})  # see _with_all_chunks
        if array.shape[0] != stop:
            await array.resize((stop, *array.shape[1:]))
        await array.setitem(slice(start, stop), value)

    results = await asyncio.gather(*(write(n, v) for n, v in arrays.items()),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _with_all_chunks(array: zarr.Array) -> zarr.Array:
    """The array configured to write every chunk, even one equal to the fill value.

    Zarr skips chunks that equal the fill value by default and does not persist that runtime
    setting; we need every chunk on disk so that ``verify`` can tell lost data from zeros.
    """
    return array.with_config({"write_empty_chunks": True})


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
