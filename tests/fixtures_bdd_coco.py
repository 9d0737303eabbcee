"""Tiny BDD-Anomaly and COCO 2017 trees in their official layouts and encodings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dataset_fixtures import save, scene
from PIL import Image
from pycocotools import mask as mask_utils

# BDD trainIds (Cityscapes order) of the classes the default variant holds out.
TRAIN, MOTORCYCLE, BICYCLE = 16, 17, 18

# Frames of the BDD fixture: folder -> (image id, BDD trainId painted into a patch or None).
BDD_FRAMES = {
    "train": [("t0", None), ("t1", MOTORCYCLE), ("t2", None), ("t3", BICYCLE)],
    "val": [("v0", None), ("v1", TRAIN), ("v2", None)],
}


def bdd_values(train_ids: np.ndarray) -> np.ndarray:
    """BDD trainIds (255 = other) -> the ``seg/train_labels`` encoding (1 = other, k + 2)."""
    return np.where(train_ids == 255, 1, train_ids.astype(np.int32) + 2).astype(np.uint8)


def make_bdd_tree(root: Path, height: int = 36, width: int = 64) -> Path:
    """``root/bdd-anomaly`` with ``seg/images`` jpgs and ``seg/train_labels`` PNGs.

    Each frame's scene has its train/motorcycle/bicycle pixels repainted as road; the listed
    class is painted into rows 4..7, columns 4..11; pixel (0, 0) is value 0 (unused/void) and
    (0, 1) is 1 (other). One extra image, ``t9``, has no label file.
    """
    base = root / "bdd-anomaly"
    seed = 100
    for folder, frames in BDD_FRAMES.items():
        for frame_id, painted in frames:
            image, train_ids = scene(seed, height, width)
            seed += 1
            train_ids = np.where(np.isin(train_ids, [TRAIN, MOTORCYCLE, BICYCLE]), 0, train_ids)
            if painted is not None:
                train_ids[4:8, 4:12] = painted
            values = bdd_values(train_ids)
            values[0, 0], values[0, 1] = 0, 1
            save(base / "seg" / "images" / folder / f"{frame_id}.jpg", image)
            save(base / "seg" / "train_labels" / folder / f"{frame_id}_train_id.png", values)
    save(base / "seg" / "images" / "train" / "t9.jpg", scene(0, height, width)[0])
    return base


# COCO categories used by the fixture (ids as in COCO 2017).
COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
]
# (image index, category id, centre row, centre col, radius rows, radius cols, iscrowd)
COCO_INSTANCES = [
    (0, 18, 50, 60, 24, 20, 0),  # dog: good
    (0, 3, 60, 125, 22, 20, 0),  # car: excluded category
    (1, 62, 60, 50, 25, 22, 0),  # chair: good
    (1, 18, 55, 120, 24, 20, 1),  # dog, crowd: filtered
    (2, 17, 60, 80, 22, 24, 0),  # cat: good
    (2, 18, 20, 20, 6, 6, 0),  # dog, too small: filtered
]


def _ellipse(cy: float, cx: float, ry: float, rx: float, points: int = 24) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    xy = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in xy.ravel()]


def make_coco_tree(
    root: Path, sets: tuple[str, ...] = ("val2017",), height: int = 120, width: int = 160
) -> Path:
    """``root/coco`` with ``annotations/instances_<set>.json`` and ``<set>/<id:012d>.jpg``.

    Three images per set; instances are ellipse polygons filled with a flat colour per category
    (see :data:`COCO_INSTANCES`). Annotation ids are unique across sets.
    """
    base = root / "coco"
    colours = {
        1: (200, 0, 0),
        3: (0, 0, 200),
        17: (250, 200, 0),
        18: (140, 70, 20),
        62: (0, 200, 0),
    }
    for set_index, coco_set in enumerate(sets):
        images, annotations = [], []
        pixels = [np.full((height, width, 3), 90 + 40 * i, np.uint8) for i in range(3)]
        for n, (index, category, cy, cx, ry, rx, crowd) in enumerate(COCO_INSTANCES):
            polygon = _ellipse(cy, cx, ry, rx)
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            pixels[index][mask_utils.decode(rle).astype(bool)] = colours[category]
            annotations.append(
                {
                    "id": 1000 * (set_index + 1) + n,
                    "image_id": 100 * (set_index + 1) + index,
                    "category_id": category,
                    "segmentation": [polygon],
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": crowd,
                }
            )
        for index, array in enumerate(pixels):
            image_id = 100 * (set_index + 1) + index
            name = f"{image_id:012d}.jpg"
            (base / coco_set).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(base / coco_set / name, quality=95)
            images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        instances = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"instances_{coco_set}.json").write_text(json.dumps(instances))
    return base
