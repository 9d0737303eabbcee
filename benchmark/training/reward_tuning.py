"""The reward-tuning phase of a segmenter: the MLE-fitted model, then REINFORCE on the task
reward (:mod:`owsbench.training.reward`) on the one training loop."""

from __future__ import annotations

from typing import Any

import torch

from owsbench.datasets.base import Split
from owsbench.methods.base import FitContext
from owsbench.segmenters.base import Segmenter, SegmenterConfig
from owsbench.training.class_weights import cached_class_stats, weight_tensor
from owsbench.training.log import TrainLog
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.reward import RewardConfig, RewardSupervision, summarise
from owsbench.training.validation import (
    periodic_validation,
    validation_interval,
    validation_miou,
)

TUNING_SEED_OFFSET = 7919  # the tuning phase's streams differ from the MLE phase's


def reward_weights(
    model: Segmenter, train: Split, config: SegmenterConfig, tuning: RewardConfig, ctx: FitContext
) -> torch.Tensor | None:
    """The class weights of ``class-weighted-miou`` (the segmenter's ``class_weighting``,
    median-frequency when it is ``none``); None for the other rewards."""
    if tuning.reward != "class-weighted-miou":
        return None
    stats, _, _ = cached_class_stats(
        train, model.num_classes, ctx.train_fingerprint, ctx.cache_dir, ctx.progress
    )
    mode = config.class_weighting if config.class_weighting != "none" else "median-frequency"
    return weight_tensor(mode, stats, config.class_smooth)


def tune_segmenter(
    model: Segmenter, train: Split, config: SegmenterConfig, context: FitContext
) -> tuple[TrainLog, dict[str, Any]]:
    """Tune ``model`` (already loaded with its MLE fit) with ``config.reward_tuning``: AdamW,
    one-cycle schedule with the tuning's ``lr`` and ``steps``, the shared augmentation, streams
    seeded from ``context.seed``. Returns the log (loss = the tuning objective; scalars
    ``policy``, ``reward``, ``reward_var``, ``advantage_var``; validation mIoU every
    ``config.validate_every`` tuning steps, four times by default) and the report: the reward
    summary and, with a validation split, the validation mIoU before and after."""
    tuning = RewardConfig(**config.reward_tuning)
    seed = context.seed + TUNING_SEED_OFFSET
    model.to(context.device)  # before validation and the KL reference copy
    weight = reward_weights(model, train, config, tuning, context)
    supervision = RewardSupervision(model, config, tuning, weight, seed, context.device)
    validation = context.validation if context.validation is not None else ()
    report: dict[str, Any] = {"reward": tuning.reward, "baseline": tuning.baseline}
    if len(validation):
        before = validation_miou(model, validation, model.num_classes, 1, context.device)
        report["val_miou_before"] = before["mIoU"]
    recipe = Recipe(
        steps=tuning.steps, batch_size=tuning.batch_size, lr=tuning.lr,
        weight_decay=config.weight_decay, warmup_fraction=tuning.warmup_fraction,
        grad_clip=config.grad_clip,
    )  # fmt: skip
    loop = Loop(
        recipe, context.device, Streams.seeded(seed), augmentation=config,
        validate=periodic_validation(model, context, config.batch_size),
        validate_every=validation_interval(config.validate_every, tuning.steps),
        desc=f"reward-tune segmenter ({tuning.reward})", progress=context.progress,
        processes=context.processes,
    )  # fmt: skip
    model.train()
    log = loop.run(model.parameters(), train, supervision)
    model.eval()
    report.update(summarise(log.scalars))
    if len(validation):
        after = validation_miou(model, validation, model.num_classes, 1, context.device)
        report["val_miou_after"] = after["mIoU"]
    model.eval()
    return log, report
