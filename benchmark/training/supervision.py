"""What a training batch holds and which losses it gives: the ``Supervision`` contract.

A supervision builds a :class:`~owsbench.training.batches.Batch` from the items the loop's data
order picked (``batch``) and turns a batch (on the device, after augmentation) into named loss
terms whose ``"total"`` the loop minimises (``losses``). Segmenter supervisions are registered by
id in ``owsbench.catalog.SUPERVISIONS`` and chosen with ``segmenter: {supervision: ID}``; the id
is a field of the segmenter's config, hence of its fit's cache key. Trained methods bring their
own supervision (e.g. ContMAV's batch with outlier-exposure pastes and its four losses).

A segmenter supervision may need work before the loop (``prepare``: e.g. deriving weak labels,
or a first training stage) and report what it did (``report``: stored with the fit, copied into
rows' ``fit_report``). :mod:`owsbench.training.regimes` resolves a config's id, including ``+``
combinations of weak regimes (:mod:`owsbench.training.weak`), and checks it against a dataset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from owsbench.datasets.base import Frame, Split
from owsbench.methods.base import FitContext, image_batch
from owsbench.segmenters.base import Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.losses import labels_at, semantic_ce
from owsbench.training.resume import buffers_of, load_buffers


class Supervision(ABC):
    """Batches and losses of one training phase (see the module docstring)."""

    @abstractmethod
    def batch(self, items: list, rng: np.random.Generator) -> Batch:
        """The batch of ``items`` (frames of the training split, or any items the loop's source
        holds); ``rng`` is the loop's batch stream."""

    @abstractmethod
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of ``batch``; ``"total"`` is minimised."""

    def resume_state(self) -> dict[str, Any] | None:
        """What changes during the loop besides the trained parameters, for the loop's
        checkpoints (:mod:`owsbench.training.resume`); None (the default): not known, so a loop
        with this supervision writes no checkpoint and a killed fit starts again."""
        return None

    def load_resume_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Put back what ``resume_state`` returned."""


class SegmenterSupervision(Supervision):
    """A supervision of a closed-set segmenter: built as ``cls(model, config)``; ``losses`` runs
    the model and hands its output to ``output_losses``. Subclasses give ``name`` and
    ``output_losses`` (and ``batch`` when a batch holds more than dense labels)."""

    name: ClassVar[str]
    # whether it needs the training dataset's instance ids (``LabelTraits.provides_instances``)
    needs_instances: ClassVar[bool] = False

    def __init__(self, model: Segmenter, config: SegmenterConfig) -> None:
        self.model = model
        self.config = config
        self.class_weight: torch.Tensor | None = None  # of the CE (``class_weighting``)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        """The class weights every cross-entropy of this supervision uses (None: unweighted)."""
        self.class_weight = weight

    def prepare(self, train: Split, context: FitContext) -> None:
        """Runs once before the loop, with the split the loop trains on (default: nothing)."""

    def report(self) -> dict[str, Any]:
        """What the supervision did, for the fit's report (default: nothing)."""
        return {}

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        """Images and dense semantic labels, checked against the model's class count."""
        images = image_batch([f.image for f in items])
        labels = torch.from_numpy(np.stack([f.semantic for f in items])).long()
        check_label_range(labels, self.model.num_classes, f"supervision {self.name}")
        return Batch(images=images, labels=labels)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.output_losses(self.model(batch.images), batch)

    def resume_state(self) -> dict[str, Any] | None:
        """The model's buffers (batch-norm statistics)."""
        return {"buffers": buffers_of(self.model)}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        load_buffers(self.model, state["buffers"])

    @abstractmethod
    def output_losses(self, output: SegmenterOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms from the model's output on ``batch``."""


class FullSupervision(SegmenterSupervision):
    """``full``: dense labels, cross-entropy over every labelled pixel (void ignored); labels are
    resized (nearest) to the logits when the model runs at a scaled resolution. A segmenter with
    its own loss on dense labels (``Segmenter.dense_losses``, e.g. EoMT's mask-classification
    loss) is trained with that instead."""

    name: ClassVar[str] = "full"

    def output_losses(self, output: SegmenterOutput, batch: Batch) -> dict[str, torch.Tensor]:
        own = self.model.dense_losses(output, batch.labels)
        if own is not None:
            return own
        labels = labels_at(batch.labels, output.logits.shape[-2:])
        return {"total": semantic_ce(output.logits, labels, self.class_weight)}
