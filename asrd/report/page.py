"""The report as one self-contained HTML page: totals, what the preset dropped, the figures
(PNG embedded as base64) and a sample of flagged rows."""

from __future__ import annotations

import base64
import html
from typing import Any

from asrd.report.data import ReportData

MAX_CELL_CHARS = 160  # a longer value (a transcript) is cut in its cell, whole in its tooltip

CAPTIONS = {
    "signals": "Each signal over the ok rows; the dashed line is the preset's threshold.",
    "flags_by_language": "Share of ok rows with each flag, by the row's language.",
    "error_reasons": "Rows that failed, by reason (they carry no signals).",
    "throughput_over_time": "Audio seconds per second of each shard, on its task's lane.",
    "shard_wall_times": "Wall time of each shard; stragglers in red.",
}


def render(data: ReportData) -> str:
    s = data.summary
    totals = [("rows", s.get("rows")), ("ok", s.get("ok")), ("failed", s.get("failed")),
              ("kept in the merged dataset", s.get("kept")),
              (f"dropped by preset {s.get('preset')!r}", s.get("dropped_by_preset")),
              ("dropped by --filter", s.get("dropped_by_filter")),
              ("audio hours (ok rows)", f"{float(s.get('audio_hours') or 0):.3f}")]
    parts = [f"<h1>{_e(data.title)}</h1>", _table(["", ""], totals)]
    by_flag = s.get("dropped_by_flag") or {}
    if by_flag:
        parts += ["<h2>Rows dropped, by flag</h2>",
                  "<p>A row with several flags counts under each.</p>",
                  _table(["flag", "rows"], sorted(by_flag.items(), key=lambda kv: -kv[1]))]
    for name, png in data.figures.items():
        parts += [f"<h2>{_e(name.replace('_', ' '))}</h2>", f"<p>{_e(CAPTIONS.get(name, ''))}</p>",
                  f'<img alt="{_e(name)}" src="data:image/png;base64,'
                  f'{base64.b64encode(png).decode()}">']
    if data.flagged:
        parts += ["<h2>A sample of flagged rows</h2>",
                  _table(list(data.flagged[0]), [list(r.values()) for r in data.flagged])]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(data.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: list[str], rows: list) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if any(header) else ""
    body = "".join("<tr>" + "".join(_td(_cell(v)) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _td(value: Any) -> str:
    """A cell; a long value (a 490-word transcript) is cut to its first characters, and the
    whole of it is the cell's tooltip."""
    text = _e(value)
    if value is None or len(str(value)) <= MAX_CELL_CHARS:
        return f"<td>{text}</td>"
    short = str(value)[:MAX_CELL_CHARS].rsplit(" ", 1)[0] + " \u2026"
    return f'<td title="{text}">{_e(short)}</td>'


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return value
