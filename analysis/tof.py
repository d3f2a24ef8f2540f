"""Time-of-flight shear-wave speed and Young's-modulus maps (the SWEI baseline).

Recipe ([SWEI] after Song et al., see ``PHYSICS.md``): 3-D mean filter, directional filter in
the frequency-wavenumber domain keeping waves that travel away from the push, then for each
pixel the delay between the two time signals at the ends of a lateral window centred on it,
from the peak of their cross-correlation (Tukey window after x10 interpolation, lag restricted
to the propagation direction). ``c = distance / delay``; speeds outside the band are rejected
(NaN, never 0); ``E = alpha rho 2 (1 + nu) c^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lab.gelatin import DENSITY_KG_M3, POISSON_RATIO

__all__ = [
    "ToFMap",
    "calibrate_alpha",
    "directional_filter",
    "modulus_from_speed",
    "nanmean_maps",
    "push_column",
    "smooth_map",
    "tof_map",
    "tof_window_px",
]

ALPHA = 0.75
#: [SWEI]'s two ToF signals are 65 px apart on its 600 px / 33 mm lateral grid (pixel pitch
#: 33 / 599 mm): their centres span 64 pitches, 3.53 mm.
PAPER_TOF_DISTANCE_MM = 64 * 33.0 / 599
#: [SWEI]'s 5 px mean filter on the same grid (0.28 mm).
PAPER_MEAN_FILTER_MM = 5 * 33.0 / 599


def _odd_at_least(n: float, minimum: int) -> int:
    k = max(minimum, round(n))
    return k if k % 2 else k + 1


def tof_window_px(lateral_step_m: float, *, distance_mm: float = PAPER_TOF_DISTANCE_MM,
                  mean_filter_mm: float = PAPER_MEAN_FILTER_MM) -> dict[str, int]:
    """The pixel settings of :func:`tof_map` for physical distances on a lateral grid.

    Parameters
    ----------
    lateral_step_m : float
        Lateral pixel pitch (m), > 0.
    distance_mm : float
        Lateral distance between the centres of the two time signals (mm); default [SWEI]'s
        65 px on its 33 mm / 600 px grid.
    mean_filter_mm : float
        Lateral size of the mean filter (mm).

    Returns
    -------
    dict
        ``distance_px`` (odd, >= 5: the window spans ``distance_px - 1`` pitches) and
        ``mean_filter_px`` (odd, >= 3), nearest to the distances.

    Raises
    ------
    ValueError
        A pitch or distance that is not a positive finite number.
    """
    for name, value in (("lateral_step_m", lateral_step_m), ("distance_mm", distance_mm),
                        ("mean_filter_mm", mean_filter_mm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    step_mm = abs(lateral_step_m) * 1e3
    return {"distance_px": _odd_at_least(distance_mm / step_mm + 1, 5),
            "mean_filter_px": _odd_at_least(mean_filter_mm / step_mm, 3)}


@dataclass(frozen=True)
class ToFMap:
    """Result of :func:`tof_map`; every array is shaped (depth, lateral), float32.

    Attributes
    ----------
    speed_m_s : ndarray
        Shear-wave speed in m/s, NaN where rejected (out of band, no valid window, no signal).
    youngs_modulus_kpa : ndarray
        ``alpha rho 2 (1 + nu) c^2`` in kPa, NaN where the speed is NaN.
    correlation : ndarray
        Normalised cross-correlation at the chosen lag, in [-1, 1] (NaN where not computed).
    """

    speed_m_s: NDArray[np.float32]
    youngs_modulus_kpa: NDArray[np.float32]
    correlation: NDArray[np.float32]


def push_column(push_lateral_m: float, lateral_m: ArrayLike) -> float:
    """Fractional column index of a lateral push position on a uniform pixel grid.

    Parameters
    ----------
    push_lateral_m : float
        Lateral position of the push centre in m (same origin as `lateral_m`).
    lateral_m : array_like, shape (lateral,)
        Pixel-centre lateral positions in m, uniformly spaced and increasing.
    """
    grid = np.asarray(lateral_m, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError("lateral_m must be an increasing 1-D grid with at least 2 pixels")
    return float((push_lateral_m - grid[0]) / (grid[1] - grid[0]))


def modulus_from_speed(
    speed_m_s: ArrayLike, *, alpha: float = ALPHA, density_kg_m3: float = DENSITY_KG_M3,
    poisson_ratio: float = POISSON_RATIO,
) -> NDArray[np.floating]:
    """``E = alpha rho 2 (1 + nu) c^2`` in kPa (NaN stays NaN)."""
    c = np.asarray(speed_m_s)
    return alpha * density_kg_m3 * 2.0 * (1.0 + poisson_ratio) * c * c / 1e3


def calibrate_alpha(
    speed_m_s: ArrayLike, label_kpa: ArrayLike, *, density_kg_m3: float = DENSITY_KG_M3,
    poisson_ratio: float = POISSON_RATIO,
) -> float:
    """Least-squares scale alpha so that ``alpha rho 2 (1 + nu) c^2`` matches label moduli.

    Parameters
    ----------
    speed_m_s : array_like, shape (n,)
        ToF speeds (e.g. the median speed of each phantom) in m/s; NaN entries are ignored.
    label_kpa : array_like, shape (n,)
        Indentation moduli of the same phantoms in kPa.

    Returns
    -------
    alpha : float
        ``sum(e1 L) / sum(e1^2)`` with ``e1`` the modulus at alpha = 1.
    """
    c = np.asarray(speed_m_s, dtype=np.float64)
    lab = np.asarray(label_kpa, dtype=np.float64)
    if c.shape != lab.shape or c.ndim != 1:
        raise ValueError(f"speed_m_s and label_kpa must be 1-D of equal length, got {c.shape} "
                         f"and {lab.shape}")
    e1 = modulus_from_speed(c, alpha=1.0, density_kg_m3=density_kg_m3,
                            poisson_ratio=poisson_ratio)
    ok = np.isfinite(e1) & np.isfinite(lab)
    if not ok.any():
        raise ValueError("calibrate_alpha needs at least one finite (speed, label) pair")
    return float(np.sum(e1[ok] * lab[ok]) / np.sum(e1[ok] ** 2))


def directional_filter(
    displacement: NDArray[np.floating], *, direction: int, frame_rate_hz: float,
    cutoff_hz: float | None = 2000.0, order: int = 4,
) -> NDArray[np.floating]:
    """Keep the part of the field travelling laterally in one direction (f-k domain filter).

    Parameters
    ----------
    displacement : ndarray, shape (frame, depth, lateral), real
        Displacement (any unit).
    direction : {+1, -1}
        +1 keeps waves moving towards larger lateral index, -1 towards smaller.
    frame_rate_hz : float
        Frame rate (PRF) in Hz.
    cutoff_hz : float or None, optional
        Butterworth low-pass cutoff on the temporal frequency; None disables it.
    order : int, optional
        Butterworth order.

    Returns
    -------
    ndarray, same shape and dtype
        Filtered field. The data are zero-padded to twice their length in time and space
        before the 2-D FFT (over frame and lateral) to limit wrap-around.

    Notes
    -----
    With NumPy's FFT sign, a wave ``f(x - c t)`` (moving to +x) lives where the temporal
    frequency and the wavenumber have opposite signs; that half-plane is kept for
    ``direction=+1``. The zero-frequency and zero-wavenumber lines are dropped.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if displacement.ndim != 3:
        raise ValueError(f"displacement must be (frame, depth, lateral), got {displacement.shape}")
    frames, _, lateral = displacement.shape
    nt, nx = 2 * frames, 2 * lateral
    spec = np.fft.fft2(displacement, s=(nt, nx), axes=(0, 2))
    omega = np.fft.fftfreq(nt, d=1.0 / frame_rate_hz)[:, None, None]
    k = np.fft.fftfreq(nx)[None, None, :]
    mask = (omega * k * direction < 0).astype(np.float64)
    if cutoff_hz is not None:
        mask = mask / np.sqrt(1.0 + (np.abs(omega) / cutoff_hz) ** (2 * order))
    out = np.fft.ifft2(spec * mask, axes=(0, 2)).real[:frames, :, :lateral]
    return out.astype(displacement.dtype, copy=False)


def nanmean_maps(maps: ArrayLike, *, weights: ArrayLike | None = None) -> NDArray[np.floating]:
    """Mean over the first axis ignoring NaN (all-NaN pixels stay NaN, without warnings).

    Parameters
    ----------
    maps : array_like, shape (push, depth, lateral)
        Maps of several push sequences.
    weights : array_like of bool, same shape, optional
        Entries to include (e.g. ``correlation > 0.5``).
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError("nanmean_maps needs at least one map")
    use = np.isfinite(arr)
    if weights is not None:
        w = np.asarray(weights, dtype=bool)
        if w.shape != arr.shape:
            raise ValueError(f"weights shape {w.shape} does not match maps {arr.shape}")
        use &= w
    count = use.sum(axis=0)
    total = np.where(use, arr, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(count > 0, mean, np.nan)


def smooth_map(
    values: ArrayLike, *, sigma_mm: tuple[float, float], depth_step_m: float,
    lateral_step_m: float, fill_min_weight: float | None = None,
) -> NDArray[np.float64]:
    """NaN-aware Gaussian filter of a (depth, lateral) map.

    Normalised convolution: ``G * (v m) / G * m`` with ``m`` the finite-pixel mask.

    Parameters
    ----------
    values : array_like, shape (depth, lateral)
    sigma_mm : (float, float)
        Gaussian standard deviation along depth and lateral in mm.
    depth_step_m, lateral_step_m : float
        Pixel spacing in m.
    fill_min_weight : float, optional
        None: NaN pixels stay NaN. A value in (0, 1]: NaN pixels whose Gaussian-weighted share
        of finite neighbours ``G * m`` is at least this get the smoothed value ([SWEI] smooths
        ToF inclusion maps "to close holes with no predicted values"); the others stay NaN.
    """
    from scipy.ndimage import gaussian_filter

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"smooth_map needs a 2-D map, got shape {v.shape}")
    if min(sigma_mm) < 0 or depth_step_m <= 0 or lateral_step_m <= 0:
        raise ValueError("sigma_mm must be >= 0 and the pixel steps > 0")
    sigma_px = (sigma_mm[0] * 1e-3 / depth_step_m, sigma_mm[1] * 1e-3 / lateral_step_m)
    finite = np.isfinite(v)
    num = gaussian_filter(np.where(finite, v, 0.0), sigma_px, mode="nearest")
    den = gaussian_filter(finite.astype(np.float64), sigma_px, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    if fill_min_weight is None:
        out[~finite] = np.nan
    else:
        if not 0.0 < fill_min_weight <= 1.0:
            raise ValueError(f"fill_min_weight must be in (0, 1], got {fill_min_weight}")
        out[~finite & ~(den >= fill_min_weight)] = np.nan
    return out


def _delays_for_row(
    row: NDArray[np.float64], *, near: NDArray[np.intp], far: NDArray[np.intp],
    window: NDArray[np.float64], min_lag: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Delay (in upsampled samples) of column `far` behind column `near` for one depth row.

    row: (time_up, lateral). Returns (delay, correlation) for each (near, far) pair; the lag
    search is restricted to [min_lag, time_up - 1] (the far signal arrives later).
    """
    n = row.shape[0]
    a = row[:, near] * window[:, None]
    b = row[:, far] * window[:, None]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    nfft = 2 * n
    spec = np.conj(np.fft.rfft(a, nfft, axis=0)) * np.fft.rfft(b, nfft, axis=0)
    xc = np.fft.irfft(spec, nfft, axis=0)[:n]  # lags 0..n-1: b(t + lag) vs a(t)
    norm = np.sqrt(np.sum(a * a, axis=0) * np.sum(b * b, axis=0))
    search = xc[min_lag:]
    best = np.argmax(search, axis=0)
    lag = best + min_lag
    cols = np.arange(xc.shape[1])
    peak = xc[lag, cols]
    # parabolic refinement where both neighbours exist
    left = xc[np.maximum(lag - 1, 0), cols]
    right = xc[np.minimum(lag + 1, n - 1), cols]
    denom = left - 2 * peak + right
    inner = (lag > min_lag) & (lag < n - 1) & (denom < 0)
    shift = np.zeros_like(peak)
    shift[inner] = 0.5 * (left[inner] - right[inner]) / denom[inner]
    delay = lag + shift
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(norm > 0, peak / norm, np.nan)
    # a peak at the edge of the search range is not a delay estimate
    delay[(lag == min_lag) | (lag == n - 1) | ~(norm > 0)] = np.nan
    return delay, corr


def tof_map(
    displacement: ArrayLike,
    *,
    lateral_step_m: float,
    frame_rate_hz: float,
    push_column: float,
    distance_px: int = 65,
    mean_filter_px: int = 5,
    directional: bool = True,
    cutoff_hz: float | None = 2000.0,
    upsample: int = 10,
    tukey_alpha: float = 0.25,
    speed_band_m_s: tuple[float, float] = (0.1, 10.0),
    alpha: float = ALPHA,
    density_kg_m3: float = DENSITY_KG_M3,
    poisson_ratio: float = POISSON_RATIO,
    smooth_sigma_mm: tuple[float, float] | None = None,
    depth_step_m: float | None = None,
) -> ToFMap:
    """Time-of-flight shear-wave speed and Young's modulus of one push sequence.

    Parameters
    ----------
    displacement : array_like, shape (frame, depth, lateral), real
        Axial displacement after the push (any unit; only delays matter), frames at
        `frame_rate_hz`.
    lateral_step_m : float
        Lateral pixel spacing in m.
    frame_rate_hz : float
        Frame rate (PRF) in Hz.
    push_column : float
        Lateral pixel index (fractional allowed) of the push centre; see :func:`push_column`.
        May lie outside the image (push beside the field of view).
    distance_px : int, optional
        Lateral window (65 px in [SWEI]) centred on the pixel; the two time signals are its end
        columns, ``2 * (distance_px // 2)`` px apart.
    mean_filter_px : int, optional
        Size of the 3-D mean filter (frame, depth, lateral); 1 disables it.
    directional : bool, optional
        Apply :func:`directional_filter` (waves away from the push on each side).
    cutoff_hz : float or None, optional
        Temporal low-pass cutoff of the directional filter.
    upsample : int, optional
        Interpolation factor in time (cubic spline) before windowing.
    tukey_alpha : float, optional
        Taper fraction of the Tukey window.
    speed_band_m_s : (float, float), optional
        Accepted speeds; others are NaN.
    alpha, density_kg_m3, poisson_ratio : float, optional
        ``E = alpha rho 2 (1 + nu) c^2`` (0.75, 1000, 0.5 in [SWEI]).
    smooth_sigma_mm : (float, float), optional
        NaN-aware Gaussian filter of the speed map (std along depth, lateral in mm); needs
        `depth_step_m`. [SWEI] uses a 2 x 2 mm filter for inclusion maps.
    depth_step_m : float, optional
        Axial pixel spacing in m (for smoothing).

    Returns
    -------
    ToFMap
        Speed (m/s), modulus (kPa) and correlation maps shaped (depth, lateral), float32. Pixels
        whose window reaches past the image or contains the push are NaN.

    Notes
    -----
    For a pixel right of the push the near column is the left end of its window and the far
    column the right end (mirrored on the left), so the physical delay is positive and the
    cross-correlation lag is searched from one upsampled sample up to the record length.
    """
    u = np.asarray(displacement, dtype=np.float64)
    if u.ndim != 3:
        raise ValueError(f"displacement must be (frame, depth, lateral), got shape {u.shape}")
    frames, depth, lateral = u.shape
    if frames < 4:
        raise ValueError(f"need at least 4 frames for a delay estimate, got {frames}")
    if not np.all(np.isfinite(u)):
        raise ValueError("displacement contains NaN or inf; fill or mask it first")
    for name, value in (("lateral_step_m", lateral_step_m), ("frame_rate_hz", frame_rate_hz)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    if distance_px < 3:
        raise ValueError(f"distance_px must be >= 3, got {distance_px}")
    lo_band, hi_band = speed_band_m_s
    if not 0 < lo_band < hi_band:
        raise ValueError(f"speed_band_m_s must be (low, high) with 0 < low < high, got "
                         f"{speed_band_m_s}")
    if upsample < 1 or mean_filter_px < 1:
        raise ValueError("upsample and mean_filter_px must be >= 1")
    if smooth_sigma_mm is not None and depth_step_m is None:
        raise ValueError("smooth_sigma_mm needs depth_step_m")

    from scipy.interpolate import CubicSpline
    from scipy.ndimage import uniform_filter
    from scipy.signal.windows import tukey

    if mean_filter_px > 1:
        u = uniform_filter(u, size=mean_filter_px, mode="nearest")
    half = distance_px // 2
    columns = np.arange(lateral)
    right = columns - half > push_column  # whole window right of the push
    left = columns + half < push_column
    fields: dict[int, NDArray[np.float64]] = {}
    for direction, side in ((1, right), (-1, left)):
        if side.any():
            fields[direction] = (directional_filter(u, direction=direction,
                                                    frame_rate_hz=frame_rate_hz,
                                                    cutoff_hz=cutoff_hz)
                                 if directional else u)

    n_up = (frames - 1) * upsample + 1
    t = np.arange(frames)
    t_up = np.linspace(0, frames - 1, n_up)
    window = tukey(n_up, tukey_alpha)
    dt_up = 1.0 / (frame_rate_hz * upsample)
    separation_m = 2 * half * lateral_step_m
    speed = np.full((depth, lateral), np.nan)
    corr = np.full((depth, lateral), np.nan)
    for direction, side in ((1, right), (-1, left)):
        idx = columns[side & (columns - half >= 0) & (columns + half < lateral)]
        if idx.size == 0:
            continue
        near = idx - direction * half
        far = idx + direction * half
        up = CubicSpline(t, fields[direction], axis=0)(t_up)  # (n_up, depth, lateral)
        for z in range(depth):
            delay, c = _delays_for_row(up[:, z, :], near=near, far=far, window=window,
                                       min_lag=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                speed[z, idx] = separation_m / (delay * dt_up)
            corr[z, idx] = c
    with np.errstate(invalid="ignore"):
        speed[~((speed >= lo_band) & (speed <= hi_band))] = np.nan
    if smooth_sigma_mm is not None:
        assert depth_step_m is not None
        speed = smooth_map(speed, sigma_mm=smooth_sigma_mm, depth_step_m=depth_step_m,
                           lateral_step_m=lateral_step_m)
    modulus = modulus_from_speed(speed, alpha=alpha, density_kg_m3=density_kg_m3,
                                 poisson_ratio=poisson_ratio)
    return ToFMap(speed.astype(np.float32), modulus.astype(np.float32), corr.astype(np.float32))

