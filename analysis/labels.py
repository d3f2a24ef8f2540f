"""Young's-modulus labels from unconfined-compression (indentation) runs on gelatin cylinders.

Each run is a force-displacement curve of a plate compressing a cylinder (radius r, height l0)
at constant speed. Per run: the contact point, then stress ``sigma = F / (pi r^2)`` and strain
``epsilon = dl / l0``. Per concentration: one linear regression of stress on strain over the
strain range (2-7 % by default), pooled over all accepted runs ([SWEI] in ``PHYSICS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ContactError",
    "IndentationRun",
    "RunCurve",
    "YoungsModulusFit",
    "contact_point",
    "fit_youngs_modulus",
    "plot_stress_strain",
    "stress_strain",
]

#: ATI Nano17 force resolution used as the noise floor of the contact detector.
FORCE_RESOLUTION_N = 0.0031
#: Points kept per run for plotting.
_PLOT_POINTS = 1500


class ContactError(ValueError):
    """No contact could be found in a run (force never rises clearly above its baseline)."""


@dataclass(frozen=True)
class IndentationRun:
    """One indentation run as recorded in the ``indentation`` table.

    Parameters
    ----------
    time_s : array_like, shape (sample,)
        Sample times in s.
    position_mm : array_like, shape (sample,)
        Plate travel from the start of the run in mm, positive = compressing.
    force_n : array_like, shape (sample,)
        Measured force in N, compressive positive (sensor offset allowed: it is estimated from
        the samples before contact and removed).
    contact_position_mm : float, optional
        Known contact position in mm; detected with :func:`contact_point` when None.
    radius_mm, height_mm : float, optional
        This cylinder's radius and height in mm, overriding the defaults given to
        :func:`fit_youngs_modulus`.
    """

    time_s: NDArray[np.float64]
    position_mm: NDArray[np.float64]
    force_n: NDArray[np.float64]
    contact_position_mm: float | None = None
    radius_mm: float | None = None
    height_mm: float | None = None

    @classmethod
    def from_arrays(
        cls, time_s: ArrayLike, position_mm: ArrayLike, force_n: ArrayLike, *,
        contact_position_mm: float | None = None, radius_mm: float | None = None,
        height_mm: float | None = None, name: str = "run",
    ) -> IndentationRun:
        """Validate and convert: 1-D, equal non-zero length, finite, float64."""
        arrays = {}
        for label, value in (("time_s", time_s), ("position_mm", position_mm),
                             ("force_n", force_n)):
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"{name}: {label} must be 1-D, got shape {arr.shape}")
            if arr.size == 0:
                raise ValueError(f"{name}: {label} is empty; an indentation run needs samples")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: {label} contains NaN or inf at sample "
                                 f"{int(np.flatnonzero(~np.isfinite(arr))[0])}")
            arrays[label] = arr
        lengths = {k: v.size for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{name}: arrays have mismatched lengths {lengths}")
        if contact_position_mm is not None and not math.isfinite(contact_position_mm):
            raise ValueError(f"{name}: contact_position_mm must be finite")
        for label, size in (("radius_mm", radius_mm), ("height_mm", height_mm)):
            if size is not None and not (math.isfinite(size) and size > 0):
                raise ValueError(f"{name}: {label} must be positive, got {size}")
        return cls(arrays["time_s"], arrays["position_mm"], arrays["force_n"],
                   contact_position_mm, radius_mm, height_mm)


@dataclass(frozen=True)
class RunCurve:
    """Stress-strain curve of one run (loading part, from the contact point on)."""

    strain: NDArray[np.float64]  # (sample,) dimensionless
    stress_kpa: NDArray[np.float64]  # (sample,) kPa, baseline force removed
    contact_position_mm: float
    max_strain: float


@dataclass(frozen=True)
class YoungsModulusFit:
    """Pooled fit over the runs of one concentration.

    Attributes
    ----------
    youngs_modulus_kpa : float
        Slope of stress on strain in kPa (NaN when no run was usable).
    ci95_kpa : tuple of float
        95 % confidence interval in kPa: pooled slope +- t(0.975, n - 1) * sd / sqrt(n) over the
        per-run slopes (cylinder-to-cylinder spread) with n >= 2 runs; with one run, the
        ordinary least-squares interval of its slope (samples taken as independent).
    intercept_kpa : float
        Intercept of the pooled line in kPa (absorbs the toe region).
    runs_used : list of str
    runs_rejected : list of (str, str)
        (run, reason) for each run left out.
    strain_range : tuple of float
        Strain range actually used: the lower limit and the highest strain any used run reached
        within the requested range (below the requested upper limit when the force limit
        stopped the runs early).
    run_strain_ranges : dict of str to (float, float)
        Range used per run.
    per_run_kpa : dict of str to float
        Slope of each used run on its own.
    n_samples : int
        Samples in the pooled regression.
    curves : dict of str to RunCurve
        Decimated curves of every run with a contact point, for plotting.
    gelatin_percent : float or None
    """

    youngs_modulus_kpa: float
    ci95_kpa: tuple[float, float]
    intercept_kpa: float
    runs_used: list[str]
    runs_rejected: list[tuple[str, str]]
    strain_range: tuple[float, float]
    run_strain_ranges: dict[str, tuple[float, float]]
    per_run_kpa: dict[str, float]
    n_samples: int
    curves: dict[str, RunCurve] = field(repr=False)
    gelatin_percent: float | None = None

    def to_label(self) -> dict[str, Any]:
        """The ``labels`` entry of the store contract (JSON-ready)."""
        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        return {
            "gelatin_percent": self.gelatin_percent,
            "youngs_modulus_kpa": num(self.youngs_modulus_kpa),
            "ci95_kpa": [num(self.ci95_kpa[0]), num(self.ci95_kpa[1])],
            "runs_used": list(self.runs_used),
            "runs_rejected": [{"run": r, "reason": why} for r, why in self.runs_rejected],
            "strain_range": [num(self.strain_range[0]), num(self.strain_range[1])],
            "per_run_kpa": {k: float(v) for k, v in self.per_run_kpa.items()},
            "n_samples": self.n_samples,
        }


def contact_point(
    position_mm: ArrayLike, force_n: ArrayLike, *,
    force_resolution_n: float = FORCE_RESOLUTION_N, baseline_samples: int = 200,
    sustain_samples: int = 20,
) -> tuple[float, float]:
    """Plate position at first contact, and the force baseline before it.

    Parameters
    ----------
    position_mm : array_like, shape (sample,)
        Plate travel in mm (compressing positive), loading part.
    force_n : array_like, shape (sample,)
        Force in N.
    force_resolution_n : float, optional
        Sensor resolution (quantisation step) in N; a floor for the noise estimate.
    baseline_samples : int, optional
        Leading samples (before contact) used for the baseline and its noise; at most a tenth
        of the run is used.
    sustain_samples : int, optional
        The force must stay above the detection threshold this many samples in a row.

    Returns
    -------
    contact_position_mm : float
        Position of the last sample at the baseline level before the sustained rise.
    baseline_n : float
        Median force before contact (sensor offset).

    Raises
    ------
    ContactError
        If the force never rises clearly above the baseline, or is already high at the start.

    Notes
    -----
    Threshold = baseline + max(5 sigma, 2 resolution) with sigma the robust (MAD) noise of the
    baseline samples, floored at resolution / sqrt(12). The contact is then walked back to the
    last sample within baseline + max(sigma, resolution). With a toe region this lands a few
    force quanta after the geometric contact; the pooled fit's intercept absorbs that offset.
    """
    pos = np.asarray(position_mm, dtype=np.float64)
    force = np.asarray(force_n, dtype=np.float64)
    n = force.size
    if pos.shape != force.shape or force.ndim != 1 or n == 0:
        raise ValueError(f"position_mm and force_n must be 1-D of equal non-zero length, got "
                         f"{pos.shape} and {force.shape}")
    nb = int(min(baseline_samples, max(5, n // 10)))
    if n < nb + sustain_samples:
        raise ContactError(f"run has {n} samples; too short to find a contact")
    head = force[:nb]
    baseline = float(np.median(head))
    sigma = max(1.4826 * float(np.median(np.abs(head - baseline))),
                force_resolution_n / math.sqrt(12.0))
    threshold = baseline + max(5.0 * sigma, 2.0 * force_resolution_n)
    above = (force > threshold).astype(np.int64)
    runs = np.convolve(above, np.ones(sustain_samples, np.int64), mode="valid")
    starts = np.flatnonzero(runs == sustain_samples)
    if starts.size == 0:
        raise ContactError(f"force never rises {threshold - baseline:.4f} N above its baseline "
                           f"for {sustain_samples} samples: no contact")
    first = int(starts[0])
    if first < nb:
        raise ContactError("force is already above the baseline level at the start of the run "
                           "(run started in contact?)")
    quiet = np.flatnonzero(force[:first] <= baseline + max(sigma, force_resolution_n))
    j = int(quiet[-1]) if quiet.size else 0
    return float(pos[j]), baseline


def stress_strain(
    run: IndentationRun, *, radius_mm: float = 10.0, height_mm: float = 40.0,
    force_resolution_n: float = FORCE_RESOLUTION_N,
) -> RunCurve:
    """Stress-strain curve of the loading part of a run, from the contact point on.

    Parameters
    ----------
    run : IndentationRun
    radius_mm, height_mm : float, optional
        Cylinder radius r and height l0 in mm (the run's own values take precedence).
    force_resolution_n : float, optional
        Sensor resolution for :func:`contact_point`.

    Returns
    -------
    RunCurve
        ``strain = (position - contact) / l0`` and
        ``stress_kpa = (F - baseline) / (pi r^2) / 1000`` for samples at or after contact.

    Raises
    ------
    ContactError
        If no contact is found.
    """
    pos, force = run.position_mm, run.force_n
    last = int(np.argmax(pos))  # loading part: up to the deepest plate position
    pos, force = pos[: last + 1], force[: last + 1]
    if run.contact_position_mm is None:
        contact, baseline = contact_point(pos, force, force_resolution_n=force_resolution_n)
    else:
        contact = float(run.contact_position_mm)
        before = force[pos <= contact]
        baseline = float(np.median(before)) if before.size else 0.0
    radius_mm = run.radius_mm if run.radius_mm is not None else radius_mm
    height_mm = run.height_mm if run.height_mm is not None else height_mm
    keep = pos >= contact
    area_m2 = math.pi * (radius_mm * 1e-3) ** 2
    strain = (pos[keep] - contact) / height_mm
    stress_kpa = (force[keep] - baseline) / area_m2 / 1e3
    max_strain = float(strain.max()) if strain.size else 0.0
    return RunCurve(strain, stress_kpa, contact, max_strain)


def _ols(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float, float]:
    """Slope, intercept and the standard error of the slope."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    dof = max(1, x.size - 2)
    resid = y - (slope * x + intercept)
    se = math.sqrt(float(np.sum(resid**2)) / dof / sxx)
    return slope, intercept, se


def fit_youngs_modulus(
    runs: Mapping[str, IndentationRun], *, radius_mm: float = 10.0, height_mm: float = 40.0,
    strain_range: tuple[float, float] = (0.02, 0.07), min_strain_span: float = 0.01,
    gelatin_percent: float | None = None, force_resolution_n: float = FORCE_RESOLUTION_N,
) -> YoungsModulusFit:
    """Young's modulus of one concentration by a pooled stress-strain regression.

    Parameters
    ----------
    runs : mapping of str to IndentationRun
        Runs of one concentration keyed by run name (e.g. cylinder phantom id).
    radius_mm, height_mm : float, optional
        Cylinder radius r and height l0 in mm (10 and 40 in [SWEI]), for runs that do not
        carry their own.
    strain_range : (float, float), optional
        Requested strain range of the fit (fractions, 0.02-0.07 = 2-7 %).
    min_strain_span : float, optional
        A run must cover at least this much strain inside the range, else it is rejected.
    gelatin_percent : float, optional
        Carried into the result.
    force_resolution_n : float, optional
        Force sensor resolution in N, for contact detection.

    Returns
    -------
    YoungsModulusFit
        ``youngs_modulus_kpa`` is NaN when every run was rejected (reasons in
        ``runs_rejected``).

    Raises
    ------
    ValueError
        On no runs, bad geometry or range, or a malformed run (see
        :meth:`IndentationRun.from_arrays`).

    Notes
    -----
    Where the force limit (2 N) ends a run below the upper strain limit, the run contributes
    what it has, from the lower limit to its maximum strain; the range used is reported. One
    straight line ``stress = E strain + b`` is fitted to all samples of all accepted runs.

    Examples
    --------
    >>> strain = np.linspace(0, 0.08, 800)
    >>> pos = np.concatenate([np.linspace(-0.5, 0, 200, endpoint=False), strain * 40])
    >>> force = np.where(pos > 0, 50e3 * pos / 40 * np.pi * 0.01**2, 0.0)
    >>> run = IndentationRun.from_arrays(np.arange(pos.size) / 200, pos, force)
    >>> round(fit_youngs_modulus({"c1": run}).youngs_modulus_kpa, 3)
    50.0
    """
    if not runs:
        raise ValueError("fit_youngs_modulus needs at least one run")
    for name, value in (("radius_mm", radius_mm), ("height_mm", height_mm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    lo, hi = (float(strain_range[0]), float(strain_range[1]))
    if not (0 <= lo < hi):
        raise ValueError(f"strain_range must be (low, high) with 0 <= low < high, got "
                         f"{strain_range}")
    if not (0 < min_strain_span <= hi - lo):
        raise ValueError(f"min_strain_span must be in (0, {hi - lo}], got {min_strain_span}")

    xs: list[NDArray[np.float64]] = []
    ys: list[NDArray[np.float64]] = []
    used: list[str] = []
    rejected: list[tuple[str, str]] = []
    ranges: dict[str, tuple[float, float]] = {}
    per_run: dict[str, float] = {}
    per_run_se: dict[str, float] = {}
    curves: dict[str, RunCurve] = {}
    for name, run in runs.items():
        if not isinstance(run, IndentationRun):
            raise ValueError(f"run {name!r} must be an IndentationRun (see from_arrays)")
        try:
            curve = stress_strain(run, radius_mm=radius_mm, height_mm=height_mm,
                                  force_resolution_n=force_resolution_n)
        except ContactError as exc:
            rejected.append((name, f"no contact: {exc}"))
            continue
        step = max(1, curve.strain.size // _PLOT_POINTS)
        curves[name] = RunCurve(curve.strain[::step], curve.stress_kpa[::step],
                                curve.contact_position_mm, curve.max_strain)
        top = min(hi, curve.max_strain)
        if top - lo < min_strain_span:
            rejected.append((name, f"reaches {curve.max_strain:.2%} strain; the fit needs "
                                   f"{lo + min_strain_span:.2%} ({min_strain_span:.2%} above "
                                   f"the {lo:.2%} lower limit)"))
            continue
        sel = (curve.strain >= lo) & (curve.strain <= top)
        if np.count_nonzero(sel) < 3:
            rejected.append((name, f"only {np.count_nonzero(sel)} samples between {lo:.2%} and "
                                   f"{top:.2%} strain"))
            continue
        x, y = curve.strain[sel], curve.stress_kpa[sel]
        slope, _, se = _ols(x, y)
        xs.append(x)
        ys.append(y)
        used.append(name)
        ranges[name] = (lo, float(x.max()))
        per_run[name] = slope
        per_run_se[name] = se

    if not used:
        nan = float("nan")
        return YoungsModulusFit(nan, (nan, nan), nan, [], rejected, (lo, nan), {}, {}, 0,
                                curves, gelatin_percent)
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    modulus, intercept, se = _ols(x_all, y_all)
    from scipy.stats import t as student_t

    if len(used) >= 2:
        slopes = np.array([per_run[r] for r in used])
        half = float(student_t.ppf(0.975, len(used) - 1) * slopes.std(ddof=1)
                     / math.sqrt(len(used)))
    else:
        half = float(student_t.ppf(0.975, max(1, x_all.size - 2)) * se)
    top_used = max(r[1] for r in ranges.values())
    return YoungsModulusFit(
        youngs_modulus_kpa=modulus, ci95_kpa=(modulus - half, modulus + half),
        intercept_kpa=intercept, runs_used=used, runs_rejected=rejected,
        strain_range=(lo, top_used), run_strain_ranges=ranges, per_run_kpa=per_run,
        n_samples=int(x_all.size), curves=curves, gelatin_percent=gelatin_percent,
    )


def plot_stress_strain(results: Sequence[YoungsModulusFit], path: str | Path) -> Path:
    """Stress-strain plot of every run and the fitted line per concentration, as PNG.

    Parameters
    ----------
    results : sequence of YoungsModulusFit
        One entry per concentration (colour per concentration, the fit line dashed over the
        strain range used).
    path : str or Path
        Output PNG file; parent folders are created.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_stress_strain needs at least one fit result")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.0, 5.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, len(results)))
    for fit, colour in zip(results, colours, strict=True):
        label = (f"{fit.gelatin_percent:g} %" if fit.gelatin_percent is not None else "fit")
        for curve in fit.curves.values():
            ax.plot(curve.strain * 100, curve.stress_kpa, color=colour, lw=0.6, alpha=0.5)
        if math.isfinite(fit.youngs_modulus_kpa):
            x = np.linspace(fit.strain_range[0], fit.strain_range[1], 20)
            ax.plot(x * 100, fit.youngs_modulus_kpa * x + fit.intercept_kpa, "--",
                    color=colour, lw=1.8,
                    label=f"{label}: E = {fit.youngs_modulus_kpa:.1f} kPa "
                          f"({len(fit.runs_used)} runs)")
    ax.set_xlabel("strain (%)")
    ax.set_ylabel("stress (kPa)")
    ax.set_title("Unconfined compression: stress-strain and pooled fits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
