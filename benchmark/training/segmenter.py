"""Fit a closed-set segmenter with the supervision its config names (``config.supervision``)."""

from __future__ import annotations

from functools import partial

import torch

from owsbench.datasets.base import Split
from owsbench.segmenters.base import Segmenter, SegmenterConfig
from owsbench.training.log import TrainLog
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.validation import validation_miou


def train_segmenter(
    model: Segmenter,
    train: Split,
    config: SegmenterConfig,
    seed: int,
    device: torch.device,
    progress: bool = True,
    validation: Split | None = None,
) -> TrainLog:
    """Train ``model`` on ``train`` (AdamW, one-cycle schedule, the shared augmentation, data
    order and augmentation seeded by ``seed``); with ``validation`` and
    ``config.validate_every``, the validation mIoU is logged periodically. The model is left in
    eval mode."""
    from owsbench.catalog import SUPERVISIONS

    supervision = SUPERVISIONS.get(config.supervision)(model, config)
    validate = None
    if validation is not None and len(validation) > 0:
        validate = partial(
            validation_miou, model, validation, model.num_classes, config.batch_size, device
        )
    loop = Loop(
        Recipe.of(config),
        device,
        Streams.seeded(seed),
        augmentation=config,
        validate=validate,
        validate_every=config.validate_every,
        desc=f"fit segmenter ({config.supervision})",
        progress=progress,
    )
    model.to(device).train()
    log = loop.run(model.parameters(), train, supervision)
    model.eval()
    return log
