"""Fused Numba kernel behind :func:`drivers.ultrasound.sim_shear.simulate_shear_wave`.

One call runs the whole leapfrog time loop of a batch of elevation wavenumbers ``k_y`` on the
padded FD grid (layout depth, wavenumber, lateral: the innermost loop runs along contiguous
lateral nodes and vectorises; the rows of one depth stay in cache for all wavenumbers), and
writes the quadrature-weighted sum over ``k_y`` (the field in the image plane) at the steps
asked for. Arithmetic is float32; ``fastmath`` is off, one thread, so the result does not
depend on the machine's load or thread count. Nothing is compiled at import:
Numba compiles at the first call or loads its on-disk cache.
"""

from __future__ import annotations

import numba
import numpy as np

from analysis._loupas_numba import _jit

__all__ = ["leapfrog"]

_JIT = {"fastmath": {"contract"}, "error_model": "numpy", "nogil": True}


_U = np.uintp  # unsigned indices: no negative-index wraparound in the vector loops


#: Rows of the coefficient array (one array, so that the vectoriser needs few alias checks).
AX, AZ, BX, KEEP, MU, FORCE = range(6)


@_jit(**_JIT)
def _row(dst, cur, old, i, coef, bz, k2, vk, force_k, fo):  # pragma: no cover - compiled
    """Row ``i`` (all wavenumbers) of the next step into ``dst`` from steps ``cur`` and ``old``."""
    nk = _U(cur.shape[1])
    nx = _U(cur.shape[2] - 2)
    one = _U(1)
    quarter = np.float32(0.25)
    fone = np.float32(1.0)
    two = np.float32(2.0)
    zero = np.float32(0.0)
    tiny = np.float32(1e-30)
    ci = coef[i]
    axi, azd, bvx, kp, ms, fxz = ci[AX], ci[AZ], ci[BX], ci[KEEP], ci[MU], ci[FORCE]
    azu = coef[i - one, AZ]
    bzd = bz[i]
    bzu = bz[i - one]
    for k in range(_U(0), nk):
        bc, bu, bd = cur[i, k], cur[i - one, k], cur[i + one, k]
        ac, au, ad = old[i, k], old[i - one, k], old[i + one, k]
        cc = dst[i, k]
        k2k = quarter * k2[k]
        vh = vk[k]
        fk = fo * force_k[i, k]
        for j in range(one, nx + one):
            uc = bc[j]
            up = ac[j]
            vc = uc - up
            lap = (axi[j] * (bc[j + one] - uc) - axi[j - one] * (uc - bc[j - one])
                   + azd[j] * (bd[j] - uc) - azu[j] * (uc - bu[j]))
            visc = (bvx[j] * ((bc[j + one] - ac[j + one]) - vc)
                    - bvx[j - one] * (vc - (bc[j - one] - ac[j - one]))
                    + bzd * ((bd[j] - ad[j]) - vc) - bzu * (vc - (bu[j] - au[j])))
            m4 = k2k * ms[j]
            rhs = (uc + kp[j] * vc + lap + visc + fk * fxz[j]
                   - m4 * (two * uc + up) + vh * up)
            nxt = rhs / (fone + m4 + vh)
            # flush the far tails of the numerical precursor to 0: float32 subnormals would
            # make the arithmetic ~100x slower (values < 1e-30 m, 25 orders below the field)
            cc[j] = nxt if abs(nxt) > tiny else zero


@_jit(**_JIT)
def _record(out, slot, u, weights):  # pragma: no cover - compiled
    """``out[slot] = sum_k weights[k] u[:-1, k, 1:-1]``."""
    nz = _U(u.shape[0] - 1)
    nk = _U(u.shape[1])
    nx = _U(u.shape[2] - 2)
    for i in range(_U(0), nz):
        row = out[slot, i]
        for j in range(_U(0), nx):
            row[j] = np.float32(0.0)
        for k in range(_U(0), nk):
            w = weights[k]
            src = u[i, k]
            for j in range(_U(0), nx):
                row[j] += w * src[j + _U(1)]


@_jit(**_JIT)
def leapfrog(u_a, u_b, u_c, coef, bz, k2, vk, force_k, on, record, weights,
             out):  # pragma: no cover - compiled
    """Run ``on.size`` steps; ``out[record[n]]`` = sum_k weights[k] u[:, k, :] at step n.

    Shapes (nz depth rows, K wavenumbers, nx columns; columns padded by one ghost each side,
    depth by one ghost row at the bottom; row 0 is the rigid probe face and stays 0):
    u_a, u_b, u_c (nz + 1, K, nx + 2) float32 work buffers, u_a = u_b = 0 at the start;
    coef (nz, 6, nx + 2) float32, per depth row: ``AX`` the elastic flux coefficient of the face
    between padded columns j and j + 1, ``AZ`` the face between rows i and i + 1, ``BX`` the
    viscous one of the lateral faces (ghost faces 0), ``KEEP`` the sponge factor, ``MU`` =
    mu dt^2 / rho, ``FORCE`` the force times dt^2 / rho at k_y = 0; bz (nz,) the viscous
    coefficient of the face below each row; k2 (K,) = k_y^2; vk (K,) = eta k_y^2 dt / (2 rho);
    force_k (nz, K) the elevation spectrum of the force; on (n_steps,) the fraction of step n
    the push is on; record (n_steps,) int64 slot or -1; weights (K,); out (slots, nz, nx).

    Two steps share one sweep down the rows (step n + 2 trails step n + 1 by two rows and
    overwrites step n - 1 behind it), so each buffer row comes from memory once per two steps.
    """
    nz = u_a.shape[0] - 1
    last = on.size - 1
    a, b, c = u_a, u_b, u_c
    n = 0
    if record[0] >= 0:
        _record(out, record[0], b, weights)
    while n < last:
        if n + 2 <= last:
            for i in range(1, nz + 2):
                if i < nz:
                    _row(c, b, a, i, coef, bz, k2, vk, force_k, on[n])
                if i >= 3:
                    _row(a, c, b, i - 2, coef, bz, k2, vk, force_k, on[n + 1])
            if record[n + 1] >= 0:
                _record(out, record[n + 1], c, weights)
            a, b, c = c, a, b
            n += 2
        else:
            for i in range(1, nz):
                _row(c, b, a, i, coef, bz, k2, vk, force_k, on[n])
            a, b, c = b, c, a
            n += 1
        if record[n] >= 0:
            _record(out, record[n], b, weights)


#: The wavenumbers run in this many independent groups, in parallel where Numba has threads.
#: A fixed number, so the sums (and the result) do not depend on the thread count.
GROUPS = 2


@_jit(parallel=True, **_JIT)
def leapfrog_groups(buffers, coef, bz, k2, vk, force_k, on, record, weights,
                    out):  # pragma: no cover - compiled
    """:func:`leapfrog` of ``GROUPS`` groups of wavenumbers (leading axis of ``buffers`` (G, 3,
    ...), ``k2``, ``vk``, ``force_k`` (G, nz, K_g), ``weights`` and ``out``), one per thread."""
    for g in numba.prange(buffers.shape[0]):
        leapfrog(buffers[g, 0], buffers[g, 1], buffers[g, 2], coef, bz, k2[g], vk[g],
                 force_k[g], on, record, weights[g], out[g])
