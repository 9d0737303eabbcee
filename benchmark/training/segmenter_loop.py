"""Run one supervised training phase of a segmenter: ``prepare``, then the loop."""

from __future__ import annotations

from typing import Any

from owsbench.datasets.base import Split
from owsbench.methods.base import FitContext
from owsbench.segmenters.base import Segmenter, SegmenterConfig
from owsbench.training.class_weights import cached_class_stats, weight_tensor
from owsbench.training.log import TrainLog
from owsbench.training.loop import Hook, Loop, Recipe, Streams
from owsbench.training.supervision import SegmenterSupervision
from owsbench.training.validation import periodic_validation, validation_interval


class ProgressHook(Hook):
    """Tells the segmenter each step before its losses (``Segmenter.set_training_progress``:
    schedules inside the model, e.g. EoMT's masked-attention annealing)."""

    def __init__(self, model: Segmenter) -> None:
        self.model = model

    def before_step(self, loop: Loop, step: int) -> None:
        self.model.set_training_progress(step, loop.recipe.steps)

    def resume_state(self) -> dict[str, Any]:
        """Nothing: the progress is set from the step before every step, a resumed one too."""
        return {}


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
    weighted by class frequency over ``train`` (the weights join the report); the optimiser
    gets the model's ``parameter_groups`` and the model its step (``ProgressHook``). Returns the log
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
    validate = periodic_validation(model, context, config.batch_size)
    loop = Loop(
        Recipe.of(config),
        context.device,
        Streams.seeded(context.seed),
        augmentation=config,
        hooks=[ProgressHook(model)],
        validate=validate,
        validate_every=validation_interval(config.validate_every, config.steps),
        desc=f"fit segmenter ({label})",
        progress=context.progress,
        processes=context.processes,
    )
    model.to(context.device).train()
    log = loop.run(model.parameter_groups(), train, supervision)
    model.eval()
    return log, {**report, **supervision.report()}
