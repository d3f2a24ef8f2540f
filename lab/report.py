"""A self-contained HTML report: sections of text, tables and PNG figures, plus stage timings."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.store import json_default


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
figure { display: inline-block; margin: 0.6em; vertical-align: top; }
figure img { max-width: 34em; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; max-width: 34em; }
.note { font-size: 0.88em; color: #555; }
"""


def render_html(title: str, intro: str, sections: Sequence[ReportSection],
                timings_s: Mapping[str, float]) -> str:
    """The report as one HTML string (figures referenced by relative path)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(intro)}</p>"]
    if timings_s:
        total = sum(timings_s.values())
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>"
                       for k, v in timings_s.items())
        parts.append(f"<h2>Stages</h2><table><tr><th>stage</th><th>time (s)</th></tr>{rows}"
                     f"<tr><th>total</th><th>{total:.1f}</th></tr></table>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
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
            parts.append(f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, title: str, intro: str, sections: Sequence[ReportSection],
                 timings_s: Mapping[str, float], metrics: Mapping[str, Any]) -> Path:
    """Write ``report.html`` and ``metrics.json`` into ``out_dir``; checks figures exist."""
    missing = [p for s in sections for p, _ in s.figures if not (out_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures missing: {missing}")
    (out_dir / "metrics.json").write_text(json.dumps(
        {"timings_s": dict(timings_s), **metrics}, indent=2, default=json_default,
        allow_nan=True))
    path = out_dir / "report.html"
    path.write_text(render_html(title, intro, sections, timings_s))
    return path
