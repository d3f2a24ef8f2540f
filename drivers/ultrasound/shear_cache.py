"""Exact memo of shear-wave solves: the same inputs give the same field without a second solve.

A push's displacement field (:func:`drivers.ultrasound.sim_shear.simulate_shear_wave`) depends
only on the modulus map as sampled on the pixel and finite-difference grids, the push, the probe,
the output times and pixel grid, the viscosity, density, grid/time steps, sponge and elevation
lens. On a homogeneous block every probe position sees the same map, so the default demo's
~224 SWEI acquisitions of the homogeneous blocks need only one solve per block and push.

The key is a SHA-256 digest of the exact bytes of the evaluated modulus grids and of every other
input (arrays as raw float64 bytes with their shapes, models as their JSON, floats as ``repr``),
so a hit returns bit for bit what the solve would (the solver is deterministic: a fixed thread
split, see :mod:`drivers.ultrasound._shear_numba`). Any change of one value, e.g. an inclusion
that moved by one FD node, is a different key and a fresh solve.

Memory: the entries are held in least-recently-used order and the oldest are dropped once their
arrays together exceed ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES` = 128 MiB; one field of
the default demo is 1.9 MB, so ~70 fields, against the 7 pushes of a position that repeat on a
homogeneous block). A field larger than the bound is never stored.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MAX_BYTES", "ShearFieldCache", "digest"]

#: Default bound of the memo (bytes of the stored arrays).
DEFAULT_MAX_BYTES = 128 * 2**20


def digest(*parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` (ndarrays, pydantic models, dataclasses, scalars, None).

    Arrays contribute their dtype, shape and raw bytes (C order); pydantic models their class
    name and ``model_dump_json()``; everything else its ``repr`` (exact for floats).
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"nd:{a.dtype.str}:{a.shape}:".encode())
            h.update(a.tobytes())
        elif hasattr(part, "model_dump_json"):
            h.update(f"model:{type(part).__name__}:{part.model_dump_json()}".encode())
        else:
            h.update(f"r:{type(part).__name__}:{part!r}".encode())
        h.update(b"|")
    return h.hexdigest()


class ShearFieldCache:
    """Bounded LRU memo of arrays by digest (see the module notes).

    Parameters
    ----------
    max_bytes : int
        Upper bound (bytes) of the arrays held, >= 0 (0 disables storing).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held now (<= ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[np.ndarray, ...] | None:
        """Copies of the arrays stored under ``key``, or None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return tuple(a.copy() for a in entry)

    def put(self, key: str, arrays: tuple[np.ndarray, ...]) -> None:
        """Store copies of ``arrays`` under ``key``, dropping the least recently used beyond the
        bound."""
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes:
            return
        stored = tuple(a.copy() for a in arrays)
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = stored
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in old)

    def clear(self) -> None:
        """Drop every entry (the hit/miss counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
