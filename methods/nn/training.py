"""Supervised training of a closed-set segmenter: cross-entropy, AdamW, one-cycle schedule.

Batches are drawn from the training split in a seeded order (a fresh permutation per epoch),
augmented on the fly (random rescale, random crop to the training crop size, horizontal flip,
brightness and contrast jitter) and fed to the model; void pixels (255) are ignored by the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from owsbench.datasets.base import VOID, Split
from owsbench.methods.base import image_batch
from owsbench.methods.nn.smp_segmenter import SegmenterConfig


@dataclass
class TrainLog:
    """Per-step training loss and learning rate (the training curve)."""

    loss: list[float]
    lr: list[float]


def frame_order(num_frames: int, steps: int, batch_size: int, rng: np.random.Generator):
    """Yield ``steps`` batches of frame indices, one seeded permutation per epoch."""
    pool: list[int] = []
    for _ in range(steps):
        while len(pool) < batch_size:
            pool.extend(rng.permutation(num_frames).tolist())
        yield pool[:batch_size]
        del pool[:batch_size]


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: SegmenterConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rescale, random crop (void-padded when smaller) to ``config.crop``, flip, jitter."""
    _, _, frame_h, frame_w = images.shape
    height, width = config.crop or (frame_h, frame_w)
    lo, hi = config.scale_range
    scale = lo + (hi - lo) * torch.rand((), generator=generator).item()
    new_h, new_w = max(8, round(frame_h * scale)), max(8, round(frame_w * scale))
    images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False)
    labels = F.interpolate(labels[:, None].float(), size=(new_h, new_w), mode="nearest")[:, 0]
    labels = labels.long()
    if new_h < height or new_w < width:
        pad = (0, max(0, width - new_w), 0, max(0, height - new_h))
        images = F.pad(images, pad, value=0.0)
        labels = F.pad(labels, pad, value=VOID)
    top = int(torch.randint(0, images.shape[2] - height + 1, (), generator=generator))
    left = int(torch.randint(0, images.shape[3] - width + 1, (), generator=generator))
    images = images[:, :, top : top + height, left : left + width]
    labels = labels[:, top : top + height, left : left + width]
    if config.hflip and torch.rand((), generator=generator) < 0.5:
        images, labels = images.flip(-1), labels.flip(-1)
    if config.color_jitter > 0:
        images = jitter_brightness_contrast(images, config.color_jitter, generator).clamp(0.0, 1.0)
    return images.contiguous(), labels.contiguous()


def jitter_brightness_contrast(
    images: torch.Tensor, jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """Per image: contrast about the image mean, then brightness, each a factor drawn from
    ``U(1 - jitter, 1 + jitter)`` (brightness drawn first); not clamped."""
    batch = images.shape[0]
    brightness = 1 + jitter * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    contrast = 1 + jitter * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast.to(images) + mean) * brightness.to(images)


def one_cycle_lr(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_fraction`` of the steps, then cosine to zero."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train_segmenter(
    model: torch.nn.Module,
    train: Split,
    config: SegmenterConfig,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> TrainLog:
    """Train ``model`` (returning ``SegmenterOutput``) on ``train`` with cross-entropy."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    log = TrainLog(loss=[], lr=[])
    order = frame_order(len(train), config.steps, config.batch_size, rng)
    bar = tqdm(order, total=config.steps, desc="fit segmenter", disable=not progress, leave=False)
    for step, indices in enumerate(bar):
        frames = [train[i] for i in indices]
        images = image_batch([f.image for f in frames])
        labels = torch.from_numpy(np.stack([f.semantic for f in frames])).long()
        images, labels = augment(images, labels, config, generator)
        lr = one_cycle_lr(step, config.steps, config.lr, config.warmup_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(images.to(device)).logits
        if logits.shape[-2:] != labels.shape[-2:]:  # a model that runs at a scaled resolution
            labels = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")
            labels = labels[:, 0].long()
        loss = F.cross_entropy(logits, labels.to(device), ignore_index=VOID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.loss.append(loss.item())
        log.lr.append(lr)
        bar.set_postfix(loss=f"{log.loss[-1]:.3f}")
    model.eval()
    return log
