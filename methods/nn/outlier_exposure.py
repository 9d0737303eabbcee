"""Outlier exposure: paste cut-outs into training frames, labelled like test anomalies.

Methods that learn what an anomaly looks like (``contmav-trufor``, ``dual-head``, the trainable
anomaly heads) train on frames of the *training* split with objects from the dataset's
outlier-exposure source (``FitContext.outlier_source``; for synthstreets, families disjoint from
the test anomalies) pasted on the road or sidewalk with the shared paste code
(:func:`owsbench.datasets.paste.ground_placement`, :func:`~owsbench.datasets.paste.paste_object`),
so a paste is labelled exactly like a test anomaly: semantic void, anomaly 1.

A batch carries both targets in one label map so the shared augmentation (rescale, crop, flip)
moves them together: known classes ``0..K-1``, void ``255`` and pasted pixels ``OUTLIER = 254``.
:func:`split_outlier_labels` separates them after augmentation into the semantic target (pastes
void) and the anomaly target (paste 1, known 0, void and padding 255 = ignored).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from owsbench.checks import Range
from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.paste import ground_placement, paste_object
from owsbench.errors import BadInput
from owsbench.methods.base import image_batch

OUTLIER = 254  # label of pasted pixels inside a training batch (before split_outlier_labels)


@dataclass(frozen=True)
class PasteConfig:
    """How many objects go into a training frame, and how large they are."""

    # chance that a frame receives pastes at all
    probability: Annotated[float, Range(ge=0, le=1)] = 0.5
    max_objects: Annotated[int, Range(ge=1, le=64)] = 2  # 1..max_objects objects per pasted frame
    # object height in camera heights (see paste)
    size_range: Annotated[tuple[float, float], Range(gt=0, le=4)] = (0.3, 0.9)


@dataclass(frozen=True)
class PasteFields:
    """The ``PasteConfig`` as flat fields of a method's config (``paste_*``), so run configs set
    them like any other option; ``paste_config()`` gathers them."""

    # chance that a training frame receives pastes
    paste_probability: Annotated[float, Range(ge=0, le=1)] = 0.5
    # 1..paste_max_objects objects per pasted frame
    paste_max_objects: Annotated[int, Range(ge=1, le=64)] = 2
    # object height in camera heights
    paste_size_range: Annotated[tuple[float, float], Range(gt=0, le=4)] = (0.3, 0.9)

    def paste_config(self) -> PasteConfig:
        return PasteConfig(
            probability=self.paste_probability,
            max_objects=self.paste_max_objects,
            size_range=tuple(self.paste_size_range),
        )


@dataclass(frozen=True)
class HeadFitFields(PasteFields):
    """The recipe of heads fitted on outlier-exposure pastes over a frozen segmenter (the
    anomaly heads, RbA+OE): fields named like ``SegmenterConfig``'s so presets size them; 150
    steps of 128x128 crops, lr 1e-3 (short CPU runs), and the ``paste_*`` fields."""

    steps: Annotated[int, Range(ge=1)] = 150
    batch_size: Annotated[int, Range(ge=1)] = 8
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 0.05
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1
    crop: Annotated[tuple[int, int] | None, Range(ge=8, le=8192)] = (128, 128)
    scale_range: Annotated[tuple[float, float], Range(gt=0, le=8)] = (0.75, 1.5)
    hflip: bool = True
    color_jitter: Annotated[float, Range(ge=0, lt=1)] = 0.25


def head_fit_source(
    method: str, segmenter: object | None, train: Sized, source: object | None
) -> object:
    """The outlier-exposure source of a head fitted over a frozen segmenter, after checking
    that the segmenter is attached (``RuntimeError``) and ``train`` not empty (``BadInput``)."""
    if segmenter is None:
        raise RuntimeError(f"{method}: no segmenter attached")
    if len(train) == 0:
        raise BadInput(f"{method}: empty training split")
    return require_source(method, source)


def require_source(method: str, source: object | None) -> object:
    """The outlier-exposure source, or a one-line error saying the dataset has none."""
    if source is None:
        raise BadInput(
            f"{method} trains with outlier exposure, but the training dataset has no "
            "outlier-exposure source (synthstreets has one)"
        )
    return source


def paste_outliers(
    frame: Frame, source, rng: np.random.Generator, config: PasteConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` with 0..``max_objects`` pasted cut-outs: ``(image uint8, labels)``, where
    ``labels`` holds the known classes, ``255`` void and ``OUTLIER`` on the pastes."""
    image, semantic = frame.image, frame.semantic
    if semantic is None:
        raise BadInput(f"frame {frame.frame_id}: outlier exposure needs semantic labels")
    pasted = np.zeros(semantic.shape, bool)
    if rng.random() < config.probability:
        for _ in range(int(rng.integers(1, config.max_objects + 1))):
            where = ground_placement(semantic, rng, config.size_range)
            if where is None:
                break
            cutout, _family = source.sample(rng)
            image, semantic, anomaly = paste_object(image, semantic, None, cutout, *where)
            pasted |= anomaly == 1
    labels = np.where(pasted, OUTLIER, semantic).astype(np.uint8)
    return image, labels


def outlier_batch(
    frames: list[Frame], source, rng: np.random.Generator, config: PasteConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch with pastes: images ``(B, 3, H, W)`` in [0, 1] and labels ``(B, H, W)``
    (long; ``OUTLIER`` on pasted pixels)."""
    pairs = [paste_outliers(f, source, rng, config) for f in frames]
    images = image_batch([p[0] for p in pairs])
    labels = torch.from_numpy(np.stack([p[1] for p in pairs])).long()
    return images, labels


def split_outlier_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(semantic, anomaly)`` targets from a batch label map: pastes become void in the
    semantic target; the anomaly target is 1 on pastes, 0 on known pixels and 255 elsewhere."""
    pasted = labels == OUTLIER
    semantic = labels.masked_fill(pasted, VOID)
    anomaly = torch.full_like(labels, VOID)
    anomaly[semantic != VOID] = 0
    anomaly[pasted] = 1
    return semantic, anomaly
