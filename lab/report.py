"""A self-contained HTML report: sections with verdicts, tables and figures, run metadata.

One ``report.html`` that can be mailed on its own: every figure is embedded as a base64 PNG
(the PNGs stay in ``figures/`` as well). Each section can carry a :class:`lab.report_verdicts.
Verdict` (reproduced / partly / not reproduced / not assessed, with the numbers) and a caveat;
an appendix lists every number of ``metrics.json``, so new metrics show without report code.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.report_verdicts import Verdict
from lab.store import json_default

#: Numbers listed at most in the metrics appendix.
APPENDIX_ROWS = 600


@dataclass
class ReportTable:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""


@dataclass
class ReportSection:
    title: str
    text: str = ""
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (relative PNG path, caption)
    verdict: Verdict | None = None
    caveat: str = ""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return html.escape(str(value))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { border-bottom: 2px solid #446; } h2 { margin-top: 2em; color: #335; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.9em; color: #444; }
.note { font-size: 0.88em; color: #555; }
.verdict { padding: 0.6em 0.9em; border-radius: 6px; margin: 0.8em 0; }
.verdict b { text-transform: uppercase; }
.reproduced { background: #e8f5e9; border-left: 6px solid #43a047; }
.partly-reproduced { background: #fff8e1; border-left: 6px solid #f9a825; }
.not-reproduced { background: #ffebee; border-left: 6px solid #e53935; }
.not-assessed { background: #eceff1; border-left: 6px solid #78909c; }
.caveat { background: #fff3e0; padding: 0.5em 0.9em; border-radius: 6px; font-size: 0.92em; }
details { margin-top: 2em; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, number or short string) of every scalar in a nested dict/list."""
    if isinstance(value, Mapping):
        return [x for k, v in value.items() for x in _leaves(v, f"{prefix}{k}.")]
    if isinstance(value, list | tuple):
        return [x for i, v in enumerate(value) for x in _leaves(v, f"{prefix}{i}.")]
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 80):
        return [(prefix[:-1], value)]
    return []


def _verdict_html(verdict: Verdict) -> str:
    items = "".join(f"<li>{html.escape(r.sentence())}</li>" for r in verdict.results)
    css = verdict.outcome.replace(" ", "-")
    return (f"<div class='verdict {css}'><b>{html.escape(verdict.outcome)}</b>"
            f"<ul>{items}</ul></div>")


def render_html(title: str, intro: str, sections: Sequence[ReportSection],
                timings_s: Mapping[str, float], *, figure_dir: Path,
                metadata: Mapping[str, Any] | None = None,
                metrics: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string, figures (paths relative to ``figure_dir``) embedded."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(intro)}</p>"]
    if metadata:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_cell(v)}</td></tr>"
                       for k, v in metadata.items())
        parts.append(f"<h2>Run</h2><table>{rows}</table>")
    if timings_s:
        total = sum(timings_s.values())
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>"
                       for k, v in timings_s.items())
        parts.append(f"<h2>Stages</h2><table><tr><th>stage</th><th>time (s)</th></tr>{rows}"
                     f"<tr><th>total</th><th>{total:.1f}</th></tr></table>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.verdict is not None:
            parts.append(_verdict_html(section.verdict))
        if section.caveat:
            parts.append(f"<p class='caveat'>{html.escape(section.caveat)}</p>")
        if section.text:
            parts.extend(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
        for table in section.tables:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
            body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                           for row in table.rows)
            parts.append(f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}"
                         "</table>")
            if table.note:
                parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
        for path, caption in section.figures:
            parts.append(f"<figure><img src='{_data_uri(figure_dir / path)}' "
                         f"alt='{html.escape(caption)}' data-file='{html.escape(path)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if metrics:
        leaves = _leaves(metrics)
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>"
                       for k, v in leaves[:APPENDIX_ROWS])
        more = (f"<p class='note'>... and {len(leaves) - APPENDIX_ROWS} more in metrics.json</p>"
                if len(leaves) > APPENDIX_ROWS else "")
        parts.append(f"<details><summary>All numbers of metrics.json ({len(leaves)})</summary>"
                     f"<table>{rows}</table>{more}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, title: str, intro: str, sections: Sequence[ReportSection],
                 timings_s: Mapping[str, float], metrics: Mapping[str, Any], *,
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.html`` (self-contained) and ``metrics.json`` into ``out_dir``.

    Raises
    ------
    FileNotFoundError
        A figure of a section does not exist.
    """
    missing = [p for s in sections for p, _ in s.figures if not (out_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures missing: {missing}")
    (out_dir / "metrics.json").write_text(json.dumps(
        {"timings_s": dict(timings_s), **metrics}, indent=2, default=json_default,
        allow_nan=True))
    path = out_dir / "report.html"
    path.write_text(render_html(title, intro, sections, timings_s, figure_dir=out_dir,
                                metadata=metadata, metrics={"timings_s": dict(timings_s),
                                                            **metrics}))
    return path
