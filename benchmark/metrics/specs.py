"""Metric specs: the one description of every value a result row's ``metrics`` can carry.

Every consumer reads these specs instead of keeping its own list: the row builder
(:mod:`owsbench.measure` refuses a metric without a spec), the leaderboard tables
(:mod:`owsbench.tables`: columns, arrows, number format, best marking), the regression gate
(:mod:`owsbench.check`: directions and tolerance names), the catalog (``catalog.METRICS``) and
``owsbench list metrics``.

A :class:`MetricSpec` gives a metric's ``name`` (its key in ``row["metrics"]``), ``direction``
(``"higher"`` or ``"lower"`` is better; ``"none"`` for descriptive values such as the component
threshold and support counts, which have no better side and get no arrow), value ``range``,
``format`` (how tables print it), ``level`` and a one-line ``summary`` with its formula and
public source, and ``leaderboard``: ``"always"`` (a column of every table), ``"present"`` (a
column where some row of the (dataset, split) has a value) or ``"never"`` (kept in rows but
not a column: ``per_class_iou``, a dict ``{class name: IoU}``, the component values that SMIYC
reports but the leaderboard does not show, and the support counts of the discovery metrics).

Adding a metric is one line here (or, from anywhere, ``register_metric(MetricSpec(...))``) plus
its producer in :mod:`owsbench.measure`; :func:`owsbench.measure.producer` does both at once.

This module imports only the standard library (and the numpy-only ``owsbench.metrics`` package
it lives in), so ``owsbench list metrics`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from owsbench.errors import BadInput
from owsbench.registry import Registry

DIRECTIONS = ("higher", "lower", "none")
FORMATS = ("percent", "count", "number", "per_class")
LEVELS = ("pixel", "semantic", "component", "discovery")
LEADERBOARD = ("always", "present", "never")
ARROWS = {"higher": "↑", "lower": "↓", "none": "·"}


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it is, which way is better and how it is shown.

    ``format``: ``"percent"`` (a fraction in [0, 1], printed as % with two decimals),
    ``"count"`` (a whole number), ``"number"`` (any other number, e.g. a score threshold) or
    ``"per_class"`` (a dict of fractions per class name: not a number, never a column).
    """

    name: str
    direction: str
    range: tuple[float, float]
    format: str
    level: str
    summary: str
    leaderboard: str = "present"

    def __post_init__(self) -> None:
        for field, value, valid in (
            ("direction", self.direction, DIRECTIONS),
            ("format", self.format, FORMATS),
            ("level", self.level, LEVELS),
            ("leaderboard", self.leaderboard, LEADERBOARD),
        ):
            if value not in valid:
                raise ValueError(f"metric {self.name!r}: {field} must be one of {valid}")
        if self.format == "per_class" and self.leaderboard != "never":
            raise ValueError(f"metric {self.name!r}: a per-class dict cannot be a table column")
        lo, hi = self.range
        if not lo <= hi:
            raise ValueError(f"metric {self.name!r}: range {self.range} is empty")

    @property
    def higher_is_better(self) -> bool | None:
        """True for ``"higher"``, False for ``"lower"``, None for ``"none"`` (no better side)."""
        return None if self.direction == "none" else self.direction == "higher"

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or ``·`` (neither)."""
        return ARROWS[self.direction]

    @property
    def is_number(self) -> bool:
        """Whether a row's value is one number (or None): everything but a per-class dict."""
        return self.format != "per_class"

    @property
    def is_column(self) -> bool:
        """Whether the leaderboard can show it as a column."""
        return self.leaderboard != "never"


_SPECS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` after the others (display order); ``ValueError`` when its name is taken."""
    if spec.name in _SPECS:
        raise ValueError(f"metric {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def unregister_metric(name: str) -> MetricSpec:
    """Remove and return the spec ``name`` (for tests and plugins that clean up after them)."""
    metric_spec(name)
    return _SPECS.pop(name)


def metric_spec(name: str) -> MetricSpec:
    """The spec of ``name``; ``BadInput`` with "did you mean" suggestions when unknown."""
    if name not in _SPECS:
        raise BadInput(Registry.suggest("metric", name, list(_SPECS)))
    return _SPECS[name]


def has_metric(name: str) -> bool:
    """Whether ``name`` has a spec."""
    return name in _SPECS


def all_specs() -> tuple[MetricSpec, ...]:
    """Every registered spec, in display order."""
    return tuple(_SPECS.values())


def metric_names() -> list[str]:
    """Every registered metric name, in display order."""
    return list(_SPECS)


def number_specs() -> tuple[MetricSpec, ...]:
    """The specs whose row values are single numbers (what ``owsbench check`` can compare)."""
    return tuple(s for s in _SPECS.values() if s.is_number)


def column_specs() -> tuple[MetricSpec, ...]:
    """The specs the leaderboard can show as columns, in display order."""
    return tuple(s for s in _SPECS.values() if s.is_column)


def __getattr__(name: str) -> Any:
    """``owsbench.metrics.specs:AP`` resolves to the spec of ``AP`` (the targets of
    ``owsbench.catalog.METRICS``); names without a spec are missing attributes as usual."""
    if name in _SPECS:
        return _SPECS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_INF = math.inf
_FRACTION = (0.0, 1.0)
_SMIYC = "SMIYC component metrics (Chan et al., NeurIPS 2021 Datasets and Benchmarks track)"
_PIXEL = "pooled over a split's pixels, void (255) excluded"

# fmt: off
for _spec in (
    MetricSpec(
        "AP", "higher", _FRACTION, "percent", "pixel",
        f"average precision, step sum AP = sum_k (R_k - R_(k-1)) P_k, {_PIXEL} "
        "(scikit-learn average_precision_score)",
        "always",
    ),
    MetricSpec(
        "AUROC", "higher", _FRACTION, "percent", "pixel",
        f"area under the ROC curve, trapezoid over (FPR_k, TPR_k) from (0, 0), {_PIXEL} "
        "(scikit-learn roc_auc_score; Fishyscapes, Blum et al. IJCV 2021)",
        "always",
    ),
    MetricSpec(
        "FPR95", "lower", _FRACTION, "percent", "pixel",
        "false positive rate FP/N at the first threshold with TPR >= 0.95 (fpr_rule 'first', "
        "Fishyscapes/SMIYC) or nearest to 0.95 ('nearest', Hendrycks et al. CAOS, ICML 2022)",
        "always",
    ),
    MetricSpec(
        "mIoU", "higher", _FRACTION, "percent", "semantic",
        "mean over classes of IoU_c = TP_c / (TP_c + FP_c + FN_c), classes never seen skipped "
        "(Cityscapes evaluator, Cordts et al. CVPR 2016)",
        "always",
    ),
    MetricSpec(
        "per_class_iou", "higher", _FRACTION, "per_class", "semantic",
        "{class name: IoU_c = TP_c / (TP_c + FP_c + FN_c)}, None for classes never seen "
        "(Cityscapes evaluator); a dict, not a table column",
        "never",
    ),
    MetricSpec(
        "object_completeness", "higher", _FRACTION, "percent", "semantic",
        "mean over ground-truth objects (instance ids) of the share of the object's pixels "
        "predicted as its class (owsbench.metrics.objects); datasets with instance ids only",
        "never",
    ),
    MetricSpec(
        "per_class_completeness", "higher", _FRACTION, "per_class", "semantic",
        "{class name: mean object completeness of that class's objects}, None for classes "
        "without objects; a dict, not a table column",
        "never",
    ),
    MetricSpec(
        "pixel_accuracy", "higher", _FRACTION, "percent", "semantic",
        "sum_c TP_c / all non-void pixels (Long et al. FCN, CVPR 2015); computed by "
        "SemanticMetric, not written into rows by the runner",
        "never",
    ),
    MetricSpec(
        "sIoU", "higher", _FRACTION, "percent", "component",
        f"mean over GT components k of |k ∩ K̂(k)| / |(k ∪ K̂(k)) \\ A(k)|, {_SMIYC}",
    ),
    MetricSpec(
        "PPV", "higher", _FRACTION, "percent", "component",
        f"mean over predicted components k̂ of |k̂ ∩ GT anomaly| / |k̂|, {_SMIYC}",
    ),
    MetricSpec(
        "mean_F1", "higher", _FRACTION, "percent", "component",
        f"mean over tau in linspace(0.25, 0.75, 11) of F1_tau = 2TP / (2TP + FN + FP), {_SMIYC}",
    ),
    MetricSpec(
        "F1_25", "higher", _FRACTION, "percent", "component",
        f"component F1_tau = 2TP / (2TP + FN + FP) at tau = 0.25, {_SMIYC}", "never",
    ),
    MetricSpec(
        "F1_50", "higher", _FRACTION, "percent", "component",
        f"component F1_tau = 2TP / (2TP + FN + FP) at tau = 0.5, {_SMIYC}", "never",
    ),
    MetricSpec(
        "F1_75", "higher", _FRACTION, "percent", "component",
        f"component F1_tau = 2TP / (2TP + FN + FP) at tau = 0.75, {_SMIYC}", "never",
    ),
    MetricSpec(
        "threshold", "none", (-_INF, _INF), "number", "component",
        "score threshold of the components: best pixel F1 = 2TP / (2TP + FP + FN) on the split "
        f"(SMIYC curves_from_cmats), {_SMIYC}",
        "never",
    ),
    MetricSpec(
        "discovery_precision", "higher", _FRACTION, "percent", "discovery",
        "#{flagged pixels on GT anomaly} / #{flagged pixels}, pooled (novel-class discovery, "
        "ContMAV, Sodano et al. CVPR 2024)",
    ),
    MetricSpec(
        "discovery_object_coverage", "higher", _FRACTION, "percent", "discovery",
        "mean over GT anomaly objects k (8-connected components) of |k ∩ flagged| / |k|",
    ),
    MetricSpec(
        "discovery_object_purity", "higher", _FRACTION, "percent", "discovery",
        "mean over GT objects k with flagged pixels of max_c |k ∩ {id = c}| / |k ∩ flagged|",
    ),
    MetricSpec(
        "discovery_novel_classes", "none", (0.0, _INF), "count", "discovery",
        "number of distinct discovered class ids over the split",
    ),
    MetricSpec(
        "discovery_objects", "none", (0.0, _INF), "count", "discovery",
        "number of GT anomaly objects (8-connected components): the support of coverage",
        "never",
    ),
    MetricSpec(
        "discovery_flagged_pixels", "none", (0.0, _INF), "count", "discovery",
        "number of flagged (id >= 0) non-void pixels: the support of discovery_precision",
        "never",
    ),
):
    register_metric(_spec)
# fmt: on
del _spec
