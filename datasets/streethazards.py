"""``streethazards``: CAOS StreetHazards (Hendrycks et al.), CARLA town scenes with anomaly objects.

Layout (``streethazards_train.tar`` and ``streethazards_test.tar`` unpacked as-is under
``<data root>/streethazards/``), checked against ``hendrycks/anomaly-seg: create_dataset.py``
(``create_odgt`` lists every town folder, so all towns are globbed here too)::

    train/images/training/<town>/*.png     train/annotations/training/<town>/*.png
    train/images/validation/<town>/*.png   train/annotations/validation/<town>/*.png
    test/images/test/<town>/*.png          test/annotations/test/<town>/*.png

An annotation has the same file name as its image. Frame ids are ``<town>/<file stem>``. Each
tar unpacked into a folder named after it (``streethazards_train/train/...``) or into a folder
named like its top folder (``train/train/...``) is accepted too (:data:`TOP_DIRS`).

Label PNGs hold 1-based values 1..14 (``create_dataset.py`` colour table; ``dataset.py:
segm_transform`` subtracts 1; maintainer in issues #15 and #17): 1 unlabeled, 2 building,
3 fence, 4 other, 5 pedestrian, 6 pole, 7 road line, 8 road, 9 sidewalk, 10 vegetation, 11 car,
12 wall, 13 traffic sign, 14 anomaly. Two conventions for the known classes:

- official (default): ``PNG - 1`` for PNG 1..13, i.e. 13 known classes *including* "unlabeled"
  (index 0, mostly sky) and "other" (index 3). The official code trains on them
  (``NLLLoss(ignore_index=-1)`` after ``- 1``: only padding is ignored) and ``eval_ood.py:
  eval_ood_measure`` counts every non-anomaly pixel, unlabeled included, as an inlier. So no
  pixel is void in the anomaly labels, and unlabeled is class 0 of the semantic labels.
- ``other_as_void=True`` (DenseHybrid, ``matejgrcic/DenseHybrid: data/datasets/street_hazards/
  streethazards_test.py``): "other" (PNG 4) is void in both semantic and anomaly labels; the
  remaining 12 classes keep their order (unlabeled stays a known class, index 0).

In both, PNG 14 is anomaly 1 and semantic 255. Switch with ``StreetHazards(root,
other_as_void=True)``; the choice is part of :meth:`StreetHazards.fingerprint` (so of cache keys).

Split sizes 5125 / 1031 / 1500 come from third-party READMEs, not from the official repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from owsbench.datasets.base import VOID, FileDataset, FrameFiles
from owsbench.datasets.cityscapes import require_dir
from owsbench.datasets.io import check_values
from owsbench.datasets.layouts import AS_IS, NAMED_FOLDER, find_dir

# PNG value - 1 -> class name (create_dataset.py colour-table comment), anomaly excluded.
PNG_CLASS_NAMES: tuple[str, ...] = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
PNG_OTHER = 4
PNG_ANOMALY = 14
PNG_VALUES = frozenset(range(1, PNG_ANOMALY + 1))

# split -> (top folder, folder under images/ and annotations/)
SPLIT_FOLDERS: dict[str, tuple[str, str]] = {
    "train": ("train", "training"),
    "val": ("train", "validation"),
    "test": ("test", "test"),
}


# where a tar's top folder ("{}": train or test) may be under <data root>/streethazards
TOP_DIRS = (
    ("{}", AS_IS),
    ("streethazards_{}/{}", NAMED_FOLDER),
    ("{}/{}", "unpacked into a folder named like its top folder"),
)


def semantic_table(other_as_void: bool) -> tuple[tuple[str, ...], np.ndarray]:
    """Known class names and the PNG value -> class index lookup table (255 = void)."""
    dropped = {PNG_OTHER} if other_as_void else set()
    kept = [v for v in range(1, PNG_ANOMALY) if v not in dropped]
    table = np.full(256, VOID, np.uint8)
    table[kept] = np.arange(len(kept))
    return tuple(PNG_CLASS_NAMES[v - 1] for v in kept), table


def anomaly_table(other_as_void: bool) -> np.ndarray:
    """PNG value -> anomaly label (0 inlier, 1 anomaly, 255 void) lookup table."""
    table = np.full(256, VOID, np.uint8)
    table[1:PNG_ANOMALY] = 0
    table[PNG_ANOMALY] = 1
    if other_as_void:
        table[PNG_OTHER] = VOID
    return table


class StreetHazards(FileDataset):
    """StreetHazards; ``other_as_void`` picks the DenseHybrid convention (module docstring)."""

    name: ClassVar[str] = "streethazards"
    class_names: ClassVar[tuple[str, ...]] = PNG_CLASS_NAMES
    train_on: ClassVar[str] = "streethazards"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    validation_split: ClassVar[str | None] = "val"
    expected_counts: ClassVar[dict[str, int]] = {"train": 5125, "val": 1031, "test": 1500}
    layout: ClassVar[str] = (
        "streethazards/train/images/{training,validation}/<town>/*.png\n"
        "streethazards/train/annotations/{training,validation}/<town>/*.png  (same names)\n"
        "streethazards/test/images/test/<town>/*.png\n"
        "streethazards/test/annotations/test/<town>/*.png  (same names)\n"
        "  (also accepted: streethazards/streethazards_{train,test}/{train,test}/... and "
        "streethazards/{train,test}/{train,test}/...)"
    )
    source: ClassVar[str] = (
        "https://github.com/hendrycks/anomaly-seg (README links): streethazards_train.tar and "
        "streethazards_test.tar, both unpacked into <data root>/streethazards/"
    )
    description: ClassVar[str] = (
        "CARLA town scenes (1280x720); training and validation towns without anomalies, test "
        "towns with 250 kinds of inserted anomaly objects (PNG label 14: anomaly 1, semantic "
        "void). Known classes as in the official code: 13 incl. 'unlabeled' and 'other'; every "
        "non-anomaly pixel is an inlier. StreetHazards(root, other_as_void=True) switches to the "
        "DenseHybrid convention ('other' void, 12 classes). Splits train/val/test = "
        "5125/1031/1500 (third-party counts); val is the official validation folder."
    )

    def __init__(self, root: Path, preset: str = "default", *, other_as_void: bool = False) -> None:
        super().__init__(root, preset)
        self.other_as_void = other_as_void
        self.class_names, self._semantic_table = semantic_table(other_as_void)
        self._anomaly_table = anomaly_table(other_as_void)

    def list_files(self, split: str) -> list[FrameFiles]:
        top, sub = SPLIT_FOLDERS[split]
        tops = [(self.folder / d.format(top, top), layout) for d, layout in TOP_DIRS]
        images = find_dir("images", "<town>/*.png", [(t / "images" / sub, n) for t, n in tops])
        labels = images.parent.parent / "annotations" / sub
        require_dir(labels, f"labels as {labels}/<town>/*.png")
        return [
            FrameFiles(
                f"{path.parent.name}/{path.stem}",
                path,
                semantic=labels / path.parent.name / path.name,
            )
            for path in sorted(images.glob("*/*.png"))
        ]

    def decode_semantic(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """PNG 1..14 -> class index (official: ``PNG - 1``), anomaly (and "other") -> 255."""
        check_values(raw, set(PNG_VALUES), path)
        return self._semantic_table[raw]

    def derive_anomaly(self, semantic_raw: np.ndarray, path: Path) -> np.ndarray:
        """PNG 14 -> 1, other values -> 0 (or 255 for "other" with ``other_as_void``).

        :meth:`decode_semantic`, called first on the same array, has rejected values outside
        1..14 naming the file (16-bit values would not even index the table).
        """
        return self._anomaly_table[semantic_raw]

    def fingerprint(self) -> str:
        convention = "other-void" if self.other_as_void else "official"
        return f"{super().fingerprint()}/{convention}"
