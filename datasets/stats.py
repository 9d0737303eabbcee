"""Per-class pixel statistics of a labelled split (``owsbench data stats``, class weighting).

For a split with semantic labels ``y`` (void = 255 left out) over ``K`` classes:
``pixels[c] = n_c`` (labelled pixels of class ``c``), ``images[c]`` (frames where ``c`` occurs),
``present_pixels[c]`` (labelled pixels of the frames where ``c`` occurs: the denominator of
Eigen & Fergus's median-frequency balancing) and ``total = N = sum_c n_c``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from owsbench.datasets.base import VOID, Split

STATS_VERSION = 1


@dataclass
class ClassStats:
    """Pixel counts of one split by class id (see the module docstring)."""

    pixels: list[int]
    images: list[int]
    present_pixels: list[int]
    frames: int

    @property
    def total(self) -> int:
        return int(sum(self.pixels))

    def frequencies(self) -> np.ndarray:
        """``f_c = n_c / N`` (zeros for a split without labelled pixels)."""
        counts = np.asarray(self.pixels, np.float64)
        return counts / counts.sum() if counts.sum() > 0 else counts

    def to_json(self) -> dict[str, Any]:
        return {"version": STATS_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassStats:
        return cls(**{k: v for k, v in data.items() if k != "version"})


def class_stats(split: Split, num_classes: int, progress: bool = True) -> ClassStats:
    """Count the labelled pixels of every class over ``split`` (one pass, a frame at a time)."""
    k = num_classes
    pixels = np.zeros(k, np.int64)
    images = np.zeros(k, np.int64)
    present = np.zeros(k, np.int64)
    for frame in tqdm(split, desc=f"class stats {split.name}", disable=not progress, leave=False):
        labels = frame.semantic[frame.semantic != VOID]
        counts = np.bincount(labels.ravel(), minlength=k)[:k]
        pixels += counts
        images += counts > 0
        present += np.where(counts > 0, labels.size, 0)
    return ClassStats(pixels.tolist(), images.tolist(), present.tolist(), len(split))
