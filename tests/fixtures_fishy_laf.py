"""Tiny LostAndFound and Fishyscapes trees in the official layouts (built in tmp folders).

- LostAndFound: ``lostandfound/{leftImg8bit,gtCoarse}/test/{NN}_{scene}/`` with
  ``*_leftImg8bit.png`` (RGB) and ``*_gtCoarse_labelIds.png`` (L: 0 ignore, 1 free road, 2..200
  obstacle ids).
- Fishyscapes L&F: ``fishyscapes-laf/fishyscapes_lostandfound/{NNNN}_{LAF id}_labels.png`` (L:
  0/1/255), images in LostAndFound's ``leftImg8bit/{test,train}/`` (shared via ``lostandfound/``).
- Fishyscapes Static: ``fishyscapes-static/fs_val_v3/{NNNN}_{cityscapes id}_{labels.png,rgb.npz}``
  over the Cityscapes val images of :func:`dataset_fixtures.make_cityscapes_tree`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_fixtures import save, scene

HEIGHT, WIDTH = 64, 128
OBSTACLE_ID = 5  # any LostAndFound obstacle id in 2..200
OBSTACLE_BOX = (slice(44, 52), slice(60, 70))  # on the road of every synthstreets scene

# (folder, sequence, frame) of the LostAndFound test frames written by default; the
# Rechbergstr scene has children and is excluded from testNoKnown.
LAF_TEST_FRAMES: tuple[tuple[str, int, int], ...] = (
    ("04_Maurener_Weg_8", 0, 30),
    ("04_Maurener_Weg_8", 1, 60),
    ("07_Festplatz_Flugfeld", 2, 90),
    ("15_Rechbergstr_Deckenpfronn", 0, 120),
)
LAF_TRAIN_FRAMES: tuple[tuple[str, int, int], ...] = (("01_Hanns_Klemm_Str_45", 3, 150),)


def laf_id(folder: str, seq: int, frame: int) -> str:
    return f"{folder}_{seq:06d}_{frame:06d}"


def gt_coarse(train_ids: np.ndarray) -> np.ndarray:
    """LostAndFound gtCoarse labelIds for a scene: road -> 1, a box on it -> 5, else 0."""
    labels = np.where(train_ids == 0, 1, 0).astype(np.uint8)
    labels[OBSTACLE_BOX] = OBSTACLE_ID
    return labels


def fishy_mask(train_ids: np.ndarray) -> np.ndarray:
    """A Fishyscapes mask: the obstacle box 1, void (255) where the scene is void, else 0."""
    mask = np.where(train_ids == 255, 255, 0).astype(np.uint8)
    mask[OBSTACLE_BOX] = 1
    return mask


def make_lostandfound_tree(
    root: Path,
    test: tuple[tuple[str, int, int], ...] = LAF_TEST_FRAMES,
    train: tuple[tuple[str, int, int], ...] = LAF_TRAIN_FRAMES,
) -> Path:
    """``root/lostandfound`` with test images and gtCoarse labels, and train images only."""
    base = root / "lostandfound"
    for split, frames in (("test", test), ("train", train)):
        for i, (folder, seq, frame) in enumerate(frames):
            fid = laf_id(folder, seq, frame)
            image, train_ids = scene(1000 + 10 * (split == "train") + i, HEIGHT, WIDTH)
            save(base / "leftImg8bit" / split / folder / f"{fid}_leftImg8bit.png", image)
            if split == "test":
                save(
                    base / "gtCoarse" / split / folder / f"{fid}_gtCoarse_labelIds.png",
                    gt_coarse(train_ids),
                )
    return base


def make_fishyscapes_laf_tree(root: Path) -> Path:
    """``root/fishyscapes-laf`` masks for every LostAndFound frame of ``root/lostandfound``."""
    base = root / "fishyscapes-laf"
    images = sorted((root / "lostandfound" / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))
    for i, image in enumerate(images):
        fid = image.name[: -len("_leftImg8bit.png")]
        _, train_ids = scene(2000 + i, HEIGHT, WIDTH)
        save(base / "fishyscapes_lostandfound" / f"{i:04d}_{fid}_labels.png", fishy_mask(train_ids))
    return base


def make_fishyscapes_static_tree(root: Path, seed: int = 0) -> Path:
    """``root/fishyscapes-static/fs_val_v3`` over every Cityscapes val image in ``root``."""
    base = root / "fishyscapes-static" / "fs_val_v3"
    rng = np.random.default_rng(seed)
    images = sorted((root / "cityscapes" / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    for i, image in enumerate(images):
        cid = image.name[: -len("_leftImg8bit.png")]
        _, train_ids = scene(3000 + i, HEIGHT, WIDTH)
        save(base / f"{i:04d}_{cid}_labels.png", fishy_mask(train_ids))
        overlay = np.zeros((HEIGHT, WIDTH, 3), np.int16)
        overlay[OBSTACLE_BOX] = rng.integers(-255, 256, (8, 10, 3))
        np.savez_compressed(base / f"{i:04d}_{cid}_rgb.npz", rgb=overlay)
    return base
