"""Result rows -> leaderboard files: markdown, csv, LaTeX and (via ``html_report``) HTML.

The tables themselves (columns from the metric specs, means and stds over seeds, directions,
best values) are built once by :func:`owsbench.tables.leaderboard_tables`; this module only
renders them. It loads numpy, pandas and tabulate only; figures (matplotlib) and the HTML page
are imported when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from owsbench.cache import atomic_write_text
from owsbench.errors import BadInput
from owsbench.results import merge_shards, read_rows
from owsbench.rows import row_key
from owsbench.tables import NOTE, leaderboard_tables, slug, summarise

FORMATS = ("md", "csv", "latex", "html")
LATEX_ARROWS = (r"$\uparrow$", r"$\downarrow$")
LATEX_NOTE = r"Metrics in \%, mean $\pm$ std over seeds; best per column in bold."


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,latex"`` -> ``("md", "latex")``; ``BadInput`` naming an unknown format."""
    wanted = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        what = f"unknown report format {unknown[0]!r}" if unknown else "no report format given"
        raise BadInput(f"{what}; valid: {', '.join(FORMATS)}")
    return wanted


def resolve_artifacts(row: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A copy of ``row`` whose ``artifacts`` paths (a path or a list of paths, relative to the
    run folder) are joined to ``run_dir``; other values are kept as they are."""
    artifacts = row.get("artifacts")
    if not isinstance(artifacts, dict):
        return row

    def join(value: Any) -> Any:
        if isinstance(value, str):
            return str(Path(run_dir) / value)
        if isinstance(value, list):
            return [join(v) for v in value]
        return value

    return {**row, "artifacts": {name: join(value) for name, value in artifacts.items()}}


def load_runs(run_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows of several run folders' ``results.jsonl`` (each folder's shards merged into it
    first), merged by :func:`row_key` (a later folder wins on the same key), with artifact
    paths resolved against their own run folder."""
    rows: dict[tuple, dict[str, Any]] = {}
    for run_dir in run_dirs:
        merge_shards(run_dir)
        path = Path(run_dir) / "results.jsonl"
        if not path.is_file():
            raise BadInput(f"no results.jsonl in {run_dir}")
        rows.update((row_key(r), resolve_artifacts(r, Path(run_dir))) for r in read_rows(path))
    return list(rows.values())


def markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as markdown: a heading and a pipe table per (dataset, split); the best
    value per metric column in bold. With rows of two or more supervision regimes, the study's
    tables follow (:func:`owsbench.supervision_study.study_markdown`)."""
    tables = leaderboard_tables(rows)
    if not tables:
        return "_no results_\n"
    parts = []
    for table in tables:
        headers = ["method"] + [c.header() for c in table.columns]
        body = [
            [method] + [f"**{c.text()}**" if c.best else c.text() for c in cells]
            for method, cells in zip(table.methods, table.cells, strict=True)
        ]
        align = ("left",) + ("right",) * len(table.columns)
        text = tabulate(body, headers, tablefmt="github", colalign=align, disable_numparse=True)
        parts.append(f"### {table.dataset} / {table.split}\n\n{text}\n")
    from owsbench.supervision_study import study_markdown  # pandas: after the run, not at start

    study = study_markdown(rows)
    return "\n".join(parts) + "\n" + NOTE + "\n" + (f"\n{study}" if study else "")


def csv(rows: list[dict[str, Any]]) -> str:
    """The :func:`summarise` records as csv (fractions, not percentages; ``*_std`` columns)."""
    return summarise(rows).to_csv(index=False)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped for text mode."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex(rows: list[dict[str, Any]]) -> str:
    r"""The leaderboard as LaTeX: one booktabs ``table`` per (dataset, split), the best value per
    metric column in ``\textbf``. Needs ``\usepackage{booktabs}``."""
    parts = ["% owsbench leaderboard; needs \\usepackage{booktabs}\n"]
    for table in leaderboard_tables(rows):
        title = f"{table.dataset} / {table.split}"
        headers = ["Method"] + [
            f"{latex_escape(c.name)} {c.arrow(*LATEX_ARROWS)}".rstrip() for c in table.columns
        ]
        lines = [
            r"\begin{table}[htbp]",
            r"\centering",
            rf"\caption{{{latex_escape(title)}. {LATEX_NOTE}}}",
            rf"\label{{tab:owsbench-{slug(title)}}}",
            rf"\begin{{tabular}}{{l{'r' * len(table.columns)}}}",
            r"\toprule",
            " & ".join(headers) + r" \\",
            r"\midrule",
        ]
        for method, cells in zip(table.methods, table.cells, strict=True):
            texts = [c.text(r" $\pm$ ") for c in cells]  # numbers and "n/a": nothing to escape
            texts = [rf"\textbf{{{t}}}" if c.best else t for t, c in zip(texts, cells, strict=True)]
            lines.append(" & ".join([latex_escape(method), *texts]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_leaderboard(
    rows: list[dict[str, Any]],
    out: Path,
    formats: Sequence[str] = ("md", "csv"),
    figures: bool = False,
    cost_model: str = "relative",
    smoothing: float = 0.6,
) -> list[Path]:
    """Write the requested formats into ``out`` and return the paths written.

    ``md`` -> ``leaderboard.md``, ``csv`` -> ``leaderboard.csv`` (the :func:`summarise` records),
    ``latex`` -> ``leaderboard.tex``, ``html`` -> ``report.html`` (tables and figures, one
    self-contained file). Figures (PNG, into ``out/figures/``) are made for ``html`` and, with
    ``figures=True``, for any format; they read the rows' artifact paths as given (see
    :func:`load_runs`); ``smoothing`` is the EMA weight of the training curves
    (default ``owsbench.curves.DEFAULT_SMOOTHING``).
    """
    out = Path(out)
    written = []
    renderers = {
        "md": ("leaderboard.md", markdown),
        "csv": ("leaderboard.csv", csv),
        "latex": ("leaderboard.tex", latex),
    }
    for fmt in formats:
        if fmt in renderers:
            name, render = renderers[fmt]
            atomic_write_text(out / name, render(rows))
            written.append(out / name)
    if figures or "html" in formats:
        from owsbench.figures import make_figures

        tables = leaderboard_tables(rows)
        entries = make_figures(rows, tables, out / "figures", cost_model, smoothing)
        written += [e.path for e in entries if e.path is not None]
        if "html" in formats:
            from owsbench.html_report import render_html

            atomic_write_text(out / "report.html", render_html(rows, tables, entries))
            written.append(out / "report.html")
    return written
