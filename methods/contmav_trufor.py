"""ContMAV + a TruFor-style anomaly / confidence decoder pair on the shared encoder.

Sources: ContMAV (Sodano et al., CVPR 2024; ``PRBonn/ContMAV``, see :mod:`owsbench.methods.contmav`)
and TruFor (Guillaro et al., CVPR 2023, arXiv 2212.10957; ``grip-unina/TruFor``
``TruFor_train_test/lib/models/cmx/builder_np_conf.py``, ``lib/core/criterion.py``
(``DiceEntropyLoss``), ``lib/core/criterion_conf.py`` (``MSE``, ``calcolaGTs``),
``lib/config/trufor_ph2.yaml`` / ``trufor_ph3.yaml``). Dice:
``segmentation_models_pytorch.losses.DiceLoss``.

Network (``ContMAVTruForNet``): ContMAV's encoder, context module and skips
(``ContMAVNet.encode``) feed four decoders of the same layout (``Decoder``): ContMAV's semantic
``z`` (K channels) and contrastive ``f`` (K channels), and, as TruFor's two heads on one encoder,
an anomaly decoder A (1 channel, logit ``a``) and a confidence decoder B (1 channel, logit ``c``).
``forward(images) -> (z, f, a, c)``, all at the input resolution.

Phase 1 (``fit``, ContMAV's loop with its hooks): every training frame receives outlier-exposure
pastes with probability ``paste_probability`` (``outlier_batch``, cut-outs from
``FitContext.outlier_source``); after augmentation the labels split into the semantic target
``y`` (pastes void) and the anomaly target ``t`` (paste 1, known 0, void 255). The loss is
ContMAV's, plus decoder A's TruFor phase-2 loss:

    L = 0.9 L_sem + 0.5 L_obj + 0.1 L_f + 0.5 L_con
        + w_anomaly * (anomaly_ce_weight * CE_w(a, t) + anomaly_dice_weight * Dice(a, t))

    CE_w(a, t) = sum_p w_{t_p} BCE(a_p, t_p) / sum_p w_{t_p}  over p with t_p != 255,
                 (w_0, w_1) = anomaly_class_weights = (0.5, 2.5)   (TruFor: CE weights [0.5, 2.5])
    Dice(a, t) = smp DiceLoss("binary", from_logits=True, ignore_index=255):
                 1 - 2 sum_p s_p t_p / (sum_p s_p + sum_p t_p),  s = sigmoid(a), void masked,
                 pooled over the batch; 0 for a batch without pasted pixels

(TruFor: 0.3 CE_w + 0.7 BinaryDice). A has one channel: TruFor's 2-class softmax is
``sigmoid(a1 - a0)``, so its class-weighted CE is the weighted BCE above. Pastes are void for
ContMAV's losses, so the objectosphere term also pushes the pasted pixels' embeddings ``f`` to
the origin (10x weighted, like every void pixel): outlier exposure for the contrastive decoder as
well, intended. Gradients of A reach the shared encoder.

Phase 2 (``after_fit``, TruFor phase 3): the encoder, context, skips, ContMAV's decoders and A are
frozen (eval mode, so their batch-norm statistics do not move either); B alone is trained for
``confidence_steps`` steps (None: a quarter of phase 1's) on fresh pasted batches (same
augmentation, AdamW, one-cycle schedule with peak ``confidence_lr``) with

    L_conf = mean_{p in G} (sigmoid(c_p) - TCP_p)^2,  TCP_p = sigmoid(a_p) if t_p = 1 else
                                                              1 - sigmoid(a_p)
    G = g1 | g0,  g1 = erode(t = 1, erosion x erosion),
                  g0 = (t = 0) & ~dilate(t = 1, dilation x dilation)

so pixels near an anomaly's boundary and void pixels are left out. Morphology is a stride-1
``max_pool2d`` (dilation) and its complement (erosion), as TruFor's ``calcolaGTs``: void counts
as "not anomaly" (an anomaly pixel next to void is eroded away) and the image border does not
erode. TruFor uses 15x15 / 11x11 at 512x512 crops; the defaults here (5 / 3) suit 128x256 frames.

Inference: ``u`` is ContMAV's anomaly map (``score``; by default the paper's unknown score
``s_unk`` in [0, 1]) and ``a``, ``c`` the two logits. ``fusion`` picks the anomaly map:

    "anomaly"            sigmoid(a)
    "unknown"            u
    "mean"               m = (u + sigmoid(a)) / 2
    "confidence-shrink"  m * sigmoid(c) + 0.5 * (1 - sigmoid(c))   (option (i), on m:
                         pixels where A is unreliable move towards 0.5)
    "logit-confidence"   logit(u') + a + log sigmoid(c),  u' = clamp(u, 1e-6, 1 - 1e-6)
                         (option (ii): the log-odds of u and A added, then TruFor's
                         pooling log-weight log sigmoid(c) per pixel: unreliable pixels move
                         towards "inlier")
    "auto"               (default) the fixed option with the highest validation AP

Every fit scores all fixed options on ``FitContext.validation`` (a labelled split of the training
dataset, never the test split; the first ``validation_frames`` frames when set) with
``AnomalyMetric`` and stores the winner (ties: the earlier option in the list above) in the
state, so ``fusion`` is an inference-only field: changing it reuses the checkpoint, and "auto"
means the fit's choice. ``fit_report`` (copied into each result row) holds ``fusion_auto``, the
per-option ``fusion_val_AP`` and the phase-2 loss at its start and end; without a validation split
with anomaly labels "auto" is "mean" and ``fusion_auto_reason`` says why. The choice is made with
the fit-time ``score``. Extras: ContMAV's, plus ``unknown`` (u), ``anomaly_probability``
(sigmoid(a)) and ``confidence`` (sigmoid(c)).

Deviations from TruFor: no Noiseprint++ stream and no CMX dual SegFormer (ContMAV's ResNet encoder,
random init); ContMAV decoders (NonBottleneck1D, learned upsampling) instead of SegFormer's
all-MLP heads; no image-level detection head (``confpool``/WSP) and no detection loss; A is
trained jointly with ContMAV from scratch (TruFor phase 2 trains backbone + localisation head,
pretrained encoder) on pasted outliers instead of forgeries; A has one channel (see above);
smp's Dice (plain denominators ``sum s + sum t``, batch-pooled, no smoothing) instead of TruFor's
``BinaryDice`` (squared denominators, per image then averaged, smooth 1 in the class, 0 in the
config); AdamW with the one-cycle schedule instead of SGD with poly decay; scaled-down
erosion/dilation. The pixel-level fusion of A, B and ContMAV's score is derived (not in TruFor,
which reports the localisation map and the confidence map separately), and the choice among
fusions on validation AP is owsbench's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from owsbench.checks import Range
from owsbench.datasets.base import VOID, Frame, Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Prediction, image_batch, iter_batches
from owsbench.methods.contmav import ContMAV, ContMAVConfig
from owsbench.methods.nn.contmav_losses import ClassStats, UnknownScore
from owsbench.methods.nn.contmav_model import ContMAVNet, Decoder
from owsbench.methods.nn.outlier_exposure import (
    PasteFields,
    outlier_batch,
    require_source,
    split_outlier_labels,
)
from owsbench.metrics import AnomalyMetric
from owsbench.training.batches import Batch
from owsbench.training.log import TrainLog
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.resume import buffers_of, load_buffers
from owsbench.training.supervision import Supervision

FUSIONS = ("anomaly", "unknown", "mean", "confidence-shrink", "logit-confidence")
AUTO = "auto"
FALLBACK = "mean"  # "auto" without a usable validation split
LOGIT_EPS = 1e-6  # u is clamped to [eps, 1 - eps] before its logit


@dataclass(frozen=True)
class ContMAVTruForConfig(PasteFields, ContMAVConfig):
    """ContMAV's config plus outlier exposure (``PasteFields``), decoder A / B losses and the
    fusion."""

    # decoder A (TruFor phase 2: 0.3 CE_w + 0.7 BinaryDice, CE weights [0.5, 2.5])
    w_anomaly: Annotated[float, Range(ge=0)] = 1.0  # weight of A's loss against ContMAV's total
    anomaly_ce_weight: Annotated[float, Range(ge=0)] = 0.3
    anomaly_dice_weight: Annotated[float, Range(ge=0)] = 0.7
    # (inlier, anomaly)
    anomaly_class_weights: Annotated[tuple[float, float], Range(ge=0)] = (0.5, 2.5)
    # decoder B (TruFor phase 3: MSE to TCP away from boundaries)
    # None = a quarter of phase 1's steps
    confidence_steps: Annotated[int | None, Range(ge=0)] = None
    confidence_lr: Annotated[float, Range(gt=0)] = 1e-3  # peak of the one-cycle schedule
    # odd kernel size; TruFor 15 at 512x512
    erosion: Annotated[int, Range(ge=1, le=255, odd=True)] = 5
    # odd kernel size; TruFor 11 at 512x512
    dilation: Annotated[int, Range(ge=1, le=255, odd=True)] = 3
    # fusion (inference-only; "auto" = the fit's choice on validation AP)
    fusion: str = AUTO
    # validation frames scored for "auto"; None = all
    validation_frames: Annotated[int | None, Range(ge=1)] = None


class ContMAVTruForNet(ContMAVNet):
    """``ContMAVNet`` plus an anomaly and a confidence decoder (1 channel each):
    ``forward(images) -> (z, f, a, c)``."""

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet34",
        decoder_channels: tuple[int, int, int] = (512, 256, 128),
        decoder_blocks: int = 3,
        context_bins: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        super().__init__(num_classes, encoder, decoder_channels, decoder_blocks, context_bins)
        chans = tuple(decoder_channels)
        self.decoder_anomaly = Decoder(chans[0], chans, decoder_blocks, 1)
        self.decoder_confidence = Decoder(chans[0], chans, decoder_blocks, 1)
        self._init_weights()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, skips, height, width = self.encode(images)
        decoders = (self.decoder_ss, self.decoder_ow, self.decoder_anomaly, self.decoder_confidence)
        return tuple(d(x, skips)[..., :height, :width] for d in decoders)

    def frozen_parts(self) -> list[nn.Module]:
        """Everything but the confidence decoder (frozen in phase 2)."""
        return [m for n, m in self.named_children() if n != "decoder_confidence"]


# -- pure functions (tested on hand-made tensors) --------------------------------------------
def dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of ``(B, H, W)`` bool masks with a ``size x size`` square (odd size)."""
    if size <= 1:
        return mask
    pooled = F.max_pool2d(mask[:, None].float(), size, stride=1, padding=size // 2)
    return pooled[:, 0] > 0


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion (``~dilate(~mask)``); outside the image counts as inside the mask."""
    return ~dilate(~mask, size)


def confidence_target(
    anomaly_logit: torch.Tensor, target: torch.Tensor, erosion: int, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """TruFor's confidence target: ``(TCP, valid)``, both ``(B, H, W)``, from A's logit
    ``(B, 1, H, W)`` and the anomaly target (1 / 0 / 255); ``valid`` is ``g1 | g0``."""
    prob = torch.sigmoid(anomaly_logit[:, 0])
    positive = target == 1
    tcp = torch.where(positive, prob, 1 - prob)
    g1 = erode(positive, erosion)
    g0 = (target == 0) & ~dilate(positive, dilation)
    return tcp, g1 | g0


def confidence_loss(
    confidence_logit: torch.Tensor, tcp: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``mean_{valid} (sigmoid(c) - TCP)^2``; 0 (differentiable) without valid pixels."""
    conf = torch.sigmoid(confidence_logit[:, 0])
    if not bool(valid.any()):
        return conf.sum() * 0.0
    return F.mse_loss(conf[valid], tcp[valid].detach())


def fuse(
    fusion: str, unknown: torch.Tensor, anomaly_logit: torch.Tensor, confidence_logit: torch.Tensor
) -> torch.Tensor:
    """One fixed fusion rule (see the module docstring) on ``(B, H, W)`` maps."""
    prob = torch.sigmoid(anomaly_logit)
    if fusion == "anomaly":
        return prob
    if fusion == "unknown":
        return unknown
    mean = (unknown + prob) / 2
    if fusion == "mean":
        return mean
    if fusion == "confidence-shrink":
        conf = torch.sigmoid(confidence_logit)
        return mean * conf + 0.5 * (1 - conf)
    if fusion == "logit-confidence":
        u = unknown.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
        return torch.logit(u) + anomaly_logit + F.logsigmoid(confidence_logit)
    raise BadInput(f"unknown fusion {fusion!r}; valid: {', '.join((*FUSIONS, AUTO))}")


class AnomalyLoss(nn.Module):
    """Decoder A's loss parts: class-weighted BCE and smp's binary Dice, void ignored."""

    def __init__(self, class_weights: tuple[float, float]) -> None:
        super().__init__()
        self.class_weights = tuple(float(w) for w in class_weights)
        self.dice = smp.losses.DiceLoss("binary", from_logits=True, ignore_index=VOID)

    def forward(self, logit: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logit`` ``(B, 1, H, W)``, ``target`` ``(B, H, W)`` (1 / 0 / 255) -> ``{ce, dice}``."""
        positive = (target == 1).to(logit.dtype)
        w0, w1 = self.class_weights
        weights = torch.where(target == 1, w1, w0).to(logit.dtype) * (target != VOID)
        bce = F.binary_cross_entropy_with_logits(logit[:, 0], positive, reduction="none")
        ce = (weights * bce).sum() / weights.sum().clamp_min(1e-12)
        return {"ce": ce, "dice": self.dice(logit, target)}


class ConfidenceObjective(Supervision):
    """Phase 3 for the shared loop: outlier-exposure batches; the frozen encoder and decoder A
    give A's logit, decoder B's confidence is fitted to A's true-class probability."""

    def __init__(self, method: ContMAVTruFor, ctx: FitContext) -> None:
        self.method = method
        self.ctx = ctx
        self.source = require_source(method.name, ctx.outlier_source)

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        images, labels = outlier_batch(items, self.source, rng, self.method.config.paste_config())
        return Batch(images=images, labels=labels)

    def resume_state(self) -> dict[str, Any] | None:
        return {"buffers": buffers_of(self.method.model)}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        load_buffers(self.method.model, state["buffers"])

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg: ContMAVTruForConfig = self.method.config
        model: ContMAVTruForNet = self.method.model
        _, anomaly = split_outlier_labels(batch.labels)
        with torch.no_grad():
            x, skips, height, width = model.encode(batch.images)
            a = model.decoder_anomaly(x, skips)[..., :height, :width]
        c = model.decoder_confidence(x, skips)[..., :height, :width]
        tcp, valid = confidence_target(a, anomaly, cfg.erosion, cfg.dilation)
        return {"total": confidence_loss(c, tcp, valid)}


class ContMAVTruFor(ContMAV):
    """ContMAV with TruFor's anomaly + confidence decoders on the shared encoder (see module)."""

    name: ClassVar[str] = "contmav-trufor"
    Config: ClassVar[type] = ContMAVTruForConfig
    summary: ClassVar[str] = (
        "ContMAV + TruFor-style anomaly decoder (outlier exposure, CE + Dice) and confidence "
        "decoder (TCP); fusion with the unknown score chosen on validation AP"
    )
    inference_fields: ClassVar[tuple[str, ...]] = (*ContMAV.inference_fields, "fusion")
    network: ClassVar[type[ContMAVNet]] = ContMAVTruForNet

    def __init__(self, config: ContMAVTruForConfig | None = None) -> None:
        super().__init__(config)
        cfg: ContMAVTruForConfig = self.config
        if cfg.fusion not in (*FUSIONS, AUTO):
            raise BadInput(
                f"{self.name}: fusion must be one of {', '.join((*FUSIONS, AUTO))}, "
                f"got {cfg.fusion!r}"
            )
        for field in ("erosion", "dilation"):
            size = getattr(cfg, field)
            if size < 1 or size % 2 == 0:
                raise BadInput(f"{self.name}: {field} must be an odd size >= 1, got {size}")
        self.anomaly_loss = AnomalyLoss(tuple(cfg.anomaly_class_weights))
        self.auto_fusion = FALLBACK
        self.fusion_ap: dict[str, float] = {}
        self.confidence_log = TrainLog(loss=[], lr=[])
        self.fit_report: dict[str, Any] = {}

    # -- phase 1 (ContMAV's loop) -------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        require_source(self.name, ctx.outlier_source)
        self.fit_report = {}
        super().fit(train, ctx)

    def training_batch(
        self, frames: list[Frame], ctx: FitContext, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        source = require_source(self.name, ctx.outlier_source)
        return outlier_batch(frames, source, rng, self.config.paste_config())

    def anomaly_terms(self, anomaly_logit: torch.Tensor, target: torch.Tensor) -> dict:
        """Decoder A's weighted loss terms ``{anom_ce, anom_dice}``."""
        cfg: ContMAVTruForConfig = self.config
        parts = self.anomaly_loss(anomaly_logit, target)
        return {
            "anom_ce": cfg.w_anomaly * cfg.anomaly_ce_weight * parts["ce"],
            "anom_dice": cfg.w_anomaly * cfg.anomaly_dice_weight * parts["dice"],
        }

    def step_losses(
        self,
        outputs: tuple[torch.Tensor, ...],
        semantic: torch.Tensor,
        anomaly: torch.Tensor,
        stats: ClassStats | None,
    ) -> dict[str, torch.Tensor]:
        terms = self.losses(outputs[0], outputs[1], semantic, stats)
        total = terms.pop("total")
        extra = self.anomaly_terms(outputs[2], anomaly)
        return {**terms, **extra, "total": total + sum(extra.values())}

    # -- phase 2 and the fusion choice --------------------------------------------------------
    def after_fit(self, train: Split, ctx: FitContext) -> None:
        self.train_confidence(train, ctx)
        self.choose_fusion(ctx)

    def train_confidence(self, train: Split, ctx: FitContext) -> None:
        """TruFor phase 3: decoder B alone, MSE to A's true-class probability (own streams)."""
        cfg: ContMAVTruForConfig = self.config
        steps = cfg.confidence_steps
        if steps is None:
            steps = max(1, len(self.train_log.loss) // 4)
        model: ContMAVTruForNet = self.model
        model.eval()  # frozen parts keep their batch-norm statistics
        model.decoder_confidence.train()
        objective = ConfidenceObjective(self, ctx)
        loop = Loop(
            Recipe.of(cfg, steps=steps, lr=cfg.confidence_lr),
            ctx.device,
            Streams.derived(np.random.default_rng((ctx.seed, 2))),  # apart from phase 1's
            augmentation=cfg,
            desc=f"fit {self.name} (confidence)",
            progress=ctx.progress,
        )
        self.confidence_log = loop.run(model.decoder_confidence.parameters(), train, objective)
        model.eval()
        losses = self.confidence_log.loss
        if losses:
            k = max(1, len(losses) // 10)
            self.fit_report["confidence_loss_start"] = float(np.mean(losses[:k]))
            self.fit_report["confidence_loss_end"] = float(np.mean(losses[-k:]))

    def choose_fusion(self, ctx: FitContext) -> str:
        """Score every fixed fusion on the validation split; keep the best AP (the state's
        ``auto_fusion``), or fall back to "mean" with a reason in ``fit_report``."""
        cfg: ContMAVTruForConfig = self.config
        self.auto_fusion, self.fusion_ap = FALLBACK, {}
        for key in ("fusion_val_AP", "fusion_val_frames", "fusion_auto_reason"):
            self.fit_report.pop(key, None)
        reason = None
        split = ctx.validation
        if split is None or len(split) == 0:
            reason = "no validation split"
        else:
            metrics = {name: AnomalyMetric() for name in FUSIONS}
            frames_seen = 0
            for frames in iter_batches(split, cfg.batch_size, cfg.validation_frames):
                if any(f.anomaly is None for f in frames):
                    reason = "the validation split has no anomaly labels"
                    break
                maps = self.fusion_maps(image_batch([f.image for f in frames]))
                labels = torch.from_numpy(np.stack([f.anomaly for f in frames]))
                for name, scores in maps.items():
                    if scores.shape[-2:] != labels.shape[-2:]:
                        scores = F.interpolate(
                            scores[:, None], size=labels.shape[-2:], mode="bilinear",
                            align_corners=False,
                        )[:, 0]  # fmt: skip
                    metrics[name].update(scores.float().cpu(), labels)
                frames_seen += len(frames)
            first = metrics[FUSIONS[0]]
            if reason is None and (first.num_positives == 0 or first.num_negatives == 0):
                reason = "the validation split has no anomaly (or no inlier) pixels"
            if reason is None:
                self.fusion_ap = {name: metrics[name].compute()["AP"] for name in FUSIONS}
                best = FUSIONS[0]
                for name in FUSIONS[1:]:
                    if self.fusion_ap[name] > self.fusion_ap[best]:
                        best = name
                self.auto_fusion = best
                self.fit_report["fusion_val_AP"] = dict(self.fusion_ap)
                self.fit_report["fusion_val_frames"] = frames_seen
        self.fit_report["fusion_auto"] = self.auto_fusion
        if reason is not None:
            self.fit_report["fusion_auto_reason"] = f"{reason}: 'auto' uses {FALLBACK!r}"
        return self.auto_fusion

    # -- inference ----------------------------------------------------------------------------
    def _forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, UnknownScore, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, ContMAV score parts, u, a, c)`` with ``a``, ``c`` as ``(B, H, W)``."""
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.inference_mode():
            z, f, a, c = self.model(images.to(device))
            score = self.scores(z, f)
        u = {
            "unknown": score.unknown,
            "semantic": score.semantic,
            "contrastive": score.contrastive,
        }[self.config.score]
        return z, score, u, a[:, 0], c[:, 0]

    def fusion_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every fixed fusion's anomaly map ``(B, H, W)`` from one forward pass."""
        _, _, u, a, c = self._forward(images)
        return {name: fuse(name, u, a, c) for name in FUSIONS}

    @property
    def fusion(self) -> str:
        """The fusion in use: the config's, or the fit's choice for "auto"."""
        return self.auto_fusion if self.config.fusion == AUTO else self.config.fusion

    def predict(self, images: torch.Tensor) -> Prediction:
        if next(self.model.parameters()).device != images.device:
            self.model.to(images.device)
        z, score, u, a, c = self._forward(images)
        return Prediction(
            semantic=z.argmax(dim=1),
            anomaly=fuse(self.fusion, u, a, c),
            logits=z,
            extras={
                "similar_class": score.similar_class,
                "similarity": score.similarity,
                "s_cont": score.contrastive,
                "s_sem": score.semantic,
                "unknown": u,
                "anomaly_probability": torch.sigmoid(a),
                "confidence": torch.sigmoid(c),
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "auto_fusion": self.auto_fusion,
            "fusion_val_AP": dict(self.fusion_ap),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        auto = state.get("auto_fusion", FALLBACK)
        if auto not in FUSIONS:
            raise BadInput(f"{self.name}: state holds an unknown fusion {auto!r}")
        self.auto_fusion = auto
        self.fusion_ap = dict(state.get("fusion_val_AP", {}))
