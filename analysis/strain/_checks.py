"""Input validation shared by the strain estimators."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def check_frames(
    rf_pre: ArrayLike, rf_post: ArrayLike, *, min_shape: tuple[int, int] = (8, 2)
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate a pre/post RF pair and return float64 copies normalised by ``max |rf_pre|``.

    Raises
    ------
    ValueError
        Non-2-D frames, different shapes, non-real dtype, NaN/inf, too small, or an all-zero
        pre frame.
    """
    pre = np.asarray(rf_pre)
    post = np.asarray(rf_post)
    for name, arr in (("rf_pre", pre), ("rf_post", post)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (depth_sample, line), got shape {arr.shape}")
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be real RF (int or float), got dtype {arr.dtype}")
    if pre.shape != post.shape:
        raise ValueError(f"rf_pre and rf_post must have the same shape, got {pre.shape} and "
                         f"{post.shape}")
    if pre.shape[0] < min_shape[0] or pre.shape[1] < min_shape[1]:
        raise ValueError(f"frames of shape {pre.shape} are too small; need at least {min_shape} "
                         "(depth_sample, line)")
    for name, arr in (("rf_pre", pre), ("rf_post", post)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf samples; clean the RF "
                             "before estimating displacement")
    peak = float(np.max(np.abs(pre)))
    if peak == 0.0:
        raise ValueError("rf_pre is all zeros; nothing to track")
    return pre.astype(np.float64) / peak, post.astype(np.float64) / peak


def check_field(name: str, field: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Validate a displacement field: the expected shape and finite values."""
    arr = np.asarray(field, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have the frame shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf values")
    return arr
