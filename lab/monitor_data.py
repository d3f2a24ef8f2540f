"""What the monitor page shows, read from a session store without writing to it.

Every reader opens the store read-only, reads committed records only (a runner may be appending
at the same moment) and returns JSON-ready dicts with units in the key names; the SWEI frames and
the indentation curve are cached until a new record is committed. The live files of
:mod:`lab.live` give status and forces; the store itself gives the latest SWEI frames, the latest
indentation curve and the plan's probe positions. A store written before live files existed (or
by a runner that died before writing one) still gets a state derived from its attributes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from analysis.displacement import loupas
from analysis.labels import IndentationRun, fit_youngs_modulus, stress_strain
from lab.live import LIVE_FORCE, live_path, read_json, read_state
from lab.store import SessionStore, StoreError, Table

log = logging.getLogger(__name__)

#: Largest image edge sent to the page (pixels); bigger frames are decimated.
MAX_IMAGE_PX = 160
#: Dynamic range of the B-mode image (dB below its maximum).
BMODE_RANGE_DB = 50.0


def _decimate(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    step_d = max(1, int(np.ceil(image.shape[0] / MAX_IMAGE_PX)))
    step_l = max(1, int(np.ceil(image.shape[1] / MAX_IMAGE_PX)))
    return image[::step_d, ::step_l], step_d, step_l


def _rounded(a: np.ndarray, digits: int) -> list[Any]:
    out = np.round(np.asarray(a, dtype=np.float64), digits)
    return np.where(np.isfinite(out), out, np.nan).tolist()


def _json_safe(values: list[Any]) -> list[Any]:
    """Replace NaN by None (JSON has no NaN), recursively for nested lists."""
    return [_json_safe(v) if isinstance(v, list) else (None if v != v else v) for v in values]


def read_forces(store_path: Path) -> dict[str, Any]:
    """The force ring (see :mod:`lab.live`), or an empty one."""
    return read_json(live_path(store_path, LIVE_FORCE)) or {"sensors": {}, "limits_n": {},
                                                             "samples_seen": 0}


def _latest(store_path: Path, name: str) -> tuple[Table, list[dict[str, Any]]] | None:
    """Table ``name`` of the store (read-only) and its committed records; None if empty."""
    store = SessionStore.open(store_path, mode="r")
    if name not in store.tables():
        return None
    table = store.table(name)
    records = table.records
    return (table, records) if records else None


def latest_swei(store_path: Path, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """B-mode (dB) and axial displacement (um) of the latest SWEI sequence in the store.

    The displacement is Loupas' estimate (fixed reference) of the frame with the largest mean
    absolute displacement, computed here in the monitor's process from the stored IQ. ``cache``
    (keyed by record key) avoids recomputing while the latest record stays the same.
    """
    latest = _latest(store_path, "swei")
    if latest is None:
        return {"key": None}
    table, records = latest
    key = records[-1]["key"]
    if cache is not None and cache.get("key") == key:
        return cache["value"]
    if cache is not None and "key" not in cache:
        log.info("monitor: Loupas displacement of %s for the page; the first one also compiles "
                 "the numba kernel (or loads its cache)", key)
    attrs = table.group.attrs.asdict()
    iq = table.read("iq", len(records) - 1)[0]  # (frame, depth, lateral)
    envelope = np.abs(iq[0]).astype(np.float64)
    bmode_db = 20 * np.log10(np.maximum(envelope, 1e-12) / max(envelope.max(), 1e-12))
    bmode_db = np.maximum(bmode_db, -BMODE_RANGE_DB)
    disp_m = loupas(iq, sampling_frequency=float(attrs["sampling_frequency"]),
                    modulation_frequency=float(attrs["modulation_frequency"]),
                    sound_speed=float(attrs["sound_speed"]), workers=1)
    frame = int(np.nanargmax(np.nanmean(np.abs(disp_m), axis=(1, 2))))
    depth_mm = np.asarray(attrs.get("depth_m", np.arange(iq.shape[1])), float) * 1e3
    lateral_mm = np.asarray(attrs.get("lateral_m", np.arange(iq.shape[2])), float) * 1e3
    b, sd, sl = _decimate(bmode_db)
    d, _, _ = _decimate(disp_m[frame] * 1e6)
    value = {"key": key, "records": len(records), "frame": frame + 1,
             "frames": int(disp_m.shape[0]), "depth_mm": _rounded(depth_mm[::sd], 3),
             "lateral_mm": _rounded(lateral_mm[::sl], 3),
             "bmode_db": _json_safe(_rounded(b, 1)),
             "displacement_um": _json_safe(_rounded(d, 3)),
             "meta": records[-1].get("meta", {})}
    if cache is not None:
        cache.update(key=key, value=value)
    return value


def latest_indentation(store_path: Path) -> dict[str, Any]:
    """Stress-strain curve of the latest indentation record with its Young's-modulus fit."""
    latest = _latest(store_path, "indentation")
    if latest is None:
        return {"key": None}
    table, records = latest
    return _indentation_curve(table, records)


class IndentationCache:
    """:func:`latest_indentation` that re-reads the arrays and refits only when rows were added.

    The page asks every second; between records only the indentation table's commit attributes
    are read (one small ``zarr.json``), from a store handle opened once. Thread-safe.

    Attributes
    ----------
    reads : int
        How many times the curve was read and fitted (tests check the cache with it).
    """

    def __init__(self, store_path: Path) -> None:
        self._store = SessionStore.open(store_path, mode="r")
        self._lock = threading.Lock()
        self._rows: int | None = None
        self._value: dict[str, Any] = {"key": None}
        self.reads = 0

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            try:
                table = self._store.table("indentation")  # fresh commit attributes each time
            except StoreError:  # no indentation yet
                return {"key": None}
            rows = table.committed_rows
            if rows != self._rows:
                records = table.records  # the same snapshot as ``rows``
                self._value = _indentation_curve(table, records) if records else {"key": None}
                self._rows = rows
                self.reads += 1
            return self._value


def _indentation_curve(table: Table, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The curve and fit of the last of ``records`` (committed records of ``table``)."""
    rec = records[-1]
    meta = rec.get("meta", {})
    i = len(records) - 1
    run = IndentationRun.from_arrays(
        table.read("time_s", i), table.read("position_mm", i), table.read("force_n", i),
        contact_position_mm=meta.get("contact_position_mm"), radius_mm=meta.get("radius_mm"),
        height_mm=meta.get("height_mm"), name=rec["key"])
    curve = stress_strain(run)
    fit = fit_youngs_modulus({rec["key"]: run})
    lo, hi = fit.strain_range
    strain_fit = np.linspace(lo, hi, 2) if np.isfinite(fit.youngs_modulus_kpa) else np.array([])
    step = max(1, curve.strain.size // 400)
    return {
        "key": rec["key"], "records": len(records),
        "gelatin_percent": meta.get("gelatin_percent"),
        "strain": _rounded(curve.strain[::step], 5),
        "stress_kpa": _rounded(curve.stress_kpa[::step], 4),
        "youngs_modulus_kpa": (float(fit.youngs_modulus_kpa)
                               if np.isfinite(fit.youngs_modulus_kpa) else None),
        "fit_strain": _rounded(strain_fit, 5),
        "fit_stress_kpa": _rounded(fit.youngs_modulus_kpa * strain_fit + fit.intercept_kpa, 4),
        "rejected": [list(r) for r in fit.runs_rejected],
    }


def running_indentation(state: dict[str, Any], plan_units: list[dict[str, Any]],
                        *, contact_force_n: float = 0.01,
                        strain_range: tuple[float, float] = (0.02, 0.07)) -> dict[str, Any]:
    """Stress-strain so far of the indentation under way, with a running Young's-modulus fit.

    The live record carries (plate travel, force) points of the current unit; contact is taken
    at the first point above ``contact_force_n``, strain = (travel - contact) / l0 and stress =
    F / (pi r^2) with the cylinder of the unit's plan. The fit is least squares of stress on
    strain over ``strain_range`` (all points after contact until the range is reached); the
    final label comes from :func:`latest_indentation` once the record is stored.
    """
    current = state.get("current") or {}
    curve = current.get("curve") or {}
    unit = next((u for u in plan_units if u.get("unit_id") == current.get("unit")), None)
    if unit is None or unit.get("kind") != "indentation" or len(curve.get("force_n", [])) < 2:
        return {"unit": None}
    pos = np.asarray(curve["position_mm"], dtype=np.float64)
    force = np.asarray(curve["force_n"], dtype=np.float64)
    ok = np.isfinite(pos) & np.isfinite(force)
    pos, force = pos[ok], force[ok]
    touching = np.flatnonzero(force > contact_force_n)
    if touching.size < 2:
        return {"unit": current.get("unit"), "strain": [], "stress_kpa": []}
    start = touching[0]
    strain = (pos[start:] - pos[start]) / float(unit["params"]["height_mm"])
    stress_kpa = force[start:] / (np.pi * (float(unit["params"]["radius_mm"]) * 1e-3) ** 2) / 1e3
    lo, hi = strain_range
    use = (strain >= lo) & (strain <= hi)
    if use.sum() < 2:
        use = np.ones_like(strain, dtype=bool)
    slope, intercept = np.polyfit(strain[use], stress_kpa[use], 1) if use.sum() >= 2 else (
        np.nan, np.nan)
    s_fit = np.array([strain[use].min(), strain[use].max()])
    return {"unit": current.get("unit"), "strain": _rounded(strain, 5),
            "stress_kpa": _rounded(stress_kpa, 4), "youngs_modulus_kpa": float(slope),
            "fit_strain": _rounded(s_fit, 5),
            "fit_stress_kpa": _rounded(slope * s_fit + intercept, 4)}


def probe_positions(store_path: Path) -> dict[str, Any]:
    """SWEI probe positions of the plan per block (mm, block frame) and whether each is done."""
    store = SessionStore.open(store_path, mode="r")
    plan = store.plan or {}
    done = set((store.attrs.get("progress") or {}).get("completed", []))
    blocks: dict[str, dict[str, list[Any]]] = {}
    for unit in plan.get("units", []) if isinstance(plan, dict) else []:
        if unit["kind"] != "swei":
            continue
        b = blocks.setdefault(unit["phantom_id"], {"x_mm": [], "y_mm": [], "done": [],
                                                    "unit": []})
        b["x_mm"].append(unit["params"]["x_mm"])
        b["y_mm"].append(unit["params"]["y_mm"])
        b["done"].append(unit["unit_id"] in done)
        b["unit"].append(unit["unit_id"])
    sizes = {p.get("id"): p.get("size_mm") for p in (store.config.get("phantoms") or [])}
    return {"blocks": blocks, "size_mm": {k: sizes.get(k) for k in blocks}}


__all__ = ["IndentationCache", "latest_indentation", "latest_swei", "probe_positions",
           "read_forces", "read_state"]
