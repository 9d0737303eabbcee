"""The weak-supervision study from result rows: regime summaries and the hybrid analysis.

Rows of post-hoc methods carry the regime their segmenter was trained with (``supervision``) and
its cost (``annotation_cost``). All post-hoc methods of one segmenter share its semantic
prediction, so the semantic metrics of a regime are read once per (dataset, split, segmenter,
regime, seed): from the first such row. Means and sample standard deviations (``ddof=1``) are
over seeds.

- :func:`regime_summary`: per (dataset, split, segmenter, regime) its cost in each cost model,
  mIoU, object completeness and every post-hoc method's AP;
- :func:`hybrid_rows`: a base regime against a hybrid (default ``points`` vs ``tags+points``)
  per class: IoU and object completeness of each and their difference, which answers "did
  adding tags help, and where?".

Importing this module loads no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from owsbench.rows import row_supervision

Row = dict[str, Any]
GROUP = ["dataset", "split", "segmenter", "supervision"]


def group_of(row: Row) -> dict[str, Any]:
    """The row's values of ``GROUP``: dataset, split, segmenter, regime."""
    return {
        "dataset": row["dataset"],
        "split": row["split"],
        "segmenter": row["segmenter"],
        "supervision": row_supervision(row),
    }


def segmenter_rows(rows: list[Row]) -> list[Row]:
    """One row per (dataset, split, segmenter, regime, seed) of post-hoc methods (the first)."""
    seen: dict[tuple, Row] = {}
    for row in rows:
        if row.get("segmenter") is None:
            continue
        key = (row["dataset"], row["split"], row["segmenter"], row_supervision(row), row["seed"])
        seen.setdefault(key, row)
    return list(seen.values())


def regime_summary(rows: list[Row]) -> pd.DataFrame:
    """Per (dataset, split, segmenter, regime): ``cost_relative``, ``cost_seconds``, ``mIoU``
    and ``object_completeness`` (``*_std`` over seeds), ``seeds`` and ``AP <method>`` for every
    post-hoc method; in the order regimes first occur."""
    semantic = pd.DataFrame(
        [
            {
                **group_of(r),
                "seed": r["seed"],
                "cost_relative": (r.get("annotation_cost") or {}).get("relative"),
                "cost_seconds": (r.get("annotation_cost") or {}).get("seconds"),
                "mIoU": r["metrics"].get("mIoU"),
                "object_completeness": r["metrics"].get("object_completeness"),
            }
            for r in segmenter_rows(rows)
        ]
    )
    if semantic.empty:
        return semantic
    numeric = ["cost_relative", "cost_seconds", "mIoU", "object_completeness"]
    semantic[numeric] = semantic[numeric].apply(pd.to_numeric, errors="coerce")
    grouped = semantic.groupby(GROUP, sort=False)
    summary = grouped[numeric].mean()
    for name in ("mIoU", "object_completeness"):
        summary[f"{name}_std"] = grouped[name].std(ddof=1)
    summary["seeds"] = grouped["seed"].nunique()
    for method, (mean, std) in _method_ap(rows).items():
        summary[f"AP {method}"] = mean
        summary[f"AP {method}_std"] = std
    return summary.reset_index()


def _method_ap(rows: list[Row]) -> dict[str, tuple[pd.Series, pd.Series]]:
    """Per post-hoc method, the mean and std over seeds of its AP per regime group."""
    flat = pd.DataFrame(
        [
            {**group_of(r), "method": r["method"], "AP": r["metrics"].get("AP")}
            for r in rows
            if r.get("segmenter") is not None and r["metrics"].get("AP") is not None
        ]
    )
    if flat.empty:
        return {}
    flat["AP"] = pd.to_numeric(flat["AP"], errors="coerce")
    stat = flat.groupby([*GROUP, "method"], sort=False)["AP"]
    mean, std = stat.mean(), stat.std(ddof=1)
    return {
        m: (mean.xs(m, level="method"), std.xs(m, level="method"))
        for m in dict.fromkeys(flat["method"])
    }


def _pct(value: Any, spread: Any = None) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    text = f"{100 * value:.2f}"
    return text if spread is None or pd.isna(spread) else f"{text} ± {100 * spread:.2f}"


def regime_markdown(rows: list[Row]) -> str:
    """The regime summary as one markdown table per (dataset, split); empty without regimes."""
    summary = regime_summary(rows)
    if summary.empty or summary["supervision"].nunique() < 2:
        return ""
    ap_columns = [c for c in summary.columns if c.startswith("AP ") and not c.endswith("_std")]
    parts = []
    for (dataset, split), table in summary.groupby(["dataset", "split"], sort=False):
        body = [
            [
                f"{r['supervision']} ({r['segmenter']})",
                f"{r['cost_relative']:g}",
                f"{r['cost_seconds']:g}",
                _pct(r["mIoU"], r["mIoU_std"]),
                _pct(r["object_completeness"], r["object_completeness_std"]),
                *[_pct(r[c], r[f"{c}_std"]) for c in ap_columns],
                str(r["seeds"]),
            ]
            for _, r in table.iterrows()
        ]
        headers = ["regime", "cost", "seconds", "mIoU ↑", "completeness ↑", *ap_columns, "seeds"]
        text = tabulate(body, headers, tablefmt="github", disable_numparse=True)
        parts.append(f"### {dataset} / {split}: supervision regimes\n\n{text}\n")
    return "\n".join(parts)


def _per_class(rows: list[Row], metric: str) -> pd.DataFrame:
    """Per (dataset, split, segmenter, regime) x class, the mean over seeds of a per-class
    metric dict (``per_class_iou`` or ``per_class_completeness``)."""
    flat = [
        {
            **group_of(r),
            "class": name,
            "value": np.nan if value is None else value,
        }
        for r in segmenter_rows(rows)
        for name, value in (r["metrics"].get(metric) or {}).items()
    ]
    if not flat:
        return pd.DataFrame(columns=[*GROUP, "class", "value"])
    frame = pd.DataFrame(flat)
    return frame.groupby([*GROUP, "class"], sort=False)["value"].mean().reset_index()


def hybrid_rows(rows: list[Row], base: str = "points", hybrid: str = "tags+points") -> pd.DataFrame:
    """Per (dataset, split, segmenter) with both regimes and per class: IoU and object
    completeness under ``base`` and ``hybrid`` (means over seeds) and hybrid minus base."""
    parts = []
    for metric, name in (("per_class_iou", "IoU"), ("per_class_completeness", "completeness")):
        frame = _per_class(rows, metric)
        frame = frame[frame["supervision"].isin([base, hybrid])]
        index = ["dataset", "split", "segmenter", "class"]
        wide = frame.pivot_table(index=index, columns="supervision", values="value", dropna=False)
        if base not in wide or hybrid not in wide:
            continue
        wide = wide.reindex(pd.MultiIndex.from_frame(frame[index].drop_duplicates()))  # row order
        wide = wide[[base, hybrid]].rename(
            columns={base: f"{name} {base}", hybrid: f"{name} {hybrid}"}
        )
        wide[f"{name} Δ"] = wide[f"{name} {hybrid}"] - wide[f"{name} {base}"]
        parts.append(wide)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, axis=1).reset_index()


def hybrid_markdown(rows: list[Row], base: str = "points", hybrid: str = "tags+points") -> str:
    """:func:`hybrid_rows` as markdown, one table per (dataset, split, segmenter); empty when the
    rows do not have both regimes."""
    table = hybrid_rows(rows, base, hybrid)
    if table.empty:
        return ""
    values = [c for c in table.columns if c not in ("dataset", "split", "segmenter", "class")]
    parts = []
    for (dataset, split, segmenter), group in table.groupby(
        ["dataset", "split", "segmenter"], sort=False
    ):
        body = [[r["class"], *[_signed(r[c], c) for c in values]] for _, r in group.iterrows()]
        text = tabulate(body, ["class", *values], tablefmt="github", disable_numparse=True)
        parts.append(
            f"### {dataset} / {split} ({segmenter}): {base} vs {hybrid}, per class\n\n{text}\n"
        )
    return "\n".join(parts)


def _signed(value: Any, column: str) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{100 * value:+.2f}" if column.endswith("Δ") else f"{100 * value:.2f}"


def study_markdown(rows: list[Row]) -> str:
    """The study's tables (regimes, then the hybrid analysis); empty with fewer than two
    regimes in ``rows``."""
    regimes = regime_markdown(rows)
    if not regimes:
        return ""
    note = (
        "Metrics in %, mean ± std over seeds; cost = relative annotation effort per image, "
        "seconds = published per-image annotation time (owsbench.costs). Completeness = mean "
        "share of each ground-truth object's pixels predicted as its class.\n"
    )
    return "\n".join(p for p in (regimes, hybrid_markdown(rows), note) if p)
