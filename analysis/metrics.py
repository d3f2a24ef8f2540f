"""Image and estimate quality metrics shared by the SWEI and strain-elastography analyses.

All functions take NumPy arrays and return Python floats (or a float and a mask). Reductions
accumulate in float64 whatever the input precision. NaN handling is stated per function; none of
them silently drops non-finite values except where documented.

References
----------
.. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
   visibility to structural similarity", IEEE Trans. Image Process. 13(4), 2004.
.. [2] M. G. Kibria, H. Rivaz, "GLUENet: Ultrasound elastography using convolutional neural
   network", 2018 (``papers/gluenet-cnn-glue-strain-elastography.txt``): SNR, CNR and failure
   rate definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "cnr",
    "dice",
    "failure_rate",
    "mean_absolute_error",
    "mssim",
    "ncc",
    "pearson_correlation",
    "snr",
]

Window = tuple[slice, ...]


def _as_float_array(name: str, value: ArrayLike) -> NDArray[np.floating]:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one value")
    return arr.astype(np.float64, copy=False)


def _check_same_shape(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, got {a.shape} and "
                         f"{b.shape}")


def _as_mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array, got dtype {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match the data shape {shape}")
    return m


def mean_absolute_error(
    estimate: ArrayLike, truth: ArrayLike, *, mask: ArrayLike | None = None
) -> tuple[float, float]:
    """Mean absolute error and the standard deviation of the absolute error.

    Parameters
    ----------
    estimate : array_like, any shape, real
        Estimated values (e.g. Young's modulus in kPa). NaN marks a failed estimate: such
        elements are left out of the mean (use :func:`numpy.isnan` on `estimate` to count them).
    truth : array_like, same shape as `estimate`, real
        Ground truth in the same unit; must be finite wherever it is used.
    mask : array_like of bool, same shape, optional
        Elements to include; default all.

    Returns
    -------
    mae : float
        ``mean(|estimate - truth|)`` over included, finite estimates (unit of the inputs).
    std : float
        Population standard deviation (ddof=0) of ``|estimate - truth|`` over the same elements.

    Raises
    ------
    ValueError
        On shape mismatch, empty input, a non-boolean mask, NaN in `truth` where used, or when no
        finite estimate is left.

    Examples
    --------
    >>> mean_absolute_error([1.0, 3.0, np.nan], [2.0, 2.0, 2.0])
    (1.0, 0.0)
    """
    est = _as_float_array("estimate", estimate)
    tru = _as_float_array("truth", truth)
    _check_same_shape("estimate", est, "truth", tru)
    m = _as_mask(mask, est.shape)
    use = np.ones(est.shape, dtype=bool) if m is None else m.copy()
    if not np.all(np.isfinite(tru[use])):
        raise ValueError("truth contains NaN or inf inside the evaluated region")
    use &= np.isfinite(est)
    if not use.any():
        raise ValueError("no finite estimate inside the evaluated region (all NaN or masked out)")
    err = np.abs(est[use] - tru[use])
    return float(err.mean()), float(err.std())


def pearson_correlation(a: ArrayLike, b: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Pearson correlation coefficient between two arrays.

    Parameters
    ----------
    a, b : array_like, same shape, real
        Values to correlate; elements where either is NaN are left out.
    mask : array_like of bool, same shape, optional
        Elements to include; default all.

    Returns
    -------
    r : float
        Correlation coefficient in [-1, 1].

    Raises
    ------
    ValueError
        On shape mismatch, fewer than two usable elements, or a constant input (r undefined).
    """
    x = _as_float_array("a", a)
    y = _as_float_array("b", b)
    _check_same_shape("a", x, "b", y)
    m = _as_mask(mask, x.shape)
    use = np.isfinite(x) & np.isfinite(y)
    if m is not None:
        use &= m
    if use.sum() < 2:
        raise ValueError("pearson_correlation needs at least two finite, unmasked elements")
    xs = x[use] - x[use].mean()
    ys = y[use] - y[use].mean()
    denom = np.sqrt(np.sum(xs * xs) * np.sum(ys * ys))
    if denom == 0.0:
        raise ValueError("pearson_correlation is undefined for a constant input")
    return float(np.sum(xs * ys) / denom)


def dice(estimate: ArrayLike, truth: ArrayLike, *, threshold: float) -> float:
    """Dice coefficient of the binary masks ``estimate > threshold`` and ``truth > threshold``.

    Parameters
    ----------
    estimate, truth : array_like, same shape, real
        Maps in the same unit as `threshold` (e.g. kPa; the SWEI paper uses 67.38 kPa). NaN in
        `estimate` compares False (counted as below the threshold).
    threshold : float
        Binarisation level.

    Returns
    -------
    dice : float
        ``2 |A & B| / (|A| + |B|)`` in [0, 1]; 1.0 when both masks are empty.
    """
    est = _as_float_array("estimate", estimate)
    tru = _as_float_array("truth", truth)
    _check_same_shape("estimate", est, "truth", tru)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    with np.errstate(invalid="ignore"):
        a = est > threshold
        b = tru > threshold
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


def _window(image: np.ndarray, window: Window, name: str) -> np.ndarray:
    if not isinstance(window, tuple) or not all(isinstance(s, slice) for s in window):
        raise ValueError(f"{name} must be a tuple of slices, e.g. (slice(10, 40), slice(5, 30))")
    if len(window) > image.ndim:
        raise ValueError(f"{name} has {len(window)} slices for a {image.ndim}-d image")
    values = image[window]
    if values.size < 2:
        raise ValueError(f"{name} {window} selects {values.size} pixel(s); need at least 2")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} {window} contains NaN or inf")
    return values


def snr(image: ArrayLike, *, window: Window) -> float:
    """Signal-to-noise ratio ``mean / std`` of an image in a window (strain-image SNR).

    Parameters
    ----------
    image : array_like, 2-D (depth, lateral) or any ndim, real
        E.g. a strain image (dimensionless).
    window : tuple of slice
        Region to evaluate, e.g. ``(slice(20, 80), slice(10, 50))``; must hold finite values.

    Returns
    -------
    snr : float
        ``mean / std`` (ddof=0); inf if the window is constant and non-zero.
    """
    values = _window(_as_float_array("image", image), window, "window")
    std = values.std()
    mean = values.mean()
    if std == 0.0:
        return float("inf") if mean != 0.0 else float("nan")
    return float(mean / std)


def cnr(image: ArrayLike, *, background: Window, target: Window) -> float:
    """Contrast-to-noise ratio between a background and a target window.

    Parameters
    ----------
    image : array_like, real
        E.g. a strain image.
    background, target : tuple of slice
        Windows with finite values.

    Returns
    -------
    cnr : float
        ``sqrt(2 (s_b - s_t)^2 / (var_b + var_t))`` with ``s`` the window means and ``var`` the
        population variances (GLUENet definition).
    """
    img = _as_float_array("image", image)
    b = _window(img, background, "background")
    t = _window(img, target, "target")
    var = b.var() + t.var()
    diff2 = (b.mean() - t.mean()) ** 2
    if var == 0.0:
        return float("inf") if diff2 > 0 else float("nan")
    return float(np.sqrt(2.0 * diff2 / var))


def mssim(image: ArrayLike, reference: ArrayLike, *, data_range: float) -> float:
    """Mean structural similarity (Wang et al. 2004) via scikit-image.

    Parameters
    ----------
    image, reference : array_like, 2-D, same shape, real, finite
        E.g. estimated and ground-truth strain images.
    data_range : float
        Dynamic range of the data (max - min possible value); required because guessing it from
        the dtype is wrong for float data.

    Returns
    -------
    mssim : float
        Mean SSIM in [-1, 1].
    """
    from skimage.metrics import structural_similarity

    img = _as_float_array("image", image)
    ref = _as_float_array("reference", reference)
    _check_same_shape("image", img, "reference", ref)
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    if not (np.all(np.isfinite(img)) and np.all(np.isfinite(ref))):
        raise ValueError("mssim inputs must be finite (no NaN or inf)")
    if min(img.shape) < 7:
        raise ValueError(f"mssim needs images at least 7 x 7 (SSIM window), got {img.shape}")
    return float(structural_similarity(img, ref, data_range=data_range))


def ncc(a: ArrayLike, b: ArrayLike) -> float:
    """Zero-mean normalised cross-correlation (at zero lag) of two same-shape arrays.

    Parameters
    ----------
    a, b : array_like, same shape, real, finite

    Returns
    -------
    ncc : float
        ``sum((a - mean a)(b - mean b)) / sqrt(sum (a - mean a)^2 sum (b - mean b)^2)`` in
        [-1, 1]; 0.0 when either input is constant (no structure to correlate).
    """
    x = _as_float_array("a", a)
    y = _as_float_array("b", b)
    _check_same_shape("a", x, "b", y)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("ncc inputs must be finite (no NaN or inf)")
    xs = x - x.mean()
    ys = y - y.mean()
    denom = np.sqrt(np.sum(xs * xs) * np.sum(ys * ys))
    if denom == 0.0:
        return 0.0
    return float(np.sum(xs * ys) / denom)


def failure_rate(
    images: Sequence[ArrayLike] | NDArray[np.floating], *, threshold: float = 0.6
) -> tuple[float, NDArray[np.bool_]]:
    """Share of images that fail: NCC with the best image of the set below `threshold`.

    Parameters
    ----------
    images : sequence of array_like, or array shaped (image, ...)
        At least two same-shape, finite images (e.g. strain images of one sequence).
    threshold : float, optional
        NCC below which an image counts as a failure (0.6 in GLUENet).

    Returns
    -------
    rate : float
        Failures / number of images, in [0, 1].
    failed : ndarray of bool, shape (image,)
        True for each failed image. The best image itself never fails (NCC 1 with itself).

    Notes
    -----
    The *best* image is the one with the highest mean NCC to all the other images of the set
    (ties: the first). GLUENet picks the best strain image visually and counts images whose NCC
    with it is below 0.6 as failures; the automatic choice here makes the metric reproducible.
    """
    stack = [_as_float_array(f"images[{i}]", im) for i, im in enumerate(images)]
    if len(stack) < 2:
        raise ValueError(f"failure_rate needs at least two images, got {len(stack)}")
    for i, im in enumerate(stack[1:], start=1):
        _check_same_shape("images[0]", stack[0], f"images[{i}]", im)
    n = len(stack)
    corr = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            corr[i, j] = corr[j, i] = ncc(stack[i], stack[j])
    mean_to_others = (corr.sum(axis=1) - 1.0) / (n - 1)
    best = int(np.argmax(mean_to_others))
    failed = corr[best] < threshold
    failed[best] = False
    return float(failed.mean()), failed
