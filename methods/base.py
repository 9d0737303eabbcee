"""The Method contract: image batch in, semantic prediction and anomaly map out.

Every method, post-hoc or trained, is a ``Method``. Images are float tensors ``(B, 3, H, W)``
in ``[0, 1]`` RGB (normalisation happens inside the model). Anomaly maps follow the project
convention: **higher = more anomalous**; methods whose natural output is a confidence negate it
themselves.

Post-hoc methods (``PosthocMethod``) are pure functions of a shared segmenter's outputs, so the
runner computes every post-hoc score on one segmenter from a single forward pass
(``score(outputs)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from owsbench.datasets.base import LabelTraits, Split
from owsbench.segmenters.base import SegmenterOutput
from owsbench.training.log import TrainLog


@dataclass(frozen=True)
class NoConfig:
    """Config of a method that has no hyperparameters."""


@dataclass
class Prediction:
    """A batch of predictions at the input resolution (or the model's; the runner upsamples).

    ``semantic``: ``(B, H, W)`` long class ids; ``anomaly``: ``(B, H, W)`` float, higher = more
    anomalous; ``logits``: optional ``(B, K, H, W)``; ``extras``: named method-specific maps.
    """

    semantic: torch.Tensor
    anomaly: torch.Tensor
    logits: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class FitContext:
    """What a fit may use besides the training split."""

    seed: int
    device: torch.device
    cache_dir: Path
    preset: str = "default"
    progress: bool = True
    max_stat_frames: int | None = None  # cap on frames read for post-hoc statistics
    # cut-outs for outlier exposure (an ``ObjectSource``) when the training dataset has one
    outlier_source: Any | None = None
    # a labelled validation split of the training dataset (never an evaluation split of the run's
    # test data), for choices made on validation data; None when the dataset has none
    validation: Split | None = None
    # the training dataset's fingerprint (``Dataset.fingerprint``), for caches of derived data
    # (e.g. crop banks); None for in-memory splits, which are then not cached
    train_fingerprint: str | None = None
    # what the training labels offer weak supervision (instance ids, thing classes, background)
    label_traits: LabelTraits = field(default_factory=LabelTraits)
    # processes a segmenter fit (and a ``data_parallel`` method's fit) trains on, data-parallel
    # (``owsbench.training.distributed``)
    processes: int = 1


class Method(ABC):
    """Base class of every method (see module docstring).

    Declared properties the runner reads: ``shares_segmenter`` (post-hoc: scored from a shared
    segmenter's forward pass; else the method owns its model and its config takes the preset's
    training sizes), ``inference_fields`` (config fields that only change inference: left out of
    the fit's cache key, so trying another value reuses the checkpoint), ``preset_values``
    (per preset name, config values of this class and its subclasses, e.g. the paper recipe) and
    ``tuning_stage`` (its config has a ``reward_tuning`` field: when set, the runner fits the
    method without it (cached on its own), loads that fit and calls ``tune``) and
    ``data_parallel`` (its training loops may run on ``FitContext.processes`` processes: every
    loss is a batch mean and nothing but the parameters, the optimiser and what the objective
    derives from the global batch carries over between steps; see :meth:`loop_processes`).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    shares_segmenter: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    inference_fields: ClassVar[tuple[str, ...]] = ()
    preset_values: ClassVar[dict[str, dict[str, Any]]] = {}
    tuning_stage: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = False

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.train_log: TrainLog | None = None  # the training curve of the last fit
        self.fit_report: dict[str, Any] = {}  # choices made during the fit (reaches rows)

    def fit_meta(self) -> dict[str, Any]:
        """What a fit leaves besides its state (stored with the checkpoint): the training curve
        (``train_loss``, ``lr``, ``validation``) and ``report``."""
        extra = self.train_log.meta() if self.train_log is not None else {}
        if self.fit_report:
            extra["report"] = dict(self.fit_report)
        return extra

    def loop_processes(self, ctx: FitContext) -> int:
        """Processes this method's training loops run on: ``ctx.processes`` (``--procs-per-job``)
        when it is ``data_parallel``, else 1 (a method whose objective accumulates statistics
        over batches, e.g. ContMAV's class means, would accumulate only a slice of each batch
        on each process)."""
        return ctx.processes if self.data_parallel else 1

    def fit(self, train: Split, ctx: FitContext) -> None:  # noqa: B027 - optional hook
        """Fit on the training split; the default does nothing."""

    def tune(self, train: Split, ctx: FitContext) -> None:
        """The reward-tuning stage of a fitted method (``tuning_stage``); sets ``train_log``
        and ``fit_report`` like ``fit``."""
        raise NotImplementedError(f"{self.name} has no tuning stage")

    @abstractmethod
    def predict(self, images: torch.Tensor) -> Prediction:
        """Predict a batch of images ``(B, 3, H, W)`` in ``[0, 1]``."""

    def start_split(self) -> None:  # noqa: B027 - optional hook
        """Called before a split is streamed through ``predict`` (batches in order); methods
        whose predictions keep state across images (e.g. novel-class discovery) reset it here.
        The default does nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Everything ``fit`` learned, as tensors / plain values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what ``state_dict`` returned."""


class PosthocMethod(Method):
    """A score computed from a shared segmenter's outputs (logits, optionally features)."""

    shares_segmenter: ClassVar[bool] = True
    needs_fit: ClassVar[bool] = False  # True when fit() gathers statistics over the train split

    def __init__(self, config: Any | None = None, segmenter: torch.nn.Module | None = None) -> None:
        super().__init__(config)
        self.segmenter = segmenter

    @classmethod
    def check_segmenter(cls, segmenter_cls: type, config: Any) -> None:
        """``BadInput`` when the method cannot score a segmenter of ``segmenter_cls`` under
        ``config`` (checked when a run is planned; default: every segmenter works)."""

    @abstractmethod
    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        """Anomaly map ``(B, h, w)`` at the logits' resolution; higher = more anomalous."""

    def predict(self, images: torch.Tensor) -> Prediction:
        if self.segmenter is None:
            raise RuntimeError(f"{self.name}: no segmenter attached")
        with torch.inference_mode():
            outputs = self.segmenter(images)
        return Prediction(
            semantic=outputs.class_max()[1], anomaly=self.score(outputs), logits=outputs.logits
        )


def is_mask_model(segmenter: object | None) -> bool:
    """Whether ``segmenter`` is a mask-classification model (``Segmenter.mask_classification``:
    its logits are non-negative class scores ``l`` derived from query masks)."""
    return bool(getattr(segmenter, "mask_classification", False))


def image_batch(images: list, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack ``(H, W, 3)`` uint8 RGB arrays into a float ``(B, 3, H, W)`` tensor in ``[0, 1]``."""
    return model_input(torch.from_numpy(np.stack(images)), device)


def model_input(pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 RGB -> float ``(B, 3, H, W)`` in ``[0, 1]`` on ``device`` (the
    uint8 copy does not block when ``pixels`` is in pinned memory; converted on the device)."""
    batch = pixels.permute(0, 3, 1, 2).to(device, non_blocking=True)
    return batch.to(torch.float32).div_(255.0)


def iter_batches(split: Split, batch_size: int, limit: int | None = None):
    """Yield lists of consecutive frames of ``split`` (the first ``limit`` frames when given)."""
    n = len(split) if limit is None else min(limit, len(split))
    for start in range(0, n, batch_size):
        yield [split[i] for i in range(start, min(start + batch_size, n))]
