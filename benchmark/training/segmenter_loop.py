"""Run one supervised training phase of a segmenter: ``prepare``, then the loop."""

from __future__ import annotations

from functools import partial
from typing import Any

from owsbench.datasets.base import Split
from owsbench.methods.base import FitContext
from owsbench.segmenters.base import Segmenter, SegmenterConfig
from owsbench.training.class_weights import cached_class_stats, weight_tensor
from owsbench.training.log import TrainLog
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.supervision import SegmenterSupervision
from owsbench.training.validation import validation_miou


def run_supervised(
    model: Segmenter,
    train: Split,
    config: SegmenterConfig,
    context: FitContext,
    supervision: SegmenterSupervision,
    label: str,
) -> tuple[TrainLog, dict[str, Any]]:
    """Train ``model`` on ``train`` with ``supervision`` (after its ``prepare``): AdamW,
    one-cycle schedule, the shared augmentation, data order and augmentation seeded by
    ``context.seed``; with ``context.validation`` and ``config.validate_every`` the validation
    mIoU is logged periodically; with ``config.class_weighting`` every CE of the supervision is
    weighted by class frequency over ``train`` (the weights join the report). Returns the log
    and the supervision's report; the model is
    left in eval mode. ``label`` names the phase on the progress bar."""
    report: dict[str, Any] = {}
    if config.class_weighting != "none":
        stats, _, _ = cached_class_stats(
            train, model.num_classes, context.train_fingerprint,
            context.cache_dir, context.progress,
        )  # fmt: skip
        weight = weight_tensor(config.class_weighting, stats, config.class_smooth)
        supervision.set_class_weight(weight)
        report["class_weights"] = [round(float(w), 6) for w in weight]
    supervision.prepare(train, context)
    validate = None
    validation = context.validation
    if validation is not None and len(validation) > 0:
        validate = partial(
            validation_miou, model, validation, model.num_classes, config.batch_size,
            context.device,
        )  # fmt: skip
    loop = Loop(
        Recipe.of(config),
        context.device,
        Streams.seeded(context.seed),
        augmentation=config,
        validate=validate,
        validate_every=config.validate_every,
        desc=f"fit segmenter ({label})",
        progress=context.progress,
        processes=context.processes,
    )
    model.to(context.device).train()
    log = loop.run(model.parameters(), train, supervision)
    model.eval()
    return log, {**report, **supervision.report()}
