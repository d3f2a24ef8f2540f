"""Axial strain from axial displacement: least-squares derivative and a Kalman-smoothed variant.

Quasi-static strain is *relative*: the applied stress is unknown, so a strain image shows where
tissue deforms more or less, not its modulus. Values are ``d(axial displacement)/d(depth)`` in
the units of the displacement per sample (samples per sample = dimensionless), negative under
compression from the probe (see :mod:`drivers.ultrasound.sim_compression` for the sign).

References
----------
H. Rivaz et al., "Ultrasound elastography: a dynamic programming approach", IEEE TMI 27(10),
2008 (Kalman filtering of the strain across A-lines). Kibria & Rivaz, GLUENet, 2018.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["kalman_strain", "lsq_strain"]


def lsq_strain(displacement: ArrayLike, *, window: int) -> NDArray[np.floating]:
    """Least-squares slope of displacement along depth over an odd window (running sums).

    Parameters
    ----------
    displacement : array_like, shape (depth_sample, line), float
        Axial displacement in samples (or any unit per sample spacing).
    window : int
        Odd window length ``2 h + 1`` >= 3 (samples); tens of samples at 40 MHz.

    Returns
    -------
    strain : ndarray, shape (depth_sample, line), float32 for float32 input else float64
        ``strain_i = sum_k k u_{i+k} / sum_k k^2`` for ``k = -h..h`` (``sum k^2 =
        h (h + 1)(2 h + 1) / 3``); NaN in the first and last ``h`` rows, where the window does
        not fit.

    Raises
    ------
    ValueError
        A non-2-D input, NaN/inf, an even or too short window, or a window longer than the
        depth.

    Notes
    -----
    With ``S0(i) = sum_{|m - i| <= h} u_m`` and ``S1(i) = sum_{|m - i| <= h} m u_m`` (both from
    cumulative sums, accumulated in float64), ``sum_k k u_{i+k} = S1(i) - i S0(i)``; the cost is
    independent of the window length. Strain is relative (module docstring).

    Examples
    --------
    >>> u = -0.02 * np.arange(50.0)[:, None] * np.ones((1, 3))
    >>> s = lsq_strain(u, window=11)
    >>> float(np.round(s[25, 1], 6))
    -0.02
    """
    u = np.asarray(displacement)
    if u.ndim != 2:
        raise ValueError(f"displacement must be 2-D (depth_sample, line), got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("displacement contains NaN/inf; estimate strain on a finite field")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of samples >= 3, got {window}")
    n = u.shape[0]
    if window > n:
        raise ValueError(f"window {window} is longer than the depth ({n} samples)")
    out_dtype = np.float32 if u.dtype == np.float32 else np.float64
    h = window // 2
    u64 = u.astype(np.float64)
    idx = np.arange(n, dtype=np.float64)[:, None]
    zero = np.zeros((1, u.shape[1]))
    c0 = np.concatenate([zero, np.cumsum(u64, axis=0)])
    c1 = np.concatenate([zero, np.cumsum(u64 * idx, axis=0)])
    centre = np.arange(h, n - h)
    s0 = c0[centre + h + 1] - c0[centre - h]
    s1 = c1[centre + h + 1] - c1[centre - h]
    denom = h * (h + 1) * (2 * h + 1) / 3.0
    strain = np.full(u.shape, np.nan)
    strain[h: n - h] = (s1 - centre[:, None] * s0) / denom
    return strain.astype(out_dtype)


def kalman_strain(
    strain: ArrayLike,
    *,
    measurement_noise: float,
    process_noise: float = 1e-6,
    smooth: bool = True,
) -> NDArray[np.floating]:
    """Smooth a strain image across A-lines with a scalar random-walk Kalman filter per depth.

    Parameters
    ----------
    strain : array_like, shape (depth_sample, line), float
        E.g. the output of :func:`lsq_strain`; NaN entries are treated as missing measurements.
    measurement_noise : float
        Variance ``R`` (> 0) of a strain measurement (strain^2): larger = smoother.
    process_noise : float, optional
        Variance ``Q`` (>= 0) of the change of true strain from one line to the next.
    smooth : bool, optional
        Run the Rauch-Tung-Striebel backward pass too (no lateral lag); False = causal filter
        from the first line.

    Returns
    -------
    ndarray, same shape, float32 for float32 input else float64
        Filtered strain; rows with no finite measurement stay NaN.

    Raises
    ------
    ValueError
        Non-2-D input, or non-positive / non-finite noise parameters.

    Notes
    -----
    Model per depth row: ``x_j = x_{j-1} + w`` (``var w = Q``), ``z_j = x_j + v`` (``var v = R``).
    Initial state: the first finite measurement of the row, variance ``R``. Strain is relative
    (module docstring of :func:`lsq_strain`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noisy = -0.01 + 0.002 * rng.standard_normal((4, 200))
    >>> out = kalman_strain(noisy, measurement_noise=4e-6, process_noise=1e-9)
    >>> bool(np.std(out[:, 50:150]) < 0.0005)
    True
    """
    z = np.asarray(strain)
    if z.ndim != 2:
        raise ValueError(f"strain must be 2-D (depth_sample, line), got shape {z.shape}")
    if not (np.isfinite(measurement_noise) and measurement_noise > 0):
        raise ValueError(f"measurement_noise must be > 0, got {measurement_noise}")
    if not (np.isfinite(process_noise) and process_noise >= 0):
        raise ValueError(f"process_noise must be >= 0, got {process_noise}")
    out_dtype = np.float32 if z.dtype == np.float32 else np.float64
    zz = z.astype(np.float64)
    n, m = zz.shape
    r, q = float(measurement_noise), float(process_noise)
    finite = np.isfinite(zz)
    # Start each row at its first finite value.
    first = np.argmax(finite, axis=1)
    x = np.where(finite.any(axis=1), zz[np.arange(n), first], np.nan)
    p = np.full(n, r)
    xf = np.empty((n, m))
    pf = np.empty((n, m))
    xp_all = np.empty((n, m))
    pp_all = np.empty((n, m))
    for j in range(m):
        xp = x
        pp = p + (q if j > 0 else 0.0)
        xp_all[:, j] = xp
        pp_all[:, j] = pp
        gain = np.where(finite[:, j], pp / (pp + r), 0.0)
        meas = np.where(finite[:, j], zz[:, j], 0.0)
        x = xp + gain * (meas - np.where(finite[:, j], xp, 0.0))
        p = (1 - gain) * pp
        xf[:, j] = x
        pf[:, j] = p
    if smooth:
        xs = xf.copy()
        for j in range(m - 2, -1, -1):
            c = pf[:, j] / pp_all[:, j + 1]
            xs[:, j] = xf[:, j] + c * (xs[:, j + 1] - xp_all[:, j + 1])
        xf = xs
    return xf.astype(out_dtype)
