"""Store runners of the SWEI CNN: read a session store, train or predict, write maps back.

The only modules of :mod:`analysis.swei_cnn` that open a :class:`lab.store.SessionStore`:
:func:`load_swei_training_set` (displacement, indices and targets of a store),
:func:`run_train` / :func:`run_predict` (behind ``elastolab train`` / ``predict``) and
:func:`write_synthetic_store` (a minimal store of synthetic sequences for tests and benchmarks).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from analysis.swei_cnn.data import (
    DEFAULT_ROI_PX,
    Split,
    SweiTrainingSet,
    concentration_split,
    position_fold_split,
)
from analysis.swei_cnn.dense import predict_map
from analysis.swei_cnn.evaluate import compare_with_tof, map_metrics
from analysis.swei_cnn.io import ModelCard, load_model, save_model
from analysis.swei_cnn.model import swei_cnn
from analysis.swei_cnn.synthetic import homogeneous_data_set
from analysis.swei_cnn.targets import inclusion_target_map
from analysis.swei_cnn.train import EpochMetrics, ProfileName, TrainingProfile, train
from lab.gelatin import GELATIN_YOUNGS_MODULUS_KPA, youngs_modulus_kpa
from lab.store import ArraySpec, SessionStore, StoreError

__all__ = [
    "MAP_PATH",
    "load_swei_training_set",
    "run_predict",
    "run_train",
    "write_synthetic_store",
]

MAP_PATH = "maps/cnn_kpa"
#: What :func:`run_predict` may write: ``maps/NAME_kpa``.
MAP_PATH_PATTERN = r"maps/[a-z][a-z0-9_]{0,39}_kpa"


TargetSource = Literal["auto", "truth", "geometry"]


class _GeometryMaps:
    """Per-pixel targets of the inclusion sequences only, indexed like a (seq, depth, lateral)
    array (``maps[s]`` or ``maps[s, rows, cols]``); homogeneous rows are never stored."""

    def __init__(self, n: int, image_shape: tuple[int, int],
                 maps: dict[int, NDArray[np.float32]]) -> None:
        self.shape = (n, *image_shape)
        self._maps = maps

    def __getitem__(self, key: Any) -> NDArray[np.float32]:
        seq, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        return self._maps[int(seq)][rest]


def _geometry_maps(swei: Any, phantoms: list[dict[str, Any]], uses_map: NDArray[np.bool_],
                   modulus_kpa_of: Callable[[float], float]) -> _GeometryMaps:
    attrs = swei.group.attrs
    depth_m, lateral_m = np.asarray(attrs["depth_m"]), np.asarray(attrs["lateral_m"])
    poses = swei.read("probe_pose")
    phantom_index = swei.read("phantom_index")
    maps = {int(s): inclusion_target_map(phantoms[int(phantom_index[s])], probe_pose=poses[s],
                                         depth_m=depth_m, lateral_m=lateral_m,
                                         modulus_kpa_of=modulus_kpa_of)
            for s in np.flatnonzero(uses_map)}
    return _GeometryMaps(len(uses_map), (depth_m.size, lateral_m.size), maps)


def load_swei_training_set(
    store_path: str | os.PathLike[str], *, labels: Mapping[float, float] | None = None,
    targets: TargetSource = "auto",
) -> SweiTrainingSet:
    """Read displacement, indices and targets of every SWEI sequence of a session store.

    Targets: `labels` (``{gelatin_percent: youngs_modulus_kpa}``, e.g. from an indentation
    store of the same gelatin batch, :mod:`analysis.datasets`) when given, else the store's
    ``labels`` group (indentation result per gelatin concentration) when present, else the
    phantom table's ``youngs_modulus_kpa`` (NaN where an imported store does not know it).
    Phantoms with inclusions need per-pixel
    targets: ``targets="truth"`` takes them from ``truth/swei/youngs_modulus_kpa`` (simulated
    sessions), ``"geometry"`` builds them from the phantom's geometry, the probe pose of each
    sequence and the labels (:mod:`analysis.swei_cnn.targets`; what a real lab has), ``"auto"``
    uses the truth where the store has it and the geometry otherwise.

    Raises
    ------
    lab.store.StoreError
        Missing tables, or displacement keys that do not match the ``swei`` table.
    ValueError
        An inclusion phantom without a truth map, or a concentration without a label.
    """
    store = SessionStore.open(store_path, "r")
    swei = store.table("swei")
    disp = store.table("displacement")
    if disp.keys() != swei.keys():
        raise StoreError(f"{store_path}: the displacement table's records do not match the swei "
                         f"table's ({len(disp)} vs {len(swei)} records, or another order); "
                         "recompute the displacement")
    if any(r["stop"] - r["start"] != 1 for r in disp.records):
        raise StoreError(f"{store_path}: displacement records must be one row (sequence) each")
    if "phantoms" not in store.root:
        raise StoreError(f"{store_path}: no 'phantoms' group")
    phantoms = list(store.root["phantoms"].attrs["phantoms"])
    if labels is not None:
        labels = {round(float(k), 3): float(v) for k, v in labels.items()}
    elif "labels" in store.root:
        labels = {round(float(lab["gelatin_percent"]), 3): float(lab["youngs_modulus_kpa"])
                  for lab in store.root["labels"].attrs.get("labels", [])}
    else:
        labels = {}
    n = disp.committed_rows
    phantom_index = swei.read("phantom_index")
    modulus = np.empty(n, dtype=np.float32)
    gelatin = np.empty(n, dtype=np.float64)
    uses_map = np.zeros(n, dtype=bool)
    for s, p in enumerate(phantom_index):
        phantom = phantoms[int(p)]
        gelatin[s] = _number(phantom.get("gelatin_percent"))
        if labels:
            key = round(gelatin[s], 3)
            if key not in labels:
                raise ValueError(f"{store_path}: no label for {gelatin[s]} % gelatin (phantom "
                                 f"{phantom['phantom_id']}); labels cover {sorted(labels)} %")
            modulus[s] = labels[key]
        else:
            modulus[s] = _number(phantom.get("youngs_modulus_kpa"))
        uses_map[s] = bool(phantom.get("inclusions"))
    if targets not in ("auto", "truth", "geometry"):
        raise ValueError(f"targets must be 'auto', 'truth' or 'geometry', got {targets!r}")
    maps: Any = None
    if uses_map.any():
        source = targets if targets != "auto" else (
            "truth" if store.has_table("truth/swei") else "geometry")
        if source == "truth":
            if not store.has_table("truth/swei"):
                raise ValueError(f"{store_path}: targets='truth' but the store has no truth/swei "
                                 "table (only simulated sessions do); use targets='geometry'")
            maps = store.table("truth/swei").array("youngs_modulus_kpa")
        else:
            def modulus_kpa_of(percent: float) -> float:
                if labels:
                    key = round(percent, 3)
                    if key not in labels:
                        raise ValueError(f"{store_path}: an inclusion phantom holds {percent} % "
                                         f"gelatin but the labels cover {sorted(labels)} %")
                    return labels[key]
                return youngs_modulus_kpa(percent)

            maps = _geometry_maps(swei, phantoms, uses_map, modulus_kpa_of)
    return SweiTrainingSet(
        displacement=disp.array("displacement_m"),
        youngs_modulus_kpa=modulus,
        push_index=swei.read("push_index"),
        position_index=swei.read("position_index"),
        phantom_index=phantom_index,
        gelatin_percent=gelatin,
        uses_map=uses_map,
        modulus_maps_kpa=maps,
        keys=swei.keys(),
        source=str(store_path),
    )


def _number(value: Any) -> float:
    """A phantom-table number; None (unknown, e.g. an imported store) -> NaN."""
    return math.nan if value is None else float(value)


SplitKind = Literal["positions", "concentration"]


def _make_split(data: SweiTrainingSet, kind: SplitKind, *, fold: int,
                held_out_percent: float | None, seed: int):
    if kind == "positions":
        return position_fold_split(data, fold=fold, seed=seed)
    if kind == "concentration":
        if held_out_percent is None:
            raise ValueError("split 'concentration' needs held_out_percent (7.5, 10, 12.5, 15)")
        return concentration_split(data, held_out_percent=held_out_percent, seed=seed)
    raise ValueError(f"unknown split {kind!r}; choose 'positions' or 'concentration'")


def run_train(
    store_path: str | os.PathLike[str],
    *,
    window_px: int,
    profile: ProfileName | TrainingProfile = "quick",
    out_model_path: str | os.PathLike[str],
    split: SplitKind = "positions",
    fold: int = 0,
    held_out_percent: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    roi_px: tuple[int, int] = DEFAULT_ROI_PX,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    model_overrides: dict[str, Any] | None = None,
    extra_training_indices: Sequence[int] = (),
    targets: TargetSource = "auto",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    training_data: tuple[SweiTrainingSet, Split] | None = None,
) -> dict[str, Any]:
    """Train a model on a store's displacement and save it (safetensors + card).

    ``training_data`` (a training set and its split, e.g. several stores from
    :func:`analysis.datasets.runners.load_dataset`) replaces reading `store_path`, which then only
    names the data source in the card.

    The network is initialised from ``seed`` (``torch.manual_seed``); under ``torch.distributed``
    only rank 0 writes the model. ``extra_training_indices`` (e.g. the sequences of training
    blocks with inclusions, which the splits leave out) join the split's training set;
    ``targets`` chooses where inclusion targets come from (:func:`load_swei_training_set`).
    Returns ``{"card": ..., "metrics": ..., "test_metrics": ..., "first_step_loss": ...}`` where
    ``test_metrics`` are window-centre MAE figures on the split's test sequences (full maps:
    :func:`run_predict`).
    """
    if training_data is not None:
        data, the_split = training_data
    else:
        data = load_swei_training_set(store_path, targets=targets)
        the_split = _make_split(data, split, fold=fold, held_out_percent=held_out_percent,
                                seed=seed)
    extra = np.asarray(extra_training_indices, dtype=np.intp)
    if extra.size:
        held = set(the_split.validation.tolist()) | set(the_split.test.tolist())
        if held & set(extra.tolist()):
            raise ValueError("extra_training_indices overlap the split's validation/test sets")
        the_split = replace(the_split, train=np.union1d(the_split.train, extra),
                            description={**the_split.description,
                                         "extra_training_sequences": int(extra.size)})
    torch.manual_seed(seed)
    model = swei_cnn(window_px, **(model_overrides or {}))  # type: ignore[arg-type]
    result = train(model, data, the_split, profile=profile, device=device, seed=seed,
                   roi_px=roi_px, checkpoint_path=checkpoint_path, resume=resume,
                   max_steps=max_steps, on_epoch=on_epoch, on_progress=on_progress)
    card = ModelCard(window_px=window_px, model_config=dict(model.config),
                     training_data_hash=result.data_hash,
                     # the store's name, not its path: cards travel to other machines
                     training_data_source=os.path.basename(os.path.normpath(store_path)),
                     split={**the_split.description,
                            "train": len(the_split.train), "validation": len(the_split.validation),
                            "test": len(the_split.test)},
                     profile=asdict(result.profile), metrics=result.metrics_dict())
    rank = torch.distributed.get_rank() if (torch.distributed.is_available()
                                            and torch.distributed.is_initialized()) else 0
    if rank == 0:
        card = save_model(model.cpu(), out_model_path, card=card)
    return {"card": asdict(card), "metrics": result.metrics_dict(),
            "first_step_loss": result.first_step_loss}


def run_predict(
    store_path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str],
    stride: int = 1,
    indices: Sequence[int] | None = None,
    device: str = "cpu",
    max_memory_mb: float = 1024.0,
    tof_path: str | None = "maps/tof_kpa",
    overwrite: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    labels: Mapping[float, float] | None = None,
    map_path: str = MAP_PATH,
) -> dict[str, Any]:
    """Full modulus maps of a store's sequences -> ``map_path`` (seq, depth, lateral).

    Every sequence gets a map (NaN outside the valid region, i.e. within half a window of the
    border, and off the ``stride`` grid; sequences not in ``indices`` stay all-NaN). Returns the
    metrics of :func:`map_metrics` on the predicted sequences, and the ToF comparison when the
    store holds ``tof_path`` with the same shape. `labels` as in :func:`load_swei_training_set`.
    ``map_path`` (default ``maps/cnn_kpa``) is replaced whole: give each model its own path to
    keep the maps of another (the demo keeps its leave-one-concentration-out model's maps in
    ``maps/cnn_unseen_kpa``). It must be ``maps/NAME_kpa`` (NAME lower-case letters, digits
    and ``_``, not ``tof``): a map never replaces a table or the ToF maps.
    """
    if not isinstance(map_path, str) or not re.fullmatch(MAP_PATH_PATTERN, map_path) or (
            map_path == "maps/tof_kpa"):
        raise ValueError(f"map path {map_path!r}: must be maps/NAME_kpa, NAME of lower-case "
                         "letters, digits and '_' starting with a letter (at most 40), not tof")
    model, card = load_model(model_path, device=device)
    data = load_swei_training_set(store_path, labels=labels)
    idx = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.intp)
    maps = np.full((len(data), *data.image_shape), np.nan, dtype=np.float32)
    for i, s in enumerate(idx):
        maps[s] = predict_map(model, data.displacement[int(s)], stride=stride,
                              max_memory_mb=max_memory_mb, device=device)
        if on_progress is not None:
            on_progress(i + 1, len(idx))
    store = SessionStore.open(store_path, "a")
    store.write_array(map_path, maps, dims=("seq", "depth", "lateral"),
                      chunks=(1, *data.image_shape), overwrite=overwrite, allow_nan=True,
                      attrs={"units": "kPa", "method": "swei-cnn", "window_px": card.window_px,
                             "stride": stride, "model_sha256": card.weights_sha256,
                             "keys": data.keys})
    # sequences whose modulus is unknown (imported data without a label) get maps, not scores
    known = idx[np.isfinite(data.youngs_modulus_kpa[idx])]
    result: dict[str, Any] = {"path": map_path, "unscored_sequences": int(idx.size - known.size),
                              "metrics": map_metrics(maps[known], data, known) if known.size
                              else None}
    if tof_path is not None and tof_path in store.root and known.size:
        tof = store.read_array(tof_path)
        if tof.shape == maps.shape:
            result["tof_comparison"] = compare_with_tof(maps[known], tof[known], data, known)
    return result


def write_synthetic_store(path: str | os.PathLike[str], **kwargs: object) -> None:
    """A minimal session store for the CNN: ``phantoms``, ``swei`` (indices only) and
    ``displacement`` tables as in the store contract, from :func:`homogeneous_data_set`."""
    arrays = homogeneous_data_set(**kwargs)  # type: ignore[arg-type]
    disp = arrays["displacement"]
    n, frames, depth, lateral = disp.shape
    store = SessionStore.create(path, kind="synthetic-swei")
    percents = sorted(set(arrays["gelatin_percent"].tolist()))
    phantoms = [{"phantom_id": f"block{i}", "kind": "block", "gelatin_percent": pct,
                 "youngs_modulus_kpa": GELATIN_YOUNGS_MODULUS_KPA[pct], "inclusions": []}
                for i, pct in enumerate(percents)]
    store.root.require_group("phantoms").attrs["phantoms"] = phantoms
    swei = store.require_table("swei", row_dim="seq", arrays=[
        ArraySpec("push_index", (), "int16", ("seq",)),
        ArraySpec("phantom_index", (), "int32", ("seq",)),
        ArraySpec("position_index", (), "int32", ("seq",)),
    ], attrs={"PRF": 7000.0})
    table = store.require_table("displacement", row_dim="seq", arrays=[
        ArraySpec("displacement_m", (frames, depth, lateral), "float32",
                  ("seq", "frame", "depth", "lateral")),
        ArraySpec("quality", (frames, depth, lateral), "float32",
                  ("seq", "frame", "depth", "lateral")),
    ])
    for s in range(n):
        p, pos, k = (int(arrays[a][s]) for a in ("phantom_index", "position_index", "push_index"))
        key = f"block{p}/pos{pos:03d}/push{k}"
        swei.append(key, {"push_index": [k], "phantom_index": [p], "position_index": [pos]})
        table.append(key, {"displacement_m": disp[s : s + 1],
                           "quality": np.ones_like(disp[s : s + 1])})
