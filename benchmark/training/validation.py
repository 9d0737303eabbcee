"""Validation during training: the mIoU of a segmenter on a labelled split."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from owsbench.datasets.base import Split
from owsbench.methods.base import FitContext, image_batch, iter_batches
from owsbench.metrics import SemanticMetric
from owsbench.training.losses import labels_at


@torch.no_grad()
def validation_miou(
    model: torch.nn.Module, split: Split, num_classes: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """``{"mIoU": ...}`` of ``model`` (a segmenter) on ``split``, predictions resized to the
    labels by nearest neighbour; the model is put back in training mode afterwards."""
    metric = SemanticMetric(num_classes)
    model.eval()
    try:
        for frames in iter_batches(split, batch_size):
            for frame in frames:
                logits = model(image_batch([frame.image], device)).logits
                pred = labels_at(logits.max(1).indices.cpu(), frame.semantic.shape[-2:])
                metric.update(pred[0].numpy(), frame.semantic)
    finally:
        model.train()
    return {"mIoU": float(metric.compute()["mIoU"])}


def periodic_validation(
    model: torch.nn.Module, context: FitContext, batch_size: int
) -> Callable[[], dict[str, float]] | None:
    """The ``validate`` callable of a fit's :class:`~owsbench.training.loop.Loop`: the
    :func:`validation_miou` of ``model`` on ``context.validation`` (None without one)."""
    validation = context.validation
    if validation is None or len(validation) == 0:
        return None
    return partial(
        validation_miou, model, validation, model.num_classes, batch_size, context.device
    )


VALIDATIONS_PER_FIT = 4  # validate_every None: this many validation records per fit


def validation_interval(validate_every: int | None, steps: int) -> int | None:
    """The steps between validations: ``validate_every``, or ``ceil(steps / 4)`` when it is
    None; None (never) when it is 0."""
    if validate_every is None:
        return max(1, math.ceil(steps / VALIDATIONS_PER_FIT))
    return validate_every or None
