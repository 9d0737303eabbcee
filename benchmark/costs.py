"""Annotation cost of a supervision regime, for cost-vs-accuracy studies.

Two cost models; a ``+`` combination costs the sum of its parts (each kind of annotation is
collected separately):

- ``relative`` (default): relative annotation effort per image, tags 1, points 2, scribbles 5,
  boxes 5, full 30; a run's config file may replace any of them (``annotation_costs:``).
- ``seconds``: annotation seconds per image from published timings on PASCAL VOC 2012. Bearman
  et al., ECCV 2016, "What's the Point: Semantic Segmentation with Point Supervision", Sec. 5:
  image-level labels 20.0 s, one point per class 22.1 s, squiggles 34.9 s, full masks 239.7 s
  per image (the 20.0, 22.1 and 239.7 s figures checked against the paper's published summary;
  34.9 s as recalled from its Table of annotation times, not re-checked offline). Boxes
  (derived, not a published per-image figure): the 20.0 s of deciding which classes are present
  plus 7 s per box with extreme clicking (Papadopoulos et al., ICCV 2017) times 2.8 objects per
  image (the COCO-style statistic Bellver et al., CVPRW 2019 use to turn per-object costs into
  per-image ones): 39.6 s.

Row costs are per image and do not depend on the dataset (road scenes hold more objects than a
PASCAL image, so the seconds model understates their absolute cost; the ratios are the point).
Importing this module loads no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from owsbench.errors import BadInput

COST_MODELS = ("relative", "seconds")
RELATIVE_COSTS: dict[str, float] = {
    "tags": 1.0,
    "points": 2.0,
    "scribbles": 5.0,
    "boxes": 5.0,
    "full": 30.0,
}
SECONDS_COSTS: dict[str, float] = {
    "tags": 20.0,
    "points": 22.1,
    "scribbles": 34.9,
    "boxes": 20.0 + 7.0 * 2.8,
    "full": 239.7,
}


def relative_costs(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The relative cost table with a config file's ``annotation_costs`` over it; ``BadInput``
    for an unknown regime or a cost that is not a non-negative number."""
    table = dict(RELATIVE_COSTS)
    for regime, value in (overrides or {}).items():
        if regime not in table:
            raise BadInput(
                f"annotation_costs: unknown regime {regime!r}; valid: {', '.join(table)}"
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise BadInput(
                f"annotation_costs.{regime} must be a finite number >= 0 (got {value!r})"
            )
        table[regime] = float(value)
    return table


def annotation_cost(supervision: str, table: Mapping[str, float]) -> float | None:
    """The cost of ``supervision`` (a regime or ``a+b``) in ``table``; None when a part has no
    cost there (a supervision registered by a plugin)."""
    parts = [table.get(regime) for regime in supervision.split("+")]
    return None if any(p is None for p in parts) else float(sum(parts))


def annotation_costs(supervision: str, relative: Mapping[str, float]) -> dict[str, float | None]:
    """A row's ``annotation_cost``: the cost of ``supervision`` in each cost model."""
    return {
        "relative": annotation_cost(supervision, relative),
        "seconds": annotation_cost(supervision, SECONDS_COSTS),
    }
