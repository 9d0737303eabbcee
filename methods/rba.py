"""RbA: Rejected by All, the anomaly score of mask-classification segmenters.

Source: N. Nayal, M. Yavuz, J. F. Henriques, F. Guney, "RbA: Segmenting Unknown Regions Rejected
by All", ICCV 2023; official code ``NazirNayal8/RbA`` (``evaluate_ood.py`` / ``support.py``:
``get_RbA``, ``score = -logits.tanh().sum(dim=0)`` on ``semantic_inference``'s output). With the
class scores ``l_k(p) = sum_q softmax(c_q)_k sigmoid(m_q(p))`` of a mask-classification model,

    s(p) = -sum_k tanh(l_k(p))      (<= 0; higher = rejected by every class = anomalous).

It is defined for mask models; on a per-pixel classifier (whose logits are not class scores in
``[0, Q]``) the run is refused unless ``allow_pixel_classifier`` is set, when the same formula
is applied to its logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from owsbench.errors import BadInput
from owsbench.methods.base import PosthocMethod, is_mask_model
from owsbench.segmenters.base import SegmenterOutput


def rba_score(scores: torch.Tensor) -> torch.Tensor:
    """``-sum_k tanh(l_k)`` of class scores ``(B, K, H, W)``, in at least float32."""
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    return -torch.tanh(scores).sum(dim=1)


@dataclass(frozen=True)
class RbAConfig:
    """``allow_pixel_classifier``: also score a per-pixel classifier's logits (off: refused)."""

    allow_pixel_classifier: bool = False


def check_mask_segmenter(name: str, segmenter_cls: type, allow: bool) -> None:
    """``BadInput`` unless ``segmenter_cls`` is a mask-classification model or ``allow``."""
    if not allow and not is_mask_model(segmenter_cls):
        raise BadInput(
            f"{name} is defined for mask-classification segmenters (e.g. {name}@eomt); set "
            f"method_configs: {{{name}: {{allow_pixel_classifier: true}}}} to apply it anyway"
        )


class RbA(PosthocMethod):
    """Rejected by All: ``-sum_k tanh(l_k)`` (see the module docstring)."""

    name = "rba"
    summary = "rejected by all: -sum_k tanh(l_k) of a mask model's class scores"
    Config = RbAConfig

    def __init__(self, config: Any | None = None, segmenter: torch.nn.Module | None = None) -> None:
        super().__init__(config, segmenter)
        if segmenter is not None:
            self.check_segmenter(type(segmenter), self.config)

    @classmethod
    def check_segmenter(cls, segmenter_cls: type, config: Any) -> None:
        check_mask_segmenter(cls.name, segmenter_cls, config.allow_pixel_classifier)

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        return rba_score(outputs.logits)
