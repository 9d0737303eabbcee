"""Validation during training: the mIoU of a segmenter on a labelled split."""

from __future__ import annotations

import torch

from owsbench.datasets.base import Split
from owsbench.methods.base import image_batch, iter_batches
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
                labels = torch.from_numpy(frame.semantic)[None]
                pred = labels_at(logits.argmax(1).cpu(), labels.shape[-2:])
                metric.update(pred[0].numpy(), frame.semantic)
    finally:
        model.train()
    return {"mIoU": float(metric.compute()["mIoU"])}
