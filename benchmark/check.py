"""Regression gate: compare a run's rows with a committed baseline (``owsbench check``).

Rows are matched on (method, dataset, split, seed, preset). A metric regresses when it is worse
than the baseline by more than its tolerance (absolute, in fractions): lower for higher-is-better
metrics, higher for FPR95. Missing or extra rows are bad input (the two runs do not cover the
same jobs), not regressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from owsbench.errors import BadInput
from owsbench.report import COMPONENT_METRICS, METRICS

DEFAULT_TOLERANCE = 0.01  # one percentage point, for every metric
MATCH_FIELDS = ("method", "dataset", "split", "seed", "preset")
HIGHER_IS_BETTER = dict(METRICS + COMPONENT_METRICS)


@dataclass(frozen=True)
class Comparison:
    """One metric of one matched row."""

    key: tuple
    metric: str
    baseline: float | None
    value: float | None
    tolerance: float

    @property
    def regressed(self) -> bool:
        if self.baseline is None:
            return False
        if self.value is None:
            return True
        worse = (
            self.baseline - self.value
            if HIGHER_IS_BETTER[self.metric]
            else self.value - self.baseline
        )
        return worse > self.tolerance + 1e-12


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``"AP=0.02,FPR95=0.05"`` -> per-metric absolute tolerances (others: the default)."""
    tolerances = dict.fromkeys(HIGHER_IS_BETTER, DEFAULT_TOLERANCE)
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in tolerances:
            valid = ", ".join(tolerances)
            raise BadInput(f"bad tolerance {item!r}: expected METRIC=ABS with METRIC in {valid}")
        try:
            tolerances[name] = float(value)
        except ValueError:
            raise BadInput(f"bad tolerance {item!r}: {value!r} is not a number") from None
        if tolerances[name] < 0:
            raise BadInput(f"bad tolerance {item!r}: must be >= 0")
    return tolerances


def match_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(f) for f in MATCH_FIELDS)


def compare(
    rows: list[dict[str, Any]], baseline: list[dict[str, Any]], tolerances: dict[str, float]
) -> list[Comparison]:
    """Every metric of every matched row; ``BadInput`` when the two sets of rows differ."""
    current = {match_key(r): r for r in rows}
    reference = {match_key(r): r for r in baseline}
    missing = sorted(set(reference) - set(current), key=str)
    extra = sorted(set(current) - set(reference), key=str)
    if missing or extra:
        what = (
            f"missing from the run: {missing[0]}" if missing else f"not in the baseline: {extra[0]}"
        )
        fields = "/".join(MATCH_FIELDS)
        raise BadInput(
            f"rows do not match the baseline ({len(missing)} missing, {len(extra)} extra; "
            f"{fields}) {what}"
        )
    return [
        Comparison(
            key,
            metric,
            reference[key]["metrics"].get(metric),
            current[key]["metrics"].get(metric),
            tolerances[metric],
        )
        for key in sorted(reference, key=str)
        for metric in HIGHER_IS_BETTER
        if reference[key]["metrics"].get(metric) is not None
    ]
