"""Statistics over a frozen segmenter: stream a training split through it once, no augmentation.

Shared by the post-hoc methods that gather statistics in ``fit`` (SML's per-class max-logit
moments, FRE's feature samples).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from owsbench.datasets.base import Split
from owsbench.methods.base import image_batch, iter_batches
from owsbench.segmenters.base import SegmenterOutput


def visit_frozen_outputs(
    segmenter: torch.nn.Module,
    split: Split,
    batch_size: int,
    limit: int | None,
    device: torch.device,
    visit: Callable[[SegmenterOutput], None],
    progress: bool = True,
    desc: str = "statistics",
) -> None:
    """Call ``visit`` with the segmenter's output (eval mode, inference mode) for every run of
    same-sized consecutive frames of the first ``limit`` frames of ``split`` (all when None), in
    batches of ``batch_size``, in order; the segmenter's training mode is restored after."""
    frames = len(split) if limit is None else min(limit, len(split))
    was_training = segmenter.training
    segmenter.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(
                iter_batches(split, batch_size, limit), total=math.ceil(frames / batch_size),
                desc=desc, unit="batch", disable=not progress, leave=False,
            ):  # fmt: skip
                # frames of one size per forward pass (a split may mix image sizes)
                for _, run in itertools.groupby(batch, key=lambda frame: frame.image.shape):
                    visit(segmenter(image_batch([frame.image for frame in run], device)))
    finally:
        segmenter.train(was_training)
