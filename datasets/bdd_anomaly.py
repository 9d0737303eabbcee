"""``bdd-anomaly``: BDD100K 10K segmentation with some classes held out as anomalies (Hendrycks).

Layout under ``<data root>/bdd-anomaly/`` (checked against ``hendrycks/anomaly-seg:
create_bdd_dataset.py``, which builds its lists from exactly these folders)::

    seg/images/{train,val}/<id>.jpg                  BDD100K 10K images (1280x720)
    seg/train_labels/{train,val}/<id>_train_id.png   labels shipped in the anomaly-seg repo

Also accepted (:data:`IMAGE_DIRS`, :data:`LABEL_DIRS`): the images as the BDD100K zips unpack
(``bdd100k/seg/images/{train,val}`` from ``bdd100k_seg.zip``, ``bdd100k/images/10k/{train,val}``
from ``bdd100k_images_10k.zip``) and the labels beside them (``bdd100k/seg/train_labels``) or in
a clone of the repository (``anomaly-seg/seg/train_labels``); images and labels are found
independently.

Label encoding of ``seg/train_labels`` (made by ``convert_cityscapes_to_uint``: BDD trainId
255 -> -1, then +2): ``1`` = other/void, ``k + 2`` = BDD trainId ``k`` in Cityscapes order
(road = 2 ... bicycle = 20); ``0`` is unused (after the official ``-1`` it is the ignore index).

Splits, as ``create_odgt`` builds them: every image with a label file is read once; an image
containing any anomaly-class pixel goes to ``test`` (``anom.odgt``: train-folder images first,
then val-folder images, each sorted by name); the others stay in ``train`` (from the train folder)
or ``val`` (from the val folder). Images without a label file are skipped, as in the official
script. Official counts with the default anomaly classes: train 6280, val 910, test 810.

Anomaly classes (``anomaly_classes=``): the default is the repo script's **train, motorcycle,
bicycle** (BDD trainIds 16, 17, 18; pixel values 18, 19, 20). The paper-text variant
``("train", "motorcycle")`` (:data:`PAPER_ANOMALY_CLASSES`) gives 6688 / 951 / 361.

Decoded labels: semantic = the remaining Cityscapes classes in Cityscapes order, renumbered
0..K-2, then ``other`` as the last known class K-1 (the official model is trained on
``other``: ``DATASET.num_class = 17`` = 16 classes + other, and ``eval_ood.py`` counts its pixels
as in-distribution); anomaly-class pixels are semantic 255 and anomaly 1; value 0 is void (255)
in both maps; every other pixel is anomaly 0.

Listing the splits needs the label values of every PNG (about 8000 files). The scan is cached
under the user cache directory (``<cache>/index/bdd-anomaly-<hash>.json``, keyed by the label
files' names, sizes and modification times), never inside the dataset folder; it stores the
values present per file, so switching anomaly classes needs no rescan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from owsbench.cache import atomic_write_text, content_hash, user_cache_dir
from owsbench.datasets.base import VOID, FileDataset, FrameFiles
from owsbench.datasets.io import check_values, read_label
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import find_dir
from owsbench.errors import BadInput

OTHER = "other"
OTHER_VALUE = 1  # pixel value of "other" in seg/train_labels
UNUSED_VALUE = 0  # never written by the official conversion; the official ignore index
VALUE_OFFSET = 2  # pixel value = BDD trainId + 2
DEFAULT_ANOMALY_CLASSES = ("train", "motorcycle", "bicycle")  # create_bdd_dataset.py: 18/19/20
PAPER_ANOMALY_CLASSES = ("train", "motorcycle")  # the paper text / ObsNet-era variant
SCAN_VERSION = 1
# where seg/images/<folder> and seg/train_labels/<folder> may be (preferred first)
IMAGE_DIRS = (
    ("seg/images", "as described"),
    ("bdd100k/seg/images", "bdd100k_seg.zip as unpacked"),
    ("bdd100k/images/10k", "bdd100k_images_10k.zip as unpacked"),
)
LABEL_DIRS = (
    ("seg/train_labels", "as described"),
    ("bdd100k/seg/train_labels", "beside the unpacked bdd100k/seg/images"),
    ("anomaly-seg/seg/train_labels", "in a clone of hendrycks/anomaly-seg"),
)


def known_classes(anomaly_classes: tuple[str, ...]) -> tuple[str, ...]:
    """The Cityscapes classes that are not anomalies, in Cityscapes order, then ``other``."""
    unknown = sorted(set(anomaly_classes) - set(CITYSCAPES_TRAINID_NAMES))
    if unknown or not anomaly_classes:
        raise BadInput(
            f"bdd-anomaly: anomaly classes must be Cityscapes class names, got {unknown or '()'}"
        )
    return (*(c for c in CITYSCAPES_TRAINID_NAMES if c not in anomaly_classes), OTHER)


def value_lut(anomaly_classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables pixel value -> (semantic id or 255, anomaly 0/1/255), 256 entries each."""
    known = known_classes(anomaly_classes)
    semantic = np.full(256, VOID, np.uint8)
    anomaly = np.full(256, VOID, np.uint8)
    semantic[OTHER_VALUE], anomaly[OTHER_VALUE] = known.index(OTHER), 0
    for train_id, name in enumerate(CITYSCAPES_TRAINID_NAMES):
        value = train_id + VALUE_OFFSET
        if name in anomaly_classes:
            anomaly[value] = 1
        else:
            semantic[value], anomaly[value] = known.index(name), 0
    return semantic, anomaly


class BDDAnomaly(FileDataset):
    """BDD-Anomaly (``hendrycks/anomaly-seg``); see the module docstring for the encodings."""

    name: ClassVar[str] = "bdd-anomaly"
    anomaly_classes: tuple[str, ...] = DEFAULT_ANOMALY_CLASSES
    class_names: ClassVar[tuple[str, ...]] = known_classes(DEFAULT_ANOMALY_CLASSES)
    train_on: ClassVar[str] = "bdd-anomaly"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    validation_split: ClassVar[str | None] = "val"
    expected_counts: ClassVar[dict[str, int]] = {"train": 6280, "val": 910, "test": 810}
    PAPER_COUNTS: ClassVar[dict[str, int]] = {"train": 6688, "val": 951, "test": 361}
    layout: ClassVar[str] = (
        "bdd-anomaly/seg/images/{train,val}/<id>.jpg\n"
        "bdd-anomaly/seg/train_labels/{train,val}/<id>_train_id.png  "
        "(1 = other, BDD trainId k = k+2)\n"
        "  (also accepted: images in bdd-anomaly/bdd100k/seg/images/ or "
        "bdd-anomaly/bdd100k/images/10k/, labels in bdd-anomaly/bdd100k/seg/train_labels/ or "
        "bdd-anomaly/anomaly-seg/seg/train_labels/)"
    )
    source: ClassVar[str] = (
        "images: BDD100K '10K Images' (https://bdd-data.berkeley.edu/, free account), "
        "unpacked so that bdd100k/seg/images/{train,val} becomes seg/images/{train,val};\n"
        "labels: the seg/train_labels folder of https://github.com/hendrycks/anomaly-seg "
        "(git clone; copy seg/train_labels next to seg/images)"
    )
    description: ClassVar[str] = (
        "BDD100K 10K (1280x720 driving scenes) in the Cityscapes class order with train, "
        "motorcycle and bicycle held out: images containing any of them form the test split "
        "(anomaly 1 on their pixels, semantic 255), the rest train/val. Known classes: the 16 "
        "other Cityscapes classes plus 'other' (trained on, in-distribution, as in the official "
        "code). Variant anomaly_classes=('train', 'motorcycle'): 6688/951/361 frames."
    )

    def __init__(
        self,
        root: Path,
        preset: str = "default",
        anomaly_classes: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(root, preset)
        if anomaly_classes is not None:
            self.anomaly_classes = tuple(anomaly_classes)
            self.class_names = known_classes(self.anomaly_classes)  # type: ignore[misc]
            if set(self.anomaly_classes) == set(PAPER_ANOMALY_CLASSES):
                self.expected_counts = self.PAPER_COUNTS  # type: ignore[misc]
            elif set(self.anomaly_classes) != set(DEFAULT_ANOMALY_CLASSES):
                self.expected_counts = {}  # type: ignore[misc]
        self._semantic_lut, self._anomaly_lut = value_lut(self.anomaly_classes)
        self._anomaly_values = {
            CITYSCAPES_TRAINID_NAMES.index(c) + VALUE_OFFSET for c in self.anomaly_classes
        }

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}/{'+'.join(self.anomaly_classes)}"

    def _folder_frames(self, folder: str) -> list[FrameFiles]:
        """Frames of ``seg/images/<folder>`` that have a label file, sorted by image name."""
        images = find_dir(
            "images", "<id>.jpg", [(self.folder / d / folder, n) for d, n in IMAGE_DIRS]
        )
        labels = find_dir(
            "labels", "<id>_train_id.png", [(self.folder / d / folder, n) for d, n in LABEL_DIRS]
        )
        frames = []
        for image in sorted(images.glob("*.jpg")):
            label = labels / f"{image.stem}_train_id.png"
            if label.is_file():
                frames.append(FrameFiles(image.stem, image, semantic=label))
        return frames

    def _values_present(self, frames: list[FrameFiles]) -> list[set[int]]:
        """The label values in each frame's PNG (cached scan, see the module docstring)."""
        stats = [(f.semantic.name, f.semantic.stat()) for f in frames if f.semantic]
        key = content_hash([SCAN_VERSION, [(n, s.st_size, s.st_mtime_ns) for n, s in stats]])
        cache = user_cache_dir() / "index" / f"bdd-anomaly-{key}.json"
        try:
            return [set(v) for v in json.loads(cache.read_text())]
        except (OSError, ValueError):
            pass
        values = []
        for f in tqdm(frames, desc="scan bdd-anomaly labels", leave=False, disable=None):
            assert f.semantic is not None
            values.append(sorted(int(v) for v in np.unique(read_label(f.semantic))))
        atomic_write_text(cache, json.dumps(values))
        return [set(v) for v in values]

    def list_files(self, split: str) -> list[FrameFiles]:
        folders = ("train", "val") if split == "test" else (split,)
        out = []
        for folder in folders:
            frames = self._folder_frames(folder)
            present = self._values_present(frames)
            for frame, values in zip(frames, present, strict=True):
                if bool(values & self._anomaly_values) == (split == "test"):
                    out.append(frame)
        return out

    def _check(self, raw: np.ndarray, path: Path) -> None:
        allowed = {UNUSED_VALUE, OTHER_VALUE}
        allowed |= set(range(VALUE_OFFSET, VALUE_OFFSET + len(CITYSCAPES_TRAINID_NAMES)))
        check_values(raw, allowed, path)

    def decode_semantic(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Pixel values -> known-class ids (``other`` last); anomalies and value 0 -> 255."""
        self._check(raw, path)
        return self._semantic_lut[raw]

    def derive_anomaly(self, semantic_raw: np.ndarray, path: Path) -> np.ndarray:
        """1 on anomaly-class pixels, 255 on value 0, else 0 (``other`` is an inlier)."""
        self._check(semantic_raw, path)
        return self._anomaly_lut[semantic_raw]
