"""Training batches: what a batch holds, the seeded frame order, the shared augmentation.

Batches are drawn from the training split in a seeded order (a fresh permutation per epoch) and
augmented on the fly (random rescale, random crop to the training crop size, horizontal flip,
brightness and contrast jitter); the dense label map moves with the image (nearest neighbour,
void-padded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from owsbench.datasets.base import VOID
from owsbench.errors import BadInput


class AugmentConfig(Protocol):
    """The augmentation fields a config carries (``SegmenterConfig`` and every trained method's
    config name them alike)."""

    crop: tuple[int, int] | None
    scale_range: tuple[float, float]
    hflip: bool
    color_jitter: float


@dataclass
class Batch:
    """One training batch: ``images`` ``(B, 3, H, W)`` in ``[0, 1]``, an optional dense
    ``labels`` map ``(B, H, W)`` that augmentation moves with the images, and other targets in
    ``extras`` (e.g. image-level tags; augmentation leaves them as they are)."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Batch:
        """The batch with its tensors on ``device``."""
        labels = self.labels.to(device) if self.labels is not None else None
        extras = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()
        }
        return replace(self, images=self.images.to(device), labels=labels, extras=extras)


def check_label_range(labels: torch.Tensor, num_classes: int, what: str, *allowed: int) -> None:
    """``BadInput`` when a label is neither a class id ``0..num_classes-1`` nor void nor one of
    ``allowed`` (e.g. the outlier-exposure paste label)."""
    bad = (labels < 0) | (labels >= num_classes)
    for value in (VOID, *allowed):
        bad &= labels != value
    if bad.any():
        raise BadInput(
            f"{what}: label {int(labels[bad][0])} outside 0..{num_classes - 1}; "
            "set num_classes to the training set's class count"
        )


class FrameOrder:
    """``steps`` batches of frame indices, one seeded permutation per epoch (drawn lazily from
    ``rng`` when the previous one runs out). An iterator whose position (``state_dict``: the
    batches given and the rest of the current permutation) a loop checkpoint saves and
    restores; ``rng``'s own state is saved with the loop's streams."""

    def __init__(
        self, num_frames: int, steps: int, batch_size: int, rng: np.random.Generator
    ) -> None:
        self.num_frames, self.steps, self.batch_size, self.rng = num_frames, steps, batch_size, rng
        self.given = 0
        self.pool: list[int] = []

    def __iter__(self) -> FrameOrder:
        return self

    def __next__(self) -> list[int]:
        if self.given >= self.steps:
            raise StopIteration
        while len(self.pool) < self.batch_size:
            self.pool.extend(self.rng.permutation(self.num_frames).tolist())
        batch = self.pool[: self.batch_size]
        del self.pool[: self.batch_size]
        self.given += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"given": self.given, "pool": list(self.pool)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.given, self.pool = int(state["given"]), list(state["pool"])


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rescale, random crop (void-padded when smaller) to ``config.crop``, flip, jitter.

    ``labels`` is one dense map per image ``(B, H, W)`` or several ``(B, R, H, W)`` (e.g. the
    label maps of a combined supervision); every map moves with its image."""
    _, _, frame_h, frame_w = images.shape
    height, width = config.crop or (frame_h, frame_w)
    maps = labels if labels.dim() == 4 else labels[:, None]
    lo, hi = config.scale_range
    scale = lo + (hi - lo) * torch.rand((), generator=generator).item()
    new_h, new_w = max(8, round(frame_h * scale)), max(8, round(frame_w * scale))
    images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False)
    maps = F.interpolate(maps.float(), size=(new_h, new_w), mode="nearest").long()
    if new_h < height or new_w < width:
        pad = (0, max(0, width - new_w), 0, max(0, height - new_h))
        images = F.pad(images, pad, value=0.0)
        maps = F.pad(maps, pad, value=VOID)
    top = int(torch.randint(0, images.shape[2] - height + 1, (), generator=generator))
    left = int(torch.randint(0, images.shape[3] - width + 1, (), generator=generator))
    images = images[:, :, top : top + height, left : left + width]
    maps = maps[:, :, top : top + height, left : left + width]
    if config.hflip and torch.rand((), generator=generator) < 0.5:
        images, maps = images.flip(-1), maps.flip(-1)
    if config.color_jitter > 0:
        images = jitter_brightness_contrast(images, config.color_jitter, generator).clamp(0.0, 1.0)
    labels = maps if labels.dim() == 4 else maps[:, 0]
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


def sample_with_replacement(
    num_items: int, steps: int, batch_size: int, rng: np.random.Generator
) -> Iterator[list[int]]:
    """Yield ``steps`` batches of ``batch_size`` indices drawn uniformly with replacement."""
    for _ in range(steps):
        yield rng.integers(0, num_items, batch_size).tolist()
