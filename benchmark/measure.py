"""The "measure" step (plan -> fit -> infer -> measure -> rows -> tables): metric states -> the
``metrics`` dict of a result row.

:func:`row_metrics` runs the registered producers in order. A producer declares the metric specs
it yields (:mod:`owsbench.metrics.specs`) and is a function ``(SplitResult, MeasureOptions) ->
{name: value}``; its outputs are merged with ``dict.update`` (a later producer overwrites an
earlier value in place, keeping the key's position). A key that has no spec, or that its producer
did not declare, is refused with ``ValueError``, so no row carries a metric that the tables, the
regression gate and ``owsbench list metrics`` do not know.

Every row carries the always-shown metrics (``AP``, ``AUROC``, ``FPR95``, ``mIoU``), None where
undefined; then, when the split had them, the SMIYC component metrics, the discovery metrics and
``per_class_iou``. NaN (JSON has none) is written as None, also inside ``per_class_iou``.

A new metric is one spec and one producer, in one place::

    @producer(MetricSpec("inlier_fraction", "higher", (0, 1), "percent", "pixel", "N / (P + N)"))
    def inlier_fraction(result, options):
        a = result.anomaly
        return {"inlier_fraction": a.num_negatives / (a.num_positives + a.num_negatives)}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from owsbench.metrics.discovery import KEYS as DISCOVERY_KEYS
from owsbench.metrics.specs import (
    MetricSpec,
    all_specs,
    has_metric,
    metric_spec,
    register_metric,
)

if TYPE_CHECKING:
    from owsbench.evaluate import SplitResult


@dataclass(frozen=True)
class MeasureOptions:
    """What a producer may need besides the metric states.

    ``class_names``: the dataset's known classes (keys of ``per_class_iou``); ``fpr_rule``:
    ``"first"`` or ``"nearest"`` (:meth:`owsbench.metrics.AnomalyMetric.compute`);
    ``components``: the SMIYC component metrics computed from the score maps
    (:func:`owsbench.score_eval.component_metrics`), ``{}`` when not computed.
    """

    class_names: tuple[str, ...]
    fpr_rule: str
    components: Mapping[str, Any]


ProduceFn = Callable[["SplitResult", MeasureOptions], Mapping[str, Any]]


@dataclass(frozen=True)
class Producer:
    """A named function of the split's metric states and the options, and the metric names it
    may return (each must have a spec)."""

    name: str
    keys: tuple[str, ...]
    produce: ProduceFn


_PRODUCERS: dict[str, Producer] = {}


def register_producer(name: str, specs: Sequence[MetricSpec | str], fn: ProduceFn) -> Producer:
    """Add a producer after the others; ``specs`` are specs (registered here when new) or names
    of registered specs. ``ValueError`` when ``name`` is taken."""
    if name in _PRODUCERS:
        raise ValueError(f"metric producer {name!r} is registered twice")
    keys = []
    for spec in specs:
        if isinstance(spec, MetricSpec):
            if not has_metric(spec.name):
                register_metric(spec)
            elif metric_spec(spec.name) != spec:
                raise ValueError(f"metric {spec.name!r} already has a different spec")
            keys.append(spec.name)
        else:
            keys.append(metric_spec(spec).name)
    _PRODUCERS[name] = Producer(name, tuple(keys), fn)
    return _PRODUCERS[name]


def producer(*specs: MetricSpec | str, name: str | None = None) -> Callable[[ProduceFn], ProduceFn]:
    """Decorator form of :func:`register_producer` (the name defaults to the function's)."""

    def register(fn: ProduceFn) -> ProduceFn:
        register_producer(name or fn.__name__, specs, fn)
        return fn

    return register


def unregister_producer(name: str) -> Producer:
    """Remove and return a producer (its specs stay; see ``specs.unregister_metric``)."""
    if name not in _PRODUCERS:
        raise KeyError(f"no metric producer {name!r}")
    return _PRODUCERS.pop(name)


def producers() -> tuple[Producer, ...]:
    """The registered producers, in the order :func:`row_metrics` runs them."""
    return tuple(_PRODUCERS.values())


def nan_to_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def row_metrics(
    result: SplitResult,
    class_names: Sequence[str],
    fpr_rule: str,
    components: dict[str, Any],
) -> dict[str, Any]:
    """``row["metrics"]`` of one method on one split: every producer's output, checked.

    Starts from the always-shown specs set to None, merges the producers' outputs in order and
    writes NaN as None. ``ValueError`` for an output key without a spec or not declared by its
    producer.
    """
    options = MeasureOptions(tuple(class_names), fpr_rule, dict(components))
    metrics: dict[str, Any] = {s.name: None for s in all_specs() if s.leaderboard == "always"}
    for p in _PRODUCERS.values():
        out = p.produce(result, options)
        for key in out:
            if not has_metric(key):
                raise ValueError(f"metric producer {p.name!r} returned {key!r}, which has no spec")
            if key not in p.keys:
                raise ValueError(f"metric producer {p.name!r} returned {key!r}, not in {p.keys}")
        metrics.update(out)
    return {k: nan_to_none(v) for k, v in metrics.items()}


# --------------------------------------------------------------------------- built-in producers


@producer("AP", "AUROC", "FPR95", name="pixel")
def produce_pixel(result: SplitResult, options: MeasureOptions) -> dict[str, Any]:
    """AP / AUROC / FPR95: per-image means when the split was aggregated per image, else pooled
    (:class:`owsbench.metrics.AnomalyMetric`) when it had any labelled pixel, else nothing."""
    if result.per_image is not None:
        return result.per_image.compute()
    if result.anomaly.num_positives + result.anomaly.num_negatives > 0:
        return result.anomaly.compute(fpr_rule=options.fpr_rule)
    return {}


@producer("sIoU", "PPV", "mean_F1", "F1_25", "F1_50", "F1_75", "threshold", name="components")
def produce_components(result: SplitResult, options: MeasureOptions) -> Mapping[str, Any]:
    """The SMIYC component metrics as computed from the score maps (passed in the options)."""
    return options.components


@producer(*DISCOVERY_KEYS, name="discovery")
def produce_discovery(result: SplitResult, options: MeasureOptions) -> dict[str, Any]:
    """Novel-class discovery metrics (:class:`owsbench.metrics.DiscoveryMetric`), when measured."""
    return {} if result.discovery is None else result.discovery.compute()


@producer("object_completeness", "per_class_completeness", name="objects")
def produce_objects(result: SplitResult, options: MeasureOptions) -> dict[str, Any]:
    """Object completeness (:class:`owsbench.metrics.ObjectCompleteness`), when the split's
    frames carry instance ids; ``{class name: completeness}`` with None for classes without
    objects."""
    if result.objects is None:
        return {}
    values = result.objects.compute()
    names = options.class_names
    per_class = zip(names, map(nan_to_none, values["per_class_completeness"]), strict=True)
    return {
        "object_completeness": values["object_completeness"],
        "per_class_completeness": dict(per_class),
    }


@producer("mIoU", "per_class_iou", name="semantic")
def produce_semantic(result: SplitResult, options: MeasureOptions) -> dict[str, Any]:
    """mIoU and ``{class name: IoU}`` (:class:`owsbench.metrics.SemanticMetric`), when measured;
    ``pixel_accuracy`` is not written into rows."""
    if result.semantic is None:
        return {}
    values = result.semantic.compute()
    per_class = zip(options.class_names, map(nan_to_none, values["per_class_iou"]), strict=True)
    return {"mIoU": values["mIoU"], "per_class_iou": dict(per_class)}
