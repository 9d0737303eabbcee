"""Which supervision a segmenter config names, and whether it can train on a dataset.

``supervision_class`` resolves ``SegmenterConfig.supervision``: a registered id
(``owsbench.catalog.SUPERVISIONS``) or a ``+`` combination of weak regimes;
``check_supervision`` is the planner's check of a config against the training dataset's
``LabelTraits`` (one-line ``BadInput``, before any work starts).
"""

from __future__ import annotations

from owsbench.datasets.base import LabelTraits
from owsbench.errors import BadInput
from owsbench.segmenters.base import SegmenterConfig
from owsbench.training.supervision import SegmenterSupervision


def supervision_class(supervision: str) -> type[SegmenterSupervision]:
    """The supervision class of a config's ``supervision`` id: a registered id
    (``owsbench.catalog.SUPERVISIONS``; unknown ids get a "did you mean") or a ``+``
    combination of weak regimes (``CombinedSupervision``)."""
    from owsbench.catalog import SUPERVISIONS

    if "+" in supervision:
        from owsbench.training.weak import CombinedSupervision  # scipy, skimage: weak runs only

        return CombinedSupervision
    return SUPERVISIONS.get(supervision)


# per weak-label option: (integer?, low, low inclusive?, high) of the allowed range
WEAK_OPTION_RANGES: dict[str, tuple[bool, float, bool, float]] = {
    "cam_threshold": (False, 0.0, False, 1.0),
    "points_per_object": (True, 1, True, 1e6),
    "scribble_length": (False, 0.0, False, 1.0),
    "scribble_thickness": (True, 1, True, 1e3),
    "box_inner_fraction": (False, 0.0, False, 1.0),
    "weak_label_seed": (True, 0, True, 2**63),
}


def check_weak_options(config: SegmenterConfig) -> None:
    """``BadInput`` (one line) for a weak-label option of ``config`` outside its range."""
    for name, (integer, low, closed, high) in WEAK_OPTION_RANGES.items():
        value = getattr(config, name)
        kind = int if integer else (int, float)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        ok = ok and (value >= low if closed else value > low) and value <= high
        if not ok:
            bound = f"{'>=' if closed else '>'} {low:g}" + ("" if integer else f" and <= {high:g}")
            what = "an integer" if integer else "a number"
            raise BadInput(f"segmenter.{name} must be {what} {bound} (got {value!r})")


def check_supervision(config: SegmenterConfig, traits: LabelTraits, dataset: str) -> None:
    """``BadInput`` (one line) unless ``config``'s supervision can train on ``dataset`` (whose
    training labels offer ``traits``): every regime registered, a ``+`` combination of
    combinable regimes without repeats, ``supervision_weights`` naming only its parts with
    non-negative numbers, instance ids where a regime needs them, options in range."""
    from owsbench.catalog import DATASETS, SUPERVISIONS

    regimes = config.supervision.split("+")
    classes = [SUPERVISIONS.get(regime) for regime in regimes]
    if len(regimes) > 1:
        if len(set(regimes)) < len(regimes):
            raise BadInput(f"supervision {config.supervision!r} names a regime twice")
        from owsbench.training.weak import combined_part

        for regime in regimes:
            combined_part(regime)
    weights = config.supervision_weights or {}
    if not isinstance(weights, dict):
        raise BadInput("segmenter.supervision_weights must be a mapping regime -> weight")
    for regime, weight in weights.items():
        if regime not in regimes:
            raise BadInput(
                f"supervision_weights names {regime!r}, which is not in {config.supervision!r}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise BadInput(f"supervision_weights.{regime} must be a number >= 0 (got {weight!r})")
    for regime, cls in zip(regimes, classes, strict=True):
        if getattr(cls, "needs_instances", False) and not traits.provides_instances:
            having = [d for d in DATASETS.ids() if DATASETS.get(d).provides_instances]
            raise BadInput(
                f"supervision {regime!r} needs instance ids, which {dataset} does not provide "
                f"(datasets with instance ids: {', '.join(having)})"
            )
    check_weak_options(config)
