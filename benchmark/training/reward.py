"""Reward fine-tuning of a fitted segmenter with REINFORCE (Pinto et al., ICML 2023, "Tuning
computer vision models with task rewards"; big_vision's ``reward_tune`` recipe).

Per training image with labels ``y`` and logits ``z``: ``S`` label maps ``m^s`` are drawn from
the per-pixel softmax ``p = softmax(z / T)`` (Gumbel-max sampling; optionally at a reduced
resolution ``sample_scale``, the labels resized by nearest neighbour), each gets a reward
``R_s = R(m^s, y)`` against the labels, and a baseline ``b_s`` is subtracted:
``leave-one-out`` ``b_s = (sum_t R_t - R_s) / (S - 1)`` (the mean of the other samples, as
big_vision) or ``greedy`` ``b = R(argmax_k z, y)`` (self-critical). The loss minimised is

    L = -mean_s (R_s - b_s) * mean_{p labelled} log p(m^s_p)
        + ce_weight * CE(z, y) + kl_weight * KL(p_mle || p)

with ``p_mle`` the softmax of the frozen MLE model the tuning starts from. The rewards
(``reward_of``), per image over its labelled pixels (void left out):

- ``miou``: ``mean_c IoU_c`` over the classes present in the labels or the sample;
- ``pixel-accuracy``: the share of labelled pixels with ``m_p = y_p``;
- ``class-weighted-miou``: ``sum_c w_c IoU_c / sum_c w_c`` over the same classes, ``w`` the
  segmenter's class weights (``class_weighting``; median-frequency when it is ``none``).

``anomaly-ap`` is the reward of an anomaly map, for trained methods with an anomaly output and
a tuning stage (``dual-head``; segmenters have none, so the planner refuses it for them): per
image, ``S`` binary maps ``m^s_p ~ Bernoulli(sigmoid(a_p / T))`` are drawn from the anomaly
logits ``a``, and each is scored by its average precision against the outlier-exposure target
``t`` of the training batch (pasted objects 1, known pixels 0, void left out; never an
evaluation split). For a binary map the step-sum AP of scikit-learn's ``average_precision_score``
has two thresholds: ``AP = R_1 P_1 + (1 - R_1) pi`` with ``R_1``, ``P_1`` the recall and
precision of the pixels with ``m = 1`` (``P_1 = 0`` when there are none) and ``pi`` the share of
anomaly pixels (:func:`binary_ap`); an image without a pasted pixel has reward 0 for every
sample, so it adds nothing to the gradient. The greedy baseline scores ``m = [a > 0]``; the
log-likelihood is ``m log sigma(a) + (1 - m) log sigma(-a)`` (:class:`AnomalyRewardSupervision`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from owsbench.checks import Range
from owsbench.datasets.base import VOID
from owsbench.errors import BadInput
from owsbench.segmenters.base import Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.training.batches import Batch
from owsbench.training.losses import labels_at, semantic_ce
from owsbench.training.supervision import SegmenterSupervision, Supervision

REWARDS = ("miou", "pixel-accuracy", "class-weighted-miou", "anomaly-ap")
BASELINES = ("leave-one-out", "greedy")


@dataclass(frozen=True)
class RewardConfig:
    """``segmenter: {reward_tuning: {...}}`` (module docstring); ``lr`` is the peak of the
    tuning phase's one-cycle schedule (warm-up ``warmup_fraction``)."""

    steps: Annotated[int, Range(ge=1)] = 100
    samples: Annotated[int, Range(ge=1, le=64)] = 4
    reward: Literal["miou", "pixel-accuracy", "class-weighted-miou", "anomaly-ap"] = "miou"
    baseline: Literal["leave-one-out", "greedy"] = "leave-one-out"
    temperature: Annotated[float, Range(gt=0, le=100)] = 1.0
    sample_scale: Annotated[float, Range(gt=0, le=1)] = 1.0
    ce_weight: Annotated[float, Range(ge=0)] = 0.0
    kl_weight: Annotated[float, Range(ge=0)] = 0.0
    lr: Annotated[float, Range(gt=0)] = 1e-4
    batch_size: Annotated[int, Range(ge=1)] = 8
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1

    def __post_init__(self) -> None:
        if self.baseline == "leave-one-out" and self.samples < 2:
            raise BadInput(
                "segmenter.reward_tuning.samples must be >= 2 with the leave-one-out baseline "
                f"(got {self.samples})"
            )


def confusions(samples: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample confusion matrices ``(S, K, K)`` (rows: label, columns: sample) over the
    labelled pixels of ``labels`` ``(H, W)``; ``samples`` ``(S, H, W)``."""
    valid = labels != VOID
    flat = labels[valid].long() * num_classes
    cells = flat[None] + samples[:, valid].long()
    offsets = torch.arange(len(samples), device=samples.device)[:, None] * num_classes**2
    counts = torch.bincount((cells + offsets).reshape(-1), minlength=len(samples) * num_classes**2)
    return counts.reshape(len(samples), num_classes, num_classes).double()


def reward_of(
    kind: str,
    samples: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The reward ``(S,)`` of each sample map ``(S, H, W)`` against ``labels`` ``(H, W)``
    (module docstring; ``class_weight`` ``(K,)`` for ``class-weighted-miou``); 0 for an image
    without a labelled pixel."""
    matrix = confusions(samples, labels, num_classes)
    hits = torch.diagonal(matrix, dim1=1, dim2=2)
    total = matrix.sum((1, 2)).clamp_min(1.0)
    if kind == "pixel-accuracy":
        return (hits.sum(1) / total).float()
    union = matrix.sum(1) + matrix.sum(2) - hits
    present = union > 0
    iou = torch.where(present, hits / union.clamp_min(1.0), torch.zeros_like(hits))
    weight = torch.ones_like(iou) if kind == "miou" else class_weight.to(iou)[None].expand_as(iou)
    weight = weight * present
    return (iou * weight).sum(1).div(weight.sum(1).clamp_min(1e-12)).float()


def baselines(rewards: torch.Tensor, kind: str, greedy: torch.Tensor | None) -> torch.Tensor:
    """``b_s`` of each sample: leave-one-out mean of the others, or the greedy map's reward."""
    if kind == "leave-one-out":
        return (rewards.sum() - rewards) / (len(rewards) - 1)
    return greedy.expand_as(rewards)


def gumbel_samples(logits: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` label maps ``(S, H, W)`` drawn from ``softmax(logits)`` per pixel (``logits``
    ``(K, H, W)``), by the Gumbel-max trick: ``argmax_k (z_k + G_k)``, ``G = -log(-log U)``."""
    uniform = torch.rand(
        (count, *logits.shape), generator=generator, device=logits.device, dtype=logits.dtype
    )
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    return (logits.detach()[None] + gumbel).argmax(1)


def binary_ap(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Average precision ``(S,)`` of binary maps ``(S, H, W)`` against anomaly labels ``(H, W)``
    (1 anomaly, 0 inlier, 255 void): ``R_1 P_1 + (1 - R_1) pi`` (module docstring); 0 without
    an anomaly pixel."""
    valid, positive = target != VOID, target == 1
    flagged = samples.bool() & valid[None]
    tp = (flagged & positive[None]).sum((1, 2)).double()
    predicted = flagged.sum((1, 2)).double()
    positives = positive.sum().double()
    if positives == 0:
        return torch.zeros(len(samples), device=samples.device)
    recall = tp / positives
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1.0), torch.zeros_like(tp))
    base_rate = positives / valid.sum().double()
    return (recall * precision + (1 - recall) * base_rate).float()


def reward_terms(images: list[tuple]) -> dict[str, torch.Tensor]:
    """The logged terms of a batch from its images' ``(loss, rewards, advantages)``: ``total``
    = ``policy`` (the mean policy-gradient loss; the caller adds its CE / KL terms), the mean
    ``reward`` and the variances of the rewards and advantages over the batch's samples."""
    policy = torch.stack([t[0] for t in images]).mean()
    rewards = torch.cat([t[1] for t in images])
    advantages = torch.cat([t[2] for t in images])
    return {
        "total": policy,
        "policy": policy,
        "reward": rewards.mean(),
        "reward_var": rewards.var(unbiased=False),
        "advantage_var": advantages.var(unbiased=False),
    }


class AnomalyRewardSupervision(Supervision):
    """The ``anomaly-ap`` tuning loss (module docstring) of a trained method with an anomaly
    output: ``objective`` makes its batches (outlier-exposure pastes) and its MLE loss terms
    (``ce_weight`` times their ``total`` join the loss); ``anomaly(batch)`` is the model's
    anomaly logit ``(B, 1, H, W)`` and target ``(B, H, W)`` (1 paste, 0 known, 255 void)."""

    name: ClassVar[str] = "anomaly-reward"

    def __init__(
        self,
        objective: Supervision,
        anomaly: Callable[[Batch], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]],
        tuning: RewardConfig,
        seed: int,
        device: torch.device,
    ) -> None:
        self.objective, self.anomaly, self.tuning = objective, anomaly, tuning
        self.generator = torch.Generator(device).manual_seed(seed)

    def batch(self, items: list, rng: np.random.Generator) -> Batch:
        return self.objective.batch(items, rng)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        logit, target, mle = self.anomaly(batch)
        logit = logit[:, 0] / self.tuning.temperature
        if self.tuning.sample_scale < 1:
            size = [max(1, round(s * self.tuning.sample_scale)) for s in logit.shape[-2:]]
            logit = F.interpolate(logit[:, None], size=size, mode="bilinear")[:, 0]
            target = labels_at(target, logit.shape[-2:])
        record = reward_terms([self.image_terms(a, t) for a, t in zip(logit, target, strict=True)])
        if self.tuning.ce_weight:
            record["total"] = record["total"] + self.tuning.ce_weight * mle["total"]
        return record

    def image_terms(self, logit: torch.Tensor, target: torch.Tensor) -> tuple:
        """One image: its policy-gradient loss, its samples' rewards and advantages."""
        uniform = torch.rand(
            (self.tuning.samples, *logit.shape), generator=self.generator, device=logit.device
        )
        samples = uniform < torch.sigmoid(logit.detach())[None]
        rewards = binary_ap(samples, target)
        greedy = None
        if self.tuning.baseline == "greedy":
            greedy = binary_ap((logit.detach() > 0)[None], target)
        advantage = rewards - baselines(rewards, self.tuning.baseline, greedy)
        valid = target != VOID
        log_p = torch.where(samples, F.logsigmoid(logit)[None], F.logsigmoid(-logit)[None])
        mean_log_p = (log_p * valid).sum((1, 2)) / valid.sum().clamp_min(1)
        loss = -(advantage.detach() * mean_log_p).mean()
        return loss, rewards.detach(), advantage.detach()


class RewardSupervision(SegmenterSupervision):
    """The tuning phase's loss (module docstring) on batches of images and dense labels."""

    name: ClassVar[str] = "reward"

    def __init__(
        self,
        model: Segmenter,
        config: SegmenterConfig,
        tuning: RewardConfig,
        class_weight: torch.Tensor | None,
        seed: int,
        device: torch.device,
    ) -> None:
        super().__init__(model, config)
        self.tuning = tuning
        self.reward_weight = class_weight
        self.generator = torch.Generator(device).manual_seed(seed)
        self.reference = None
        if tuning.kl_weight > 0:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def resume_state(self) -> dict[str, Any] | None:
        """The model's buffers and the sampling generator's state."""
        return {**super().resume_state(), "generator": self.generator.get_state()}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        super().load_resume_state(state)
        self.generator.set_state(state["generator"])

    def output_losses(self, output: SegmenterOutput, batch: Batch) -> dict[str, torch.Tensor]:
        tuning = self.tuning
        logits = output.logits / tuning.temperature
        labels = labels_at(batch.labels, logits.shape[-2:])
        if tuning.sample_scale < 1:
            size = [max(1, round(s * tuning.sample_scale)) for s in logits.shape[-2:]]
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            labels = labels_at(labels, logits.shape[-2:])
        record = reward_terms([self.image_terms(z, y) for z, y in zip(logits, labels, strict=True)])
        if tuning.ce_weight > 0:
            dense = labels_at(batch.labels, output.logits.shape[-2:])
            record["total"] = record["total"] + tuning.ce_weight * semantic_ce(output.logits, dense)
        if self.reference is not None:
            record["total"] = record["total"] + tuning.kl_weight * self.kl_to_reference(
                output, batch
            )
        return record

    def image_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple:
        """One image: its policy-gradient loss, its samples' rewards and advantages (the
        variances are pooled over the batch's samples: a per-image baseline removes the
        differences between images, which is what it is for)."""
        samples = gumbel_samples(logits, self.tuning.samples, self.generator)
        k = self.model.num_classes
        rewards = reward_of(self.tuning.reward, samples, labels, k, self.reward_weight)
        greedy = None
        if self.tuning.baseline == "greedy":
            argmax = logits.detach().argmax(0)[None]
            greedy = reward_of(self.tuning.reward, argmax, labels, k, self.reward_weight)
        advantage = rewards - baselines(rewards, self.tuning.baseline, greedy)
        valid = labels != VOID
        log_p = F.log_softmax(logits, 0)
        chosen = log_p.gather(0, samples)  # (S, H, W): log p(m^s_p) at each pixel
        mean_log_p = (chosen * valid).sum((1, 2)) / valid.sum().clamp_min(1)
        loss = -(advantage.detach() * mean_log_p).mean()
        return loss, rewards.detach(), advantage.detach()

    def kl_to_reference(self, output: SegmenterOutput, batch: Batch) -> torch.Tensor:
        """``mean_p KL(p_mle(p) || p(p))`` over the batch's pixels."""
        with torch.no_grad():
            reference = F.log_softmax(self.reference(batch.images).logits, 1)
        current = F.log_softmax(output.logits, 1)
        return (reference.exp() * (reference - current)).sum(1).mean()


def summarise(log_scalars: dict[str, list[float]], window: int = 10) -> dict[str, Any]:
    """The fit report's reward record: mean reward over the first and the last ``window``
    steps, and the mean per-step variances, over the batch's samples, of the rewards and of
    the advantages (the baseline's variance reduction = 1 - Var(R - b) / Var(R))."""
    rewards = np.asarray(log_scalars.get("reward", []), np.float64)
    reward_var = float(np.nanmean(log_scalars.get("reward_var", [np.nan])))
    advantage_var = float(np.nanmean(log_scalars.get("advantage_var", [np.nan])))
    return {
        "reward_first_steps": float(rewards[:window].mean()) if len(rewards) else None,
        "reward_last_steps": float(rewards[-window:].mean()) if len(rewards) else None,
        "reward_var": reward_var,
        "advantage_var": advantage_var,
        "variance_reduction": 1.0 - advantage_var / reward_var if reward_var > 0 else None,
    }
