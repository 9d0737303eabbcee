"""The dataset contract: frames, splits and dataset adapters.

Conventions (DESIGN.md): images are ``H x W x 3`` uint8 RGB; semantic labels are ``H x W`` uint8
class ids ``0..K-1`` in the dataset's known-class space with ``255`` = void; anomaly labels are
``H x W`` uint8 with ``0`` = inlier, ``1`` = anomaly, ``255`` = void.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

VOID = 255


@dataclass(frozen=True)
class Frame:
    """One evaluation or training frame."""

    frame_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    semantic: np.ndarray | None = None  # (H, W) uint8, 0..K-1, 255 = void
    anomaly: np.ndarray | None = None  # (H, W) uint8, 0 / 1 / 255


class Split(Sequence[Frame], ABC):
    """An indexable, lazily loaded list of frames (one frame in memory at a time)."""

    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Frame: ...  # type: ignore[override]

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]


class Dataset(ABC):
    """A dataset adapter: where the data lives, its class space, and its splits.

    ``train_on`` names the dataset whose ``train`` split the models evaluated here are fitted on;
    ``splits`` are all the splits it has; ``eval_splits`` those the runner evaluates by default.
    """

    name: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    train_on: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    eval_splits: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    # SMIYC component metrics: predicted components below the first size and ground-truth
    # components below the second (pixels) are dropped / made void; 0 = keep all.
    component_size_filters: ClassVar[tuple[int, int]] = (0, 0)

    def __init__(self, root: Path, preset: str = "default") -> None:
        self.root = Path(root)
        self.preset = preset

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def prepare(self, progress: bool = True) -> None:
        """Make the data ready to read (generate or check it); raise BadInput if it is not."""

    @abstractmethod
    def split(self, name: str) -> Split:
        """The named split; raise BadInput for an unknown or unavailable split."""

    def fingerprint(self) -> str:
        """A string that changes whenever the data changes (used in cache keys)."""
        return self.name
