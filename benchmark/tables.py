"""The leaderboard table model: result rows -> one :class:`Table` per (dataset, split).

One line per method: the mean over seeds (and the sample standard deviation, ``ddof=1``, when
there are several), methods sorted by mean AP (undefined last). The metric columns come from the
metric specs (:mod:`owsbench.metrics.specs`), in their display order: the specs with
``leaderboard="always"`` (``AP``, ``AUROC``, ``FPR95``, ``mIoU``) in every table, those with
``"present"`` (SMIYC ``sIoU``, ``PPV``, ``mean_F1``; the discovery metrics) in the tables of the
(dataset, split) groups where some row has a value. A spec's ``format`` decides how values print
(``"percent"``: ``100 x`` with two decimals; ``"count"``: a whole number, one decimal for a
fractional mean; ``"number"``: four significant digits) and its direction the header arrow (↑
higher is better, ↓ lower is better) and the best value: the best mean over seeds wins and every
method whose printed value equals the best printed value is marked too (ties all marked). A
column with fewer than two values, or whose metric has no better side, marks nothing.

Every renderer (markdown, csv, LaTeX in :mod:`owsbench.report`, HTML in
:mod:`owsbench.html_report`) and the figures read this one model. Loads numpy and pandas only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from owsbench.metrics.specs import MetricSpec, column_specs
from owsbench.rows import method_label

TIMINGS = ("fit_seconds", "infer_seconds")
NOTE = (
    "Metrics in %, mean ± std over seeds; AP = step-sum average precision, pooled pixels. "
    "Best per column marked (best mean over seeds; equal printed values all marked)."
)


@dataclass(frozen=True)
class Column:
    """A table column: its header name, for metrics whether higher values are better (None:
    not a metric, such as seeds and timings, or a metric without a better side) and the spec."""

    name: str
    higher_is_better: bool | None = None
    spec: MetricSpec | None = None

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


def slug(text: str) -> str:
    """``text`` for file names and labels: each run of characters other than ASCII letters,
    digits, ``.`` and ``-`` becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


def metric_columns(rows: list[dict[str, Any]]) -> tuple[MetricSpec, ...]:
    """The column specs that ``rows`` get: the always-shown ones and those some row has."""
    return tuple(
        s
        for s in column_specs()
        if s.leaderboard == "always" or any(r["metrics"].get(s.name) is not None for r in rows)
    )


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One record per (dataset, split, method): mean and std over seeds of every metric column
    (:func:`metric_columns`) and of the timings, and the number of seeds.

    Records keep the order in which (dataset, split, method) first occur in ``rows``.
    """
    metrics = [s.name for s in metric_columns(rows)]
    flat = [
        {
            "dataset": r["dataset"],
            "split": r["split"],
            "method": method_label(r),
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


def _count(value: float) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.4g}"


FORMATTERS: dict[str, Callable[[float], str]] = {
    "percent": _percent,
    "count": _count,
    "number": _number,
}


def _metric_cells(table: pd.DataFrame, spec: MetricSpec) -> list[Cell]:
    """The cells of one metric column, the best (by mean, ties at print precision) marked."""
    show = FORMATTERS[spec.format]
    shown = [show(v) for v in table[spec.name]]
    values = table[spec.name].dropna()
    best = None
    if len(values) >= 2 and spec.higher_is_better is not None:
        best = show(values.max() if spec.higher_is_better else values.min())
    return [
        Cell(text, show(std) if seeds > 1 and not pd.isna(std) else None, text == best)
        for text, std, seeds in zip(shown, table[f"{spec.name}_std"], table["seeds"], strict=True)
    ]


def _seconds(value: float) -> Cell:
    return Cell("n/a" if pd.isna(value) else f"{value:.1f}")


def _table(dataset: str, split: str, group: pd.DataFrame) -> Table:
    """The :class:`Table` of one (dataset, split) group of :func:`summarise` records."""
    group = group.sort_values("AP", ascending=False, na_position="last", kind="stable")
    present = [
        s
        for s in column_specs()
        if s.leaderboard == "always" or (s.name in group and group[s.name].notna().any())
    ]
    columns = [Column(s.name, s.higher_is_better, s) for s in present]
    by_column = [_metric_cells(group, s) for s in present]
    columns += [Column("seeds"), Column("fit s"), Column("infer s")]
    by_column += [
        [Cell(str(int(s))) for s in group["seeds"]],
        [_seconds(v) for v in group["fit_seconds"]],
        [_seconds(v) for v in group["infer_seconds"]],
    ]
    return Table(
        dataset=str(dataset),
        split=str(split),
        columns=tuple(columns),
        methods=tuple(str(m) for m in group["method"]),
        cells=tuple(zip(*by_column, strict=True)),
    )


def leaderboard_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """One :class:`Table` per (dataset, split), in order of first occurrence, methods by AP."""
    summary = summarise(rows)
    if summary.empty:
        return []
    return [
        _table(str(dataset), str(split), group)
        for (dataset, split), group in summary.groupby(["dataset", "split"], sort=False)
    ]
