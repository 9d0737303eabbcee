"""Result rows -> leaderboard tables (markdown via tabulate, csv via pandas).

One table per (dataset, split); one line per method: the mean over seeds (and the standard
deviation when there are several), as percentages with two decimals. Methods are sorted by AP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from owsbench.cache import atomic_write_text

METRICS: tuple[tuple[str, bool], ...] = (
    ("AP", True),
    ("AUROC", True),
    ("FPR95", False),
    ("mIoU", True),
)  # (name, higher is better)


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One record per (dataset, split, method): mean and std over seeds of every metric."""
    flat = [
        {
            "dataset": r["dataset"],
            "split": r["split"],
            "method": r["method"],
            "seed": r["seed"],
            "fit_seconds": r.get("fit_seconds"),
            "infer_seconds": r.get("infer_seconds"),
            **{m: r["metrics"].get(m) for m, _ in METRICS},
        }
        for r in rows
    ]
    frame = pd.DataFrame(flat)
    if frame.empty:
        return frame
    numeric = [m for m, _ in METRICS] + ["fit_seconds", "infer_seconds"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    grouped = frame.groupby(["dataset", "split", "method"], sort=False)
    summary = grouped[numeric].mean()
    for m, _ in METRICS:
        summary[f"{m}_std"] = grouped[m].std(ddof=1)
    summary["seeds"] = grouped["seed"].nunique()
    return summary.reset_index()


def _cell(mean: float, std: float, seeds: int) -> str:
    if pd.isna(mean):
        return "n/a"
    if seeds > 1 and not pd.isna(std):
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{100 * mean:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as markdown: a heading and a pipe table per (dataset, split)."""
    summary = summarise(rows)
    if summary.empty:
        return "_no results_\n"
    parts = []
    for (dataset, split), table in summary.groupby(["dataset", "split"], sort=False):
        table = table.sort_values("AP", ascending=False, na_position="last")
        headers = ["method"] + [f"{m} {'↑' if up else '↓'}" for m, up in METRICS]
        headers += ["seeds", "fit s", "infer s"]
        body = [
            [r["method"]]
            + [_cell(r[m], r[f"{m}_std"], r["seeds"]) for m, _ in METRICS]
            + [int(r["seeds"]), f"{r['fit_seconds']:.1f}", f"{r['infer_seconds']:.1f}"]
            for _, r in table.iterrows()
        ]
        title = f"### {dataset} / {split}"
        parts.append(title + "\n\n" + tabulate(body, headers, tablefmt="github") + "\n")
    note = "Metrics in %, mean ± std over seeds; AP = step-sum average precision, pooled pixels."
    return "\n".join(parts) + "\n" + note + "\n"


def write_leaderboard(rows: list[dict[str, Any]], out: Path, formats=("md", "csv")) -> list[Path]:
    """Write ``leaderboard.md`` / ``leaderboard.csv`` into ``out``; return the paths written."""
    written = []
    if "md" in formats:
        path = Path(out) / "leaderboard.md"
        atomic_write_text(path, markdown(rows))
        written.append(path)
    if "csv" in formats:
        path = Path(out) / "leaderboard.csv"
        atomic_write_text(path, summarise(rows).to_csv(index=False))
        written.append(path)
    return written
