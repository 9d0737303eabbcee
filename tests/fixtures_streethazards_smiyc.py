"""Tiny fixture trees in the official layouts of StreetHazards, SMIYC and Road Anomaly.

Images are small synthstreets renders (:func:`dataset_fixtures.scene`); labels use the
official encodings (see the adapters' module docstrings). Anomalies are flat magenta boxes on the
road, so that a briefly trained model has something to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_fixtures import save, scene

# Cityscapes trainId -> StreetHazards PNG value (1 unlabeled, 2 building, 3 fence, 4 other,
# 5 pedestrian, 6 pole, 7 road line, 8 road, 9 sidewalk, 10 vegetation, 11 car, 12 wall,
# 13 traffic sign); void and sky -> 1 (unlabeled), train/motorcycle/bicycle -> 4 (other).
TRAIN_ID_TO_STREETHAZARDS = np.array(
    [8, 9, 2, 12, 3, 6, 13, 13, 10, 10, 1, 5, 5, 11, 11, 11, 4, 4, 4], np.uint8
)
SH_UNLABELED, SH_OTHER, SH_ROAD, SH_ANOMALY = 1, 4, 8, 14
ANOMALY_RGB = (255, 0, 255)

STREETHAZARDS_TOWNS = {
    "train": ("train", "training", ("t1-3",)),
    "val": ("train", "validation", ("t4",)),
    "test": ("test", "test", ("t5", "t6")),
}


def anomaly_box(height: int, width: int, seed: int) -> tuple[slice, slice]:
    """A box in the lower middle of the frame (on the road in synthstreets renders)."""
    rng = np.random.default_rng(seed)
    top = int(height * 0.6) + int(rng.integers(0, height // 10))
    left = width // 3 + int(rng.integers(0, width // 4))
    return slice(top, top + height // 6), slice(left, left + width // 6)


def streethazards_frame(seed: int, height: int, width: int, anomaly: bool):
    """An image and its StreetHazards label PNG (1..14) with an "other" patch top-left."""
    image, train_ids = scene(seed, height, width)
    labels = np.full(train_ids.shape, SH_UNLABELED, np.uint8)
    known = train_ids != 255
    labels[known] = TRAIN_ID_TO_STREETHAZARDS[train_ids[known]]
    labels[:4, :4] = SH_OTHER
    if anomaly:
        box = anomaly_box(height, width, seed)
        image[box] = ANOMALY_RGB
        labels[box] = SH_ANOMALY
    return image, labels


def make_streethazards_tree(
    root: Path, counts: dict[str, int] | None = None, height: int = 64, width: int = 128
) -> Path:
    """``root/streethazards`` with train (town t1-3), validation (t4) and test (t5, t6) frames.

    Files are ``<town>/<n>.png`` under ``images/`` and ``annotations/`` (same names); test
    frames hold a PNG-14 anomaly box. Every frame has a 4x4 "other" (PNG 4) patch top-left.
    """
    counts = counts or {"train": 6, "val": 2, "test": 4}
    base = root / "streethazards"
    for split, count in counts.items():
        top, sub, towns = STREETHAZARDS_TOWNS[split]
        for i in range(count):
            town = towns[i % len(towns)]
            image, labels = streethazards_frame(
                1000 + 100 * len(split) + i, height, width, split == "test"
            )
            save(base / top / "images" / sub / town / f"{i}.png", image)
            save(base / top / "annotations" / sub / town / f"{i}.png", labels)
    return base


def binary_frame(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with an anomaly box and its 0 / 1 / 255 label (top rows void)."""
    image, _ = scene(seed, height, width)
    labels = np.zeros((height, width), np.uint8)
    labels[: height // 8] = 255
    box = anomaly_box(height, width, seed)
    image[box] = ANOMALY_RGB
    labels[box] = 1
    return image, labels


RA21_TEST_IDS = ("cow0000", "tractor0001", "cones0002")
RO21_VALIDATION_EXCLUDED = "validation_21"  # an official ``exclude_prefix`` of the validation
RO21_TEST_IDS = ("curvy-street_bottle_1", "snowstorm1_00_00_51.868")


def make_smiyc_tree(
    root: Path, track: str = "anomaly", validation: int = 3, height: int = 64, width: int = 128
) -> Path:
    """``root/smiyc-ra21/dataset_AnomalyTrack`` (``track="anomaly"``, ``validation{i:04d}.jpg``)
    or ``root/smiyc-ro21/dataset_ObstacleTrack`` (``"obstacle"``, ``validation_{i}.webp`` plus
    the excluded ``validation_21``). Labels (``labels_masks/{fid}_labels_semantic.png``) exist
    for validation ids only; a few test-like ids have images only, as in the public archives.
    """
    if track == "anomaly":
        base, ext = root / "smiyc-ra21" / "dataset_AnomalyTrack", "jpg"
        labelled = [f"validation{i:04d}" for i in range(validation)]
        unlabelled = RA21_TEST_IDS
    else:
        base, ext = root / "smiyc-ro21" / "dataset_ObstacleTrack", "webp"
        labelled = [f"validation_{i + 1}" for i in range(validation)] + [RO21_VALIDATION_EXCLUDED]
        unlabelled = RO21_TEST_IDS
    for seed, fid in enumerate([*labelled, *unlabelled]):
        image, labels = binary_frame(2000 + seed, height, width)
        save(base / "images" / f"{fid}.{ext}", image)
        if fid in labelled:
            save(base / "labels_masks" / f"{fid}_labels_semantic.png", labels)
    return base


def make_road_anomaly_tree(root: Path, count: int = 3, height: int = 64, width: int = 128) -> Path:
    """``root/road-anomaly/RoadAnomaly_jpg/frames``: ``{name}.jpg`` and
    ``{name}.labels/labels_semantic.png`` with 0 background and 2 anomaly."""
    frames = root / "road-anomaly" / "RoadAnomaly_jpg" / "frames"
    for i in range(count):
        image, labels = binary_frame(3000 + i, height, width)
        name = f"animals{i:02d}_sheep_on_road"
        save(frames / f"{name}.jpg", image)
        save(
            frames / f"{name}.labels" / "labels_semantic.png",
            np.where(labels == 1, 2, 0).astype(np.uint8),
        )
    return frames
