"""Tiny fixture trees in the official layouts of real datasets (built by tests in tmp folders).

Images are small synthstreets renders so that a model can be trained on them in seconds; labels
are written with the official encodings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from owsbench.datasets.base import Frame, Split
from owsbench.datasets.scene import render_scene

# Cityscapes labelId of each trainId (cityscapesScripts labels.py), and a void labelId.
TRAIN_TO_LABEL_ID = np.array(
    [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], np.uint8
)
VOID_LABEL_ID = 0  # "unlabeled"


def scene(seed: int, height: int = 64, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its trainId map (255 = void)."""
    return render_scene(np.random.default_rng(seed), height, width)[:2]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    out = np.full(train_ids.shape, VOID_LABEL_ID, np.uint8)
    known = train_ids != 255
    out[known] = TRAIN_TO_LABEL_ID[train_ids[known]]
    return out


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_cityscapes_tree(
    root: Path, counts: dict[str, int] | None = None, height: int = 64, width: int = 128
) -> Path:
    """``root/cityscapes`` with leftImg8bit and gtFine (``*_gtFine_labelIds.png`` only).

    Cities alternate between two names per split; frame ids follow
    ``{city}_{seq:06d}_{frame:06d}``. Test labels are all-void, as in the public download.
    """
    counts = counts or {"train": 8, "val": 4, "test": 2}
    base = root / "cityscapes"
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau"), "test": ("berlin",)}
    seed = 0
    for split, count in counts.items():
        for i in range(count):
            city = cities[split][i % len(cities[split])]
            stem = f"{city}_{i:06d}_{19:06d}"
            image, train_ids = scene(seed, height, width)
            seed += 1
            save(base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            labels = to_label_ids(train_ids) if split != "test" else np.zeros_like(train_ids)
            save(base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", labels)
    return base


class TinySplit(Split):
    """Two 40x72 random frames with a two-class label (void on top): for training smoke tests."""

    name = "train"

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Frame:
        rng = np.random.default_rng(index)
        semantic = np.zeros((40, 72), np.uint8)
        semantic[20:] = 1
        semantic[:2] = 255
        return Frame(f"f{index}", rng.integers(0, 255, (40, 72, 3), dtype=np.uint8), semantic)


class ListSplit(Split):
    """An in-memory split of ready-made frames."""

    name = "train"

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Frame:
        return self.frames[index]
