"""Store runner of strain elastography: the pipeline applied to a session's ``compression`` table.

Consecutive steps of one phantom are the pre/post pairs; results (displacements, strain, metrics,
failure rates) are written back under ``strain/<coarse>/``. Figures of them are drawn by
:func:`lab.store_figures.strain_figures` (``elastolab strain --png``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analysis.metrics import failure_rate
from analysis.strain.flownet import load_flow_cnn
from analysis.strain.pipeline import CoarseMethod, estimate_strain, pair_metrics
from lab.store import SessionStore

__all__ = ["run_strain"]


def _pairs_by_phantom(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any],
                                                                 dict[str, Any]]]:
    """(phantom_id, pre record, post record) for consecutive steps of each phantom."""
    by_phantom: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for rec in records:
        key = rec["key"]
        phantom_id, _, step = key.rpartition("/step")
        if not phantom_id or not step.isdigit():
            raise ValueError(f"compression record key {key!r} is not '<phantom_id>/stepNN'")
        by_phantom.setdefault(phantom_id, []).append((int(step), rec))
    pairs = []
    for phantom_id, steps in by_phantom.items():
        steps.sort(key=lambda s: s[0])
        for (_, a), (_, b) in itertools.pairwise(steps):
            pairs.append((phantom_id, a, b))
    return pairs


def run_strain(
    store_path: str | Path,
    *,
    coarse: CoarseMethod,
    model_path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    **estimate_kwargs: Any,
) -> dict[str, Any]:
    """Strain images for every pre/post pair of a store's ``compression`` table.

    Pairs are consecutive steps of one phantom (record keys ``"{phantom_id}/step{k:02d}"``); the
    first frame of each step's record is used. The table's ``sampling_frequency`` and
    ``center_frequency`` attributes (Hz), when present, switch on the RF band-pass of
    :func:`estimate_strain` (override with ``bandpass=False``). Writes
    ``strain/<coarse>/axial_displacement``,
    ``strain/<coarse>/lateral_displacement`` and ``strain/<coarse>/axial_strain`` as
    ``(pair, depth, line)`` float32 (NaN outside the valid region) with attributes ``pairs``
    (``[pre_key, post_key]`` per pair), per-pair ``metrics`` and the ``failure_rate`` of each
    phantom's set (NCC with the best image below 0.6, :func:`analysis.metrics.failure_rate`). If
    the store has ``truth/compression``, MSSIM and CNR are computed against the true strain
    difference of the two steps. The attributes name the flow CNN by file name and SHA-256
    (``model_file``, ``model_sha256``), never by a path of this machine.

    Parameters
    ----------
    store_path : path
        Session store (opened for append).
    coarse : {"dp", "cnn"}
    model_path : path, optional
        Flow CNN weights (``.safetensors`` with its ``.json`` card); required for ``"cnn"``.
    progress : callable(done, total), optional
        Called after each pair.
    **estimate_kwargs
        Passed to :func:`estimate_strain`.

    Returns
    -------
    dict
        ``{"pairs", "metrics", "failure_rate", "arrays"}`` summary of what was written.
    """
    if coarse not in ("dp", "cnn"):
        raise ValueError(f"coarse must be 'dp' or 'cnn', got {coarse!r}")
    model, model_ref = None, {"model_file": None, "model_sha256": None}
    if coarse == "cnn":
        if model_path is None:
            raise ValueError("coarse='cnn' needs model_path (a trained FlowCNN .safetensors)")
        model, card = load_flow_cnn(model_path)
        # the file's name and digest, not its path: stores travel to other machines
        model_ref = {"model_file": Path(model_path).with_suffix(".safetensors").name,
                     "model_sha256": card.get("sha256")}
    store = SessionStore.open(store_path, mode="a")
    table = store.table("compression")
    truth = store.table("truth/compression") if store.has_table("truth/compression") else None
    pairs = _pairs_by_phantom(table.records)
    table_attrs = dict(table.group.attrs)
    for key in ("sampling_frequency", "center_frequency"):
        if key not in estimate_kwargs and table_attrs.get(key) is not None:
            estimate_kwargs[key] = float(table_attrs[key])
    if not pairs:
        raise ValueError(f"{store_path}: the compression table has no pair of consecutive steps")

    ax_list, lat_list, strain_list, metrics, keys = [], [], [], [], []
    for done, (phantom_id, rec_a, rec_b) in enumerate(pairs, start=1):
        rf_a = table.read("rf", rec_a["key"])[0]
        rf_b = table.read("rf", rec_b["key"])[0]
        res = estimate_strain(rf_a, rf_b, coarse=coarse, model=model, **estimate_kwargs)
        truth_strain = None
        if truth is not None and rec_b["key"] in truth:
            truth_strain = (truth.read("axial_strain", rec_b["key"])[0]
                            - truth.read("axial_strain", rec_a["key"])[0])
        m = pair_metrics(res.axial_strain, res.valid, truth_strain=truth_strain)
        m["phantom_id"] = phantom_id
        m.update({f"seconds_{k}": v for k, v in res.seconds.items()})
        metrics.append(m)
        keys.append([rec_a["key"], rec_b["key"]])
        ax_list.append(res.axial_displacement)
        lat_list.append(res.lateral_displacement)
        strain_list.append(res.axial_strain)
        if progress is not None:
            progress(done, len(pairs))

    rates: dict[str, float] = {}
    for phantom_id in dict.fromkeys(m["phantom_id"] for m in metrics):
        idx = [k for k, m in enumerate(metrics) if m["phantom_id"] == phantom_id]
        if len(idx) >= 2:
            valid = _common_valid([strain_list[k] for k in idx])
            rates[phantom_id] = failure_rate([strain_list[k][valid] for k in idx])[0]
    attrs = {"pairs": keys, "metrics": metrics, "failure_rate": rates, "coarse": coarse,
             "units": "displacement in RF samples / lines; strain dimensionless (relative, "
                      "negative under compression)",
             **model_ref}
    written = []
    for name, data in (("axial_displacement", ax_list), ("lateral_displacement", lat_list),
                       ("axial_strain", strain_list)):
        path = f"strain/{coarse}/{name}"
        store.write_array(path, np.stack(data).astype(np.float32),
                          dims=("pair", "depth", "line"), attrs=attrs, overwrite=True,
                          allow_nan=True)
        written.append(path)
    return {"pairs": keys, "metrics": metrics, "failure_rate": rates, "arrays": written}


def _common_valid(images: list[NDArray[np.float32]]) -> tuple[slice, slice]:
    """Bounding box of the pixels finite in every image; it must be finite throughout."""
    finite = np.logical_and.reduce([np.isfinite(im) for im in images])
    r = np.flatnonzero(finite.any(axis=1))
    c = np.flatnonzero(finite.any(axis=0))
    if r.size == 0 or c.size == 0:
        raise ValueError("strain images share no finite region")
    box = slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)
    if not finite[box].all():
        raise ValueError("the finite part of the strain images is not rectangular")
    return box
