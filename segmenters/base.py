"""The segmenter contract: config, forward -> ``SegmenterOutput``, output stride, features.

A segmenter is an ``nn.Module`` built as ``cls(config, num_classes)``. Its forward maps ``[0, 1]``
RGB images ``(B, 3, H, W)`` of any size to a :class:`SegmenterOutput` whose ``logits`` cover the
(scaled) input exactly; post-hoc scores, metrics and every training supervision read only that.
Mask-classification models (one class distribution and one mask per query) also fill
``queries``; their ``logits`` are derived from the queries, so everything downstream works on
them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import nn

from owsbench.checks import Range
from owsbench.errors import BadInput


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture and training recipe of a closed-set segmenter (hashed into its cache key).

    ``supervision`` names the training signal (``owsbench.catalog.SUPERVISIONS``; ``"full"`` =
    cross-entropy on dense labels; weak regimes ``tags``, ``points``, ``scribbles``, ``boxes``
    and ``+`` combinations of them, e.g. ``tags+points``, whose loss is the sum of the parts'
    losses weighted by ``supervision_weights``, 1 for a part it leaves out). The weak regimes'
    options: ``cam_threshold`` (tags: normalised CAM score below which a pixel is background or
    void), ``points_per_object``, ``scribble_length`` (share of each skeleton kept, (0, 1]),
    ``scribble_thickness`` (pixels), ``box_inner_fraction`` (1 = full boxes; < 1 = Box^i, the
    band outside the centred inner box ignored) and ``weak_label_seed`` (the weak labels are
    drawn once from it, the same for every training seed). ``class_weighting`` weighs the
    cross-entropy of every supervision by class frequency (``none``, ``smoothed`` with
    ``class_smooth``, ``median-frequency``, ``log``; ``owsbench.training.class_weights``).
    ``grad_clip`` is the max L2 norm of
    the gradient (None: no clipping); ``validate_every`` logs the validation mIoU every that
    many steps when the training dataset declares a validation split (None: four times per fit,
    ``ceil(steps / 4)``; 0: never).
    """

    arch: str = "deeplabv3plus"
    encoder: str = "resnet18"
    weights_path: str | None = None  # local state_dict file; never downloaded
    supervision: str = "full"
    supervision_weights: dict[str, float] | None = None
    cam_threshold: float = 0.15
    points_per_object: int = 1
    scribble_length: float = 1.0
    scribble_thickness: int = 1
    box_inner_fraction: float = 1.0
    weak_label_seed: int = 0
    class_weighting: Literal["none", "smoothed", "median-frequency", "log"] = "none"
    class_smooth: Annotated[float, Range(gt=0, le=1)] = 0.01
    # a REINFORCE stage after the MLE fit (owsbench.training.reward.RewardConfig's fields)
    reward_tuning: dict[str, Any] | None = None
    steps: Annotated[int, Range(ge=1)] = 600
    batch_size: Annotated[int, Range(ge=1)] = 8
    lr: Annotated[float, Range(gt=0)] = 2e-3
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    # one-cycle schedule: linear warm-up, then cosine decay
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1
    grad_clip: Annotated[float | None, Range(gt=0)] = None
    validate_every: Annotated[int | None, Range(ge=0)] = None
    # training crop (h, w); None = the frame size
    crop: Annotated[tuple[int, int] | None, Range(ge=8, le=8192)] = None
    scale_range: Annotated[tuple[float, float], Range(gt=0, le=8)] = (0.75, 1.5)
    hflip: bool = True
    # max relative change of brightness and contrast
    color_jitter: Annotated[float, Range(ge=0, lt=1)] = 0.25
    # images are resized by this factor before the network
    input_scale: Annotated[float, Range(gt=0, le=4)] = 1.0

    def __post_init__(self) -> None:
        """``BadInput`` unless ``scale_range`` is ordered; each field's own range is declared in
        its annotation and checked where overrides are applied (``owsbench.checks``)."""
        if self.scale_range[0] > self.scale_range[1]:
            raise BadInput(
                f"segmenter.scale_range must be [low, high] with low <= high "
                f"(got {self.scale_range!r})"
            )


@dataclass
class QueryOutputs:
    """Per-query outputs of a mask-classification segmenter: ``class_logits`` ``(B, Q, K + 1)``
    (the last class is "no object") and ``mask_logits`` ``(B, Q, h, w)``; ``auxiliary`` holds the
    same pair from earlier blocks (deep supervision), earliest first."""

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    auxiliary: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@dataclass
class SegmenterOutput:
    """What one segmenter forward pass yields: logits ``(B, K, h, w)``, named features and, for
    mask-classification models, the query outputs the logits were derived from and the class
    scores of head sets methods attached (``extra_logits``, by name; e.g. RbA+OE's)."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    queries: QueryOutputs | None = None
    extra_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    # reductions over the class axis, computed once and shared by every score of this output
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def class_max(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max_k z_k, argmax_k z_k)``, each ``(B, h, w)``, of the logits in at least float32.

        ``torch.max(dim=1)`` (the first index on ties, as ``argmax``), computed once per output;
        on a CPU it is about 10x faster than ``argmax(1)`` over a class axis that is not the
        innermost one."""
        if "class_max" not in self._derived:
            self._derived["class_max"] = tuple(as_float32(self.logits).max(dim=1))
        return self._derived["class_max"]

    def log_probabilities(self) -> torch.Tensor:
        """``log softmax(z)`` over the class axis, in at least float32, computed once per output."""
        if "log_probabilities" not in self._derived:
            self._derived["log_probabilities"] = torch.log_softmax(as_float32(self.logits), dim=1)
        return self._derived["log_probabilities"]


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 (half-precision tensors are upcast; float64 is kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Segmenter(nn.Module):
    """Base class of every segmenter (see the module docstring).

    ``output_stride``: the input is padded to a multiple of it (features keep the padded extent,
    logits are cropped back); ``feature_names``: the keys of ``SegmenterOutput.features``.
    """

    Config: ClassVar[type] = SegmenterConfig
    output_stride: ClassVar[int] = 1
    feature_names: ClassVar[tuple[str, ...]] = ()
    # mask classification (per-query classes and masks, ``logits`` = the derived class scores
    # ``l >= 0``) rather than per-pixel classification (``logits`` = softmax inputs)
    mask_classification: ClassVar[bool] = False
    # the feature a hybrid anomaly head reads unless told otherwise
    head_feature: ClassVar[str] = "decoder"
    # preset name -> config values of this segmenter under that preset (after the preset's sizes)
    preset_values: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: SegmenterConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes

    def dense_losses(
        self, output: SegmenterOutput, labels: torch.Tensor
    ) -> dict[str, torch.Tensor] | None:
        """The model's own loss terms on dense labels ``(B, H, W)`` (``"total"`` minimised), or
        None: the supervision's per-pixel cross-entropy on ``logits`` (the default)."""
        return None

    def set_training_progress(self, step: int, total: int) -> None:  # noqa: B027 - optional
        """Told by the training loop before each step (0-based) of a fit of ``total`` steps;
        for schedules inside the model (default: nothing)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: ``params`` plus the optional keys the training loop reads
        (``lr_scale``, ``start_step``, ``warmup_fraction``; ``owsbench.training.loop``). Default:
        one group of every parameter."""
        return [{"params": list(self.parameters())}]

    def forward(self, images: torch.Tensor) -> SegmenterOutput:  # pragma: no cover - abstract
        raise NotImplementedError
