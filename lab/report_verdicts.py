"""Verdicts of the demo report: each paper claim checked against the run's ``metrics.json``.

A :class:`Claim` is data: a section, what the paper found (with its numbers), and a comparison
between two entries of the metrics (dotted paths) or an entry and a constant. Adding a metric to
``metrics.json`` and a line to :data:`CLAIMS` is all a new comparison needs; claims whose metrics
are missing are reported as not assessed rather than silently dropped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["reproduced", "partly reproduced", "not reproduced", "not assessed"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """One finding of a paper and how to test it on this run's metrics.

    Attributes
    ----------
    section : str
        Report section key (``labels``, ``swei``, ``strain``).
    finding : str
        What the paper found, in words.
    paper : str
        The paper's numbers.
    left : str
        Dotted path into the metrics (list items by index).
    op : str
        ``<``, ``<=``, ``>`` or ``>=``.
    right : str or float
        Another dotted path, or a constant.
    unit : str
        Unit of both sides, for the text.
    why_not : str
        The likely reason when the claim does not hold here (what this run's set-up does
        differently from the paper's), stated in the report.
    """

    section: str
    finding: str
    paper: str
    left: str
    op: str
    right: str | float
    unit: str = ""
    why_not: str = ""


_PUSH_MEAN = "cnn_vs_tof.inclusion_push_mean"
_INCLUSION_WHY = (
    "the CNN under-estimates the inclusion (measured: -12 to -26 kPa inside a 97 kPa inclusion "
    "when validated by area, worst at the interface): at an interface the temporal frequency of "
    "the wave "
    "is conserved and the windows straddling it mix background and inclusion, so its estimate "
    "is pulled toward the background, while ToF is smoothed by the paper's Gaussian and the "
    "simulated field (one speed per region, no layered or anisotropic tissue) suits its delay "
    "fit; few "
    "inclusion training windows (8 training blocks at most) and a short fine-tuning")
CLAIMS: tuple[Claim, ...] = (
    Claim("labels", "indentation gives the calibration's Young's modulus per concentration",
          "17.42-126.05 kPa for 5-17.5 % [SWEI]", "labels_max_relative_error", "<=", 0.15,
          why_not="the indentation fit's strain range or the contact detection"),
    Claim("swei", "the CNN is more accurate than time of flight on held-out homogeneous blocks",
          "MAE 5.01 vs 11.61 kPa [SWEI]", "cnn_vs_tof.held_out.cnn.overall.mae_kpa", "<",
          "cnn_vs_tof.held_out.tof.overall.mae_kpa", "kPa",
          why_not="an undertrained network: fewer sequences, windows and epochs than the paper"),
    Claim("swei", "time of flight errs at least 2.3 times as much as the CNN on held-out "
          "homogeneous blocks", "11.61 / 5.01 = 2.32 [SWEI]",
          "cnn_vs_tof.held_out_ratio_tof_over_cnn", ">=", 2.3,
          why_not="an undertrained network: fewer sequences, windows and epochs than the paper"),
    Claim("swei", "the CNN is more accurate than time of flight inside inclusions (mean of a "
          "position's push sequences, ToF with the 2 x 2 mm Gaussian)",
          "MAE 7.50 vs 16.28 kPa [SWEI]", f"{_PUSH_MEAN}.cnn.inclusion.mae_kpa", "<",
          f"{_PUSH_MEAN}.tof.inclusion.mae_kpa", "kPa", why_not=_INCLUSION_WHY),
    Claim("swei", "the CNN is more accurate than time of flight in the inclusion background "
          "(push mean)", "MAE 1.64 vs 11.11 kPa [SWEI]",
          f"{_PUSH_MEAN}.cnn.background.mae_kpa", "<", f"{_PUSH_MEAN}.tof.background.mae_kpa",
          "kPa", why_not="the fine-tuned CNN trades background accuracy for inclusion "
          "contrast: fine-tuning on a few positions of one inclusion block shifts its estimate "
          "up over the whole field, not only near the interface (a single-block fine-tuning "
          "set; the paper fine-tunes on its inclusion phantoms' many positions)"),
    Claim("swei", "the CNN segments inclusions better than time of flight (Dice at 67.38 kPa, "
          "push mean)", "Dice 0.93 vs 0.86 [SWEI]", f"{_PUSH_MEAN}.cnn.dice", ">",
          f"{_PUSH_MEAN}.tof.dice", why_not=_INCLUSION_WHY),
    Claim("swei", "on a concentration it never saw (leave-one-concentration-out) the CNN is "
          "more accurate than time of flight", "MAE 9.99 vs 11.61 kPa [SWEI]",
          "cnn_vs_tof.unseen_concentration.cnn.overall.mae_kpa", "<",
          "cnn_vs_tof.unseen_concentration.tof.overall.mae_kpa", "kPa",
          why_not="too few concentrations (and sequences) to interpolate between: the paper "
          "trains on 5 others with 80 positions each"),
    Claim("swei", "the CNN's error on an unseen concentration is at most twice its error on "
          "seen ones", "9.99 / 5.01 = 1.99 [SWEI]; issue target <= 2",
          "cnn_vs_tof.unseen_over_seen_mae", "<=", 2.0,
          why_not="too few concentrations (and sequences) to interpolate between"),
    Claim("strain", "CNN+GLUE (GLUENet) fails less often than DP+GLUE",
          "failure 19.35 % vs 58.06 % on the phantom [GLUENet]",
          "strain_study.cnn.failure_rate", "<", "strain_study.dp.failure_rate",
          why_not="the flow CNN is trained on few simulated pairs for few epochs"),
)

#: What each profile's numbers can and cannot show.
PROFILE_CAVEATS = {
    "smoke": "Smoke profile: a handful of sequences, a few training steps and tiny images. "
             "These numbers show that the pipeline runs end to end; they are not evidence for or "
             "against the papers (an untrained CNN is expected to lose to time of flight).",
    "default": "Laptop profile: far fewer phantoms, positions and epochs than the papers and "
               "smaller images. The direction of each comparison is informative; the magnitudes "
               "are not comparable with the papers' numbers.",
    "study": "Study profile: a larger CPU run (more concentrations, positions, inclusion "
             "training blocks, the 33 px window) with the leave-one-concentration-out split; "
             "still far fewer sequences and epochs than the papers, so directions are "
             "informative and magnitudes only roughly comparable.",
    "paper": "Paper profile: the papers' counts, image sizes and training recipes on simulated "
             "data; remaining differences come from the simulation (no real gelatin, probe or "
             "noise), not from reduced sizes.",
}


def lookup(metrics: Mapping[str, Any], path: str) -> Any:
    """The entry at dotted ``path`` (list items by index), or None when it does not exist."""
    node: Any = metrics
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit() \
                and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    held: bool | None  # None: a metric is missing or not finite
    left: float | None
    right: float | None

    def sentence(self) -> str:
        c = self.claim
        unit = f" {c.unit}" if c.unit else ""
        if self.held is None:
            return (f"{c.finding} ({c.paper}): not assessed, {c.left} or {c.right} is missing "
                    "or not a number in this run.")
        figures = (f"{self.left:.4g}{unit} {c.op} {self.right:.4g}{unit} is "
                   f"{str(self.held).lower()}")
        if self.held:
            return f"{c.finding} ({c.paper}): reproduced here, {figures}."
        why = f" Likely why: {c.why_not}." if c.why_not else ""
        return f"{c.finding} ({c.paper}): NOT reproduced here, {figures}.{why}"


def check(claim: Claim, metrics: Mapping[str, Any]) -> ClaimResult:
    left = _number(lookup(metrics, claim.left))
    right = (_number(claim.right) if isinstance(claim.right, int | float)
             else _number(lookup(metrics, claim.right)))
    if left is None or right is None:
        return ClaimResult(claim, None, left, right)
    return ClaimResult(claim, _OPS[claim.op](left, right), left, right)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    results: tuple[ClaimResult, ...]

    def text(self) -> str:
        return " ".join(r.sentence() for r in self.results)


def section_verdict(section: str, metrics: Mapping[str, Any],
                    claims: Sequence[Claim] = CLAIMS) -> Verdict:
    """The verdict of one report section from the claims that belong to it."""
    results = tuple(check(c, metrics) for c in claims if c.section == section)
    held = [r.held for r in results if r.held is not None]
    if not held:
        outcome: Outcome = "not assessed"
    elif all(held):
        outcome = "reproduced"
    elif any(held):
        outcome = "partly reproduced"
    else:
        outcome = "not reproduced"
    return Verdict(outcome, results)
