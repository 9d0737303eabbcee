"""Fixed-size image crops around known-class and unknown regions, for region-level contrastive
pre-training (``contmav-infonce``; owsbench's design, see :mod:`owsbench.methods.contmav_infonce`).

A crop bank is built from the *training* split only. Each frame first receives outlier-exposure
pastes (``paste_outliers``, cut-outs from ``FitContext.outlier_source``) with the configured
probability, so its label map holds known classes ``0..K-1``, void ``255`` and pasted pixels
``OUTLIER``. Then, per frame:

- ``known_per_frame`` **known crops**: a class is drawn uniformly among the known classes present
  (class-balanced, so thin classes are not drowned by road and sky), a pixel of that class is drawn
  uniformly, and the ``size x size`` window centred on it (shifted to lie inside the frame) is kept
  when that class covers at least ``min_known_fraction`` of the window; label = the class id.
- ``unknown_per_frame`` **unknown crops**: a pixel is drawn among the pasted pixels (when the frame
  has pastes; else among void pixels) and the window around it is kept when unknown pixels (void
  or pasted) cover at least ``min_unknown_fraction`` of it; label = ``UNKNOWN`` (-1).

Each kept crop is ``(size, size, 3)`` uint8, all crops of a bank have the same size; a rejected
window is redrawn up to ``attempts`` times. ``load_or_build`` caches a bank on disk
(``<cache_dir>/crops/<hash>.npz``) under a sha256 of the training data fingerprint, the crop and
paste recipe and the seed, so a second fit with the same inputs reads the crops instead of
rendering them again.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from tqdm.auto import tqdm

from owsbench.cache import atomic_write_bytes, content_hash
from owsbench.checks import Range
from owsbench.datasets.base import VOID, Split
from owsbench.errors import BadInput
from owsbench.methods.nn.outlier_exposure import OUTLIER, PasteConfig, paste_outliers

UNKNOWN = -1  # class label of an unknown crop
CROP_VERSION = 1  # bump when the sampling changes, so cached banks are rebuilt


@dataclass(frozen=True)
class CropConfig:
    """How crops are sampled (see the module docstring)."""

    size: Annotated[int, Range(ge=1, le=512)] = 32
    known_per_frame: Annotated[int, Range(ge=0, le=64)] = 4
    unknown_per_frame: Annotated[int, Range(ge=0, le=64)] = 2
    min_known_fraction: Annotated[float, Range(ge=0, le=1)] = 0.5
    min_unknown_fraction: Annotated[float, Range(ge=0, le=1)] = 0.3
    attempts: Annotated[int, Range(ge=1, le=1024)] = 16


@dataclass
class CropBank:
    """``images`` ``(N, S, S, 3)`` uint8, ``labels`` ``(N,)`` int64 (class id or ``UNKNOWN``),
    ``frames`` ``(N,)`` the index of the training frame each crop came from."""

    images: np.ndarray
    labels: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_known(self) -> int:
        return int((self.labels != UNKNOWN).sum())

    @property
    def num_unknown(self) -> int:
        return int((self.labels == UNKNOWN).sum())

    def counts(self) -> dict[str, int]:
        """Crops per label (``"unknown"`` or the class id as a string)."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {
            ("unknown" if v == UNKNOWN else str(int(v))): int(c)
            for v, c in zip(values, counts, strict=True)
        }


def window(center: tuple[int, int], size: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the ``size x size`` window centred on ``center`` and shifted to lie
    inside an image of ``shape`` (which must be at least ``size`` in both dimensions)."""
    top = min(max(center[0] - size // 2, 0), shape[0] - size)
    left = min(max(center[1] - size // 2, 0), shape[1] - size)
    return top, left


def sample_crop(
    target: np.ndarray,
    accept: np.ndarray,
    min_fraction: float,
    size: int,
    attempts: int,
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """A window centred on a random pixel of ``target`` (bool map) in which ``accept`` covers
    at least ``min_fraction``; its top-left corner, or None after ``attempts`` rejections."""
    ys, xs = np.nonzero(target)
    if len(ys) == 0:
        return None
    for _ in range(attempts):
        i = int(rng.integers(len(ys)))
        top, left = window((int(ys[i]), int(xs[i])), size, target.shape)
        if accept[top : top + size, left : left + size].mean() >= min_fraction:
            return top, left
    return None


def frame_crops(
    image: np.ndarray, labels: np.ndarray, config: CropConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[int]]:
    """The crops of one (pasted) frame and their labels; ``labels`` uses ``OUTLIER`` on pastes."""
    size = config.size
    crops: list[np.ndarray] = []
    classes: list[int] = []
    if labels.shape[0] < size or labels.shape[1] < size:
        return crops, classes
    known = [int(c) for c in np.unique(labels) if c not in (VOID, OUTLIER)]
    for _ in range(config.known_per_frame if known else 0):
        cls = known[int(rng.integers(len(known)))]
        mask = labels == cls
        corner = sample_crop(mask, mask, config.min_known_fraction, size, config.attempts, rng)
        if corner is not None:
            crops.append(image[corner[0] : corner[0] + size, corner[1] : corner[1] + size])
            classes.append(cls)
    pasted = labels == OUTLIER
    unknown = pasted | (labels == VOID)
    centers = pasted if pasted.any() else unknown
    for _ in range(config.unknown_per_frame):
        corner = sample_crop(
            centers, unknown, config.min_unknown_fraction, size, config.attempts, rng
        )
        if corner is not None:
            crops.append(image[corner[0] : corner[0] + size, corner[1] : corner[1] + size])
            classes.append(UNKNOWN)
    return crops, classes


def build_crop_bank(
    split: Split,
    config: CropConfig,
    source,
    paste: PasteConfig,
    rng: np.random.Generator,
    progress: bool = False,
) -> CropBank:
    """Crops from every frame of ``split`` (pasted from ``source`` when given; see module)."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    frames: list[int] = []
    for index in tqdm(range(len(split)), desc="crop bank", disable=not progress, leave=False):
        frame = split[index]
        if source is not None:
            image, label_map = paste_outliers(frame, source, rng, paste)
        else:
            if frame.semantic is None:
                raise BadInput(f"frame {frame.frame_id}: crops need semantic labels")
            image, label_map = frame.image, frame.semantic
        crops, classes = frame_crops(image, label_map, config, rng)
        images.extend(np.ascontiguousarray(c) for c in crops)
        labels.extend(classes)
        frames.extend([index] * len(crops))
    if not images:
        raise BadInput(
            f"no {config.size}x{config.size} crop could be taken from the training split "
            "(frames smaller than the crop, or no labelled region large enough)"
        )
    return CropBank(
        images=np.stack(images).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        frames=np.asarray(frames, dtype=np.int64),
    )


def bank_path(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / "crops" / f"{content_hash({**key, 'version': CROP_VERSION})}.npz"


def load_or_build(
    split: Split,
    config: CropConfig,
    source,
    paste: PasteConfig,
    seed: int,
    cache_dir: Path | None,
    fingerprint: str | None,
    progress: bool = False,
) -> tuple[CropBank, bool]:
    """The crop bank of ``split`` and whether it came from the on-disk cache. Without a data
    ``fingerprint`` (an in-memory split) nothing is cached."""
    rng = np.random.default_rng([seed, 3])  # the crop stream, apart from the training streams
    if cache_dir is None or fingerprint is None:
        return build_crop_bank(split, config, source, paste, rng, progress), False
    key = {
        "train": fingerprint,
        "crops": asdict(config),
        "paste": asdict(paste) if source is not None else None,
        "seed": seed,
    }
    path = bank_path(cache_dir, key)
    if path.exists():
        with np.load(path) as data:
            bank = CropBank(data["images"], data["labels"], data["frames"])
        return bank, True
    bank = build_crop_bank(split, config, source, paste, rng, progress)
    buffer = io.BytesIO()
    np.savez(
        buffer, images=bank.images, labels=bank.labels, frames=bank.frames, key=json.dumps(key)
    )
    atomic_write_bytes(path, buffer.getvalue())
    return bank, False
