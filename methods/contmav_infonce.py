"""ContMAV on an encoder pre-trained to separate known from unknown regions (InfoNCE, SynCo).

Two phases in one fit:

1. **Region pre-training** (``before_training``): a crop bank (:mod:`owsbench.methods.nn.crops`)
   of ``crop_size`` crops around known-class regions (labelled with their class) and around
   unknown regions (void pixels and outlier-exposure pastes from ``FitContext.outlier_source``,
   labelled unknown) is built from the training split and cached on disk. ContMAV's encoder
   (with a pooling + MLP projection head) is trained on it with MoCo (momentum key encoder,
   label-carrying queue) and the label-aware InfoNCE of :mod:`owsbench.methods.nn.infonce`:
   a known crop's positives are its second view and the queued crops of its class, an unknown
   crop's positive is only its second view, and unknown crops are negatives of every known one
   (never positives). ``contmav-infonce-synco`` adds SynCo's six synthetic hard negatives
   (:mod:`owsbench.methods.nn.synco`) after a warm-up, drawn across the known/unknown boundary
   in the direction ``synco_direction``: ``"known-anchors"`` (from unknown crops, for known
   anchors), ``"unknown-anchors"`` (from known crops, for unknown anchors) or ``"both"``.
   Loop: :mod:`owsbench.methods.nn.region_pretraining`.
2. **ContMAV** (:class:`owsbench.methods.contmav.ContMAV`, unchanged losses, MAVs and scores),
   starting from the pre-trained encoder (the projection head is dropped; decoders, context
   module and skips start from their usual initialisation) and fine-tuning all of it.

The pastes only feed the crop bank (phase 2 trains on the plain split, as ``contmav``), so every
frame is pasted by default (``paste_probability`` 1.0). ``fit_report`` (copied into each result
row) holds the crop counts per label, whether the bank came from the cache, the InfoNCE loss at the
start and end of phase 1 (it grows while the queue fills: more negatives), the step from which
synthetic negatives were used, and the mean cosine similarity of the final embeddings of the
bank's crops (``pretrain_similarity``: same class, other known class, known vs unknown; see
``embedding_similarity``), the direct check that phase 1 separated known from unknown crops.

Sources: MoCo v2 (Chen et al., arXiv 2003.04297) as used by SynCo (Giakoumoglou & Stathaki,
arXiv 2410.02401; ``giakoumoglou/synco`` ``synco/builder.py``, ``main_synco.py``); the
multi-positive form follows SupCon (Khosla et al., NeurIPS 2020); ContMAV as in
:mod:`owsbench.methods.contmav`. The combination (region crops, known/unknown labels, directional
SynCo) is owsbench's design: no published method does exactly this. Deviations of each part
are listed in its module; here:
``pretrain_steps`` defaults to ContMAV's ``steps`` (the preset's size; official MoCo/SynCo
pre-training runs 200-800 ImageNet epochs); pre-training uses SGD as the official code, ContMAV
keeps its own recipe; without an outlier-exposure source the unknown crops come from void pixels
only (recorded in ``fit_report``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from owsbench.checks import Range
from owsbench.datasets.base import Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.methods.contmav import ContMAV, ContMAVConfig
from owsbench.methods.nn.crops import CropConfig, load_or_build
from owsbench.methods.nn.outlier_exposure import PasteFields
from owsbench.methods.nn.region_pretraining import PretrainConfig, pretrain_encoder
from owsbench.methods.nn.synco import DIRECTIONS, SynCoConfig

Counts = tuple[int, int, int, int, int, int]  # SynCo's n1..n6


@dataclass(frozen=True)
class ContMAVInfoNCEConfig(PasteFields, ContMAVConfig):
    """ContMAV's config plus the crop bank, the contrastive phase and SynCo (flattened)."""

    # every training frame gets pastes (crops only; see above)
    paste_probability: Annotated[float, Range(ge=0, le=1)] = 1.0
    # crop bank (CropConfig)
    crop_size: Annotated[int, Range(ge=32, le=512)] = 32
    crops_known_per_frame: Annotated[int, Range(ge=0, le=64)] = 4
    crops_unknown_per_frame: Annotated[int, Range(ge=0, le=64)] = 2
    crop_min_known_fraction: Annotated[float, Range(ge=0, le=1)] = 0.5
    crop_min_unknown_fraction: Annotated[float, Range(ge=0, le=1)] = 0.3
    # contrastive phase (PretrainConfig)
    pretrain_steps: Annotated[int | None, Range(ge=1)] = None  # None = ContMAV's ``steps``
    pretrain_batch_size: Annotated[int, Range(ge=1)] = 32
    pretrain_lr: Annotated[float, Range(gt=0)] = 0.03
    pretrain_weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    key_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.99
    queue_size: Annotated[int, Range(ge=1, le=262_144)] = 4096
    temperature: Annotated[float, Range(gt=0)] = 0.2
    projection_dim: Annotated[int, Range(ge=1, le=1024)] = 128
    # SynCo (SynCoConfig; counts = n1..n6)
    synco: bool = False
    synco_direction: str = "both"
    synco_warmup_fraction: Annotated[float, Range(ge=0, le=1)] = 0.05
    synco_n_hard: Annotated[int, Range(ge=1, le=262_144)] = 1024
    synco_counts: Annotated[Counts, Range(ge=0, le=4096)] = (256, 256, 256, 64, 64, 64)
    synco_alpha_max: Annotated[float, Range(ge=0, le=1)] = 0.5
    synco_beta_max: Annotated[float, Range(ge=1)] = 1.5
    synco_sigma: Annotated[float, Range(ge=0)] = 0.01
    synco_delta: Annotated[float, Range(ge=0)] = 0.01
    synco_eta: Annotated[float, Range(ge=0)] = 0.01

    def crop_config(self) -> CropConfig:
        return CropConfig(
            size=self.crop_size,
            known_per_frame=self.crops_known_per_frame,
            unknown_per_frame=self.crops_unknown_per_frame,
            min_known_fraction=self.crop_min_known_fraction,
            min_unknown_fraction=self.crop_min_unknown_fraction,
        )

    def pretrain_config(self) -> PretrainConfig:
        synco = None
        if self.synco:
            n1, n2, n3, n4, n5, n6 = self.synco_counts
            synco = SynCoConfig(
                n_hard=self.synco_n_hard, n1=n1, n2=n2, n3=n3, n4=n4, n5=n5, n6=n6,
                alpha_max=self.synco_alpha_max, beta_max=self.synco_beta_max,
                sigma=self.synco_sigma, delta=self.synco_delta, eta=self.synco_eta,
            )  # fmt: skip
        return PretrainConfig(
            steps=self.steps if self.pretrain_steps is None else self.pretrain_steps,
            batch_size=self.pretrain_batch_size,
            lr=self.pretrain_lr,
            weight_decay=self.pretrain_weight_decay,
            key_momentum=self.key_momentum,
            queue_size=self.queue_size,
            temperature=self.temperature,
            projection_dim=self.projection_dim,
            synco=synco,
            synco_direction=self.synco_direction,
            synco_warmup_fraction=self.synco_warmup_fraction,
        )


@dataclass(frozen=True)
class ContMAVInfoNCESynCoConfig(ContMAVInfoNCEConfig):
    synco: bool = True


class ContMAVInfoNCE(ContMAV):
    """ContMAV whose encoder is first pre-trained with label-aware InfoNCE on region crops."""

    name: ClassVar[str] = "contmav-infonce"
    Config: ClassVar[type] = ContMAVInfoNCEConfig
    summary: ClassVar[str] = (
        "ContMAV on an encoder pre-trained with MoCo + label-aware InfoNCE on known/unknown "
        "region crops"
    )

    def __init__(self, config: ContMAVInfoNCEConfig | None = None) -> None:
        super().__init__(config)
        cfg: ContMAVInfoNCEConfig = self.config
        if cfg.synco_direction not in DIRECTIONS:
            raise BadInput(
                f"{self.name}: synco_direction must be one of {', '.join(DIRECTIONS)}, "
                f"got {cfg.synco_direction!r}"
            )
        if len(cfg.synco_counts) != 6 or min(cfg.synco_counts) < 0:
            raise BadInput(f"{self.name}: synco_counts must be six counts >= 0 (n1..n6)")
        if cfg.crop_size < 32 or cfg.crop_size % 32:
            raise BadInput(f"{self.name}: crop_size must be a multiple of 32 (encoder stride)")
        self.fit_report: dict[str, Any] = {}

    def before_training(self, train: Split, ctx: FitContext) -> None:
        cfg: ContMAVInfoNCEConfig = self.config
        bank, cached = load_or_build(
            train, cfg.crop_config(), ctx.outlier_source, cfg.paste_config(), ctx.seed,
            ctx.cache_dir, ctx.train_fingerprint, ctx.progress,
        )  # fmt: skip
        if bank.num_known == 0:
            raise BadInput(f"{self.name}: the crop bank holds no known-class crop")
        encoder = self.model.encoder
        result = pretrain_encoder(
            encoder, encoder.out_channels[-1], bank, cfg.pretrain_config(), ctx.seed,
            ctx.device, ctx.progress, desc=f"fit {self.name} (contrastive)",
        )  # fmt: skip
        self.fit_report = {
            "crops": bank.counts(),
            "crops_cached": cached,
            "unknown_crops_from": "void + pastes" if ctx.outlier_source is not None else "void",
            **result.report(),
        }


class ContMAVInfoNCESynCo(ContMAVInfoNCE):
    """``contmav-infonce`` with SynCo hard negatives across the known/unknown boundary."""

    name: ClassVar[str] = "contmav-infonce-synco"
    Config: ClassVar[type] = ContMAVInfoNCESynCoConfig
    summary: ClassVar[str] = (
        "contmav-infonce with SynCo's six synthetic hard negatives between known and unknown crops"
    )
