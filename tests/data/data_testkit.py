"""A small SWEI + compression session store with known content, for the data-layer tests.

The IQ of sequence k encodes a known axial displacement ``u`` exactly in its phase (baseband in
depth, real positive envelope), so Loupas returns ``u`` and every export can be compared with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from lab.store import ArraySpec, SessionStore
from protocols.swei import swei_table_arrays

C, F0, PRF, T0 = 1540.0, 7.5e6, 7000.0, 0.13e-3
FRAMES, DEPTH, LATERAL = 12, 10, 16
DZ, DX = 0.08e-3, 0.1e-3
DEPTH_M = (np.arange(DEPTH) + 0.5) * DZ + 5e-3
LATERAL_M = (np.arange(LATERAL) - LATERAL / 2) * DX
N_SEQ = 3


def true_displacement(k: int) -> np.ndarray:
    """(frame, depth, lateral) float64 metres of sequence k: a shear pulse moving right."""
    t = T0 + np.arange(FRAMES)[:, None, None] / PRF
    x = LATERAL_M[None, None, :] - LATERAL_M[0] + 1e-3
    u = (2e-6 + 1e-6 * k) * np.exp(-0.5 * ((t - 0.3e-3 - x / 3.0) / 0.3e-3) ** 2)
    return u * np.ones((1, DEPTH, 1))


def wave_iq(k: int) -> np.ndarray:
    """(F + 1, depth, lateral) complex64: frame 0 the reference, then env * exp(-4j pi f0 u / c)."""
    env = np.random.default_rng(k).uniform(0.5, 2.0, size=(DEPTH, LATERAL))
    iq = np.empty((FRAMES + 1, DEPTH, LATERAL), np.complex64)
    iq[0] = env
    iq[1:] = env * np.exp(-4j * np.pi * F0 * true_displacement(k) / C)
    return iq


def swei_attrs() -> dict[str, object]:
    return {"sampling_frequency": C / (2 * DZ), "modulation_frequency": F0, "sound_speed": C,
            "center_frequency": F0, "PRF": PRF, "initial_time": T0,
            "depth_m": DEPTH_M.tolist(), "lateral_m": LATERAL_M.tolist()}


def make_swei_store(path: Path, *, n_seq: int = N_SEQ, legacy: bool = False) -> Path:
    """A store with a ``swei`` table of `n_seq` sequences and ``phantoms``.

    ``legacy=True`` writes it as stores were written before dimension names and units were
    added: IQ with a ``frame`` dimension of F + 1, no ``units``/``long_name`` attributes.
    """
    store = SessionStore.create(path)
    store.root.require_group("phantoms").attrs["phantoms"] = [
        {"phantom_id": "B10", "kind": "block", "gelatin_percent": 10.0,
         "youngs_modulus_kpa": 55.0, "inclusions": []}]
    arrays = swei_table_arrays(FRAMES, DEPTH, LATERAL)
    if legacy:
        arrays = [ArraySpec(a.name, a.row_shape, a.dtype,
                            tuple("frame" if d == "acquired_frame" else d for d in a.dims),
                            inner_chunks=a.inner_chunks) for a in arrays]
    swei = store.require_table("swei", row_dim="seq", arrays=arrays, attrs=swei_attrs())
    for k in range(n_seq):
        swei.append(f"B10/pos000/push{k}", {
            "iq": wave_iq(k)[None], "push_index": np.array([k], np.int16),
            "push_element": np.array([10 + k], np.int16),
            "phantom_index": np.array([0], np.int32), "position_index": np.array([0], np.int32),
            "probe_pose": np.array([[0.1, 0.2, 0.05 + k * 1e-3, 0.0, 3.1, 0.0]]),
            "contact_force_n": np.array([0.2], np.float32),
            "t_start_s": np.array([float(k)]),
        }, {"phantom_id": "B10", "push_lateral_m": -1e-3})
    if legacy:
        for name in swei.schema:
            arr = swei.group[name]
            kept = {k: v for k, v in arr.attrs.asdict().items()
                    if k not in ("units", "long_name")}
            arr.attrs.clear()
            arr.attrs.update(kept)
    return path


def write_uncommitted_row(path: Path) -> None:
    """Grow every ``swei`` array by one row of junk without committing it (a crashed append)."""
    group = zarr.open_group(str(path / "swei"), mode="r+")
    for name, arr in group.arrays():
        arr.resize((arr.shape[0] + 1, *arr.shape[1:]))
        arr.with_config({"write_empty_chunks": True})[-1] = np.ones(arr.shape[1:], arr.dtype)
        assert name


LABELS = [{"gelatin_percent": 5.0, "youngs_modulus_kpa": 17.4, "ci95_kpa": [16.9, 17.9],
           "runs_used": ["C5-0", "C5-1"], "runs_rejected": [], "strain_range": [0.01, 0.05]},
          {"gelatin_percent": 10.0, "youngs_modulus_kpa": 27.0, "ci95_kpa": [26.1, 27.8],
           "runs_used": ["C10-0"], "runs_rejected": ["C10-1"], "strain_range": [0.01, 0.05]}]


def tof_map(n_seq: int = N_SEQ) -> np.ndarray:
    """(seq, depth, lateral) float32 kPa with NaN holes, as a ToF map."""
    maps = 20.0 + np.arange(n_seq * DEPTH * LATERAL, dtype=np.float32).reshape(
        n_seq, DEPTH, LATERAL) / 10
    maps[:, 0, :2] = np.nan
    return maps


def add_maps_and_labels(path: Path) -> None:
    """``maps/tof_kpa`` (:func:`tof_map`) and the ``labels`` attribute (:data:`LABELS`)."""
    store = SessionStore.open(path, "a")
    n = len(store.table("swei"))
    store.write_array("maps/tof_kpa", tof_map(n), dims=("seq", "depth", "lateral"),
                      chunks=(1, DEPTH, LATERAL), allow_nan=True)
    store.root.require_group("labels").attrs["labels"] = LABELS
