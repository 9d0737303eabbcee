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

On a mask-classification segmenter (``Segmenter.mask_classification``, e.g. EoMT) the logits are
the class scores ``l_k = sum_q softmax(c_q)_k sigmoid(m_q)`` (non-negative; near 1 for a
class one confident query covers, up to the query count when many overlap), and two conventions
exist (the method option ``convention``):

- ``"probabilities"`` (the default): ``l`` used directly as class probabilities, as
  Mask2Anomaly (``shyam671/Mask2Anomaly``, ``1 - max_k l_k``) and the DaddaRev anomaly heads do:
  msp ``1 - max_k l_k``, maxlogit ``-max_k l_k``, entropy
  ``-sum_k l~_k log l~_k / log K`` with ``l~ = max(l, 1e-7)`` (not renormalised), energy
  ``-T log sum_k l_k^(1/T)`` (the energy of ``log l``; ``-log sum_k l_k`` at ``T = 1``);
- ``"logits"``: ``l`` fed to the formulas above as if it were logits, as
  ``NazirNayal8/RbA`` ``evaluate_ood.py`` does for its baselines.

On a per-pixel classifier the logits are logits and ``convention`` changes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch

from owsbench.checks import Range
from owsbench.methods.base import PosthocMethod, is_mask_model
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


PROB_FLOOR = 1e-7  # clamp inside logarithms of class scores (as the DaddaRev code)


def msp_probability(scores: torch.Tensor) -> torch.Tensor:
    """``1 - max_k l_k`` of class scores ``l`` ``(B, K, H, W)``."""
    return 1.0 - as_float32(scores).amax(dim=1)


def maxlogit_probability(scores: torch.Tensor) -> torch.Tensor:
    """``-max_k l_k``."""
    return -as_float32(scores).amax(dim=1)


def entropy_probability(scores: torch.Tensor) -> torch.Tensor:
    """``-sum_k l~_k log l~_k / log K`` with ``l~ = max(l, 1e-7)`` (no renormalisation)."""
    num_classes = scores.shape[1]
    if num_classes < 2:
        raise ValueError(f"entropy needs at least 2 classes, got {num_classes}")
    clamped = as_float32(scores).clamp_min(PROB_FLOOR)
    return -(clamped * clamped.log()).sum(dim=1) / math.log(num_classes)


def energy_probability(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The energy of ``log l``: ``-T logsumexp_k(log l~_k / T)`` (``-log sum_k l_k`` at T = 1)."""
    return energy_score(as_float32(scores).clamp_min(PROB_FLOOR).log(), temperature=temperature)


@dataclass(frozen=True)
class ScoreConfig:
    """``convention``: how a mask-classification segmenter's class scores ``l`` are read,
    ``"probabilities"`` (default) or ``"logits"`` (module docstring); no effect on a per-pixel
    classifier."""

    convention: Literal["probabilities", "logits"] = "probabilities"


class LogitScore(PosthocMethod):
    """A post-hoc method that applies one score function to the segmenter's output.

    Subclasses set ``score_fn`` (a function of the ``SegmenterOutput``, whose class-axis
    reductions are computed once and shared by every score of the same forward pass) and
    ``probability_fn`` (a mask-classification segmenter's class scores under
    ``convention="probabilities"``); the other fields of their ``Config`` are passed to it as
    keyword arguments, so a hyperparameter is declared once, in the config that is hashed into
    cache keys.
    """

    Config: ClassVar[type] = ScoreConfig
    score_fn: ClassVar[Callable[..., torch.Tensor]]
    probability_fn: ClassVar[Callable[..., torch.Tensor]]

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        options = dataclasses.asdict(self.config)
        convention = options.pop("convention")
        if convention == "probabilities" and is_mask_model(self.segmenter):
            return type(self).probability_fn(outputs.logits, **options)
        return type(self).score_fn(outputs, **options)


class MSP(LogitScore):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): ``1 - max_c softmax(z)_c``.

    Source: ``hendrycks/anomaly-seg`` ``eval_ood.py`` (max softmax as confidence, negated);
    ``1 - max p`` as in ``DaddaRev/...`` ``eval/evalAnomaly.py``.
    """

    name = "msp"
    summary = "maximum softmax probability: 1 - max p"
    score_fn = staticmethod(msp_of)
    probability_fn = staticmethod(msp_probability)


class MaxLogit(LogitScore):
    """Maximum logit (Hendrycks et al., ICML 2022, "Scaling OOD detection"): ``-max_c z_c``.

    Source: ``hendrycks/anomaly-seg`` ``eval_ood.py``, ``maxlogit`` branch.
    """

    name = "maxlogit"
    summary = "negated maximum logit: -max z"
    score_fn = staticmethod(maxlogit_of)
    probability_fn = staticmethod(maxlogit_probability)


class Entropy(LogitScore):
    """Normalised softmax entropy: ``-sum_c p_c log p_c / log K``, in ``[0, 1]``.

    Source: ``DaddaRev/...`` ``eval/evalAnomaly.py`` (normalised by ``log K``).
    """

    name = "entropy"
    summary = "softmax entropy / log K"
    score_fn = staticmethod(entropy_of)
    probability_fn = staticmethod(entropy_probability)


class Energy(LogitScore):
    """Free energy (Liu et al., NeurIPS 2020): ``E(z; T) = -T logsumexp_c(z_c / T)``.

    Source: ``wetliu/energy_ood`` ``CIFAR/test.py`` (score ``-T logsumexp(z / T)``).
    """

    @dataclass(frozen=True)
    class Config(ScoreConfig):
        """``temperature``: the ``T`` of the energy (``T = 1`` in the paper's detector);
        ``convention`` as for every logit score."""

        temperature: Annotated[float, Range(gt=0)] = 1.0

    name = "energy"
    summary = "free energy: -T logsumexp(z / T)"
    score_fn = staticmethod(energy_of)
    probability_fn = staticmethod(energy_probability)
