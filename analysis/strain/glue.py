"""GLUE: global ultrasound elastography (Hashemi & Rivaz 2017) as one sparse linear system.

Cost over every sample ``(i, j)`` of the (border-cropped) image, with an initial integer-ish
field ``(a, l)`` (axial samples, lateral lines) and the unknown refinements ``(da, dl)``:

    C = sum [I1(i, j) - I2(i + a + da, j + l + dl)]^2
        + alpha1 sum (a' - a'_{i-1} - s_a1)^2 + alpha2 sum (a' - a'_{j-1} - s_a2)^2
        + beta1  sum (l' - l'_{i-1} - s_l1)^2 + beta2  sum (l' - l'_{j-1} - s_l2)^2,

with ``a' = a + da`` and ``l' = l + dl``. The data term is linearised around the initial field:
``I2(i + a + da, j + l + dl) ~ I2w + g_a da + g_l dl``, where ``I2w``, ``g_a`` and ``g_l`` are
``I2`` and its central-difference gradients sampled bilinearly at the warped position. The
offsets ``s`` are the global means of the corresponding first differences of the initial field
(the mean axial strain for ``s_a1``): the continuity terms pull each difference toward the mean
strain rather than toward zero, which would bias strain low (how this offset and the borders
deliberately differ from the reference ``GLUE.m``: ``docs/data-exchange.md``). Setting the
gradient of ``C`` to zero gives ``(G + R) x = b`` with ``x`` the unknowns interleaved
``(da, dl)`` per sample, depth fastest within each A-line; ``G`` is 2 x 2 block-diagonal
(``g g^T``), ``R`` the weighted first-difference Laplacians. Frames are normalised by
``max |I1|`` first.

Solvers (``solver=``), chosen by measurement (``bench/glue.py``, 2000 x 250, ~1M unknowns):

* ``"cg-twolevel"`` (default): conjugate gradients with an additive two-level preconditioner:
  the exact solve of every A-line without the across-line couplings (one banded Cholesky factor
  of bandwidth 2 for all lines) plus a coarse correction on piecewise-constant aggregates of
  ``coarse_segment`` samples per line and component (sparse LU of a ~25k system). About 20-30
  iterations; the line solve alone leaves the smooth across-line modes (the lateral field is
  mostly set by its weak across-line continuity) and needs 100-200.
* ``"cg-line"``: the line preconditioner alone.
* ``"cg-jacobi"``: diagonal preconditioner (hundreds of iterations).
* ``"direct"``: sparse LU (:func:`scipy.sparse.linalg.spsolve`); exact, fine for small frames,
  far too slow and memory-hungry at 1M unknowns.

References
----------
H. S. Hashemi, H. Rivaz, "Global time-delay estimation in ultrasound elastography", IEEE Trans.
Ultrason. Ferroelectr. Freq. Control 64(10), 2017. Kibria & Rivaz, GLUENet, 2018.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.ndimage import map_coordinates

from analysis.strain._checks import check_field, check_frames

__all__ = ["GlueResult", "GlueSolver", "glue", "glue_system"]

GlueSolver = Literal["cg-twolevel", "cg-line", "cg-jacobi", "direct"]
_SOLVERS = ("cg-twolevel", "cg-line", "cg-jacobi", "direct")


@dataclass(frozen=True)
class GlueResult:
    """Refined displacement on the cropped region.

    Attributes
    ----------
    axial, lateral : ndarray, shape (depth_sample - crop, line - crop), float32
        Sub-sample displacement in samples and lines; ``I1(i, j)`` matches
        ``I2(i + axial, j + lateral)``.
    region : tuple of slice
        Where the arrays sit in the input frames: ``frame[region]`` has their shape.
    solver : str
        Solver used.
    solver_iterations : list of int
        Iterations of the linear solver per GLUE iteration (0 for the direct solver).
    """

    axial: NDArray[np.float32]
    lateral: NDArray[np.float32]
    region: tuple[slice, slice]
    solver: str
    solver_iterations: list[int]


def _warp(
    image: NDArray[np.float64], rows: NDArray[np.float64], cols: NDArray[np.float64]
) -> NDArray[np.float64]:
    return map_coordinates(image, [rows, cols], order=1, mode="nearest")


def glue_system(
    i1: NDArray[np.float64],
    i2: NDArray[np.float64],
    axial: NDArray[np.float64],
    lateral: NDArray[np.float64],
    region: tuple[slice, slice],
    *,
    alpha1: float,
    alpha2: float,
    beta1: float,
    beta2: float,
) -> tuple[sp.csr_matrix, NDArray[np.float64]]:
    """Assemble the linearised GLUE system ``A x = b`` for the cropped region.

    Parameters
    ----------
    i1, i2 : ndarray, shape (n, m), float64
        Normalised pre/post frames.
    axial, lateral : ndarray, shape (n, m), float64
        Current displacement estimate (samples, lines).
    region : (slice, slice)
        Rows and columns that hold unknowns.
    alpha1, alpha2, beta1, beta2 : float
        Continuity weights (see the module docstring).

    Returns
    -------
    a : scipy.sparse.csr_matrix, shape (2 p q, 2 p q)
        Symmetric positive (semi-)definite system matrix; unknowns interleaved (axial, lateral)
        per sample, depth fastest.
    b : ndarray, shape (2 p q,)
        Right-hand side.
    """
    n, m = i1.shape
    rows_idx = np.arange(n)[region[0]]
    cols_idx = np.arange(m)[region[1]]
    p, q = rows_idx.size, cols_idx.size
    a0 = axial[region]
    l0 = lateral[region]
    rr = rows_idx[:, None] + a0
    cc = cols_idx[None, :] + l0
    grad_a, grad_l = np.gradient(i2)
    i2w = _warp(i2, rr, cc)
    ga = _warp(grad_a, rr, cc)
    gl = _warp(grad_l, rr, cc)
    # Samples warped outside I2 carry no data (continuity fills them in).
    outside = (rr < 0) | (rr > n - 1) | (cc < 0) | (cc > m - 1)
    ga[outside] = 0.0
    gl[outside] = 0.0
    res = i1[region] - i2w
    res[outside] = 0.0

    # Column-major (depth fastest) flattening of (p, q) fields.
    def flat(f: NDArray[np.float64]) -> NDArray[np.float64]:
        return f.T.ravel()

    n_dof = 2 * p * q
    # Neighbour counts for the Laplacian diagonals.
    nv = np.full((p, q), 2.0)
    nv[0, :] -= 1
    nv[-1, :] -= 1
    nl = np.full((p, q), 2.0)
    nl[:, 0] -= 1
    nl[:, -1] -= 1
    if p == 1:
        nv[:] = 0
    if q == 1:
        nl[:] = 0
    diag = np.empty(n_dof)
    diag[0::2] = flat(ga * ga + alpha1 * nv + alpha2 * nl)
    diag[1::2] = flat(gl * gl + beta1 * nv + beta2 * nl)
    off1 = np.zeros(n_dof - 1)
    off1[0::2] = flat(ga * gl)
    off2 = np.zeros(n_dof - 2)
    vert = np.ones((p, q))
    vert[-1, :] = 0.0  # no coupling from the last sample of a line to the next line's first
    off2[0::2] = -alpha1 * flat(vert)[: (n_dof - 2 + 1) // 2]
    off2[1::2] = -beta1 * flat(vert)[: (n_dof - 2) // 2]
    diags = [diag, off1, off1, off2, off2]
    offsets = [0, 1, -1, 2, -2]
    if q > 1:
        offp = np.empty(n_dof - 2 * p)
        offp[0::2] = -alpha2
        offp[1::2] = -beta2
        diags += [offp, offp]
        offsets += [2 * p, -2 * p]
    a = sp.diags(diags, offsets, shape=(n_dof, n_dof), format="csr")

    def lap_rhs(field: NDArray[np.float64], w1: float, w2: float) -> NDArray[np.float64]:
        """-(w1 D1^T (D1 f - mean) + w2 D2^T (D2 f - mean))."""
        out = np.zeros_like(field)
        if p > 1:
            d1 = np.diff(field, axis=0)
            d1 = d1 - d1.mean()
            out[1:, :] -= w1 * d1
            out[:-1, :] += w1 * d1
        if q > 1:
            d2 = np.diff(field, axis=1)
            d2 = d2 - d2.mean()
            out[:, 1:] -= w2 * d2
            out[:, :-1] += w2 * d2
        return out

    b = np.empty(n_dof)
    b[0::2] = flat(ga * res + lap_rhs(a0, alpha1, alpha2))
    b[1::2] = flat(gl * res + lap_rhs(l0, beta1, beta2))
    return a, b


def _aggregation(shape: tuple[int, int], segment: int) -> sp.csr_matrix:
    """Piecewise-constant prolongation: each A-line cut into depth segments, per component."""
    p, q = shape
    n_seg = -(-p // segment)
    coarse = (np.arange(q)[:, None] * n_seg + np.arange(p)[None, :] // segment).ravel() * 2
    n = 2 * p * q
    cols = np.empty(n, dtype=np.int64)
    cols[0::2] = coarse
    cols[1::2] = coarse + 1
    return sp.csr_matrix((np.ones(n), (np.arange(n), cols)), shape=(n, 2 * q * n_seg))


def _solve(
    a: sp.csr_matrix, b: NDArray[np.float64], solver: GlueSolver, *, shape: tuple[int, int],
    segment: int, rtol: float, maxiter: int,
) -> tuple[NDArray[np.float64], int]:
    """Solve the GLUE system; returns the solution and the iteration count (0 if direct)."""
    if solver == "direct":
        return spla.spsolve(a.tocsc(), b, permc_spec="MMD_AT_PLUS_A"), 0
    count = 0

    def callback(_: NDArray[np.float64]) -> None:
        nonlocal count
        count += 1

    if solver == "cg-jacobi":
        inv = 1.0 / a.diagonal()
        precond = spla.LinearOperator(a.shape, matvec=lambda v: inv * v, dtype=np.float64)
    elif solver in ("cg-line", "cg-twolevel"):
        n = a.shape[0]
        # Lower banded storage of offsets 0, 1, 2: they hold only within-line couplings (the
        # last sample of a line is not coupled to the next line's first), so this Cholesky
        # factor solves every A-line exactly.
        band = np.zeros((3, n))
        band[0] = a.diagonal(0)
        band[1, :-1] = a.diagonal(-1)
        band[2, :-2] = a.diagonal(-2)
        factor = cholesky_banded(band, lower=True)
        if solver == "cg-line":
            precond = spla.LinearOperator(
                a.shape, matvec=lambda v: cho_solve_banded((factor, True), v), dtype=np.float64
            )
        else:
            agg = _aggregation(shape, segment)
            coarse = spla.splu((agg.T @ a @ agg).tocsc())

            def two_level(v: NDArray[np.float64]) -> NDArray[np.float64]:
                return cho_solve_banded((factor, True), v) + agg @ coarse.solve(agg.T @ v)

            precond = spla.LinearOperator(a.shape, matvec=two_level, dtype=np.float64)
    else:
        raise ValueError(f"unknown solver {solver!r}; use one of {_SOLVERS}")
    x, info = spla.cg(a, b, rtol=rtol, maxiter=maxiter, M=precond, callback=callback)
    if info < 0:
        raise RuntimeError(f"GLUE solver {solver} broke down (scipy cg info={info})")
    return x, count


def glue(
    rf_pre: ArrayLike,
    rf_post: ArrayLike,
    axial_initial: ArrayLike,
    lateral_initial: ArrayLike,
    *,
    alpha1: float = 5.0,
    alpha2: float = 1.0,
    beta1: float = 5.0,
    beta2: float = 1.0,
    crop_samples: int = 10,
    crop_lines: int = 2,
    iterations: int = 1,
    solver: GlueSolver = "cg-twolevel",
    rtol: float = 1e-3,
    maxiter: int = 500,
    coarse_segment: int = 20,
) -> GlueResult:
    """Refine a coarse displacement field by global optimisation (GLUE).

    Parameters
    ----------
    rf_pre, rf_post : array_like, shape (depth_sample, line), real
        Pre- and post-compression RF frames.
    axial_initial, lateral_initial : array_like, shape (depth_sample, line)
        Coarse displacement (samples, lines), e.g. from :func:`analysis.strain.dp.dp_displacement`
        or the CNN; must be within about a quarter wavelength of the truth to converge.
    alpha1, alpha2, beta1, beta2 : float, optional
        Continuity weights of axial displacement along depth / across lines and of lateral
        displacement along depth / across lines (defaults 5, 1, 5, 1; smoother: 20, 1, 20, 1).
    crop_samples, crop_lines : int, optional
        Border samples (top and bottom) and lines (left and right) left out of the solve.
    iterations : int, optional
        Number of re-linearisations (>= 1).
    solver : {"cg-twolevel", "cg-line", "cg-jacobi", "direct"}, optional
        Linear solver (module docstring).
    rtol, maxiter : optional
        Stopping rule of the iterative solvers (relative residual, iteration cap).
    coarse_segment : int, optional
        Depth samples per aggregate of the two-level preconditioner.

    Returns
    -------
    GlueResult
        Sub-sample axial/lateral displacement on ``region`` (cropped frame).

    Raises
    ------
    ValueError
        Frames of different shapes or with NaN, initial fields of the wrong shape or with NaN,
        negative weights, crops that leave fewer than 3 x 2 samples, iterations < 1, unknown
        solver.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> from scipy.ndimage import gaussian_filter, shift
    >>> pre = gaussian_filter(rng.standard_normal((80, 12)), (1.5, 1.0))
    >>> post = shift(pre, (0.4, 0.0), order=3, mode="nearest")
    >>> res = glue(pre, post, np.zeros(pre.shape), np.zeros(pre.shape), iterations=3)
    >>> round(float(np.median(res.axial)), 1)
    0.4
    """
    i1, i2 = check_frames(rf_pre, rf_post, min_shape=(3, 2))
    a = check_field("axial_initial", axial_initial, i1.shape).copy()
    lat = check_field("lateral_initial", lateral_initial, i1.shape).copy()
    for name, w in (("alpha1", alpha1), ("alpha2", alpha2), ("beta1", beta1), ("beta2", beta2)):
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"{name} must be a finite weight >= 0, got {w}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if solver not in _SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {_SOLVERS}")
    if coarse_segment < 1:
        raise ValueError(f"coarse_segment must be >= 1 sample, got {coarse_segment}")
    n, m = i1.shape
    if crop_samples < 0 or crop_lines < 0 or n - 2 * crop_samples < 3 or m - 2 * crop_lines < 2:
        raise ValueError(f"crop ({crop_samples} samples, {crop_lines} lines) leaves too little of "
                         f"a {n} x {m} frame; need at least 3 x 2 samples")
    region = (slice(crop_samples, n - crop_samples), slice(crop_lines, m - crop_lines))
    p = n - 2 * crop_samples
    q = m - 2 * crop_lines
    counts: list[int] = []
    for _ in range(iterations):
        mat, rhs = glue_system(i1, i2, a, lat, region, alpha1=alpha1, alpha2=alpha2,
                               beta1=beta1, beta2=beta2)
        x, its = _solve(mat, rhs, solver, shape=(p, q), segment=min(coarse_segment, p),
                         rtol=rtol, maxiter=maxiter)
        counts.append(its)
        a[region] += x[0::2].reshape(q, p).T
        lat[region] += x[1::2].reshape(q, p).T
    return GlueResult(
        axial=a[region].astype(np.float32), lateral=lat[region].astype(np.float32),
        region=region, solver=solver, solver_iterations=counts,
    )
