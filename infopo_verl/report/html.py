"""HTML of the report: one self-contained page per view, no network, no external asset.

Every piece of text that reaches a page goes through :func:`escape` (run labels, metric names, and above all the
agent's and the user's words, which are untrusted model output). Figures are PNG files beside the page, referenced
by relative path, so the directory can be copied or zipped as a whole.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from infopo_verl.report.figures import FIGURE_PIXELS, Written
from infopo_verl.report.summary import Row

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.notes li { color: #8a5300; }
.dialogue { border: 1px solid #ccc; margin: 1em 0; padding: 0.5em; }
.dialogue h3 { font-size: 1em; margin: 0 0 0.4em 0; }
.text { white-space: pre-wrap; max-width: 28em; }
.controls { background: #f4f4f4; padding: 0.5em; }
"""


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: str, script: str = "") -> str:
    script_tag = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n{script_tag}</body></html>\n")


def number(value: float | None) -> str:
    """How the table prints a value (4 significant digits); ``-`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def _cell(value: float | None, step: int | None = None) -> str:
    data = "" if value is None else f' data-value="{value!r}"'
    at = f" (step {step})" if step is not None and value is not None else ""
    return f'<td class="num"{data}>{escape(number(value))}{escape(at)}</td>'


def summary_table(rows: Sequence[Row], baseline: str | None) -> str:
    compare_header = f"first step above {escape(baseline)}" if baseline else "first step above the baseline"
    lines = ['<table id="summary">',
             f"<tr><th>curve</th><th>run</th><th>final</th><th>best</th><th>{compare_header}</th></tr>"]
    for row in rows:
        if row.compared:
            first = (f'<td class="num" data-step="{row.first_above_baseline}">{row.first_above_baseline}</td>'
                     if row.first_above_baseline is not None else '<td class="num" data-step="never">never</td>')
        else:
            first = "<td>-</td>"
        lines.append(
            f'<tr data-curve="{escape(row.curve.key)}" data-run="{escape(row.run)}"><td>{escape(row.curve.title)}</td>'
            f"<td>{escape(row.run)}</td>{_cell(row.final, row.final_step)}{_cell(row.best, row.best_step)}{first}</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def notes_list(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "\n".join(f"<li>{escape(note)}</li>" for note in notes)
    return f'<h2>Notes</h2>\n<ul class="notes" id="notes">\n{items}\n</ul>'


def figure_block(item: Written) -> str:
    width, height = FIGURE_PIXELS
    return (f'<figure><img src="{escape(item.file)}" width="{width}" height="{height}" alt="{escape(item.title)}">'
            f"<figcaption><b>{escape(item.title)}.</b> {escape(item.caption)}</figcaption></figure>")


def index_page(runs: Sequence[tuple[str, str, int]], figures: Sequence[Written], rows: Sequence[Row],
               baseline: str | None, notes: Sequence[str], dialogues_link: str | None) -> str:
    """``runs``: (label, path, steps read) per run."""
    run_items = "\n".join(f"<li><b>{escape(label)}</b>: {escape(path)} ({steps} steps)</li>" for label, path, steps in runs)
    parts = ["<h1>InfoPO report</h1>", f"<ul>{run_items}</ul>"]
    if dialogues_link:
        parts.append(f'<p><a href="{escape(dialogues_link)}">Per-dialogue credit, step by step</a></p>')
    parts.append(notes_list(notes))
    parts.append("<h2>Summary</h2>")
    parts.append(summary_table(rows, baseline) if rows else "<p>No curve of the report is in these logs.</p>")
    parts.append("<h2>Figures</h2>")
    parts.extend(figure_block(item) for item in figures)
    return page("InfoPO report", "\n".join(parts))
