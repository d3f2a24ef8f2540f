"""Evaluating elasticity maps against their truth and against a time-of-flight map.

Metrics ([SWEI] Sec. III): MAE overall, by gelatin concentration and by push location; Pearson
correlation; for inclusion phantoms MAE inside the inclusions and in the background and the Dice
coefficient at 67.38 kPa. The same metrics are computed for a time-of-flight map given on the same
sequences, over the pixels where both methods gave an estimate, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analysis.metrics import dice, mean_absolute_error, pearson_correlation
from analysis.swei_cnn.data import (
    SweiTrainingSet,
)
from analysis.swei_cnn.dense import predict_map
from analysis.swei_cnn.model import SpatioTemporalDenseNet
from lab.gelatin import DICE_THRESHOLD_KPA


def _mae(estimate: NDArray, truth: NDArray, mask: NDArray[np.bool_]) -> dict[str, float] | None:
    if not (mask & np.isfinite(estimate)).any():
        return None
    mae, std = mean_absolute_error(estimate, truth, mask=mask)
    return {"mae_kpa": mae, "std_kpa": std, "pixels": int((mask & np.isfinite(estimate)).sum())}


def _most_common(values: NDArray[np.floating]) -> float:
    uniques, counts = np.unique(values[np.isfinite(values)], return_counts=True)
    return float(uniques[np.argmax(counts)]) if uniques.size else float("nan")


def map_metrics(
    estimate_kpa: NDArray[np.floating],
    data: SweiTrainingSet,
    indices: Sequence[int] | NDArray[np.intp],
    *,
    mask: NDArray[np.bool_] | None = None,
    threshold_kpa: float = DICE_THRESHOLD_KPA,
) -> dict[str, Any]:
    """Metrics of modulus maps against the data set's truth.

    Parameters
    ----------
    estimate_kpa : ndarray, shape (n, depth, lateral)
        Maps of sequences ``indices`` (kPa); NaN = no estimate (left out).
    data : SweiTrainingSet
        Truth (per-sequence label or per-pixel map), concentration and push of each sequence.
    indices : sequence of int
        Sequence index of each map.
    mask : ndarray of bool, shape (n, depth, lateral), optional
        Pixels to evaluate; default all.
    threshold_kpa : float
        Dice threshold (67.38 kPa in [SWEI]).

    Returns
    -------
    metrics : dict
        ``overall`` / ``by_concentration`` / ``by_push`` MAE entries (``mae_kpa``, ``std_kpa``,
        ``pixels``), ``pcc``, ``failed_fraction`` and, when inclusion sequences are present,
        ``inclusion``, ``background`` and ``dice``.
    """
    idx = np.asarray(indices, dtype=np.intp)
    est = np.asarray(estimate_kpa, dtype=np.float64)
    if est.shape != (len(idx), *data.image_shape):
        raise ValueError(f"estimate must be shaped ({len(idx)}, {data.image_shape[0]}, "
                         f"{data.image_shape[1]}), got {est.shape}")
    truth = np.stack([data.target_map_kpa(int(s)) for s in idx]).astype(np.float64)
    use = np.ones(est.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if use.shape != est.shape:
        raise ValueError(f"mask shape {use.shape} does not match the maps {est.shape}")
    result: dict[str, Any] = {
        "overall": _mae(est, truth, use),
        "failed_fraction": float(1.0 - np.isfinite(est[use]).mean()) if use.any() else None,
        "by_concentration": {}, "by_push": {},
    }
    try:
        result["pcc"] = pearson_correlation(est, truth, mask=use)
    except ValueError:
        result["pcc"] = None  # constant truth (one concentration) or too few estimates
    for pct in np.unique(data.gelatin_percent[idx]):
        sel = np.broadcast_to((data.gelatin_percent[idx] == pct)[:, None, None], est.shape)
        result["by_concentration"][f"{pct:g}"] = _mae(est, truth, use & sel)
    for push in np.unique(data.push_index[idx]):
        sel = np.broadcast_to((data.push_index[idx] == push)[:, None, None], est.shape)
        result["by_push"][str(int(push))] = _mae(est, truth, use & sel)
    maps = data.uses_map[idx]
    if maps.any():
        # The background of a piecewise-constant truth map is its most common value. (Not the
        # phantom's label: an indentation label differs slightly from the simulated modulus.)
        background = np.array([_most_common(t) for t in truth])[:, None, None]
        inside = maps[:, None, None] & ~np.isclose(truth, background)
        outside = maps[:, None, None] & np.isclose(truth, background)
        result["inclusion"] = _mae(est, truth, use & inside)
        result["background"] = _mae(est, truth, use & outside)
        sel = use[maps] & np.isfinite(est[maps])
        result["dice"] = dice(np.where(sel, est[maps], 0.0), np.where(sel, truth[maps], 0.0),
                              threshold=threshold_kpa)
    return result


def compare_with_tof(
    cnn_kpa: NDArray[np.floating],
    tof_kpa: NDArray[np.floating],
    data: SweiTrainingSet,
    indices: Sequence[int] | NDArray[np.intp],
) -> dict[str, Any]:
    """Metrics of the CNN and a ToF map on the same sequences, over pixels where both estimated.

    Also reports each method's own coverage (fraction of pixels with an estimate).
    """
    cnn = np.asarray(cnn_kpa, dtype=np.float64)
    tof = np.asarray(tof_kpa, dtype=np.float64)
    if cnn.shape != tof.shape:
        raise ValueError(f"CNN and ToF maps differ in shape: {cnn.shape} vs {tof.shape}")
    both = np.isfinite(cnn) & np.isfinite(tof)
    return {"cnn": map_metrics(cnn, data, indices, mask=both),
            "tof": map_metrics(tof, data, indices, mask=both),
            "coverage": {"cnn": float(np.isfinite(cnn).mean()),
                         "tof": float(np.isfinite(tof).mean()),
                         "both": float(both.mean())}}


def predict_sequences(model: SpatioTemporalDenseNet, data: SweiTrainingSet,
                      indices: Sequence[int], **kwargs: Any) -> NDArray[np.float32]:
    """Maps (n, depth, lateral) of the given sequences; ``kwargs`` go to ``predict_map``."""
    return np.stack([predict_map(model, data.displacement[int(s)], **kwargs) for s in indices])
