"""NumPy block engine of :mod:`analysis.displacement` (Loupas and Kasai estimators).

The arithmetic runs on real float planes (in-phase and quadrature) in small lateral blocks whose
working buffers stay in the CPU cache, with every ufunc writing into preallocated buffers; blocks
are spread over a few threads (NumPy releases the GIL in its loops). The complex autocorrelations
are smoothed over the axial kernel by shifted adds of zero-padded buffers (cumulative sums in
float64 for kernels longer than 9 samples), then turned into phases with ``arctan2``. It serves
complex128 input, and complex64 where Numba cannot be imported (:mod:`analysis._loupas_numba`
is the fused Numba engine); validation happens in :mod:`analysis.displacement`.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

Reference = Literal["fixed", "progressive"]

#: Target number of pixels (depth x lateral) per block: about 32 k values per buffer keeps the
#: ~16 working buffers of one block within a 1-2 MiB L2 cache.
_BLOCK_PIXELS = 32_768
#: Kernels longer than this use cumulative sums instead of shifted adds.
_MAX_SHIFT_ADD_KERNEL = 9

@dataclass(frozen=True)
class EstimatorConfig:
    """Validated estimator settings shared by the NumPy and Numba engines."""

    method: Literal["loupas", "kasai"]
    kernel: int
    reference: Reference
    ensemble: int
    quality: bool
    phase_to_m: float  # Kasai: -c / (4 pi f_demod)
    theta_scale: float  # Loupas denominator: theta * theta_scale + theta_offset = -4 pi f / c
    theta_offset: float
    check_frequency: bool  # f_mean <= 0 is possible (fs > 2 f_demod)


def run_numpy(
    seqs: np.ndarray, config: EstimatorConfig, workers: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Blocked NumPy estimate of (sequence, frame, depth, lateral) complex IQ."""
    _, frames, depth, lateral = seqs.shape
    real = np.float32 if seqs.dtype == np.complex64 else np.float64
    out = np.empty((seqs.shape[0], frames - 1, depth, lateral), dtype=real)
    quality = np.empty_like(out) if config.quality else None

    n_blocks = _n_blocks(depth, lateral, workers)
    edges = np.linspace(0, lateral, n_blocks + 1).round().astype(int)
    jobs = [(s, int(lo), int(hi)) for s in range(seqs.shape[0])
            for lo, hi in itertools.pairwise(edges.tolist()) if hi > lo]

    def run(job: tuple[int, int, int]) -> None:
        s, lo, hi = job
        _Block(seqs[s], lo, hi, config, real).run(
            out[s, :, :, lo:hi], None if quality is None else quality[s, :, :, lo:hi])

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            run(job)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            # list() re-raises the first worker exception here
            list(pool.map(run, jobs))
    return out, quality


def _n_blocks(depth: int, lateral: int, workers: int) -> int:
    """Lateral blocks per sequence: small enough for cache, a multiple of the workers."""
    by_cache = max(1, math.ceil(depth * lateral / _BLOCK_PIXELS))
    if workers > 1:
        by_cache = workers * math.ceil(by_cache / workers)
    return min(lateral, by_cache)


def _conj_product(a_i: np.ndarray, a_q: np.ndarray, b_i: np.ndarray, b_q: np.ndarray,
                  re: np.ndarray, im: np.ndarray, tmp: np.ndarray) -> None:
    """``conj(a) b`` from the in-phase and quadrature planes of a and b into `re` + i `im`.

    All arrays have the same shape; `tmp` is scratch space.
    """
    np.multiply(a_i, b_i, out=re)
    np.multiply(a_q, b_q, out=tmp)
    re += tmp
    np.multiply(a_i, b_q, out=im)
    np.multiply(a_q, b_i, out=tmp)
    im -= tmp


@dataclass
class _Frame:
    """Per-frame planes and axial-lag sums for one lateral block."""

    i: np.ndarray  # (depth, width) in-phase
    q: np.ndarray  # (depth, width) quadrature
    ar: np.ndarray | None  # boxed Re R_a (depth, width), Loupas only
    ai: np.ndarray | None
    energy: np.ndarray | None  # boxed |x|^2, quality only


class _Block:
    """Estimator state for one sequence and one lateral block ``[lo, hi)``."""

    def __init__(
        self, seq: np.ndarray, lo: int, hi: int, config: EstimatorConfig, real: type
    ) -> None:
        planes = seq.view(real).reshape(*seq.shape, 2)
        self.i_src = planes[:, :, lo:hi, 0]
        self.q_src = planes[:, :, lo:hi, 1]
        self.frames, self.depth, _ = seq.shape
        self.width = hi - lo
        self.config = config
        self.real = real
        h = config.kernel // 2
        self.h = h
        shape = (self.depth, self.width)
        padded = (self.depth + 2 * h, self.width)
        # zero-padded product buffers: the pad rows are never written, so they stay zero
        self.pad_a = np.zeros(padded, real)
        self.pad_b = np.zeros(padded, real)
        self.tmp = np.empty(shape, real)
        self.rr = np.empty(shape, real)
        self.ri = np.empty(shape, real)
        self.sr = np.empty(shape, real)
        self.si = np.empty(shape, real)
        self.ea = np.empty(shape, real) if config.quality else None
        self.eb = np.empty(shape, real) if config.quality else None
        self._free: list[_Frame] = []
        self._cache: dict[int, _Frame] = {}

    # -- helpers ----------------------------------------------------------------------------
    def _box(self, src_padded: np.ndarray, out: np.ndarray) -> None:
        """Sum of ``kernel`` consecutive rows of the zero-padded `src_padded` into `out`."""
        k, d = self.config.kernel, self.depth
        if k == 1:
            np.copyto(out, src_padded)
        elif k <= _MAX_SHIFT_ADD_KERNEL:
            np.add(src_padded[0:d], src_padded[1 : d + 1], out=out)
            for j in range(2, k):
                out += src_padded[j : d + j]
        else:
            csum = np.cumsum(src_padded, axis=0, dtype=np.float64)
            out[0] = csum[k - 1]
            np.subtract(csum[k : k + d - 1], csum[0 : d - 1], out=out[1:], casting="same_kind")

    def _new_frame(self) -> _Frame:
        if self._free:
            return self._free.pop()
        shape = (self.depth, self.width)
        loupas = self.config.method == "loupas"
        return _Frame(
            i=np.empty(shape, self.real), q=np.empty(shape, self.real),
            ar=np.empty(shape, self.real) if loupas else None,
            ai=np.empty(shape, self.real) if loupas else None,
            energy=np.empty(shape, self.real) if self.config.quality else None,
        )

    def frame(self, k: int) -> _Frame:
        """Planes (and boxed axial autocorrelation) of frame k, computed once and cached."""
        cached = self._cache.get(k)
        if cached is not None:
            return cached
        f = self._new_frame()
        np.copyto(f.i, self.i_src[k])
        np.copyto(f.q, self.q_src[k])
        # A cheap finiteness check: a sum is finite unless a value is NaN/inf (or it overflows,
        # which the exact check below then clears).
        if not (math.isfinite(np.add.reduce(f.i, axis=None))
                and math.isfinite(np.add.reduce(f.q, axis=None))):
            if not (np.isfinite(f.i).all() and np.isfinite(f.q).all()):
                raise ValueError(f"iq contains NaN or inf (frame {k}); mask or repair it first")
        h, d = self.h, self.depth
        if f.ar is not None and f.ai is not None:
            # conj(x[m]) x[m+1] for m < depth - 1; the last row has no axial neighbour (0)
            _conj_product(f.i[:-1], f.q[:-1], f.i[1:], f.q[1:], self.pad_a[h : h + d - 1],
                          self.pad_b[h : h + d - 1], self.tmp[:-1])
            self.pad_a[h + d - 1] = 0
            self.pad_b[h + d - 1] = 0
            self._box(self.pad_a, f.ar)
            self._box(self.pad_b, f.ai)
        if f.energy is not None:
            inner = self.pad_a[h : h + d]
            np.multiply(f.i, f.i, out=inner)
            np.multiply(f.q, f.q, out=self.tmp)
            inner += self.tmp
            self._box(self.pad_a, f.energy)
        self._cache[k] = f
        return f

    def release_before(self, k: int) -> None:
        """Recycle cached frames with index < k, except the fixed reference frame 0."""
        keep_zero = self.config.reference == "fixed"
        for idx in [i for i in self._cache if i < k and not (keep_zero and i == 0)]:
            self._free.append(self._cache.pop(idx))

    def pairs(self, step: int) -> list[tuple[int, int]]:
        """Frame pairs (reference, current) whose lag-one products estimate output `step`."""
        if self.config.reference == "fixed":
            return [(0, step)]
        n_pairs = self.config.ensemble - 1
        first = max(1, step - (n_pairs - 1) // 2)
        last = min(self.frames - 1, step + n_pairs // 2)
        return [(j - 1, j) for j in range(first, last + 1)]

    # -- main loop --------------------------------------------------------------------------
    def run(self, out: np.ndarray, quality: np.ndarray | None) -> None:
        """Fill `out` (frame - 1, depth, width) and `quality` (same) for this block."""
        cfg = self.config
        h, d = self.h, self.depth
        for step in range(1, self.frames):
            pairs = self.pairs(step)
            # recycle frames no later step needs (the fixed reference frame 0 is kept)
            self.release_before(step if cfg.reference == "fixed" else pairs[0][0])
            frames_used = sorted({k for pair in pairs for k in pair})
            # lag-one temporal autocorrelation, boxed, summed over the pairs -> rr + i ri
            for n, (a, b) in enumerate(pairs):
                fa, fb = self.frame(a), self.frame(b)
                _conj_product(fa.i, fa.q, fb.i, fb.q, self.pad_a[h : h + d],
                              self.pad_b[h : h + d], self.tmp)
                if n == 0:
                    self._box(self.pad_a, self.rr)
                    self._box(self.pad_b, self.ri)
                else:
                    self._box(self.pad_a, self.sr)
                    self._box(self.pad_b, self.si)
                    self.rr += self.sr
                    self.ri += self.si
            target = out[step - 1]
            if quality is not None:
                self._quality(pairs, quality[step - 1])
            if cfg.method == "kasai":
                np.arctan2(self.ri, self.rr, out=self.rr)
                np.multiply(self.rr, cfg.phase_to_m, out=target)
                continue
            # axial lag-one autocorrelation over every frame of the ensemble -> sr + i si
            axial = [self.frame(k) for k in frames_used]  # >= 2 frames, all cached
            np.add(axial[0].ar, axial[1].ar, out=self.sr)
            np.add(axial[0].ai, axial[1].ai, out=self.si)
            for f in axial[2:]:
                self.sr += f.ar
                self.si += f.ai
            theta = np.arctan2(self.si, self.sr, out=self.sr)
            phi = np.arctan2(self.ri, self.rr, out=self.rr)
            # denominator -4 pi f_mean / c with f_mean = f_demod + fs theta / (2 pi)
            theta *= cfg.theta_scale
            theta += cfg.theta_offset
            np.divide(phi, theta, out=target)
            if cfg.check_frequency:
                np.copyto(target, np.nan, where=theta >= 0)
        if cfg.reference == "progressive":
            for k in range(1, self.frames - 1):
                out[k] += out[k - 1]

    def _quality(self, pairs: list[tuple[int, int]], target: np.ndarray) -> None:
        assert self.ea is not None and self.eb is not None
        for n, (a, b) in enumerate(pairs):
            ea, eb = self.frame(a).energy, self.frame(b).energy
            assert ea is not None and eb is not None
            if n == 0:
                np.copyto(self.ea, ea)
                np.copyto(self.eb, eb)
            else:
                self.ea += ea
                self.eb += eb
        self.ea *= self.eb
        np.sqrt(self.ea, out=self.ea)
        np.hypot(self.rr, self.ri, out=self.eb)
        target.fill(0)
        np.divide(self.eb, self.ea, out=target, where=self.ea > 0)
        np.minimum(target, 1, out=target)  # rounding only: |R_t| <= sqrt(E_a E_b) exactly

