"""Training-free per-pixel scores computed from a segmenter's logits.

Each score function maps logits ``z`` of shape ``(B, K, H, W)`` to an anomaly map ``(B, H, W)``
with the project's convention, **higher = more anomalous**; ``p = softmax(z)`` over the class
axis. Scores are computed in at least float32 from ``log_softmax`` / ``logsumexp``, so they stay
finite for logits of any magnitude. Sources are listed in the table below.

=========  ===================================  =====================================
method     anomaly score                        source
=========  ===================================  =====================================
msp        ``1 - max_c p_c``                    Hendrycks & Gimpel, ICLR 2017
maxlogit   ``-max_c z_c``                       Hendrycks et al., ICML 2022
entropy    ``-sum_c p_c log p_c / log K``       normalised Shannon entropy
energy     ``-T logsumexp_c(z_c / T)``          Liu et al., NeurIPS 2020
=========  ===================================  =====================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch

from owsbench.checks import Range
from owsbench.methods.base import PosthocMethod
from owsbench.segmenters.base import SegmenterOutput, as_float32


def msp_of(outputs: SegmenterOutput) -> torch.Tensor:
    """Maximum softmax probability, negated: ``1 - max_c softmax(z)_c``, in ``[0, 1 - 1/K]``."""
    # 1 - exp(x) as -expm1(x): keeps resolution among very confident pixels (x close to 0)
    return -torch.expm1(outputs.log_probabilities().amax(dim=1))


def maxlogit_of(outputs: SegmenterOutput) -> torch.Tensor:
    """Negated maximum logit: ``-max_c z_c``."""
    return -outputs.class_max()[0]


def entropy_of(outputs: SegmenterOutput) -> torch.Tensor:
    """Softmax entropy normalised by its maximum: ``-sum_c p_c log p_c / log K``, in ``[0, 1]``.

    The normalisation by ``log K`` (as in ``DaddaRev/...`` ``eval/evalAnomaly.py``) makes scores of
    models with different class counts comparable; it does not change the ranking within a model.
    """
    num_classes = outputs.logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"entropy needs at least 2 classes, got {num_classes}")
    log_p = outputs.log_probabilities()
    return -log_p.exp().mul_(log_p).sum(dim=1) / math.log(num_classes)


def energy_of(outputs: SegmenterOutput, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``E(z; T) = -T logsumexp_c(z_c / T)``.

    In-distribution pixels have large logits and hence low (very negative) energy, so the energy
    itself is already an anomaly score (higher = more anomalous); no extra negation.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = as_float32(outputs.logits)
    return -temperature * torch.logsumexp(z if temperature == 1 else z / temperature, dim=1)


def on_logits(score_of: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The score of ``score_of`` as a function of a logits tensor ``(B, K, H, W)``."""

    def score(logits: torch.Tensor, **options: Any) -> torch.Tensor:
        return score_of(SegmenterOutput(logits), **options)

    score.__doc__ = score_of.__doc__
    return score


msp_score = on_logits(msp_of)
maxlogit_score = on_logits(maxlogit_of)
entropy_score = on_logits(entropy_of)
energy_score = on_logits(energy_of)


class LogitScore(PosthocMethod):
    """A post-hoc method that applies one score function to the segmenter's output.

    Subclasses set ``score_fn`` (a function of the ``SegmenterOutput``, whose class-axis
    reductions are computed once and shared by every score of the same forward pass); the
    fields of their ``Config`` are passed to it as keyword arguments, so a hyperparameter is
    declared once, in the config that is hashed into cache keys.
    """

    score_fn: ClassVar[Callable[..., torch.Tensor]]

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        return type(self).score_fn(outputs, **dataclasses.asdict(self.config))


class MSP(LogitScore):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): ``1 - max_c softmax(z)_c``.

    Source: ``hendrycks/anomaly-seg`` ``eval_ood.py`` (max softmax as confidence, negated);
    ``1 - max p`` as in ``DaddaRev/...`` ``eval/evalAnomaly.py``.
    """

    name = "msp"
    summary = "maximum softmax probability: 1 - max p"
    score_fn = staticmethod(msp_of)


class MaxLogit(LogitScore):
    """Maximum logit (Hendrycks et al., ICML 2022, "Scaling OOD detection"): ``-max_c z_c``.

    Source: ``hendrycks/anomaly-seg`` ``eval_ood.py``, ``maxlogit`` branch.
    """

    name = "maxlogit"
    summary = "negated maximum logit: -max z"
    score_fn = staticmethod(maxlogit_of)


class Entropy(LogitScore):
    """Normalised softmax entropy: ``-sum_c p_c log p_c / log K``, in ``[0, 1]``.

    Source: ``DaddaRev/...`` ``eval/evalAnomaly.py`` (normalised by ``log K``).
    """

    name = "entropy"
    summary = "softmax entropy / log K"
    score_fn = staticmethod(entropy_of)


class Energy(LogitScore):
    """Free energy (Liu et al., NeurIPS 2020): ``E(z; T) = -T logsumexp_c(z_c / T)``.

    Source: ``wetliu/energy_ood`` ``CIFAR/test.py`` (score ``-T logsumexp(z / T)``).
    """

    @dataclass(frozen=True)
    class Config:
        """``temperature``: the ``T`` of the energy (``T = 1`` in the paper's detector)."""

        temperature: Annotated[float, Range(gt=0)] = 1.0

    name = "energy"
    summary = "free energy: -T logsumexp(z / T)"
    score_fn = staticmethod(energy_of)
