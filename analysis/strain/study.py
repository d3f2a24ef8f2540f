"""Failure-rate study: DP+GLUE (GLUE) vs CNN+GLUE (GLUENet) on simulated noisy pairs.

This module scores pairs it is given (:func:`evaluate_study`); the simulated pairs and the
entry point :func:`analysis.strain.synthetic.failure_rate_study` are in
:mod:`analysis.strain.synthetic`.

Set-up after [GLUENet] section 3.1: a block with a soft inclusion, pairs over 0.5-7 % applied
strain with uniform noise at PSNR 12.7 dB. For each pair both pipelines give an axial strain
image; we report per pair MSSIM against the true strain (both normalised by the applied strain,
strain being relative), SNR (mean / std of the background window) and CNR (inclusion vs
background windows from the phantom geometry), and per method the failure rate
(:func:`analysis.metrics.failure_rate`: share of strain images whose NCC with the best image of
the set is below 0.6; the best image is the one most correlated with all others). NCC is
scale-free, so images at different applied strains are comparable.

Both methods see the same pairs, band-passed the same way (:mod:`analysis.strain.bandpass`, on by
default since the frequencies of the simulated pairs are known), and the same GLUE and strain
settings; only the coarse start differs. Each row also records how good that start was
(``coarse_outliers``: share of valid pixels whose coarse axial error exceeds 3 samples, about
GLUE's capture range of half a carrier period at 6.67 MHz / 40 MHz, or lateral error exceeds
1.5 lines) and the final displacement error, so a failure can be traced to its stage.

Note on the reference: [GLUENet]'s failure rates (Table 1: phantom 58 % GLUE vs 19 % GLUENet)
come from the CIRS phantom and patients, where out-of-plane and biological motion decorrelate
the frames; on their Field II simulation they report MSSIM/SNR/CNR only, with GLUENet comparable
to GLUE. Our simulation has no out-of-plane motion either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.metrics import cnr, failure_rate, mssim, snr
from analysis.strain.pairs import RfPair
from analysis.strain.pipeline import estimate_strain

__all__ = ["StudyCase", "StudyResult", "evaluate_study"]


@dataclass
class StudyResult:
    """Per-pair metrics and per-method summaries.

    Attributes
    ----------
    rows : list of dict
        One per (pair, method): ``method``, ``applied_strain``, ``repeat``, ``mssim``, ``snr``,
        ``cnr``, ``failed``, ``seconds``, ``coarse_outliers``, ``coarse_median_error_samples``,
        ``glue_median_error_samples``.
    summary : dict
        Per method: ``failure_rate``, ``mssim``, ``snr``, ``cnr``, ``coarse_outliers`` (means),
        ``n_images``, ``seconds_per_pair`` (mean).
    settings : dict
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyCase:
    """One pair of the study: its applied strain (fraction), noise repeat and the pair itself."""

    applied_strain: float
    repeat: int
    pair: RfPair


def _windows(
    depth_mm: float, width_mm: float, shape: tuple[int, int], radius_mm: float
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Target (inside the inclusion) and background (same depth, to the side) pixel windows."""
    n, m = shape
    dz = depth_mm / n
    dx = width_mm / m
    half = radius_mm * 0.5
    r0, r1 = int((depth_mm / 2 - half) / dz), int((depth_mm / 2 + half) / dz)
    c_mid = m // 2
    c_half = max(1, int(half / dx))
    target = (slice(r0, r1), slice(c_mid - c_half, c_mid + c_half))
    # Background: centred between the frame's left edge and the inclusion's (1.2 r) edge.
    left_free = max(2, c_mid - int(1.2 * radius_mm / dx))
    width = min(2 * c_half, left_free)
    c_bg0 = max(0, left_free // 2 - width // 2)
    background = (slice(r0, r1), slice(c_bg0, c_bg0 + width))
    return target, background


def evaluate_study(
    cases: Iterable[StudyCase],
    *,
    model: Any,
    depth_mm: float,
    width_mm: float,
    inclusion_radius_mm: float,
    methods: Sequence[str] = ("dp", "cnn"),
    settings: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    **estimate_kwargs: Any,
) -> StudyResult:
    """Score both pipelines on every case (see the module notes for the metrics).

    Parameters
    ----------
    cases : iterable of StudyCase
        Pairs of one frame geometry (consumed lazily, one at a time), at least two.
    model : FlowCNN or None
        Trained network for the ``"cnn"`` method (may be None if ``methods`` has only "dp").
    depth_mm, width_mm : float
        Frame depth and width (mm); with ``inclusion_radius_mm`` they place the CNR windows
        (the inclusion is centred at mid-depth on the frame's centre line).
    methods : sequence of {"dp", "cnn"}, optional
    settings : dict, optional
        Stored as :attr:`StudyResult.settings`.
    progress : callable(str), optional
        Called with a line of text per pair.
    **estimate_kwargs
        Passed to :func:`analysis.strain.pipeline.estimate_strain`.

    Returns
    -------
    StudyResult
    """
    for m in methods:
        if m not in ("dp", "cnn"):
            raise ValueError(f"unknown method {m!r}; use 'dp' and/or 'cnn'")
    if "cnn" in methods and model is None:
        raise ValueError("the 'cnn' method needs a trained model")
    result = StudyResult(settings=dict(settings or {}))
    images: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    valids: list[tuple[slice, slice]] = []
    for case in cases:
        strain, rep, pair = case.applied_strain, case.repeat, case.pair
        target, background = _windows(depth_mm, width_mm, pair.rf_pre.shape, inclusion_radius_mm)
        kwargs = {"sampling_frequency": pair.sampling_frequency,
                  "center_frequency": pair.center_frequency, **estimate_kwargs}
        for method in methods:
            res = estimate_strain(pair.rf_pre, pair.rf_post, coarse=method,  # type: ignore[arg-type]
                                  model=model, **kwargs)
            valid = res.valid
            err_a = np.abs(res.coarse_axial - pair.axial_displacement_samples)[valid]
            err_l = np.abs(res.coarse_lateral - pair.lateral_displacement_samples)[valid]
            glue_err = np.abs(res.axial_displacement - pair.axial_displacement_samples)[valid]
            valids.append(valid)
            s = res.axial_strain / np.float32(strain)
            t = pair.axial_strain / np.float32(strain)
            sv = np.nan_to_num(s[valid], nan=0.0)
            tv = t[valid]
            row = {
                "method": method, "applied_strain": float(strain), "repeat": rep,
                "mssim": mssim(sv, tv, data_range=max(float(tv.max() - tv.min()), 0.1)),
                "snr": abs(snr(np.nan_to_num(s, nan=0.0), window=background)),
                "cnr": cnr(np.nan_to_num(s, nan=0.0), background=background, target=target),
                "seconds": float(sum(res.seconds.values())),
                "coarse_outliers": float(np.mean((err_a > 3.0) | (err_l > 1.5))),
                "coarse_median_error_samples": float(np.median(err_a)),
                "glue_median_error_samples": float(np.nanmedian(glue_err)),
            }
            result.rows.append(row)
            images[method].append(s)
            if progress is not None:
                progress(f"{method} strain {strain:.3f} rep {rep}: mssim {row['mssim']:.3f} "
                         f"snr {row['snr']:.2f} cnr {row['cnr']:.2f} coarse outliers "
                         f"{100 * row['coarse_outliers']:.1f} % ({row['seconds']:.1f} s)")

    common = (slice(max(v[0].start for v in valids), min(v[0].stop for v in valids)),
              slice(max(v[1].start for v in valids), min(v[1].stop for v in valids)))
    for method in methods:
        stack = [np.nan_to_num(im[common], nan=0.0) for im in images[method]]
        rows = [r for r in result.rows if r["method"] == method]
        if len(stack) >= 2:
            rate, failed = failure_rate(stack, threshold=0.6)
            for r, f in zip(rows, failed, strict=True):
                r["failed"] = bool(f)
        else:
            rate = float("nan")
        result.summary[method] = {
            "failure_rate": float(rate),
            "mssim": float(np.mean([r["mssim"] for r in rows])),
            "snr": float(np.mean([r["snr"] for r in rows])),
            "cnr": float(np.mean([r["cnr"] for r in rows])),
            "coarse_outliers": float(np.mean([r["coarse_outliers"] for r in rows])),
            "seconds_per_pair": float(np.mean([r["seconds"] for r in rows])),
            "n_images": len(rows),
        }
    return result
