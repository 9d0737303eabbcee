"""ContMAV (Sodano, Magistri, Nunes, Behley, Stachniss, "Open-World Semantic Segmentation
Including Class Similarity", CVPR 2024, arXiv 2403.07532).

Source: ``PRBonn/ContMAV`` (HEAD ``0960cb3``): ``train.py`` (``train_one_epoch``, ``test_ow``,
``contrastive_inference``, ``semantic_inference``), ``src/utils.py`` (losses), ``src/args.py``,
``src/models/*``. Network:
``owsbench.methods.nn.contmav_model``; losses and scores: ``owsbench.methods.nn.contmav_losses``.

Training (``fit``), per step on an augmented batch (``FrameOrder`` + ``augment``):
``L = 0.9 L_sem + 0.5 L_obj + 0.1 L_f + 0.5 L_con`` where ``L_sem`` is cross-entropy on the
semantic logits ``z``, ``L_obj`` the objectosphere loss on the contrastive embedding ``f`` (void
pixels pushed to the origin, known pixels outside radius ``sqrt(xi)``), ``L_f`` the
variance-normalised L1 distance of ``z`` to the previous epoch's class means (MAVs) and ``L_con``
the contrastive loss of per-class mean embeddings against the MAVs (tau 0.1). ``L_f`` and ``L_con``
are 0 during the first epoch (no MAVs yet). Every step adds the logits of true-positive pixels to
the MAV accumulator; at the end of each epoch the MAVs and variances are recomputed and the sums
reset. An "epoch" is ``epoch_steps`` optimisation steps (default: one pass over the training
split, ``ceil(len(train) / batch_size)`` steps); the MAVs after the last (possibly partial)
epoch are the ones stored.

Inference: ``anomaly = (relu(1 - ||f||) + 1 - max_c g_c(z)) / 2`` with the diagonal-Gaussian
similarity ``g_c = exp(-1/2 sum_d (z_d - mu_cd)^2 / (var_cd + 1e-8))``; extras
``similar_class`` = ``argmax_c g_c``, ``similarity``, ``s_cont``, ``s_sem``. ``score`` selects
the ``"unknown"`` (paper), ``"semantic"`` or ``"contrastive"`` part as the anomaly map
(ablation); the official binary threshold delta (0.6) is ``threshold``: novel-class discovery
groups the pixels with ``s_unk > delta`` (the anomaly map itself stays continuous).

Hyperparameters. Paper/code values (recorded, not the defaults where the CPU budget forbids):
500 epochs, batch 8, 512x1024 crops, scale [0.5, 2.0], Adam (wd 1e-4) with OneCycleLR stepped
per epoch, decoder channels (512, 256, 128) with 3 NonBottleneck1D blocks per module. The brief
says lr 0.004; the official ``src/args.py`` default is 1e-4 (scaled by batch/8). Neither fits a
from-scratch CPU run with this recipe: ``lr`` defaults to 1e-3 (the peak of the one-cycle
schedule, AdamW), configurable. The defaults are CPU-sized (``steps=600``, decoder (256, 128,
64) with 1 block); presets override them through the config.

Deviations (see also the two ``nn`` modules): BasicBlock ResNet-34 encoder from smp, random init
(official: NonBottleneck1D ResNet-34 with ImageNet weights); AdamW with the shared per-step
one-cycle schedule (``one_cycle_lr``) and the shared augmentation (``augment``); variances are
floored at ``var_floor`` wherever they divide (official: only ``+ 1e-8``), so a class seen on a
handful of pixels cannot blow up ``L_f`` or zero out ``g_c`` (on synthstreets quick, 150 steps:
with a floor of 1e-3 ``0.1 L_f`` grew to ~100 and held the CE at ~2.4; with 0.1 it stays ~4
and the CE falls to ~1.3); classes without MAVs are left out
of ``L_f``/``L_con``/``g_c``; a class with no true positive in an epoch keeps its previous MAV
(official: reset to zero). Novel-class discovery (``test_ow``) is an inference option
(``discovery``; :mod:`owsbench.methods.nn.discovery`, measured by
:class:`owsbench.metrics.DiscoveryMetric`). ``gaussian="per-dim"`` (the default; ``"official"``
restores the paper's term) uses ``g_c^(1/D)``: the official ``D``-dimensional Gaussian saturates
(``s_sem`` ~1 for almost every pixel; see ``unknown_score``). Chosen on synthstreets *val*
(default preset, seed 0, one checkpoint): unknown-score AP 2.47 vs 1.99, AUROC 50.74 vs 49.89.
Variants: ``contmav-focal`` and ``contmav-focal-dice`` swap the semantic CE for smp's focal /
focal + Dice losses (``SemanticLoss``); ``epochs`` (the paper preset: 500) sets the steps from
the split size. Bugs of the official code fixed: the ``gt_labels[:-1]`` class drop in
``OWLoss.forward``; the contrastive loss averaged over all images including all-void ones, and
its per-class means reshaped with ``.view`` instead of transposed; the
repo's 40-image debug dataset length; the ``type=bool`` flags that train plain CE by default (all
three extra losses are on here, each switchable).

Staged recipe (options, off by default so the official recipe stays the default): with
``init_from_ce`` the network starts from a cross-entropy-only fit of the same architecture and
training recipe (``ce_steps`` steps, default the main training's; cached and shared by every
variant; :mod:`owsbench.methods.nn.contmav_staged`), as the official ``--finetune`` allows;
``min_tp_pixels`` keeps a class's mean out of ``L_f`` until it rests on at least that many
true-positive pixels (0 = official: a handful of pixels already enter). The fit report records
``staged_init``, ``ce_steps``, ``ce_loss_end``, ``ce_fit_cached`` and ``min_tp_pixels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import torch

from owsbench.checks import Range
from owsbench.datasets.base import Frame, Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Method, Prediction, image_batch
from owsbench.methods.nn.contmav_losses import (
    SEMANTIC_LOSSES,
    ClassStats,
    MAVAccumulator,
    SemanticLoss,
    UnknownScore,
    contrastive_loss,
    feature_loss,
    objectosphere_loss,
    unknown_score,
)
from owsbench.methods.nn.contmav_model import ContMAVNet
from owsbench.methods.nn.contmav_staged import ce_only_state
from owsbench.methods.nn.discovery import NovelClassDiscovery
from owsbench.methods.nn.outlier_exposure import OUTLIER, split_outlier_labels
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.loop import Hook, Loop, Recipe, Streams
from owsbench.training.resume import buffers_of, load_buffers
from owsbench.training.supervision import Supervision

SCORES = ("unknown", "semantic", "contrastive")
GAUSSIANS = ("official", "per-dim")
# ContMAV as in the paper and the official code (PRBonn/ContMAV src/args.py, README): 500 epochs,
# batch 8, 512x1024 crops after rescaling by [0.5, 2.0], decoders (512, 256, 128) with three
# NonBottleneck1D blocks per module, lr 1e-4 (the code's default for batch 8; 0.004, sometimes
# quoted, is not in the code). GPU-scale: use it with real datasets (synthstreets has no paper
# size). Applied under the ``paper`` preset to ContMAV and every subclass.
CONTMAV_PAPER: dict[str, Any] = {
    "epochs": 500,
    "scale_range": (0.5, 2.0),
    "decoder_channels": (512, 256, 128),
    "decoder_blocks": 3,
    "lr": 1e-4,
}


@dataclass(frozen=True)
class ContMAVConfig:
    """ContMAV architecture, losses and training recipe (paper/code values in comments)."""

    # known classes of the training set (Cityscapes: 19)
    num_classes: Annotated[int, Range(ge=1, le=OUTLIER - 1)] = 19
    encoder: str = "resnet34"  # official: ResNet-34 layout with NonBottleneck1D blocks
    # official (512, 256, 128)
    decoder_channels: Annotated[tuple[int, int, int], Range(ge=1, le=2048)] = (256, 128, 64)
    # NonBottleneck1D blocks per decoder module; official 3
    decoder_blocks: Annotated[int, Range(ge=0, le=16)] = 1
    context_bins: Annotated[tuple[int, ...], Range(ge=1, le=64)] = (1, 2, 4, 8)  # appm-1-2-4-8
    # training
    # total optimisation steps (ignored when epochs is set)
    steps: Annotated[int, Range(ge=1)] = 600
    # official 500 (paper preset): steps = epochs * ceil(N / batch)
    epochs: Annotated[int | None, Range(ge=1)] = None
    # steps per MAV epoch; None = one pass over the split
    epoch_steps: Annotated[int | None, Range(ge=1)] = None
    batch_size: Annotated[int, Range(ge=1)] = 8  # official 8
    # peak lr; brief 0.004, official default 1e-4 (see module docstring)
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4  # official 1e-4
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1  # official OneCycleLR pct_start 0.1
    # (h, w); None = the frame size; official 512x1024
    crop: Annotated[tuple[int, int] | None, Range(ge=8, le=8192)] = None
    # official (0.5, 2.0)
    scale_range: Annotated[tuple[float, float], Range(gt=0, le=8)] = (0.75, 1.5)
    hflip: bool = True
    color_jitter: Annotated[float, Range(ge=0, lt=1)] = 0.25  # official: RandomHSV
    # losses (official weights and constants)
    semantic_loss: str = "ce"  # "ce" (paper) | "focal" | "focal-dice" (contmav-focal*)
    focal_gamma: Annotated[float, Range(ge=0)] = 2.0  # smp FocalLoss gamma (Lin et al.: 2)
    # smp FocalLoss alpha (None = unweighted)
    focal_alpha: Annotated[float | None, Range(ge=0, le=1)] = None
    # L_sem = focal + dice_weight * dice for "focal-dice"
    dice_weight: Annotated[float, Range(ge=0)] = 1.0
    w_sem: Annotated[float, Range(ge=0)] = 0.9
    w_obj: Annotated[float, Range(ge=0)] = 0.5
    w_feat: Annotated[float, Range(ge=0)] = 0.1
    w_con: Annotated[float, Range(ge=0)] = 0.5
    use_objectosphere: bool = True
    use_feature: bool = True
    use_contrastive: bool = True
    xi: Annotated[float, Range(ge=0)] = 1.0  # objectosphere radius (squared norm) for known pixels
    # weight of the void term of the objectosphere loss
    unknown_weight: Annotated[float, Range(ge=0)] = 10.0
    tau: Annotated[float, Range(gt=0)] = 0.1  # contrastive temperature
    # lower bound on a MAV variance where it divides (deviation)
    var_floor: Annotated[float, Range(ge=0)] = 0.1
    # staged recipe (off by default: the official recipe)
    init_from_ce: bool = False  # start from a cached cross-entropy-only fit (contmav_staged)
    # steps of that fit; None = the main training's steps
    ce_steps: Annotated[int | None, Range(ge=1)] = None
    # a class's mean enters L_f only with >= this many TP pixels
    min_tp_pixels: Annotated[int, Range(ge=0)] = 0
    # inference
    radius: Annotated[float, Range(gt=0)] = 1.0  # r of s_cont = relu(1 - ||f|| / r)
    gaussian: str = "per-dim"  # "per-dim" g_c^(1/D) | "official" g_c (see unknown_score)
    score: str = "unknown"  # anomaly map: "unknown" | "semantic" | "contrastive"
    # official unknown threshold delta: discovery groups s_unk > delta
    threshold: Annotated[float, Range(ge=0, le=1)] = 0.6
    # novel-class discovery (test_ow, owsbench.methods.nn.discovery): extras["novel_class"]
    discovery: bool = False
    # official: matching radius and clustering threshold
    discovery_distance: Annotated[float, Range(gt=0)] = 0.5
    # unknown pixels clustered per image (deviation)
    discovery_max_pixels: Annotated[int, Range(ge=2, le=10_000)] = 2000


class ContMAV(Method):
    """ContMAV: semantic + contrastive decoders, class-mean (MAV) Gaussian and norm scores.

    Training runs on the shared ``owsbench.training.Loop`` with :class:`ContMAVObjective` as its
    supervision and hook. Subclasses extend it through four methods: ``before_training`` (an
    earlier phase on the fresh model, e.g. encoder pre-training), ``training_batch`` (what a
    batch holds, e.g. outlier-exposure pastes), ``step_losses`` (extra loss terms on extra
    outputs) and ``after_fit`` (later training phases, choices on validation data).
    """

    name: ClassVar[str] = "contmav"
    Config: ClassVar[type] = ContMAVConfig
    summary: ClassVar[str] = (
        "ContMAV (CVPR 2024): two-decoder network trained with objectosphere, MAV feature and "
        "contrastive losses; anomaly = (contrastive-norm + Gaussian-MAV) unknown score"
    )
    preset_values: ClassVar[dict[str, dict[str, Any]]] = {"paper": CONTMAV_PAPER}
    inference_fields: ClassVar[tuple[str, ...]] = (
        "radius",
        "score",
        "gaussian",
        "threshold",
        "discovery",
        "discovery_distance",
        "discovery_max_pixels",
    )

    def __init__(self, config: ContMAVConfig | None = None) -> None:
        super().__init__(config)
        cfg: ContMAVConfig = self.config
        for field, value, valid in (
            ("score", cfg.score, SCORES),
            ("gaussian", cfg.gaussian, GAUSSIANS),
            ("semantic_loss", cfg.semantic_loss, SEMANTIC_LOSSES),
        ):
            if value not in valid:
                raise BadInput(
                    f"{self.name}: {field} must be one of {', '.join(valid)}, got {value!r}"
                )
        self.semantic_loss = SemanticLoss(
            cfg.semantic_loss, cfg.focal_gamma, cfg.focal_alpha, cfg.dice_weight
        )
        self.model = self._build()
        self.stats = ClassStats.empty(cfg.num_classes)
        # novel-class discovery state: persists across predict calls, reset by start_split
        self.discovery: NovelClassDiscovery | None = None
        if cfg.discovery:
            try:
                self.discovery = NovelClassDiscovery(
                    cfg.discovery_distance, cfg.discovery_max_pixels
                )
            except ValueError as err:
                raise BadInput(f"{self.name}: {err}") from None

    network: ClassVar[type[ContMAVNet]] = ContMAVNet

    def _build(self) -> ContMAVNet:
        return self.network.from_config(self.config)

    def _floored(self, stats: ClassStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return stats.means, stats.variances.clamp(min=self.config.var_floor), stats.valid

    def losses(
        self,
        logits: torch.Tensor,
        emb: torch.Tensor,
        labels: torch.Tensor,
        stats: ClassStats | None,
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one batch and their sum (``"total"``); ``stats`` are the
        previous epoch's MAVs (None during the first epoch: ``L_f = L_con = 0``)."""
        cfg: ContMAVConfig = self.config
        terms = {"sem": cfg.w_sem * self.semantic_loss(logits, labels)}
        if cfg.use_objectosphere:
            terms["obj"] = cfg.w_obj * objectosphere_loss(emb, labels, cfg.xi, cfg.unknown_weight)
        if stats is not None and bool(stats.valid.any()):
            means, variances, valid = (t.to(logits.device) for t in self._floored(stats))
            if cfg.use_feature:
                enough = valid & (stats.counts.to(logits.device) >= cfg.min_tp_pixels)
                terms["feat"] = cfg.w_feat * feature_loss(logits, labels, means, variances, enough)
            if cfg.use_contrastive:
                terms["con"] = cfg.w_con * contrastive_loss(emb, labels, means, valid, cfg.tau)
        terms["total"] = sum(terms.values())
        return terms

    # -- training hooks ---------------------------------------------------------------------
    def training_batch(
        self, frames: list[Frame], ctx: FitContext, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, H, W)`` and one label map ``(B, H, W)`` of a training batch, before
        augmentation (``OUTLIER`` marks pasted pixels in subclasses that paste)."""
        images = image_batch([f.image for f in frames])
        labels = torch.from_numpy(np.stack([f.semantic for f in frames])).long()
        return images, labels

    def step_losses(
        self,
        outputs: tuple[torch.Tensor, ...],
        semantic: torch.Tensor,
        anomaly: torch.Tensor,
        stats: ClassStats | None,
    ) -> dict[str, torch.Tensor]:
        """The loss terms of one step from the network's outputs ``(z, f, ...)``, the semantic
        target and the anomaly target (1 on pastes, 0 known, 255 ignored)."""
        return self.losses(outputs[0], outputs[1], semantic, stats)

    def before_training(self, train: Split, ctx: FitContext) -> None:  # noqa: B027 - optional
        """Runs once the freshly built ``self.model`` is on the device, before the main training
        (e.g. to pre-train or initialise its encoder)."""

    def after_fit(self, train: Split, ctx: FitContext) -> None:  # noqa: B027 - optional hook
        """Runs once the main training and the final MAVs are done."""

    def start_from(self, state: dict[str, torch.Tensor], report: dict[str, Any]) -> dict[str, Any]:
        """The staged recipe: load the cross-entropy-only fit (encoder, context, skips and both
        decoders; extra decoders of subclasses keep their init); return what the fit report
        records of it."""
        _, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"{self.name}: unexpected keys in the CE stage: {unexpected[:3]}")
        return {
            "staged_init": "cross-entropy-only fit",
            **report,
            "min_tp_pixels": self.config.min_tp_pixels,
        }

    def total_steps(self, train: Split) -> tuple[int, int]:
        """``(total steps, steps per MAV epoch)`` of the main training."""
        cfg: ContMAVConfig = self.config
        epoch_steps = cfg.epoch_steps or math.ceil(len(train) / cfg.batch_size)
        return (cfg.steps if cfg.epochs is None else cfg.epochs * epoch_steps), epoch_steps

    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg: ContMAVConfig = self.config
        if len(train) == 0:
            raise BadInput(f"{self.name}: empty training split")
        total, epoch_steps = self.total_steps(train)
        # the CE stage runs (or loads) first, so the seeded init below is the same either way
        steps = total if cfg.ce_steps is None else cfg.ce_steps
        ce = ce_only_state(cfg, steps, train, ctx) if cfg.init_from_ce else None
        torch.manual_seed(ctx.seed)
        self.model = self._build().to(ctx.device).train()
        self.fit_report = {}
        staged = self.start_from(*ce) if ce is not None else {}
        self.before_training(train, ctx)
        self.fit_report.update(staged)
        self.model.train()
        objective = ContMAVObjective(self, ctx, epoch_steps)
        loop = Loop(
            Recipe.of(cfg, steps=total),
            ctx.device,
            Streams.seeded(ctx.seed),
            augmentation=cfg,
            hooks=[objective],
            desc=f"fit {self.name}",
            progress=ctx.progress,
        )
        self.train_log = loop.run(self.model.parameters(), train, objective)
        self.after_fit(train, ctx)

    def scores(self, logits: torch.Tensor, emb: torch.Tensor) -> UnknownScore:
        """The unknown score and its parts from the network's ``(z, f)``."""
        cfg: ContMAVConfig = self.config
        means, variances, _ = self._floored(self.stats)
        stats = ClassStats(means, variances, self.stats.counts)
        return unknown_score(
            logits, emb, stats, cfg.radius, per_dimension=cfg.gaussian == "per-dim"
        )

    def predict(self, images: torch.Tensor) -> Prediction:
        cfg: ContMAVConfig = self.config
        device = next(self.model.parameters()).device
        if device != images.device:
            self.model.to(images.device)
        self.model.eval()
        with torch.inference_mode():
            logits, emb = self.model(images)[:2]
            score = self.scores(logits, emb)
        anomaly = {
            "unknown": score.unknown,
            "semantic": score.semantic,
            "contrastive": score.contrastive,
        }[cfg.score]
        extras = {
            "similar_class": score.similar_class,
            "similarity": score.similarity,
            "s_cont": score.contrastive,
            "s_sem": score.semantic,
        }
        if self.discovery is not None:
            # per image, in order: the logits of pixels with s_unk > delta get discovered ids
            flagged = score.unknown > cfg.threshold
            novel = torch.full(flagged.shape, -1, dtype=torch.long, device=flagged.device)
            vectors = logits.permute(0, 2, 3, 1)  # (B, H, W, K)
            for b in range(len(images)):
                ids = self.discovery.assign(vectors[b][flagged[b]].float().cpu().numpy())
                novel[b][flagged[b]] = torch.from_numpy(ids).to(novel.device)
            extras["novel_class"] = novel
        return Prediction(
            semantic=logits.argmax(dim=1), anomaly=anomaly, logits=logits, extras=extras
        )

    def start_split(self) -> None:
        if self.discovery is not None:
            self.discovery.reset()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "mav_means": self.stats.means.cpu(),
            "mav_variances": self.stats.variances.cpu(),
            "mav_counts": self.stats.counts.cpu(),
            "num_classes": self.config.num_classes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_classes", self.config.num_classes) != self.config.num_classes:
            raise BadInput(
                f"contmav: state has {state['num_classes']} classes, config "
                f"{self.config.num_classes}"
            )
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.stats = ClassStats(
            state["mav_means"].float(),
            state["mav_variances"].float(),
            state["mav_counts"].float(),
        )


class ContMAVObjective(Supervision, Hook):
    """ContMAV's training signal for the shared loop: the method's ``training_batch`` (checked
    against the class count) and ``step_losses``; every step adds the true-positive logits to
    the MAV accumulator, every ``epoch_steps`` steps (a hook) the MAVs are recomputed, and after
    the last step the final MAVs are stored on the method and the model is put in eval mode."""

    def __init__(self, method: ContMAV, ctx: FitContext, epoch_steps: int) -> None:
        self.method = method
        self.ctx = ctx
        self.epoch_steps = epoch_steps
        self.accumulator = MAVAccumulator(method.config.num_classes)
        self.stats: ClassStats | None = None  # the previous epoch's MAVs (None: first epoch)

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        images, labels = self.method.training_batch(items, self.ctx, rng)
        check_label_range(labels, self.method.config.num_classes, self.method.name, OUTLIER)
        return Batch(images=images, labels=labels)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        semantic, anomaly = split_outlier_labels(batch.labels)
        outputs = self.method.model(batch.images)
        self.accumulator.update(outputs[0], semantic)
        return self.method.step_losses(outputs, semantic, anomaly, self.stats)

    def resume_state(self) -> dict[str, Any] | None:
        """The model's buffers, this epoch's MAV sums and the previous epoch's MAVs."""
        sums = self.accumulator
        return {
            "buffers": buffers_of(self.method.model),
            "sums": (sums.count, sums.sum, sums.sum_sq),
            "stats": None if (s := self.stats) is None else (s.means, s.variances, s.counts),
        }

    def load_resume_state(self, state: dict[str, Any]) -> None:
        load_buffers(self.method.model, state["buffers"])
        sums = self.accumulator
        sums.count, sums.sum, sums.sum_sq = state["sums"]
        self.stats = ClassStats(*state["stats"]) if state["stats"] is not None else None

    def on_step(self, loop: Loop, step: int, terms: dict[str, torch.Tensor]) -> None:
        if (step + 1) % self.epoch_steps == 0 and step + 1 < loop.recipe.steps:
            self.stats = self.accumulator.finalize(self.stats)

    def after(self, loop: Loop) -> None:
        self.method.stats = self.accumulator.finalize(self.stats)
        self.method.model.eval()


@dataclass(frozen=True)
class ContMAVFocalConfig(ContMAVConfig):
    semantic_loss: str = "focal"


@dataclass(frozen=True)
class ContMAVFocalDiceConfig(ContMAVConfig):
    semantic_loss: str = "focal-dice"


class ContMAVFocal(ContMAV):
    """ContMAV with the semantic cross-entropy replaced by smp's focal loss (see
    ``SemanticLoss``; gamma 2, no alpha)."""

    name: ClassVar[str] = "contmav-focal"
    Config: ClassVar[type] = ContMAVFocalConfig
    summary: ClassVar[str] = "ContMAV with a focal semantic loss (smp FocalLoss)"


class ContMAVFocalDice(ContMAV):
    """ContMAV with the semantic cross-entropy replaced by smp's focal + Dice losses."""

    name: ClassVar[str] = "contmav-focal-dice"
    Config: ClassVar[type] = ContMAVFocalDiceConfig
    summary: ClassVar[str] = "ContMAV with focal + Dice semantic losses (smp)"
