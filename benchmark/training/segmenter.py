"""Fit a closed-set segmenter with the supervision its config names (``config.supervision``)."""

from __future__ import annotations

from typing import Any

from owsbench.datasets.base import Split
from owsbench.methods.base import FitContext
from owsbench.segmenters.base import Segmenter, SegmenterConfig
from owsbench.training.log import TrainLog
from owsbench.training.regimes import supervision_class
from owsbench.training.segmenter_loop import run_supervised


def train_segmenter(
    model: Segmenter, train: Split, config: SegmenterConfig, context: FitContext
) -> tuple[TrainLog, dict[str, Any]]:
    """Train ``model`` on ``train`` with the supervision ``config.supervision`` names
    (:func:`owsbench.training.segmenter_loop.run_supervised`: its ``prepare`` (weak labels, a
    first stage), then the loop seeded by ``context.seed``). Returns the log and the
    supervision's report; the model is left in eval mode."""
    supervision = supervision_class(config.supervision)(model, config)
    return run_supervised(model, train, config, context, supervision, config.supervision)
