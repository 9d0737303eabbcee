"""Result rows -> leaderboard tables: markdown, csv, LaTeX and (via ``html_report``) HTML.

One table per (dataset, split); one line per method: the mean over seeds (and the sample standard
deviation when there are several), as percentages with two decimals, sorted by AP. Every format is
rendered from the same :class:`Table` (built by :func:`leaderboard_tables`), so the headers with
their directions (↑ higher is better, ↓ lower is better) and the best value per metric column are
decided once: the best mean over seeds wins, and every method whose printed value equals the best
printed value is marked too (ties all marked). A column with fewer than two values marks nothing.

Component metrics (``sIoU``, ``PPV``, ``mean_F1``) get a column in the tables of the (dataset,
split) groups where rows have them in ``metrics``. This module loads numpy, pandas and tabulate
only; figures (matplotlib) and the HTML page are imported when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from owsbench.cache import atomic_write_text
from owsbench.errors import BadInput
from owsbench.results import read_rows, row_key

METRICS: tuple[tuple[str, bool], ...] = (
    ("AP", True),
    ("AUROC", True),
    ("FPR95", False),
    ("mIoU", True),
)  # (name, higher is better): the pixel metrics of every row
COMPONENT_METRICS: tuple[tuple[str, bool], ...] = (
    ("sIoU", True),
    ("PPV", True),
    ("mean_F1", True),
)  # component-level metrics: a column only where rows have them
FORMATS = ("md", "csv", "latex", "html")
TIMINGS = ("fit_seconds", "infer_seconds")
NOTE = (
    "Metrics in %, mean ± std over seeds; AP = step-sum average precision, pooled pixels. "
    "Best per column marked (best mean over seeds; equal printed values all marked)."
)
LATEX_ARROWS = (r"$\uparrow$", r"$\downarrow$")
LATEX_NOTE = r"Metrics in \%, mean $\pm$ std over seeds; best per column in bold."


@dataclass(frozen=True)
class Column:
    """A table column: its header name and, for metrics, whether higher values are better."""

    name: str
    higher_is_better: bool | None = None  # None: not a metric (seeds, timings)

    def arrow(self, up: str = "↑", down: str = "↓") -> str:
        """``up`` or ``down`` for a metric column by its direction; ``""`` for other columns."""
        if self.higher_is_better is None:
            return ""
        return up if self.higher_is_better else down

    def header(self) -> str:
        """``name`` and the direction arrow, e.g. ``"FPR95 ↓"``."""
        return f"{self.name} {self.arrow()}".rstrip()


@dataclass(frozen=True)
class Cell:
    """One printed value: ``value`` (e.g. ``"14.11"``, ``"n/a"``), its ``spread`` (the std over
    seeds, or None), and whether it is the best of its column."""

    value: str
    spread: str | None = None
    best: bool = False

    def text(self, pm: str = " ± ") -> str:
        """``value``, followed by ``pm`` and the spread when there is one."""
        return self.value if self.spread is None else f"{self.value}{pm}{self.spread}"


@dataclass(frozen=True)
class Table:
    """The leaderboard of one (dataset, split): ``cells[i][j]`` is method ``i``, column ``j``."""

    dataset: str
    split: str
    columns: tuple[Column, ...]
    methods: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]


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
    """The rows of several run folders' ``results.jsonl``, merged by :func:`row_key` (a later
    folder wins on the same key), with artifact paths resolved against their own run folder."""
    rows: dict[tuple, dict[str, Any]] = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.jsonl"
        if not path.is_file():
            raise BadInput(f"no results.jsonl in {run_dir}")
        rows.update((row_key(r), resolve_artifacts(r, Path(run_dir))) for r in read_rows(path))
    return list(rows.values())


def _metrics_present(rows: list[dict[str, Any]]) -> tuple[tuple[str, bool], ...]:
    """The pixel metrics, then the component metrics that some row has."""
    return METRICS + tuple(
        m for m in COMPONENT_METRICS if any(r["metrics"].get(m[0]) is not None for r in rows)
    )


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One record per (dataset, split, method): mean and std over seeds of every metric.

    Records keep the order in which (dataset, split, method) first occur in ``rows``.
    """
    metrics = [m for m, _ in _metrics_present(rows)]
    flat = [
        {
            "dataset": r["dataset"],
            "split": r["split"],
            "method": r["method"],
            "seed": r["seed"],
            **{t: r.get(t) for t in TIMINGS},
            **{m: r["metrics"].get(m) for m in metrics},
        }
        for r in rows
    ]
    frame = pd.DataFrame(flat)
    if frame.empty:
        return frame
    numeric = metrics + list(TIMINGS)
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    grouped = frame.groupby(["dataset", "split", "method"], sort=False)
    summary = grouped[numeric].mean()
    for m in metrics:
        summary[f"{m}_std"] = grouped[m].std(ddof=1)
    summary["seeds"] = grouped["seed"].nunique()
    return summary.reset_index()


def _percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.2f}"


def _metric_cells(table: pd.DataFrame, name: str, higher: bool) -> list[Cell]:
    """The cells of one metric column, the best (by mean, ties at print precision) marked."""
    shown = [_percent(v) for v in table[name]]
    values = table[name].dropna()
    best = None
    if len(values) >= 2:
        best = _percent(values.max() if higher else values.min())
    return [
        Cell(
            text,
            _percent(std) if seeds > 1 and not pd.isna(std) else None,
            text == best,
        )
        for text, std, seeds in zip(shown, table[f"{name}_std"], table["seeds"], strict=True)
    ]


def _seconds(value: float) -> Cell:
    return Cell("n/a" if pd.isna(value) else f"{value:.1f}")


def leaderboard_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """One :class:`Table` per (dataset, split), in order of first occurrence, methods by AP."""
    summary = summarise(rows)
    if summary.empty:
        return []
    tables = []
    for (dataset, split), group in summary.groupby(["dataset", "split"], sort=False):
        group = group.sort_values("AP", ascending=False, na_position="last", kind="stable")
        present = METRICS + tuple(
            (m, up) for m, up in COMPONENT_METRICS if m in group and group[m].notna().any()
        )
        columns = [Column(m, up) for m, up in present]
        by_column = [_metric_cells(group, m, up) for m, up in present]
        columns += [Column("seeds"), Column("fit s"), Column("infer s")]
        by_column += [
            [Cell(str(int(s))) for s in group["seeds"]],
            [_seconds(v) for v in group["fit_seconds"]],
            [_seconds(v) for v in group["infer_seconds"]],
        ]
        tables.append(
            Table(
                dataset=str(dataset),
                split=str(split),
                columns=tuple(columns),
                methods=tuple(str(m) for m in group["method"]),
                cells=tuple(zip(*by_column, strict=True)),
            )
        )
    return tables


def markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as markdown: a heading and a pipe table per (dataset, split); the best
    value per metric column in bold."""
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
    return "\n".join(parts) + "\n" + NOTE + "\n"


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


def slug(text: str) -> str:
    """``text`` for file names and labels: each run of characters other than ASCII letters,
    digits, ``.`` and ``-`` becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


def write_leaderboard(
    rows: list[dict[str, Any]],
    out: Path,
    formats: Sequence[str] = ("md", "csv"),
    figures: bool = False,
) -> list[Path]:
    """Write the requested formats into ``out`` and return the paths written.

    ``md`` -> ``leaderboard.md``, ``csv`` -> ``leaderboard.csv`` (the :func:`summarise` records),
    ``latex`` -> ``leaderboard.tex``, ``html`` -> ``report.html`` (tables and figures, one
    self-contained file). Figures (PNG, into ``out/figures/``) are made for ``html`` and, with
    ``figures=True``, for any format; they read the rows' artifact paths as given (see
    :func:`load_runs`).
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
        entries = make_figures(rows, tables, out / "figures")
        written += [e.path for e in entries if e.path is not None]
        if "html" in formats:
            from owsbench.html_report import render_html

            atomic_write_text(out / "report.html", render_html(rows, tables, entries))
            written.append(out / "report.html")
    return written
