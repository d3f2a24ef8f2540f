"""Datasets across sessions on the stores: batch labels, one training set, Dask across stores.

* :func:`batch_labels` -- the ``labels`` of each label source, per gelatin batch.
* :func:`load_dataset` -- every SWEI store of a dataset as one
  :class:`analysis.swei_cnn.data.SweiTrainingSet` (stores stay on disk: sequences are read when
  used), targets from the label source of each store's gelatin batch, plus each sequence's role
  and store; :func:`roles_split` turns the roles into the train/validation/test split.
* :func:`run_displacement_all` -- ``analyze displacement`` on many stores as Dask tasks (local
  processes, threads, or a ``dask.distributed`` cluster).
* :func:`run_predict_dataset` -- maps for the stores of given roles, scored against the batch
  labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analysis.datasets.spec import DatasetError, DatasetSpec, load_spec
from analysis.runners import run_displacement
from analysis.swei_cnn.data import Split, SweiTrainingSet
from analysis.swei_cnn.runners import load_swei_training_set, run_predict, run_train
from lab.store import SessionStore

__all__ = ["DatasetSet", "batch_labels", "load_dataset", "roles_split", "run_displacement_all",
           "run_predict_dataset", "run_train_dataset"]


def _spec(spec: DatasetSpec | str | os.PathLike[str]) -> DatasetSpec:
    return spec if isinstance(spec, DatasetSpec) else load_spec(spec)


def batch_labels(spec: DatasetSpec | str | os.PathLike[str]) -> dict[str, dict[float, float]]:
    """``{batch: {gelatin_percent: youngs_modulus_kpa}}`` from each label source's ``labels``."""
    spec = _spec(spec)
    out: dict[str, dict[float, float]] = {}
    for source in spec.labels:
        store = SessionStore.open(source.store, "r")
        if "labels" not in store.root or not store.root["labels"].attrs.get("labels"):
            raise DatasetError(f"{source.store}: no labels (run `elastolab analyze labels` on "
                               f"this indentation store for batch {source.batch!r})")
        out[source.batch] = {round(float(lab["gelatin_percent"]), 3):
                             float(lab["youngs_modulus_kpa"])
                             for lab in store.root["labels"].attrs["labels"]}
    return out


class _Stacked:
    """Sequences of several on-disk arrays, indexed as one ``(seq, ...)`` array."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [int(np.shape(p)[0]) for p in self.parts])
        self.shape = (int(self.starts[-1]), *np.shape(self.parts[0])[1:])

    def __getitem__(self, key: Any) -> Any:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if not isinstance(first, (int, np.integer)):
            raise TypeError("index the first axis with one sequence number")
        s = int(first) % self.shape[0]
        part = int(np.searchsorted(self.starts, s, side="right")) - 1
        return self.parts[part][(s - int(self.starts[part]), *rest)]


@dataclass(frozen=True)
class DatasetSet:
    """A dataset's SWEI sequences: the training set, and each sequence's role and store."""

    data: SweiTrainingSet
    roles: NDArray[np.str_]
    store_index: NDArray[np.intp]
    stores: tuple[Path, ...]


def load_dataset(spec: DatasetSpec | str | os.PathLike[str]) -> DatasetSet:
    """Every SWEI store of a dataset as one training set (targets by gelatin batch).

    Sequences keep their store's order, stores the file's order; phantom indices are made unique
    across stores (so splits by probe position never mix two sessions' phantoms); keys are
    ``"<store name>:<record key>"``.

    Raises
    ------
    DatasetError
        Stores with different image or frame shapes, a missing label source.
    lab.store.StoreError
        A store without displacement (run ``elastolab analyze displacement`` first).
    """
    spec = _spec(spec)
    labels = batch_labels(spec)
    sets = [load_swei_training_set(s.path, labels=None if s.batch is None else labels[s.batch])
            for s in spec.stores]
    shapes = {tuple(np.shape(d.displacement)[1:]) for d in sets}
    if len(shapes) != 1:
        raise DatasetError(f"dataset {spec.name!r}: stores have different (frame, depth, lateral)"
                           f" shapes {sorted(shapes)}; train on stores of one acquisition set-up")
    offsets = np.cumsum([0] + [int(d.phantom_index.max()) + 1 for d in sets])
    cat = np.concatenate
    maps = None
    if any(d.uses_map.any() for d in sets):
        maps = _Stacked([d.modulus_maps_kpa if d.modulus_maps_kpa is not None else
                         np.zeros((len(d), *d.image_shape), np.float32) for d in sets])
    data = SweiTrainingSet(
        displacement=_Stacked([d.displacement for d in sets]),
        youngs_modulus_kpa=cat([d.youngs_modulus_kpa for d in sets]),
        push_index=cat([d.push_index for d in sets]),
        position_index=cat([d.position_index for d in sets]),
        phantom_index=cat([d.phantom_index + offsets[i] for i, d in enumerate(sets)]),
        gelatin_percent=cat([d.gelatin_percent for d in sets]),
        uses_map=cat([d.uses_map for d in sets]), modulus_maps_kpa=maps,
        keys=[f"{s.path.name}:{k}" for s, d in zip(spec.stores, sets, strict=True)
              for k in d.keys],
        source=str(spec.source or spec.name))
    roles = cat([np.full(len(d), s.role) for s, d in zip(spec.stores, sets, strict=True)])
    store_index = cat([np.full(len(d), i, np.intp) for i, d in enumerate(sets)])
    return DatasetSet(data, roles, store_index, tuple(s.path for s in spec.stores))


def roles_split(dataset: DatasetSet) -> Split:
    """Train/validation/test indices from the stores' roles (``predict`` stores in none)."""
    idx = {r: np.flatnonzero(dataset.roles == r).astype(np.intp)
           for r in ("train", "validation", "test")}
    if idx["train"].size == 0:
        raise DatasetError("the dataset has no store with role 'train'")
    if idx["validation"].size == 0:
        raise DatasetError("the dataset has no store with role 'validation' (training picks its "
                           "model on it)")
    return Split(train=idx["train"], validation=idx["validation"], test=idx["test"],
                 description={"kind": "roles", "stores": {str(p): r for p, r in zip(
                     dataset.stores, [str(dataset.roles[dataset.store_index == i][0])
                                      if np.any(dataset.store_index == i) else "empty"
                                      for i in range(len(dataset.stores))], strict=True)}})


def run_displacement_all(
    spec: DatasetSpec | str | os.PathLike[str],
    *,
    scheduler: str = "threads",
    scheduler_address: str | None = None,
    num_workers: int | None = None,
    **kwargs: Any,
) -> dict[str, int]:
    """``run_displacement`` on every store of a dataset, one Dask task per store.

    ``scheduler`` is a local Dask scheduler (``"threads"``, ``"processes"``, ``"sync"``);
    ``scheduler_address`` a ``dask.distributed`` cluster whose workers see the stores at the same
    paths. Each task computes one store's sequences in its own thread (``num_workers=1`` inside
    the task), so stores are processed in parallel, each resumable as ``analyze displacement``.
    Returns sequences computed per store.
    """
    import dask

    paths = [str(s.path) for s in _spec(spec).stores]
    task = dask.delayed(_displacement_task, pure=False)
    tasks = [task(p, kwargs) for p in paths]
    if scheduler_address is not None:
        from dask.distributed import Client

        with Client(scheduler_address) as client:
            counts = client.compute(tasks, sync=True)
    else:
        counts = dask.compute(*tasks, scheduler=scheduler, num_workers=num_workers)
    return dict(zip(paths, (int(c) for c in counts), strict=True))


def _displacement_task(path: str, kwargs: dict[str, Any]) -> int:
    return run_displacement(path, num_workers=1, **kwargs)


def run_predict_dataset(
    spec: DatasetSpec | str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str],
    roles: Sequence[str] = ("test", "predict"),
    **kwargs: Any,
) -> dict[str, Any]:
    """Maps (``maps/cnn_kpa``) for the stores of `roles`, scored against their batch labels."""
    spec = _spec(spec)
    labels = batch_labels(spec)
    out = {}
    for entry in spec.with_role(*roles):
        out[str(entry.path)] = run_predict(
            entry.path, model_path=model_path,
            labels=None if entry.batch is None else labels[entry.batch], **kwargs)
    return out


def run_train_dataset(
    spec: DatasetSpec | str | os.PathLike[str], **kwargs: Any,
) -> dict[str, Any]:
    """:func:`analysis.swei_cnn.runners.run_train` on a dataset: the train, validation and test
    sequences are those of the stores with those roles (``kwargs`` as for ``run_train``, less
    the split options)."""
    spec = _spec(spec)
    dataset = load_dataset(spec)
    return run_train(str(spec.source or spec.name),
                     training_data=(dataset.data, roles_split(dataset)), **kwargs)
