"""Class-frequency weights of the segmenters' cross-entropy (``segmenter: {class_weighting}``).

From the training split's class statistics (``owsbench.datasets.stats``: ``n_c`` labelled pixels
of class ``c``, ``N = sum_c n_c``, ``f_c = n_c / N``, ``K`` classes):

- ``none``: no weights;
- ``smoothed``: ``w_c = 1 / (n_c + s N)`` with ``s = class_smooth``, scaled so that
  ``sum_c w_c = K``;
- ``median-frequency`` (Eigen & Fergus, ICCV 2015): ``w_c = median_c'(g_c') / g_c`` with
  ``g_c = n_c / P_c``, ``P_c`` the labelled pixels of the frames where ``c`` occurs; a class that
  never occurs gets 0 (it has no pixel to weigh), the median is over the classes that occur;
- ``log`` (ENet, Paszke et al. 2016): ``w_c = 1 / ln(1.02 + f_c)``.

The statistics are counted once per training dataset and cached under
``<cache>/stats/<hash>.json`` (key: the dataset fingerprint and split). They come from the
dense labels, also when the segmenter trains from weak ones (an oracle statistic there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from owsbench.cache import atomic_write_text, content_hash
from owsbench.datasets.base import Split
from owsbench.datasets.stats import STATS_VERSION, ClassStats, class_stats

WEIGHTINGS = ("none", "smoothed", "median-frequency", "log")


def class_weights(mode: str, stats: ClassStats, smooth: float = 0.0) -> np.ndarray | None:
    """The weights ``w`` of ``mode`` (module docstring), float64 ``(K,)``; None for ``none``."""
    counts = np.asarray(stats.pixels, np.float64)
    if mode == "none":
        return None
    if mode == "smoothed":
        weights = 1.0 / (counts + smooth * counts.sum())
        return weights * len(counts) / weights.sum()
    if mode == "median-frequency":
        present = np.asarray(stats.present_pixels, np.float64)
        occurs = counts > 0
        g = np.where(occurs, counts / np.maximum(present, 1.0), 0.0)
        median = np.median(g[occurs]) if occurs.any() else 0.0
        return np.where(occurs, median / np.where(occurs, g, 1.0), 0.0)
    if mode == "log":
        return 1.0 / np.log(1.02 + stats.frequencies())
    raise ValueError(f"unknown class weighting {mode!r}; valid: {', '.join(WEIGHTINGS)}")


def cached_class_stats(
    split: Split,
    num_classes: int,
    fingerprint: str | None,
    cache_dir: Path,
    progress: bool = True,
) -> tuple[ClassStats, Path | None, bool]:
    """The statistics of ``split``, from ``<cache_dir>/stats/`` when counted before; returns
    them, their JSON path and whether they were cached. Without a dataset ``fingerprint`` they
    are counted and not cached (path None)."""
    if fingerprint is None:
        return class_stats(split, num_classes, progress), None, False
    key = content_hash({"dataset": fingerprint, "split": split.name, "version": STATS_VERSION})
    path = Path(cache_dir) / "stats" / f"{fingerprint.split('/')[0]}-{split.name}-{key}.json"
    try:
        stats = ClassStats.from_json(json.loads(path.read_text()))
        if len(stats.pixels) == num_classes:
            return stats, path, True
    except (OSError, ValueError, TypeError):
        pass  # not counted yet, or unreadable: count again
    stats = class_stats(split, num_classes, progress)
    atomic_write_text(path, json.dumps(stats.to_json(), indent=1))
    return stats, path, False


def weight_tensor(mode: str, stats: ClassStats, smooth: float) -> torch.Tensor | None:
    """``class_weights`` as a float32 tensor for ``F.cross_entropy(weight=...)``."""
    weights = class_weights(mode, stats, smooth)
    return None if weights is None else torch.from_numpy(weights).float()
