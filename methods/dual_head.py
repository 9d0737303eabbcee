"""Dual-head: one encoder-decoder with a semantic head and a binary anomaly head, trained
jointly with outlier exposure.

Source: there is no single official implementation. This is the standard outlier-exposure (OE)
dual-head design: a closed-set segmenter with an extra per-pixel anomaly branch trained with a
binary cross-entropy against pasted outliers, as in the "dual-head" / anomaly-branch baselines
(a per-pixel anomaly logit trained with
``BCEWithLogits(logit, y, pos_weight=10)``, void masked, score ``sigmoid(logit)``), with the
outlier exposure of Hendrycks, Mazeika and Dietterich, "Deep Anomaly Detection with Outlier
Exposure" (ICLR 2019) applied to segmentation by pasting outlier objects into training frames as
in Chan, Rottmann and Gottschalk, "Entropy Maximization and Meta Classification for
Out-of-Distribution Detection in Semantic Segmentation" (ICCV 2021).

Network: the shared closed-set segmenter (:class:`~owsbench.segmenters.smp_models.SmpSegmenter`,
DeepLabV3+ with a ResNet-18 encoder, ``encoder_weights=None``) whose decoder output (the
ASPP-fused stride-4 features, ``features["decoder"]``) feeds both its semantic head (1x1 conv to
``K`` logits ``z``) and a second head: ``3x3 conv (C -> anomaly_head_channels) + BN + ReLU``,
then smp's ``SegmentationHead`` (1x1 conv to one logit ``a``, upsampled like the semantic head).
``anomaly_head_channels = 0`` makes the anomaly head a plain 1x1 ``SegmentationHead`` (linear).

Training (``fit``): each step draws a batch of the *training* split (``FrameOrder``), pastes
outlier-exposure cut-outs (``FitContext.outlier_source``) into it with probability
``paste_probability`` (1..``paste_max_objects`` objects, ``outlier_batch``), augments images and
the combined label map together (``augment``) and splits the labels (``split_outlier_labels``)
into the semantic target ``y`` (pastes void) and the anomaly target ``t`` (paste 1, known 0,
void 255). The loss is

    L = CE(z, y; void ignored) + anomaly_weight * BCE_pw(a, t; void masked)

    BCE_pw(a, t) = mean over pixels with t != 255 of
                   -[pos_weight * t * log sigmoid(a) + (1 - t) * log(1 - sigmoid(a))]

with AdamW and the shared one-cycle schedule (``one_cycle_lr``). Inference: ``semantic =
argmax z``, ``anomaly = sigmoid(a)`` (higher = more anomalous), ``logits = z``.

Reward tuning (``reward_tuning``, off by default; ``tune``, run by the executor on the cached
fit without it): REINFORCE on the ``anomaly-ap`` reward of binary maps sampled from
``sigmoid(a / T)`` against the training batch's pastes (``owsbench.training.reward``).

Deviations / choices (no official code to follow): the anomaly head sits on the decoder
features (not on softmax statistics as in section 7's heads) and is trained jointly with the
segmenter from scratch (section 7 freezes a trained segmenter and trains the head alone);
``pos_weight = 10`` and the masked mean follow section 7's hybrid head; both losses are plain
means over their valid pixels (an all-void batch contributes 0); the pastes use owsbench's
shared ground placement and synthstreets' outlier families (disjoint from the test anomalies),
not COCO objects; random init instead of ImageNet weights (offline, CPU budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.modules import Conv2dReLU
from torch import nn

from owsbench.checks import Range
from owsbench.config import apply_overrides
from owsbench.datasets.base import Frame, Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Method, Prediction
from owsbench.methods.nn.outlier_exposure import (
    OUTLIER,
    PasteFields,
    outlier_batch,
    require_source,
    split_outlier_labels,
)
from owsbench.segmenters.base import SegmenterConfig
from owsbench.segmenters.smp_models import SmpSegmenter
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.losses import labels_at, masked_bce, semantic_ce
from owsbench.training.resume import buffers_of, load_buffers
from owsbench.training.reward import AnomalyRewardSupervision, RewardConfig, summarise
from owsbench.training.reward_tuning import TUNING_SEED_OFFSET
from owsbench.training.supervision import Supervision


@dataclass(frozen=True)
class DualHeadConfig(PasteFields):
    """Architecture, outlier exposure, losses and training recipe (hashed into the fit key)."""

    # known classes of the training set (Cityscapes trainIds: 19)
    num_classes: Annotated[int, Range(ge=1, le=OUTLIER - 1)] = 19
    arch: str = "deeplabv3plus"
    encoder: str = "resnet18"
    weights_path: str | None = None  # local state_dict of the segmenter; never downloaded
    # hidden width of the anomaly head; 0 = linear 1x1 head
    anomaly_head_channels: Annotated[int, Range(ge=0, le=4096)] = 64
    # images are resized by this factor before the network
    input_scale: Annotated[float, Range(gt=0, le=4)] = 1.0
    # training (names as SegmenterConfig's, so presets size them)
    steps: Annotated[int, Range(ge=1)] = 600
    batch_size: Annotated[int, Range(ge=1)] = 8
    lr: Annotated[float, Range(gt=0)] = 2e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1
    # (h, w); None = the frame size
    crop: Annotated[tuple[int, int] | None, Range(ge=8, le=8192)] = None
    scale_range: Annotated[tuple[float, float], Range(gt=0, le=8)] = (0.75, 1.5)
    hflip: bool = True
    color_jitter: Annotated[float, Range(ge=0, lt=1)] = 0.25
    # losses
    anomaly_weight: Annotated[float, Range(ge=0)] = 1.0  # w_anom
    pos_weight: Annotated[float, Range(gt=0)] = 10.0  # BCE weight of anomaly pixels (section 7: 10)
    # a REINFORCE stage on the anomaly-ap reward after the MLE fit (RewardConfig's fields)
    reward_tuning: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """``BadInput`` unless ``reward_tuning`` is a valid ``anomaly-ap`` tuning stage (the
        only reward of the anomaly head; KL to the MLE model is for softmax outputs)."""
        tuning = self.tuning()
        if tuning is None:
            return
        if tuning.reward != "anomaly-ap" or tuning.kl_weight > 0:
            raise BadInput(
                "dual-head.reward_tuning tunes the anomaly head: reward must be anomaly-ap and "
                f"kl_weight 0 (got reward {tuning.reward}, kl_weight {tuning.kl_weight:g})"
            )
        # every field, so the fit key, rows and labels say exactly what ran
        object.__setattr__(self, "reward_tuning", dataclasses.asdict(tuning))

    def tuning(self) -> RewardConfig | None:
        """``reward_tuning`` over the defaults of ``RewardConfig`` (reward ``anomaly-ap``)."""
        if self.reward_tuning is None:
            return None
        values = {"reward": "anomaly-ap", **self.reward_tuning}
        return apply_overrides(RewardConfig(), values, "dual-head.reward_tuning")

    def segmenter_config(self) -> SegmenterConfig:
        return SegmenterConfig(
            arch=self.arch,
            encoder=self.encoder,
            weights_path=self.weights_path,
            input_scale=self.input_scale,
        )


def paste_streams(seed: int) -> Streams:
    """The random streams of a dual-head loop: frame order, pastes (apart from the order) and
    augmentation, all from ``seed``."""
    return Streams(
        order=np.random.default_rng(seed),
        batch=np.random.default_rng([seed, 1]),
        augment=torch.Generator().manual_seed(seed),
    )


class DualHeadNet(nn.Module):
    """An ``SmpSegmenter`` plus an anomaly head on its decoder output.

    ``forward`` returns ``(logits (B, K, h, w), anomaly_logit (B, 1, h, w))`` at the (scaled)
    input size.
    """

    def __init__(self, config: DualHeadConfig) -> None:
        super().__init__()
        self.segmenter = SmpSegmenter(config.segmenter_config(), config.num_classes)
        semantic_head = self.segmenter.model.segmentation_head
        conv, upsample = semantic_head[0], semantic_head[1]
        scale = int(upsample.scale_factor) if isinstance(upsample, nn.Upsample) else 1
        hidden = config.anomaly_head_channels
        if hidden > 0:
            self.anomaly_head = nn.Sequential(
                Conv2dReLU(conv.in_channels, hidden, kernel_size=3, padding=1),
                smp.base.SegmentationHead(hidden, 1, kernel_size=1, upsampling=scale),
            )
        else:
            self.anomaly_head = smp.base.SegmentationHead(
                conv.in_channels, 1, kernel_size=1, upsampling=scale
            )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(images)
        height, width = out.logits.shape[-2:]
        anomaly = self.anomaly_head(out.features["decoder"])[..., :height, :width]
        return out.logits, anomaly


class DualHeadObjective(Supervision):
    """Dual-head training for the shared loop: outlier-exposure batches (label range checked),
    the two heads' loss terms (``DualHead.losses``)."""

    def __init__(self, method: DualHead, source: object) -> None:
        self.method = method
        self.source = source

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        cfg: DualHeadConfig = self.method.config
        images, labels = outlier_batch(items, self.source, rng, cfg.paste_config())
        check_label_range(labels, cfg.num_classes, "dual-head", OUTLIER)
        return Batch(images=images, labels=labels)

    def resume_state(self) -> dict[str, Any] | None:
        return {"buffers": buffers_of(self.method.model)}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        load_buffers(self.method.model, state["buffers"])

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits, anomaly_logit = self.method.model(batch.images)
        labels = labels_at(batch.labels, logits.shape[-2:])  # input_scale != 1
        return self.method.losses(logits, anomaly_logit, labels)


class DualHead(Method):
    """Segmenter with a jointly trained binary anomaly head (outlier exposure); sigmoid score."""

    name: ClassVar[str] = "dual-head"
    Config: ClassVar[type] = DualHeadConfig
    tuning_stage: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "DeepLabV3+ with a semantic head and a binary anomaly head trained jointly on "
        "outlier-exposure pastes (CE + weighted BCE); anomaly = sigmoid(anomaly logit)"
    )

    def __init__(self, config: DualHeadConfig | None = None) -> None:
        super().__init__(config)
        cfg: DualHeadConfig = self.config
        if cfg.anomaly_head_channels < 0 or cfg.pos_weight <= 0 or cfg.anomaly_weight < 0:
            raise BadInput(
                "dual-head: anomaly_head_channels and anomaly_weight must be >= 0 and "
                "pos_weight > 0"
            )
        self.model = DualHeadNet(cfg).eval()

    def losses(
        self, logits: torch.Tensor, anomaly_logit: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The loss terms of one batch from its combined label map (known ids, 255 void,
        ``OUTLIER`` on pastes): ``sem``, ``anom`` (unweighted) and ``total``."""
        semantic, anomaly = split_outlier_labels(labels)
        terms = {
            "sem": semantic_ce(logits, semantic),
            "anom": masked_bce(anomaly_logit, anomaly, self.config.pos_weight),
        }
        terms["total"] = terms["sem"] + self.config.anomaly_weight * terms["anom"]
        return terms

    def tune(self, train: Split, ctx: FitContext) -> None:
        """The ``reward_tuning`` stage on the fitted model (``anomaly-ap`` REINFORCE on the
        training split's outlier-exposure pastes; ``owsbench.training.reward``); the report
        holds the reward summary."""
        cfg: DualHeadConfig = self.config
        tuning = cfg.tuning()
        objective = DualHeadObjective(self, require_source("dual-head", ctx.outlier_source))
        seed = ctx.seed + TUNING_SEED_OFFSET
        supervision = AnomalyRewardSupervision(
            objective, self.anomaly_terms, tuning, seed, ctx.device
        )
        recipe = Recipe(
            steps=tuning.steps, batch_size=tuning.batch_size, lr=tuning.lr,
            weight_decay=cfg.weight_decay, warmup_fraction=tuning.warmup_fraction,
        )  # fmt: skip
        loop = Loop(
            recipe, ctx.device, paste_streams(seed), augmentation=cfg, progress=ctx.progress,
            desc="reward-tune dual-head (anomaly-ap)", processes=self.loop_processes(ctx),
        )  # fmt: skip
        self.model.to(ctx.device).train()
        self.train_log = loop.run(self.model.parameters(), train, supervision)
        self.model.eval()
        self.fit_report = {"reward": tuning.reward, "baseline": tuning.baseline}
        self.fit_report.update(summarise(self.train_log.scalars))

    def anomaly_terms(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The anomaly logit, its outlier-exposure target and the MLE loss terms of ``batch``."""
        logits, anomaly_logit = self.model(batch.images)
        labels = labels_at(batch.labels, logits.shape[-2:])
        return (
            anomaly_logit,
            split_outlier_labels(labels)[1],
            self.losses(logits, anomaly_logit, labels),
        )

    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg: DualHeadConfig = self.config
        objective = DualHeadObjective(self, require_source("dual-head", ctx.outlier_source))
        if len(train) == 0:
            raise BadInput("dual-head: empty training split")
        torch.manual_seed(ctx.seed)
        self.model = DualHeadNet(cfg).to(ctx.device).train()
        streams = paste_streams(ctx.seed)
        loop = Loop(
            Recipe.of(cfg), ctx.device, streams, augmentation=cfg, desc="fit dual-head",
            progress=ctx.progress, processes=self.loop_processes(ctx),
        )  # fmt: skip
        self.train_log = loop.run(self.model.parameters(), train, objective)
        self.model.eval()

    def predict(self, images: torch.Tensor) -> Prediction:
        if next(self.model.parameters()).device != images.device:
            self.model.to(images.device)
        self.model.eval()
        with torch.inference_mode():
            logits, anomaly_logit = self.model(images)
        return Prediction(
            semantic=logits.argmax(dim=1),
            anomaly=torch.sigmoid(anomaly_logit[:, 0]),
            logits=logits,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "num_classes": self.config.num_classes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_classes", self.config.num_classes) != self.config.num_classes:
            raise BadInput(
                f"dual-head: state has {state['num_classes']} classes, config "
                f"{self.config.num_classes}"
            )
        self.model.load_state_dict(state["model"])
        self.model.eval()
