"""Fused Numba kernels behind :func:`analysis.displacement.loupas` and ``kasai`` (complex64).

One task handles one sequence, one lateral strip of columns and one output frame (fixed
reference) or all output frames in turn (progressive reference). It walks down depth once. For
each depth row it forms the lag-one products (temporal over the frame pair, axial over both
frames) into a ring of the last ``kernel`` rows (one loop over the columns of the strip), then
sums the ring (the complex autocorrelations over the axial window), takes the two phases with a
float32 ``atan2`` polynomial (error below 1.2e-7 rad) and writes the displacement (a second
loop). The columns are contiguous in memory, so both loops vectorise; the
arithmetic is float32 like the NumPy path (16 lanes with AVX-512), and each window is summed
afresh from its ``kernel`` products, so no rounding error is carried from row to row. The first
and last rows (incomplete windows) and ensembles of more than one pair take a slower path
through per-row buffers that computes the same values with the same operations; the quality
map has its own loop (its coefficient is formed in float64, free of overflow).

The kernel length is a compile-time constant (the length of the ``kernel_marker`` tuple), so
the window sums unroll; each new length compiles once. Nothing is compiled at import: Numba
compiles at the first call or loads its on-disk cache (``cache=True``). ``fastmath`` is off:
no reassociation or contraction, and every pixel goes through the same operations whatever the
strip width or the number of threads, so the results do not depend on either.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import prange

__all__ = ["run"]

# atan(a) / a ~ P(a^2) on [0, 1] (least-maximum relative error fit, 1.2e-8 in exact
# arithmetic, about 1.2e-7 rad evaluated in float32)
_P0 = np.float32(0.9999999847656804)
_P1 = np.float32(-0.3333307334366452)
_P2 = np.float32(0.19992619357696698)
_P3 = np.float32(-0.14203644154952488)
_P4 = np.float32(0.10640932640819385)
_P5 = np.float32(-0.07504291236227646)
_P6 = np.float32(0.04269147604909532)
_P7 = np.float32(-0.016068599750582696)
_P8 = np.float32(0.002849881658618353)
_HALF_PI = np.float32(math.pi / 2)
_PI = np.float32(math.pi)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_NAN = np.float32(np.nan)
_U = np.uintp  # unsigned indices: no negative-index wraparound in the vector loops

_JIT = {"fastmath": False, "error_model": "numpy", "nogil": True}
_cache_warned = False


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, ...)``, without the on-disk cache where no directory is writable.

    Numba looks for a cache directory when the decorator runs and raises if it finds none
    (neither ``__pycache__`` next to this file, nor ``NUMBA_CACHE_DIR``, nor the user cache
    directory is writable); the kernels then compile in every process instead.
    """
    def decorate(fn: Callable[..., Any]) -> Any:
        global _cache_warned
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as err:
            if "cannot cache" not in str(err):
                raise
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(f"{err}; the Loupas kernels will compile in every process (set "
                              "NUMBA_CACHE_DIR to a writable directory to keep them)",
                              RuntimeWarning, stacklevel=2)
            return numba.njit(cache=False, **options)(fn)
    return decorate


@_jit(inline="always", **_JIT)
def _atan2(y: np.float32, x: np.float32) -> np.float32:
    """Full-quadrant angle of ``x + i y`` in float32 (same quadrant rules as ``np.arctan2``)."""
    ax = abs(x)
    ay = abs(y)
    big = max(ax, ay)
    small = min(ax, ay)
    a = small / big if big > _ZERO else _ZERO
    s = a * a
    p = _P8
    p = p * s + _P7
    p = p * s + _P6
    p = p * s + _P5
    p = p * s + _P4
    p = p * s + _P3
    p = p * s + _P2
    p = p * s + _P1
    p = p * s + _P0
    r = a * p
    if ay > ax:
        r = _HALF_PI - r
    if x < _ZERO:
        r = _PI - r
    return math.copysign(r, y)


@_jit(inline="always", **_JIT)
def _displacement(tr, ti, ar, ai, loupas, phase_to_m, theta_scale, theta_offset,
                  nan_from):
    """Displacement (float32, m) from the window sums R_t = tr + i ti and R_a = ar + i ai."""
    phi = _atan2(ti, tr)
    if not loupas:
        return phi * phase_to_m
    # -4 pi f_mean / c with f_mean = f_demod + fs angle(R_a) / (2 pi)
    den = _atan2(ai, ar) * theta_scale + theta_offset
    if den >= nan_from:  # f_mean <= 0: no displacement
        return _NAN
    return phi / den


@_jit(inline="always", **_JIT)
def _window(ring, j, kernel):
    """Sum of the `kernel` ring rows of column `j` (in ring order, the same on every path)."""
    total = ring[0, j]
    for k in range(1, kernel):
        total += ring[k, j]
    return total


@_jit(inline="always", **_JIT)
def _samples(x, ia, ib, jj):
    """Column `jj` of two rows of the flat interleaved IQ `x` starting at offsets `ia`, `ib`.

    Returns ``(a_r, a_i, b_r, b_i)``, the real and imaginary parts of both samples (float32).
    """
    oa = _U(ia + 2 * jj)
    ob = _U(ib + 2 * jj)
    return x[oa], x[oa + _U(1)], x[ob], x[ob + _U(1)]


@_jit(**_JIT)
def _fused_row(x, ia, ib, row, w, slot, kernel_marker, ring_tr, ring_ti, ring_ar, ring_ai,
               guard, out, o, phase_to_m, theta_scale, theta_offset, nan_from):
    """One interior depth row r of a single-pair estimate, from the samples to the output.

    `x` is the flat float32 IQ (interleaved re, im); `ia`/`ib` are the offsets of the strip's
    first sample in depth row r of the pair's earlier and later frame, `row` the floats per
    depth row (row r + 1 exists). The products of row r go to ring row `slot`; the window
    centred on row r - kernel // 2 is then complete and its displacement goes to `out` from
    flat offset `o`. With ``ring_ar=None`` (a compile-time choice: Numba prunes the branches)
    the axial part is skipped and the result is Kasai's. `guard` stays 0 unless an input is
    NaN or inf (``0 * product`` is NaN then).

    Two loops: one writes the ring row, the next reads all ring rows (a loop that did both
    would not vectorise, as the compiler cannot tell the rows apart).
    """
    for jj in range(w):
        j = _U(jj)
        a_r, a_i, b_r, b_i = _samples(x, ia, ib, jj)
        # temporal lag one conj(a) b
        v = a_r * b_r + a_i * b_i
        guard[j] += v * _ZERO
        ring_tr[slot, j] = v
        ring_ti[slot, j] = a_r * b_i - a_i * b_r
        if ring_ar is not None:
            # axial lag one conj(x[r]) x[r + 1] of both frames
            c_r, c_i, d_r, d_i = _samples(x, ia + row, ib + row, jj)
            ring_ar[slot, j] = (a_r * c_r + a_i * c_i) + (b_r * d_r + b_i * d_i)
            ring_ai[slot, j] = (a_r * c_i - a_i * c_r) + (b_r * d_i - b_i * d_r)
    _emit_row(w, kernel_marker, ring_tr, ring_ti, ring_ar, ring_ai, out, o, phase_to_m,
              theta_scale, theta_offset, nan_from)


@_jit(inline="always", **_JIT)
def _emit_row(w, kernel_marker, ring_tr, ring_ti, ring_ar, ring_ai, out, o, phase_to_m,
              theta_scale, theta_offset, nan_from):
    """Displacement of one output row from the ring sums (Kasai when ``ring_ar is None``)."""
    kernel = len(kernel_marker)
    if ring_ar is not None:
        for jj in range(w):
            j = _U(jj)
            out[_U(o + jj)] = _displacement(
                _window(ring_tr, j, kernel), _window(ring_ti, j, kernel),
                _window(ring_ar, j, kernel), _window(ring_ai, j, kernel), True, phase_to_m,
                theta_scale, theta_offset, nan_from)
    else:
        for jj in range(w):
            j = _U(jj)
            out[_U(o + jj)] = _displacement(
                _window(ring_tr, j, kernel), _window(ring_ti, j, kernel), _ZERO, _ZERO, False,
                phase_to_m, theta_scale, theta_offset, nan_from)


@_jit(**_JIT)
def _fused_quality(x, ia, ib, w, slot, kernel_marker, ring_tr, ring_ti, ring_ea, ring_eb,
                   quality, o):
    """Energies of one interior row into the ring, and the quality row (see `_fused_row`)."""
    for jj in range(w):
        j = _U(jj)
        a_r, a_i, b_r, b_i = _samples(x, ia, ib, jj)
        ring_ea[slot, j] = a_r * a_r + a_i * a_i
        ring_eb[slot, j] = b_r * b_r + b_i * b_i
    _emit_quality(w, kernel_marker, ring_tr, ring_ti, ring_ea, ring_eb, quality, o)


@_jit(inline="always", **_JIT)
def _emit_quality(w, kernel_marker, ring_tr, ring_ti, ring_ea, ring_eb, quality, o):
    """Correlation coefficients of one output row from the ring sums."""
    kernel = len(kernel_marker)
    for jj in range(w):
        j = _U(jj)
        quality[_U(o + jj)] = _coefficient(
            _window(ring_tr, j, kernel), _window(ring_ti, j, kernel),
            _window(ring_ea, j, kernel), _window(ring_eb, j, kernel))


@_jit(inline="always", **_JIT)
def _coefficient(tr, ti, ea, eb):
    """Correlation coefficient |R_t| / sqrt(E_a E_b) in [0, 1] (0 without signal), float32."""
    norm = math.sqrt(np.float64(ea) * np.float64(eb))
    if not norm > 0.0:
        return _ZERO
    c = math.sqrt(np.float64(tr) * np.float64(tr) + np.float64(ti) * np.float64(ti)) / norm
    return min(np.float32(c), _ONE)


@_jit(**_JIT)
def _add_products(x, ia, ib, w, new_r, new_i, guard):
    """Add ``conj(a) b`` for `w` columns at flat offsets `ia`, `ib` to `new_r + i new_i`."""
    for jj in range(w):
        j = _U(jj)
        a_r, a_i, b_r, b_i = _samples(x, ia, ib, jj)
        v = a_r * b_r + a_i * b_i
        guard[j] += v * _ZERO
        new_r[j] += v
        new_i[j] += a_r * b_i - a_i * b_r


@_jit(**_JIT)
def _add_energy(x, ia, w, new):
    """Add ``|a|^2`` for `w` columns at flat offset `ia` to `new`."""
    for jj in range(w):
        j = _U(jj)
        oa = _U(ia + 2 * jj)
        a_r = x[oa]
        a_i = x[oa + _U(1)]
        new[j] += a_r * a_r + a_i * a_i


@_jit(**_JIT)
def _general_row(x, shape, s, r, step, first, last, progressive, w, j0, slot, kernel_marker,
                 news, rings, guard, out, quality, o, loupas, want_q, phase_to_m, theta_scale,
                 theta_offset, nan_from):
    """Any depth row r (0 <= r < depth + kernel // 2) of any ensemble, through row buffers.

    Rows past the last contribute nothing, the last row has no axial product; the frame pairs
    are (k - 1, k) for k in [first, last] (progressive) or (0, step) (fixed). The output row
    ``r - kernel // 2`` is written from flat offset `o` when `o` is not negative.
    """
    frames = shape[1]
    depth = shape[2]
    lateral = shape[3]
    for new in news:
        new[:w] = 0.0
    new_tr, new_ti, new_ar, new_ai, new_ea, new_eb = news
    if r < depth:
        for p in range(first, last + 1):
            fa = p - 1 if progressive else 0
            ia = (((s * frames + fa) * depth + r) * lateral + j0) * 2
            ib = (((s * frames + p) * depth + r) * lateral + j0) * 2
            _add_products(x, ia, ib, w, new_tr, new_ti, guard)
            if want_q:
                _add_energy(x, ia, w, new_ea)
                _add_energy(x, ib, w, new_eb)
        if loupas and r < depth - 1:
            n_frames = last - first + 2 if progressive else 2
            for n in range(n_frames):
                f = first - 1 + n if progressive else (0 if n == 0 else step)
                i0 = (((s * frames + f) * depth + r) * lateral + j0) * 2
                _add_products(x, i0, i0 + 2 * lateral, w, new_ar, new_ai, guard)
    for q in range(len(news)):
        rings[q][slot, :w] = news[q][:w]
    if o < 0:
        return
    ring_tr, ring_ti, ring_ar, ring_ai, ring_ea, ring_eb = rings
    if loupas:
        _emit_row(w, kernel_marker, ring_tr, ring_ti, ring_ar, ring_ai, out, o, phase_to_m,
                  theta_scale, theta_offset, nan_from)
    else:
        _emit_row(w, kernel_marker, ring_tr, ring_ti, None, None, out, o, phase_to_m,
                  theta_scale, theta_offset, nan_from)
    if want_q:
        _emit_quality(w, kernel_marker, ring_tr, ring_ti, ring_ea, ring_eb, quality, o)


@_jit(**_JIT)
def _task(x, shape, out, quality, s, step_lo, step_hi, j0, w, kernel_marker, progressive,
          ensemble, loupas, want_q, phase_to_m, theta_scale, theta_offset, check_frequency):
    """Displacement (and quality) of sequence `s`, steps ``[step_lo, step_hi)``, strip `j0`.

    `x` is the flat float32 view of the IQ of logical shape `shape` (sequence, frame, depth,
    lateral); `out` and `quality` are flat float32 arrays shaped (sequence, frame - 1, depth,
    lateral). Returns 0, or NaN if an input sample of the strip is NaN or inf.
    """
    kernel = len(kernel_marker)
    frames = shape[1]
    depth = shape[2]
    lateral = shape[3]
    row = 2 * lateral  # floats per IQ depth row
    h = kernel // 2
    f32 = np.float32
    rings = (np.zeros((kernel, w), f32), np.zeros((kernel, w), f32),
             np.zeros((kernel, w), f32), np.zeros((kernel, w), f32),
             np.zeros((kernel, w), f32), np.zeros((kernel, w), f32))
    news = (np.empty(w, f32), np.empty(w, f32), np.empty(w, f32), np.empty(w, f32),
            np.empty(w, f32), np.empty(w, f32))
    guard = np.zeros(w, f32)
    phase_to_m32 = f32(phase_to_m)
    theta_scale32 = f32(theta_scale)
    theta_offset32 = f32(theta_offset)
    # displacements whose denominator -4 pi f_mean / c reaches this are NaN (f_mean <= 0)
    nan_from32 = f32(0.0) if check_frequency else f32(np.inf)
    single = not progressive or ensemble == 2
    for step in range(step_lo, step_hi):
        if progressive:
            n_pairs = ensemble - 1
            first = max(1, step - (n_pairs - 1) // 2)
            last = min(frames - 1, step + n_pairs // 2)
        else:
            first = step
            last = step
        fa = step - 1 if progressive else 0
        for ring in rings:
            ring[:] = 0.0
        out_base = ((s * (frames - 1) + step - 1) * depth) * lateral + j0
        for r in range(depth + h):
            slot = r % kernel
            o = out_base + (r - h) * lateral if r >= h else -1
            if single and h <= r < depth - 1:
                ia = (((s * frames + fa) * depth + r) * lateral + j0) * 2
                ib = (((s * frames + step) * depth + r) * lateral + j0) * 2
                if loupas:
                    _fused_row(x, ia, ib, row, w, slot, kernel_marker, rings[0], rings[1],
                               rings[2], rings[3], guard, out, o, phase_to_m32, theta_scale32,
                               theta_offset32, nan_from32)
                else:
                    _fused_row(x, ia, ib, row, w, slot, kernel_marker, rings[0], rings[1],
                               None, None, guard, out, o, phase_to_m32, theta_scale32,
                               theta_offset32, nan_from32)
                if want_q:
                    _fused_quality(x, ia, ib, w, slot, kernel_marker, rings[0], rings[1],
                                   rings[4], rings[5], quality, o)
            else:
                _general_row(x, shape, s, r, step, first, last, progressive, w, j0, slot,
                             kernel_marker, news, rings, guard, out, quality, o, loupas,
                             want_q, phase_to_m32, theta_scale32, theta_offset32,
                             nan_from32)
            if progressive and step > 1 and o >= 0:
                # cumulate: every output is relative to frame 0
                prev = o - depth * lateral
                for jj in range(w):
                    out[_U(o + jj)] += out[_U(prev + jj)]
    return np.float64(guard.sum())


@_jit(**_JIT)
def _task_at(t, x, shape, out, quality, width, kernel_marker, progressive, ensemble, loupas,
             want_q, phase_to_m, theta_scale, theta_offset, check_frequency):
    """Run task number `t` (output frame fastest, then strip, then sequence).

    Consecutive tasks share the strip of the fixed reference frame, which then stays in cache.
    """
    frames = shape[1]
    lateral = shape[3]
    n_strips = (lateral + width - 1) // width
    steps = 1 if progressive else frames - 1
    step = t % steps
    rest = t // steps
    strip = rest % n_strips
    s = rest // n_strips
    if progressive:
        step_lo, step_hi = 1, frames
    else:
        step_lo = step + 1
        step_hi = step_lo + 1
    j0 = strip * width
    w = min(width, lateral - j0)
    return _task(x, shape, out, quality, s, step_lo, step_hi, j0, w, kernel_marker,
                 progressive, ensemble, loupas, want_q, phase_to_m, theta_scale, theta_offset,
                 check_frequency)


def n_tasks(shape: tuple[int, int, int, int], width: int, progressive: bool) -> int:
    """Number of tasks for IQ of `shape` (sequence, frame, depth, lateral) in strips of `width`."""
    steps = 1 if progressive else shape[1] - 1
    return shape[0] * steps * -(-shape[3] // width)


@_jit(parallel=True, **_JIT)
def _run_parallel(x, shape, out, quality, width, n, kernel_marker, progressive, ensemble,
                  loupas, want_q, phase_to_m, theta_scale, theta_offset, check_frequency):
    guard = np.empty(n)
    for t in prange(n):
        guard[t] = _task_at(t, x, shape, out, quality, width, kernel_marker, progressive,
                            ensemble, loupas, want_q, phase_to_m, theta_scale, theta_offset,
                            check_frequency)
    return guard


@_jit(**_JIT)
def _run_serial(x, shape, out, quality, width, n, kernel_marker, progressive, ensemble, loupas,
                want_q, phase_to_m, theta_scale, theta_offset, check_frequency):
    guard = np.empty(n)
    for t in range(n):
        guard[t] = _task_at(t, x, shape, out, quality, width, kernel_marker, progressive,
                            ensemble, loupas, want_q, phase_to_m, theta_scale, theta_offset,
                            check_frequency)
    return guard


def run(
    iq: np.ndarray, out: np.ndarray, quality: np.ndarray | None, *, kernel: int,
    progressive: bool, ensemble: int, loupas: bool, phase_to_m: float, theta_scale: float,
    theta_offset: float, check_frequency: bool, threads: int, width: int,
) -> np.ndarray:
    """Fill `out` (and `quality`) from `iq`; returns the per-task guards (NaN: bad input).

    Parameters
    ----------
    iq : ndarray, shape (sequence, frame, depth, lateral), complex64, C-contiguous
    out, quality : ndarray, shape (sequence, frame - 1, depth, lateral), float32, C-contiguous
        `quality` may be None.
    kernel : int
        Odd axial kernel length (samples).
    progressive, ensemble, loupas : bool, int, bool
        Reference handling, frames per estimate, Loupas (True) or Kasai (False).
    phase_to_m, theta_scale, theta_offset, check_frequency : float, float, float, bool
        Kasai scale ``-c / (4 pi f_demod)``; Loupas denominator ``theta * theta_scale +
        theta_offset`` (= ``-4 pi f_mean / c``); whether a non-negative denominator gives NaN.
    threads : int
        1 runs in the calling thread; more uses Numba's pool (at most that many threads must be
        set with ``numba.set_num_threads`` by the caller).
    width : int
        Lateral strip width (columns per task); does not change the results.
    """
    shape = iq.shape
    n = n_tasks(shape, width, progressive)
    x = iq.view(np.float32).reshape(-1)
    flat_out = out.reshape(-1)
    flat_q = np.zeros(1, np.float32) if quality is None else quality.reshape(-1)
    args = (x, shape, flat_out, flat_q, width, n, (0,) * kernel, progressive, ensemble, loupas,
            quality is not None, phase_to_m, theta_scale, theta_offset, check_frequency)
    if threads == 1:
        return _run_serial(*args)
    # hand out tasks one at a time: on a busy machine a thread that loses its core then
    # holds up one task, not a fixed share of them
    with numba.parallel_chunksize(1):
        return _run_parallel(*args)
