"""Thin runners that apply the pure analysis functions to a session store.

Each runner opens a :class:`lab.store.SessionStore`, reads what the store contract
(``docs/dataset.md``) says, calls the pure functions, and writes the results back with
provenance attributes. They are what ``elastolab analyze displacement|labels|tof STORE`` calls.

* :func:`run_displacement` -- ``swei/iq`` -> ``displacement`` table (Dask, one task per sequence,
  resumable).
* :func:`run_labels` -- ``indentation`` table -> ``labels`` group attribute (+ optional PNG).
* :func:`run_tof` -- ``displacement`` table -> ``maps/tof_kpa`` and ``maps/tof_speed_m_s``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from analysis.displacement import Reference, default_axial_kernel, kasai, loupas
from analysis.labels import IndentationRun, YoungsModulusFit, fit_youngs_modulus, plot_stress_strain
from analysis.tof import (
    ALPHA,
    PAPER_MEAN_FILTER_MM,
    PAPER_TOF_DISTANCE_MM,
    calibrate_alpha,
    modulus_from_speed,
    push_column,
    tof_map,
    tof_window_px,
)
from lab.gelatin import DENSITY_KG_M3, POISSON_RATIO
from lab.provenance import utc_now
from lab.store import ArraySpec, SessionStore, StoreError

__all__ = ["run_displacement", "run_labels", "run_tof"]

Progress = Callable[[int, int], None]

SWEI_TABLE = "swei"
DISPLACEMENT_TABLE = "displacement"
INDENTATION_TABLE = "indentation"
LABELS_GROUP = "labels"
TOF_MAP = "maps/tof_kpa"
TOF_SPEED_MAP = "maps/tof_speed_m_s"
#: Sequences in flight at once per scheduler thread (bounds memory: each holds ~85 MB).
_IN_FLIGHT_PER_WORKER = 2


def _swei_attrs(table: Any) -> dict[str, Any]:
    attrs = table.group.attrs.asdict()
    missing = [k for k in ("sampling_frequency", "modulation_frequency", "sound_speed")
               if k not in attrs]
    if missing:
        raise StoreError(f"table {SWEI_TABLE!r} lacks acquisition attributes {missing}")
    return attrs


def _displacement_of(
    store_path: str, key: str, method: str, reference: str, axial_kernel: int,
) -> tuple[str, NDArray[np.float32], NDArray[np.float32]]:
    """One Dask task: read one sequence's IQ, return its displacement and quality."""
    store = SessionStore.open(store_path, "r")
    table = store.table(SWEI_TABLE)
    attrs = _swei_attrs(table)
    iq = table.read("iq", key)[0]
    estimator = loupas if method == "loupas" else kasai
    disp, quality = estimator(
        iq, sampling_frequency=float(attrs["sampling_frequency"]),
        modulation_frequency=float(attrs["modulation_frequency"]),
        sound_speed=float(attrs["sound_speed"]), reference=reference,  # type: ignore[arg-type]
        axial_kernel=axial_kernel, return_quality=True, workers=1,
    )
    return key, disp.astype(np.float32, copy=False), quality.astype(np.float32, copy=False)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_displacement(
    store_path: str | os.PathLike[str],
    *,
    method: Literal["loupas", "kasai"] = "loupas",
    reference: Reference = "fixed",
    scheduler_address: str | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    axial_kernel: int | None = None,
) -> int:
    """Compute the ``displacement`` table from ``swei/iq`` (resumable, Dask-parallel).

    Parameters
    ----------
    store_path : path
        Session store (opened for append).
    method : {"loupas", "kasai"}, optional
        Estimator (:func:`analysis.displacement.loupas` or ``kasai``).
    reference : {"fixed", "progressive"}, optional
        Reference frame handling, see :func:`analysis.displacement.loupas`.
    scheduler_address : str, optional
        Address of a ``dask.distributed`` scheduler (``tcp://host:8786``); its workers must see
        `store_path` at the same path. Default: Dask's local threaded scheduler.
    num_workers : int, optional
        Threads of the local scheduler (default: CPUs available); ignored with a cluster.
    progress : callable, optional
        Called as ``progress(done, total)`` after each sequence is written (``total`` counts
        only the sequences still to do).
    axial_kernel : int, optional
        Odd axial kernel in IQ samples; default :func:`analysis.displacement.default_axial_kernel`
        of the store's sampling (3 on the demo's 0.25 mm grid). Stored as a table attribute.

    Returns
    -------
    int
        Number of sequences computed and written now (0 when everything was already done).

    Raises
    ------
    lab.store.StoreError
        Missing ``swei`` table or attributes, or an existing ``displacement`` table made with
        another method, reference or axial kernel (delete it to recompute): one table never
        mixes estimators.

    Notes
    -----
    One task per sequence reads its IQ from the store, so no more than a few sequences are in
    memory at once (out of core). Results are appended by this process only, one atomic record
    per sequence keyed like ``swei``; sequences already present are skipped, so an interrupted
    run resumes where it stopped. Displacement is positive away from the probe, in metres;
    ``quality`` is the correlation coefficient in [0, 1].
    """
    if method not in ("loupas", "kasai"):
        raise ValueError(f"method must be 'loupas' or 'kasai', got {method!r}")
    if reference not in ("fixed", "progressive"):
        raise ValueError(f"reference must be 'fixed' or 'progressive', got {reference!r}")
    if axial_kernel is not None and (
            isinstance(axial_kernel, bool) or not isinstance(axial_kernel, int | np.integer)
            or axial_kernel < 1 or axial_kernel % 2 == 0):
        raise ValueError(f"axial_kernel must be an odd number of samples >= 1, got "
                         f"{axial_kernel!r}")
    path = str(Path(store_path))
    store = SessionStore.open(path, "a")
    swei = store.table(SWEI_TABLE)
    attrs = _swei_attrs(swei)
    acquired, depth, lateral = swei.schema["iq"]["row_shape"]
    frames = acquired - 1  # F tracked frames; IQ holds the reference too
    if axial_kernel is None:
        axial_kernel = default_axial_kernel(
            sampling_frequency=float(attrs["sampling_frequency"]),
            modulation_frequency=float(attrs["modulation_frequency"]))
    axial_kernel = int(axial_kernel)
    provenance = {
        "method": method, "reference": reference, "source": f"{SWEI_TABLE}/iq",
        "axial_kernel": axial_kernel,
        "units": {"displacement_m": "m, positive away from the probe",
                  "quality": "correlation coefficient, 0-1"},
        "created_utc": utc_now(),
    }
    dims = ("seq", "frame", "depth", "lateral")
    table = store.require_table(DISPLACEMENT_TABLE, row_dim="seq", arrays=[
        ArraySpec("displacement_m", (frames, depth, lateral), "float32", dims),
        ArraySpec("quality", (frames, depth, lateral), "float32", dims),
    ], attrs=provenance)
    existing = table.group.attrs.asdict()
    if ((existing.get("method"), existing.get("reference"), existing.get("axial_kernel"))
            != (method, reference, axial_kernel)):
        raise StoreError(
            f"{path}: the {DISPLACEMENT_TABLE!r} table was computed with method="
            f"{existing.get('method')!r}, reference={existing.get('reference')!r}, axial_kernel="
            f"{existing.get('axial_kernel')!r}; delete it to recompute with {method!r}/"
            f"{reference!r}/{axial_kernel!r}")
    done = set(table.keys())
    todo = [k for k in swei.keys() if k not in done]
    total = len(todo)
    if total == 0:
        return 0

    written = 0

    def write(key: str, disp: NDArray[np.float32], quality: NDArray[np.float32]) -> None:
        nonlocal written
        table.append(key, {"displacement_m": disp[None], "quality": quality[None]},
                     {"method": method, "reference": reference})
        written += 1
        if progress is not None:
            progress(written, total)

    if scheduler_address is None:
        import dask

        threads = num_workers or (len(os.sched_getaffinity(0))
                                  if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        task = dask.delayed(_displacement_of, pure=False)
        for batch in _batches(todo, threads * _IN_FLIGHT_PER_WORKER):
            results = dask.compute(*[task(path, k, method, reference, axial_kernel)
                                     for k in batch],
                                   scheduler="threads", num_workers=threads)
            for key, disp, quality in results:
                write(key, disp, quality)
    else:
        from dask.distributed import Client, as_completed

        with Client(scheduler_address) as client:
            in_flight = max(1, sum(client.nthreads().values())) * _IN_FLIGHT_PER_WORKER
            pending = iter(todo)
            futures = as_completed()
            for key in [k for _, k in zip(range(in_flight), pending, strict=False)]:
                futures.add(client.submit(_displacement_of, path, key, method, reference,
                                          axial_kernel, pure=False))
            for future in futures:
                key, disp, quality = future.result()
                write(key, disp, quality)
                future.release()
                nxt = next(pending, None)
                if nxt is not None:
                    futures.add(client.submit(_displacement_of, path, nxt, method, reference,
                                              axial_kernel, pure=False))
    return written


def _indentation_runs(store: SessionStore) -> dict[float, dict[str, IndentationRun]]:
    """Runs of the ``indentation`` table grouped by gelatin concentration."""
    table = store.table(INDENTATION_TABLE)
    time_s = table.read("time_s")
    position_mm = table.read("position_mm")
    force_n = table.read("force_n")
    groups: dict[float, dict[str, IndentationRun]] = defaultdict(dict)
    for record in table.records:
        meta = record["meta"]
        if "gelatin_percent" not in meta:
            raise StoreError(f"indentation record {record['key']!r} has no gelatin_percent")
        sl = slice(record["start"], record["stop"])
        groups[float(meta["gelatin_percent"])][record["key"]] = IndentationRun.from_arrays(
            time_s[sl], position_mm[sl], force_n[sl], name=record["key"],
            radius_mm=meta.get("radius_mm"), height_mm=meta.get("height_mm"),
        )
    return dict(groups)


def run_labels(
    store_path: str | os.PathLike[str], *, plot_path: str | os.PathLike[str] | None = None,
    strain_range: tuple[float, float] = (0.02, 0.07), min_strain_span: float = 0.01,
) -> list[dict[str, Any]]:
    """Young's-modulus labels per gelatin concentration from the ``indentation`` table.

    Parameters
    ----------
    store_path : path
        Session store with an ``indentation`` table (record meta ``gelatin_percent``,
        ``radius_mm``, ``height_mm``).
    plot_path : path, optional
        Where to write the stress-strain PNG (all runs and the fits).
    strain_range, min_strain_span : optional
        Passed to :func:`analysis.labels.fit_youngs_modulus`.

    Returns
    -------
    list of dict
        The entries written to the ``labels`` group attribute ``labels`` (one per
        concentration, sorted by concentration; see the store contract). The contact point is
        re-detected from the force curve (the protocol's ``contact_position_mm`` is not used).
    """
    store = SessionStore.open(store_path, "a")
    groups = _indentation_runs(store)
    fits: list[YoungsModulusFit] = [
        fit_youngs_modulus(runs, strain_range=strain_range, min_strain_span=min_strain_span,
                           gelatin_percent=percent)
        for percent, runs in sorted(groups.items())
    ]
    labels = [fit.to_label() for fit in fits]
    group = store.root.require_group(LABELS_GROUP)
    attrs: dict[str, Any] = {"labels": labels, "source": INDENTATION_TABLE,
                             "method": "pooled least squares of stress on strain",
                             "strain_range_requested": list(strain_range),
                             "created_utc": utc_now()}
    if plot_path is not None and fits:
        attrs["plot"] = str(plot_stress_strain(fits, plot_path))
    group.attrs.update(attrs)
    return labels


def _phantom_moduli(store: SessionStore) -> list[float | None]:
    """Label modulus (kPa) of each homogeneous phantom of the ``phantoms`` list, else None."""
    if "phantoms" not in store.root or LABELS_GROUP not in store.root:
        return []
    phantoms = store.root["phantoms"].attrs.get("phantoms", [])
    labels = store.root[LABELS_GROUP].attrs.get("labels", [])
    by_percent = {float(lab["gelatin_percent"]): lab["youngs_modulus_kpa"] for lab in labels
                  if lab.get("gelatin_percent") is not None}
    out: list[float | None] = []
    for ph in phantoms:
        homogeneous = ph.get("kind") == "block" and not ph.get("inclusions")
        value = by_percent.get(float(ph.get("gelatin_percent", math.nan)))
        out.append(float(value) if homogeneous and value is not None else None)
    return out


def run_tof(
    store_path: str | os.PathLike[str], *, alpha: float | None = None,
    keys: Sequence[str] | None = None, calibration_keys: Sequence[str] | None = None,
    progress: Progress | None = None, distance_mm: float = PAPER_TOF_DISTANCE_MM,
    mean_filter_mm: float = PAPER_MEAN_FILTER_MM, **tof_options: Any,
) -> float:
    """Time-of-flight maps of the sequences of the ``displacement`` table.

    Parameters
    ----------
    store_path : path
        Session store with ``swei`` (attributes ``PRF``, ``lateral_m``; record meta
        ``push_lateral_m``) and ``displacement`` tables.
    alpha : float, optional
        Scale in ``E = alpha rho 2 (1 + nu) c^2``. Default: calibrated by least squares against
        the ``labels`` of the homogeneous block phantoms (median speed per sequence) when the
        store has labels and phantoms, else 0.75 [SWEI].
    keys : sequence of str, optional
        Record keys to compute (default all); the maps of the others are NaN.
    calibration_keys : sequence of str, optional
        Keys whose sequences calibrate alpha (default: all computed ones); keep test sequences
        out of it for an unbiased evaluation.
    progress : callable, optional
        ``progress(done, total)`` after each sequence.
    distance_mm, mean_filter_mm : float
        Physical distance between the two time signals and mean-filter size (mm), converted
        to pixels with the store's lateral step (:func:`analysis.tof.tof_window_px`); default
        [SWEI]'s 65 px and 5 px on its 33 mm / 600 px grid. ``distance_px`` /
        ``mean_filter_px`` among ``tof_options`` override them.
    **tof_options
        Passed to :func:`analysis.tof.tof_map` (``distance_px``, ``smooth_sigma_mm``, ...).

    Returns
    -------
    float
        The alpha used. Writes ``maps/tof_kpa`` and ``maps/tof_speed_m_s`` (seq, depth,
        lateral) float32, NaN where rejected, rows in ``displacement`` record order; the
        attributes hold the keys, alpha and how it was chosen.
    """
    store = SessionStore.open(store_path, "a")
    swei = store.table(SWEI_TABLE)
    attrs = swei.group.attrs.asdict()
    for name in ("PRF", "lateral_m"):
        if name not in attrs:
            raise StoreError(f"table {SWEI_TABLE!r} lacks attribute {name!r}")
    lateral_m = np.asarray(attrs["lateral_m"], dtype=np.float64)
    depth_m = np.asarray(attrs.get("depth_m", []), dtype=np.float64)
    prf = float(attrs["PRF"])
    push_by_key = {r["key"]: r["meta"].get("push_lateral_m") for r in swei.records}
    phantom_of = dict(zip(swei.keys(), swei.read("phantom_index").tolist(), strict=True))
    disp_table = store.table(DISPLACEMENT_TABLE)
    records = disp_table.records
    if not records:
        raise StoreError(f"{store.path}: the {DISPLACEMENT_TABLE!r} table is empty; run "
                         "run_displacement first")
    all_keys = [r["key"] for r in records]
    wanted = set(all_keys) if keys is None else set(keys)
    unknown = wanted - set(all_keys)
    if unknown:
        raise StoreError(f"keys not in the {DISPLACEMENT_TABLE!r} table: {sorted(unknown)[:5]}")
    calibrate_on = wanted if calibration_keys is None else set(calibration_keys)
    if not calibrate_on <= wanted:
        raise ValueError("calibration_keys must be among the computed keys")
    shape = tuple(disp_table.schema["displacement_m"]["row_shape"])
    depth, lateral = shape[1], shape[2]
    options = {**tof_window_px(float(lateral_m[1] - lateral_m[0]), distance_mm=distance_mm,
                               mean_filter_mm=mean_filter_mm), **tof_options}
    if "alpha" in options:
        raise ValueError("pass alpha as run_tof(alpha=...), not among the tof_map options")
    material = {"density_kg_m3": float(options.pop("density_kg_m3", DENSITY_KG_M3)),
                "poisson_ratio": float(options.pop("poisson_ratio", POISSON_RATIO))}
    if "smooth_sigma_mm" in options and "depth_step_m" not in options and depth_m.size > 1:
        options["depth_step_m"] = float(depth_m[1] - depth_m[0])

    with tempfile.TemporaryDirectory(prefix="elastolab-tof-") as tmp:
        speeds = np.lib.format.open_memmap(Path(tmp) / "speed.npy", mode="w+",
                                           dtype=np.float32, shape=(len(records), depth, lateral))
        speeds[...] = np.nan
        todo = [i for i, k in enumerate(all_keys) if k in wanted]
        for done, i in enumerate(todo, start=1):
            key = all_keys[i]
            push_lateral = push_by_key.get(key)
            if push_lateral is None:
                raise StoreError(f"swei record {key!r} has no push_lateral_m in its meta")
            disp = disp_table.read("displacement_m", key)[0]
            result = tof_map(disp, lateral_step_m=float(lateral_m[1] - lateral_m[0]),
                             frame_rate_hz=prf,
                             push_column=push_column(float(push_lateral), lateral_m), alpha=1.0,
                             **options)
            speeds[i] = result.speed_m_s
            if progress is not None:
                progress(done, len(todo))
        how = "given"
        if alpha is None:
            alpha, how = ALPHA, "default (paper)"
            moduli = _phantom_moduli(store)
            pairs = [(float(np.nanmedian(speeds[i])), moduli[phantom_of[k]])
                     for i, k in enumerate(all_keys)
                     if k in calibrate_on and phantom_of.get(k) is not None
                     and phantom_of[k] < len(moduli) and moduli[phantom_of[k]] is not None
                     and np.isfinite(speeds[i]).any()]
            if pairs:
                alpha = calibrate_alpha([p[0] for p in pairs], [p[1] for p in pairs],
                                        **material)
                how = f"calibrated on {len(pairs)} sequences of homogeneous labelled phantoms"
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be positive, got {alpha}")
        common = {"keys": all_keys, "computed": len(todo), "source": DISPLACEMENT_TABLE,
                  "alpha": alpha, "alpha_source": how, **material, "options": dict(options)}
        dims = ("seq", "depth", "lateral")
        chunks = (1, depth, lateral)
        store.write_array(TOF_SPEED_MAP, speeds, dims=dims, chunks=chunks, overwrite=True,
                          allow_nan=True, attrs={**common, "units": "m/s"})
        moduli_kpa = np.lib.format.open_memmap(Path(tmp) / "modulus.npy", mode="w+",
                                               dtype=np.float32, shape=speeds.shape)
        moduli_kpa[...] = np.nan
        for i in todo:
            moduli_kpa[i] = modulus_from_speed(speeds[i], alpha=alpha, **material)
        store.write_array(TOF_MAP, moduli_kpa, dims=dims, chunks=chunks, overwrite=True,
                          allow_nan=True,
                          attrs={**common, "units": "kPa",
                                 "formula": "alpha * density * 2 (1 + poisson) * c^2"})
        del speeds, moduli_kpa
    return float(alpha)
