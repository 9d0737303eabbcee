"""RbA+OE: RbA's outlier-exposure fine-tuning of a mask model's class and mask heads.

Source: N. Nayal et al., "RbA: Segmenting Unknown Regions Rejected by All", ICCV 2023; official
code ``NazirNayal8/RbA`` (``mask2former/modeling/criterion.py``: ``outlier_loss`` with
``OUTLIER_LOSS_TARGET: nls``, ``SCORE_NORM: tanh``, ``OUTLIER_LOSS_FUNC: squared_hinge``;
``train_net.py``: everything frozen but ``class_embed`` and ``mask_embed``). With the RbA score
``s(p) = -sum_k tanh(l_k(p))`` of the fine-tuned heads' class scores,

    L_out = 0.5 [mean_{inliers} ReLU(s - tau_in)^2 + mean_{outliers} ReLU(tau_out - s)^2],

``tau_in = 0``, ``tau_out = 5`` (since ``s <= 0`` the inlier term is 0 and the outlier term
pushes every class score towards 0 on pasted pixels). The loss here is
``L_out + mask_loss_weight * L_mask``, ``L_mask`` the segmenter's own mask-classification loss
(Hungarian CE + BCE + Dice, ``Segmenter.dense_losses``) on the inlier labels (pastes void), which
keeps the heads segmenting the known classes (RbA's criterion keeps its Mask2Former losses during
the fine-tuning; recalled, not verified here; ``mask_loss_weight = 0`` trains on ``L_out``
alone).

Only a copy of the class and mask heads learns (``EoMTSegmenter.copy_heads``); the segmenter
runs frozen in eval mode under ``no_grad``. The copy is attached to the segmenter
(``attach_heads``), so the shared forward pass also yields its class scores, and the anomaly map
is their RbA score. Batches: training frames with outlier-exposure pastes of the training
dataset's OE source (``owsbench.methods.nn.outlier_exposure``) and the shared augmentation.

Deviations: pastes of the dataset's OE source with probability 0.5 (RbA: COCO objects, 0.1);
AdamW lr 1e-3 and 150 steps of 8 crops with the one-cycle schedule (RbA: lr 1e-4, poly 0.9,
2000 iterations of 16) for CPU fits; the segmenter is a from-scratch EoMT, not RbA's Swin-B
Mask2Former with one decoder layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from owsbench.checks import Range
from owsbench.datasets.base import Frame, Split
from owsbench.methods.base import FitContext, PosthocMethod
from owsbench.methods.nn.outlier_exposure import (
    HeadFitFields,
    head_fit_source,
    outlier_batch,
    split_outlier_labels,
)
from owsbench.methods.rba import check_mask_segmenter, rba_score
from owsbench.segmenters.base import QueryOutputs, SegmenterOutput
from owsbench.training.batches import Batch
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.losses import labels_at
from owsbench.training.supervision import Supervision


def outlier_loss(
    score: torch.Tensor, target: torch.Tensor, tau_in: float, tau_out: float
) -> torch.Tensor:
    """RbA's squared hinge ``0.5 [mean_in ReLU(s - tau_in)^2 + mean_out ReLU(tau_out - s)^2]``
    on ``target`` 0 (inlier) / 1 (outlier) pixels (others ignored; an empty mean is 0)."""
    inlier = F.relu(score[target == 0] - tau_in).square()
    outlier = F.relu(tau_out - score[target == 1]).square()
    total = score.sum() * 0.0
    for part in (inlier, outlier):
        if part.numel():
            total = total + 0.5 * part.mean()
    return total


@dataclass(frozen=True)
class RbAOEConfig(HeadFitFields):
    """Fine-tuning recipe (fields named like ``SegmenterConfig``'s), RbA's margins ``tau_in``,
    ``tau_out`` and the weight of the mask-classification loss on inliers."""

    tau_in: Annotated[float, Range(ge=-100, le=100)] = 0.0
    tau_out: Annotated[float, Range(ge=-100, le=100)] = 5.0
    mask_loss_weight: Annotated[float, Range(ge=0)] = 1.0


class OutlierObjective(Supervision):
    """Pasted batches; the frozen segmenter's final query tokens; the copied heads' RbA outlier
    loss plus the weighted mask-classification loss on the inlier labels."""

    def __init__(self, method: RbAOE, source: object) -> None:
        self.method = method
        self.source = source

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        images, labels = outlier_batch(items, self.source, rng, self.method.config.paste_config())
        return Batch(images=images, labels=labels)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, segmenter, heads = self.method.config, self.method.segmenter, self.method.heads
        semantic, anomaly = split_outlier_labels(batch.labels)
        with torch.no_grad():
            queries, pixels, (size, height, width) = segmenter.final_queries(batch.images)
        class_logits, mask_logits = heads.predict(queries, pixels)
        scores = heads(queries, pixels, tuple(size))[..., :height, :width]
        score = rba_score(scores)
        terms = {"outlier": outlier_loss(score, labels_at(anomaly, score.shape[-2:]),
                                         cfg.tau_in, cfg.tau_out)}  # fmt: skip
        total = terms["outlier"]
        if cfg.mask_loss_weight > 0:
            output = SegmenterOutput(scores, queries=QueryOutputs(class_logits, mask_logits))
            mask = segmenter.dense_losses(output, semantic)["total"]
            terms["mask"] = mask.detach()
            total = total + cfg.mask_loss_weight * mask
        return {"total": total, **{k: v.detach() for k, v in terms.items()}}


class RbAOE(PosthocMethod):
    """RbA with outlier-exposure fine-tuned heads (see the module docstring)."""

    name = "rba-oe"
    summary = "RbA on class/mask heads fine-tuned with RbA's outlier loss on OE pastes"
    Config: ClassVar[type] = RbAOEConfig
    needs_fit = True
    data_parallel: ClassVar[bool] = True
    preset_values: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"steps": 60, "crop": (96, 96)}}

    def __init__(self, config: Any | None = None, segmenter: torch.nn.Module | None = None) -> None:
        super().__init__(config, segmenter)
        if segmenter is not None:
            self.check_segmenter(type(segmenter), self.config)
        self.heads: torch.nn.Module | None = None

    @classmethod
    def check_segmenter(cls, segmenter_cls: type, config: Any) -> None:
        check_mask_segmenter(cls.name, segmenter_cls, allow=False)

    def fit(self, train: Split, ctx: FitContext) -> None:
        """Fine-tune a copy of the segmenter's heads on pasted ``train`` frames; attach it."""
        source = head_fit_source(self.name, self.segmenter, train, ctx.outlier_source)
        was_training = self.segmenter.training
        self.segmenter.eval()
        try:
            self.heads = self.segmenter.copy_heads().to(ctx.device).train()
            loop = Loop(
                Recipe.of(self.config), ctx.device, Streams.seeded(ctx.seed),
                augmentation=self.config, desc=f"fit {self.name}", progress=ctx.progress,
                processes=self.loop_processes(ctx),
            )  # fmt: skip
            self.train_log = loop.run(
                self.heads.parameters(), train, OutlierObjective(self, source)
            )
        finally:
            self.segmenter.train(was_training)
        self.heads.eval()
        self.segmenter.attach_heads(self.name, self.heads)
        self.fit_report = {"final_loss": float(np.mean(self.train_log.loss[-10:]))}

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        if self.name not in outputs.extra_logits:
            raise RuntimeError(f"{self.name}: no fine-tuned heads; call fit() or load_state_dict()")
        return rba_score(outputs.extra_logits[self.name])

    def state_dict(self) -> dict[str, Any]:
        if self.heads is None:
            raise RuntimeError(f"{self.name}: not fitted")
        return {"heads": {k: v.detach().cpu().clone() for k, v in self.heads.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.segmenter is None:
            raise RuntimeError(f"{self.name}: no segmenter attached")
        self.heads = self.segmenter.copy_heads()
        self.heads.load_state_dict(state["heads"])
        self.heads.eval()
        self.segmenter.attach_heads(self.name, self.heads)
