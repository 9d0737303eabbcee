"""The HTML report: one self-contained page (inline CSS, figures as base64 PNG data URIs).

Per (dataset, split): the leaderboard table (best value per metric column in ``td.best``), the
ROC/PR curves and the anomaly-map grid; then the training curves. A figure that could not be
drawn is replaced by a note saying why; notes on what a drawn figure leaves out follow its
caption. The page loads nothing from elsewhere, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from typing import Any

import owsbench
from owsbench.figures import ReportFigure
from owsbench.supervision_study import study_markdown
from owsbench.tables import NOTE, Table, slug

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1b1f24; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: .25rem; }
.meta, .note, figcaption { color: #57606a; font-size: .9rem; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .75rem; }
nav a { margin-right: 1rem; }
table.leaderboard { border-collapse: collapse; margin: .5rem 0;
       font-variant-numeric: tabular-nums; }
table.leaderboard th, table.leaderboard td { padding: .3rem .7rem; text-align: right;
       border-bottom: 1px solid #eaeef2; white-space: nowrap; }
table.leaderboard th:first-child { text-align: left; }
table.leaderboard thead th { border-bottom: 2px solid #1b1f24; }
table.leaderboard tbody tr:hover { background: #f6f8fa; }
td.best { font-weight: 700; background: #dafbe1; }
figure { margin: 1.25rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.skipped { border: 1px dashed #d0d7de; padding: .5rem .75rem; margin: 1rem 0; }
ul.notes { margin: .25rem 0 0; padding-left: 1.2rem; font-size: .85rem; color: #57606a; }
"""


def _table_html(table: Table) -> str:
    """One leaderboard as an HTML table; best cells carry ``class="best"``."""
    tips = {True: "higher is better", False: "lower is better", None: ""}
    head = "".join(
        f'<th scope="col" title="{tips[c.higher_is_better]}">{escape(c.header())}</th>'
        for c in table.columns
    )
    body = "".join(
        f'<tr><th scope="row">{escape(method)}</th>'
        + "".join(
            f'<td class="best">{escape(c.text())}</td>'
            if c.best
            else f"<td>{escape(c.text())}</td>"
            for c in cells
        )
        + "</tr>\n"
        for method, cells in zip(table.methods, table.cells, strict=True)
    )
    return (
        f'<table class="leaderboard">\n<thead><tr><th scope="col">method</th>{head}</tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>"
    )


def _notes_html(notes: Sequence[str]) -> str:
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>' if notes else ""


def _figure_html(figure: ReportFigure) -> str:
    """The figure embedded as a data URI with its caption, or a note when it was skipped."""
    if figure.path is None:
        return (
            f'<div class="skipped"><strong>{escape(figure.title)}</strong>: not drawn '
            f"(artifacts missing).{_notes_html(figure.notes)}</div>"
        )
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    left_out = "<br>Left out:" + _notes_html(figure.notes) if figure.notes else ""
    return (
        f'<figure>\n<img src="data:image/png;base64,{data}" alt="{escape(figure.title)}">\n'
        f"<figcaption><strong>{escape(figure.title)}.</strong> {escape(figure.caption)}"
        f"{left_out}</figcaption>\n</figure>"
    )


def _meta_html(rows: list[dict[str, Any]]) -> str:
    """A line on what the rows are, and a warning when they mix metric versions."""
    versions = sorted({str(r.get("metric_version")) for r in rows})
    methods = {r["method"] for r in rows}
    meta = (
        f'<p class="meta">{len(rows)} result rows, {len(methods)} methods; metric version '
        f"{escape(', '.join(versions))}; report by owsbench {escape(owsbench.__version__)}.</p>"
    )
    if len(versions) > 1:
        meta += (
            '<p class="warning">The rows were computed with different metric versions '
            f"({escape(', '.join(versions))}): their numbers are not comparable.</p>"
        )
    return meta


def render_html(
    rows: list[dict[str, Any]], tables: Sequence[Table], figures: Sequence[ReportFigure]
) -> str:
    """The whole page: tables and figures of each (dataset, split), the weak-supervision study's
    tables when the rows hold two or more regimes, then report-wide figures."""
    sections = []
    for table in tables:
        group = (table.dataset, table.split)
        parts = [
            f'<section id="{slug(f"{table.dataset}-{table.split}")}">',
            f"<h2>{escape(table.dataset)} / {escape(table.split)}</h2>",
            _table_html(table),
            f'<p class="note">{escape(NOTE)}</p>',
            *(_figure_html(f) for f in figures if f.group == group),
            "</section>",
        ]
        sections.append("\n".join(parts))
    study = study_markdown(rows)
    if study:  # the weak-supervision study's tables, as their markdown text
        sections.append(
            '<section id="supervision">\n<h2>Supervision regimes</h2>\n'
            f'<pre class="study">{escape(study)}</pre>\n</section>'
        )
    overall = [_figure_html(f) for f in figures if f.group is None]
    if overall:
        sections.append('<section id="training">\n<h2>Training</h2>\n' + "\n".join(overall))
        sections[-1] += "\n</section>"
    links = [(slug(f"{t.dataset}-{t.split}"), f"{t.dataset} / {t.split}") for t in tables]
    links += [("supervision", "Supervision regimes")] if study else []
    links += [("training", "Training")] if overall else []
    nav = " ".join(f'<a href="#{anchor}">{escape(text)}</a>' for anchor, text in links)
    body = "\n".join(sections) if tables else "<p>No results.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>owsbench report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>owsbench report</h1>\n{_meta_html(rows)}\n<nav>{nav}</nav>\n{body}\n"
        "</main>\n</body>\n</html>\n"
    )
