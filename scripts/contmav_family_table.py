"""The ContMAV-family study's tables from its run folders (one per recipe).

Reads the ``results.jsonl`` of each ``--run NAME=DIR`` (e.g. ``official=runs/official
staged=runs/staged``) and prints, as Markdown:

1. per recipe and method, the mean +- sample std over seeds of AP, AUROC, FPR95 and mIoU (%)
   on each split, the number of seeds and the mean fit seconds;
2. the paired per-seed comparisons of the research questions, under each recipe: a variant
   against its baseline (``contmav-trufor``, ``-focal``, ``-focal-dice``, ``-infonce`` against
   ``contmav``; ``-infonce-synco`` against ``contmav-infonce``, the SynCo question), on the
   seeds both have: the per-seed differences of AP (points), their mean and sample std, a
   verdict, and the mean +- std of the mIoU differences. The verdict rule, fixed before looking
   at the numbers: with at least 3 paired seeds, *improves* (or *hurts*) when every seed's
   difference has the same sign and the mean difference is more than twice its standard error
   (std / sqrt(n)); else *cannot be told apart*. Fewer than 3 seeds: *too few seeds*.

    python scripts/contmav_family_table.py --run official=DIR --run staged=DIR [--split val]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("AP", "AUROC", "FPR95", "mIoU")
QUESTIONS = (  # (question, variant, baseline)
    ("TruFor decoder", "contmav-trufor", "contmav"),
    ("focal loss", "contmav-focal", "contmav"),
    ("focal + Dice", "contmav-focal-dice", "contmav"),
    ("InfoNCE pre-training", "contmav-infonce", "contmav"),
    ("SynCo negatives (on InfoNCE)", "contmav-infonce-synco", "contmav-infonce"),
)
MIN_SEEDS = 3

Table = dict[tuple[str, str], dict[int, dict]]  # (method, split) -> seed -> row


def read_run(folder: Path) -> Table:
    """The rows of a run folder by (method, split) and seed (the last row of a key wins)."""
    rows: Table = defaultdict(dict)
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[(row["method"], row["split"])][row["seed"]] = row
    return rows


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; the mean alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def summary_table(runs: dict[str, Table], splits: list[str]) -> list[str]:
    """Markdown lines of table 1."""
    header = ["recipe", "method"] + [f"{s} {m}" for s in splits for m in METRICS]
    lines = ["| " + " | ".join([*header, "seeds", "fit s"]) + " |"]
    lines.append("|" + "---|" * (len(header) + 2))
    for recipe, rows in runs.items():
        for method in sorted({m for m, _ in rows}):
            cells, seeds, fit = [], set(), []
            for split in splits:
                by_seed = rows.get((method, split), {})
                seeds |= set(by_seed)
                fit += [r["fit_seconds"] for r in by_seed.values() if not r.get("fit_cached")]
                for metric in METRICS:
                    values = [100 * r["metrics"][metric] for r in by_seed.values()]
                    cells.append(mean_std(values) if values else "")
            fit_s = f"{np.mean(fit):.0f}" if fit else "cached"
            lines.append("| " + " | ".join([recipe, method, *cells, str(len(seeds)), fit_s]) + " |")
    return lines


def verdict(differences: list[float]) -> str:
    """The rule of the module docstring."""
    if len(differences) < MIN_SEEDS:
        return "too few seeds"
    mean, std = float(np.mean(differences)), float(np.std(differences, ddof=1))
    same_sign = all(d > 0 for d in differences) or all(d < 0 for d in differences)
    if same_sign and abs(mean) > 2 * std / math.sqrt(len(differences)):
        return "improves" if mean > 0 else "hurts"
    return "cannot be told apart"


def paired_table(runs: dict[str, Table], split: str) -> list[str]:
    """Markdown lines of table 2 (AP differences in points on ``split``)."""
    head = f"variant - baseline, {split} AP per seed"
    lines = [f"| recipe | question | {head} | mean ± std | verdict | {split} mIoU diff |"]
    lines.append("|---|---|---|---|---|---|")
    for recipe, rows in runs.items():
        for question, variant, baseline in QUESTIONS:
            a, b = rows.get((variant, split), {}), rows.get((baseline, split), {})
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            diffs = [100 * (a[s]["metrics"]["AP"] - b[s]["metrics"]["AP"]) for s in seeds]
            per_seed = ", ".join(f"{s}: {d:+.2f}" for s, d in zip(seeds, diffs, strict=True))
            summary = mean_std(diffs) if len(diffs) > 1 else f"{diffs[0]:+.2f}"
            miou = [100 * (a[s]["metrics"]["mIoU"] - b[s]["metrics"]["mIoU"]) for s in seeds]
            cells = [recipe, question, per_seed, summary, verdict(diffs), mean_std(miou)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--split", action="append", help="splits of table 1 (default val, test)")
    parser.add_argument("--paired-split", default="test", help="split of the paired table")
    args = parser.parse_args()
    runs = {}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        if not folder:
            parser.error(f"--run takes NAME=DIR (got {spec!r})")
        runs[name] = read_run(Path(folder))
    splits = args.split or ["val", "test"]
    print("\n".join(summary_table(runs, splits)))
    print()
    print("\n".join(paired_table(runs, args.paired_split)))


if __name__ == "__main__":
    main()
