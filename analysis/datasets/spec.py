"""A dataset file: which session stores, in which role, labelled by which indentation store.

A lab indents cylinders one day and scans blocks on others; each session has its own store. A
small TOML file names them::

    name = "gelatin-november"

    [[labels]]                      # indentation stores with `elastolab analyze labels` done
    store = "indent-2026-11-02.zarr"
    batch = "G-2026-11-02"          # the gelatin batch the cylinders were cast from

    [[stores]]
    path = "swei-2026-11-03.zarr"
    role = "train"                  # train | validation | test | predict
    batch = "G-2026-11-02"          # its blocks come from that batch: those labels apply

    [[stores]]
    path = "swei-2026-11-04.zarr"
    role = "test"
    batch = "G-2026-11-02"

Relative paths are relative to the file. A store without ``batch`` uses its own targets (its
``labels`` group or the phantom table); a store whose batch has no label source is an error.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ROLES", "DatasetError", "DatasetSpec", "LabelSource", "StoreEntry", "load_spec"]

Role = Literal["train", "validation", "test", "predict"]
ROLES: tuple[str, ...] = ("train", "validation", "test", "predict")


class DatasetError(ValueError):
    """A dataset file that cannot be used as written."""


@dataclass(frozen=True)
class StoreEntry:
    """One session store of a dataset: its path, role and gelatin batch (None: its own)."""

    path: Path
    role: Role
    batch: str | None = None


@dataclass(frozen=True)
class LabelSource:
    """An indentation store whose ``labels`` apply to the SWEI stores of `batch`."""

    store: Path
    batch: str


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset file (see the module docstring)."""

    name: str
    stores: tuple[StoreEntry, ...]
    labels: tuple[LabelSource, ...] = ()
    source: Path | None = None

    def with_role(self, *roles: str) -> tuple[StoreEntry, ...]:
        return tuple(s for s in self.stores if s.role in roles)

    def label_store(self, batch: str) -> Path:
        for source in self.labels:
            if source.batch == batch:
                return source.store
        raise DatasetError(f"dataset {self.name!r}: no [[labels]] entry for gelatin batch "
                           f"{batch!r}; batches with labels: {[s.batch for s in self.labels]}")


def _table(item: object, where: str, allowed: set[str]) -> dict[str, object]:
    if not isinstance(item, dict):
        raise DatasetError(f"{where} must be a table")
    unknown = set(item) - allowed
    if unknown:
        raise DatasetError(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    return item


def load_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Parse and check a dataset TOML file; raises DatasetError naming the problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the dataset file: {exc}") from exc
    _table(raw, str(path), {"name", "stores", "labels"})
    base = path.resolve().parent

    def resolve(value: object, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise DatasetError(f"{where} must be a path string")
        p = Path(value)
        return p if p.is_absolute() else base / p

    stores = []
    for i, item in enumerate(raw.get("stores", [])):
        where = f"{path}: stores[{i}]"
        entry = _table(item, where, {"path", "role", "batch"})
        role = entry.get("role")
        if role not in ROLES:
            raise DatasetError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        batch = entry.get("batch")
        if batch is not None and not isinstance(batch, str):
            raise DatasetError(f"{where}: batch must be a string")
        stores.append(StoreEntry(resolve(entry.get("path"), f"{where}.path"), role, batch))
    if not stores:
        raise DatasetError(f"{path}: a dataset needs at least one [[stores]] entry")
    if len({s.path for s in stores}) != len(stores):
        raise DatasetError(f"{path}: a store is listed twice")
    labels = []
    for i, item in enumerate(raw.get("labels", [])):
        where = f"{path}: labels[{i}]"
        entry = _table(item, where, {"store", "batch"})
        if not isinstance(entry.get("batch"), str):
            raise DatasetError(f"{where}: batch (the gelatin batch, a string) is required")
        labels.append(LabelSource(resolve(entry.get("store"), f"{where}.store"),
                                  str(entry["batch"])))
    if len({s.batch for s in labels}) != len(labels):
        raise DatasetError(f"{path}: two label sources for one batch")
    spec = DatasetSpec(str(raw.get("name", path.stem)), tuple(stores), tuple(labels), path)
    for s in spec.stores:
        if s.batch is not None:
            spec.label_store(s.batch)  # raises when the batch has no label source
    return spec
