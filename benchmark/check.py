"""Regression gate: compare a run's rows with a committed baseline (``owsbench check``).

Rows are matched on (method, dataset, split, seed, preset). Directions and valid metric names come
from the metric specs (:mod:`owsbench.metrics.specs`). A metric regresses when it is worse than
the baseline by more than its tolerance ``tol`` (absolute, in the metric's own unit: fractions for
the percent metrics): ``baseline - value > tol`` for higher-is-better metrics (AP, AUROC, mIoU,
sIoU, ...), ``value - baseline > tol`` for lower-is-better ones (FPR95), and a value that became
undefined (None) regresses. By default every number spec with a direction is compared with
tolerance 0.01; a spec without a better side (the component threshold, support counts) is
compared only when ``--tolerance`` names it, and then any change ``|value - baseline| > tol``
counts. Missing or extra rows are bad input (the two runs do not cover the same jobs), not
regressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from owsbench.errors import BadInput
from owsbench.metrics.specs import metric_spec, number_specs
from owsbench.rows import row_supervision

DEFAULT_TOLERANCE = 0.01  # one percentage point, for every metric
MATCH_FIELDS = ("method", "dataset", "split", "seed", "preset")


def tolerance_names() -> list[str]:
    """Every metric ``--tolerance`` accepts: the specs whose values are single numbers."""
    return [s.name for s in number_specs()]


def default_tolerances() -> dict[str, float]:
    """The metrics compared without ``--tolerance``: number specs with a direction, at 0.01."""
    return {s.name: DEFAULT_TOLERANCE for s in number_specs() if s.higher_is_better is not None}


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
        higher = metric_spec(self.metric).higher_is_better
        if higher is None:
            worse = abs(self.value - self.baseline)
        else:
            worse = self.baseline - self.value if higher else self.value - self.baseline
        return worse > self.tolerance + 1e-12


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``"AP=0.02,FPR95=0.05"`` -> per-metric absolute tolerances: :func:`default_tolerances`
    with the named ones replaced or added (any of :func:`tolerance_names`), in spec order."""
    tolerances = default_tolerances()
    valid_names = tolerance_names()
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in valid_names:
            valid = ", ".join(valid_names)
            raise BadInput(f"bad tolerance {item!r}: expected METRIC=ABS with METRIC in {valid}")
        try:
            tolerances[name] = float(value)
        except ValueError:
            raise BadInput(f"bad tolerance {item!r}: {value!r} is not a number") from None
        if tolerances[name] < 0:
            raise BadInput(f"bad tolerance {item!r}: must be >= 0")
    return {n: tolerances[n] for n in valid_names if n in tolerances}


def match_key(row: dict[str, Any]) -> tuple:
    """The fields a run's row and its baseline row share (``MATCH_FIELDS``), and the row's
    supervision regime (``full`` for rows from before regimes)."""
    return (*(row.get(f) for f in MATCH_FIELDS), row_supervision(row))


def compare(
    rows: list[dict[str, Any]], baseline: list[dict[str, Any]], tolerances: dict[str, float]
) -> list[Comparison]:
    """Every metric of ``tolerances`` of every matched row where the baseline has a value;
    ``BadInput`` when the two sets of rows differ."""
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
        for metric in tolerances
        if reference[key]["metrics"].get(metric) is not None
    ]
