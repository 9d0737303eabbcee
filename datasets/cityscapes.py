"""``cityscapes``: Cityscapes gtFine, 19 evaluated classes (trainIds), no anomaly labels.

Layout (the official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked
as-is under ``<data root>/cityscapes/``), checked against ``mcordts/cityscapesScripts``
(README "Dataset structure", ``helpers/labels.py``, ``preparation/createTrainIdLabelImgs.py``):

    leftImg8bit/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    gtFine/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    gtFine/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_instanceIds.png  (optional)

``*_gtFine_labelIds.png`` holds labelIds 0..33 (the license plate, id -1, is never drawn); they
are mapped to the 19 trainIds with the official table, every other id to 255. When
``*_gtFine_labelTrainIds.png`` (made by ``csCreateTrainIdLabelImgs``) is present next to it, it
is read directly (values 0..18 and 255). When ``*_gtFine_instanceIds.png`` is present, it gives
the frame's instance ids (``Frame.instances``): the official 16-bit encoding
(``preparation/json2instanceImg.py``) is ``labelId * 1000 + instance index`` on the objects of
classes with instances and the plain labelId elsewhere (stuff and crowd regions); values >= 1000
are kept as the ids (unique within a frame), everything else is 0. Objects of caravan and
trailer (labelIds 29, 30: instances in the official data, but void trainIds) are 0 as well, so
every id lies on a thing class (person, rider, car, truck, bus, train, motorcycle, bicycle =
trainIds 11..18). Test labels are not public (the download only holds the
ego-vehicle and border masks), so ``test`` is refused.

Both zips hold a README and license.txt beside their folder, so an unpacker that makes a folder
named after the archive (Windows "Extract all", macOS Archive Utility, ``unzip -d``) gives
``leftImg8bit_trainvaltest/leftImg8bit/...`` and ``gtFine_trainvaltest/gtFine/...``: accepted
too (:data:`IMAGE_DIRS`, :data:`LABEL_DIRS`; each zip on its own).

The city-folder walk (:func:`city_frames`) is shared with the LostAndFound adapter, which uses
the same ``{kind}/{split}/{city}/{frame id}_{kind suffix}.png`` scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from owsbench.datasets.base import VOID, FileDataset, FrameFiles
from owsbench.datasets.io import check_values
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import AS_IS, NAMED_FOLDER, candidates, find_dir
from owsbench.errors import BadInput

# labelId -> trainId for the 19 evaluated classes (cityscapesScripts ``helpers/labels.py``);
# every other labelId (0-6, 9, 10, 14-16, 18, 29, 30) has ``ignoreInEval`` and maps to 255.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
NUM_LABEL_IDS = 34  # labelIds 0..33
LABEL_ID_LUT = np.array(
    [LABEL_ID_TO_TRAIN_ID.get(label_id, VOID) for label_id in range(256)], np.uint8
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
# where each zip's folder may be under <data root>/cityscapes (preferred first; datasets/layouts.py)
IMAGE_DIRS = (("leftImg8bit", AS_IS), ("leftImg8bit_trainvaltest/leftImg8bit", NAMED_FOLDER))
LABEL_DIRS = (("gtFine", AS_IS), ("gtFine_trainvaltest/gtFine", NAMED_FOLDER))
# instanceIds values >= INSTANCE_OFFSET are labelId * 1000 + instance index (json2instanceImg.py)
INSTANCE_OFFSET = 1000
# trainIds of the classes with instances that are evaluated: person .. bicycle
THING_TRAIN_IDS: tuple[int, ...] = tuple(range(11, 19))
# labelIds whose objects become instance ids (the ones with a thing trainId)
THING_LABEL_IDS = frozenset(k for k, v in LABEL_ID_TO_TRAIN_ID.items() if v in THING_TRAIN_IDS)
# labelIds with instances in the official data (``hasInstances``: 24..33, caravan and trailer too)
HAS_INSTANCES_LABEL_IDS = frozenset(range(24, 34))


def label_ids_to_train_ids(label_ids: np.ndarray, path: Path) -> np.ndarray:
    """Cityscapes labelIds (0..33) -> trainIds 0..18 / 255; ``BadInput`` on other values."""
    check_values(label_ids, set(range(NUM_LABEL_IDS)), path)
    return LABEL_ID_LUT[label_ids]


def instance_ids(raw: np.ndarray, path: Path) -> np.ndarray:
    """A Cityscapes ``*_gtFine_instanceIds.png`` array -> ``(H, W)`` int32 instance ids.

    Values ``labelId * 1000 + k`` of a thing class are kept, every other pixel (stuff, crowd
    regions, caravan/trailer objects) is 0; ``BadInput`` naming ``path`` on a value that is not a
    labelId 0..33 nor ``labelId * 1000 + k`` of a class with instances.
    """
    values = np.unique(raw).astype(np.int64)
    objects = values[values >= INSTANCE_OFFSET]
    plain = {int(v) for v in values[values < INSTANCE_OFFSET]}
    bad = sorted(plain - set(range(NUM_LABEL_IDS))) + [
        int(v) for v in objects if int(v) // INSTANCE_OFFSET not in HAS_INSTANCES_LABEL_IDS
    ]
    if bad:
        shown = ", ".join(map(str, bad[:5]))
        raise BadInput(
            f"{path}: unexpected instance values {shown} (allowed: labelIds 0..33, "
            "labelId * 1000 + k for labelIds 24..33)"
        )
    keep = [int(v) for v in objects if int(v) // INSTANCE_OFFSET in THING_LABEL_IDS]
    ids = raw.astype(np.int32)
    ids[~np.isin(ids, keep)] = 0
    return ids


def city_frames(
    images_root: Path, label_candidates: Callable[[str, str], tuple[Path, ...]]
) -> list[tuple[str, Path, Path]]:
    """``(frame id, image, label)`` of every ``{images_root}/{city}/*_leftImg8bit.png``
    (``images_root``: a split folder of ``leftImg8bit``, found by the caller).

    ``label_candidates(city, frame_id)`` lists the frame's accepted label files, preferred first;
    the first that exists is used. Frames are sorted by frame id. ``BadInput`` names the
    expected pattern when there are no images, or the first image without a label file.
    """
    pattern = f"{images_root}/{{city}}/*{IMAGE_SUFFIX}"
    images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in images_root.glob(f"*/*{IMAGE_SUFFIX}")}
    if not images:
        raise BadInput(f"no images in {images_root}; expected images as {pattern}")
    frames = []
    for frame_id, image in sorted(images.items()):
        options = label_candidates(image.parent.name, frame_id)
        label = next((p for p in options if p.is_file()), None)
        if label is None:
            raise BadInput(f"{image}: label file missing (expected {options[-1]})")
        frames.append((frame_id, image, label))
    return frames


def require_dir(folder: Path, pattern: str) -> None:
    """``BadInput`` naming ``folder`` and the expected file ``pattern`` when it is missing."""
    if not folder.is_dir():
        raise BadInput(f"{folder} not found; expected {pattern}")


class Cityscapes(FileDataset):
    """Cityscapes fine annotations in the 19-class trainId space (semantic labels, and instance
    ids where ``*_gtFine_instanceIds.png`` is present)."""

    name: ClassVar[str] = "cityscapes"
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    expected_counts: ClassVar[dict[str, int]] = {"train": 2975, "val": 500, "test": 1525}
    provides_instances: ClassVar[bool] = True
    thing_classes: ClassVar[tuple[int, ...]] = THING_TRAIN_IDS
    unlabelled_splits: ClassVar[dict[str, str]] = {
        "test": "Cityscapes test labels are not public (evaluate on val; the test server scores "
        "test predictions)"
    }
    layout: ClassVar[str] = (
        "cityscapes/leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png\n"
        "cityscapes/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png\n"
        "  (optional: *_gtFine_labelTrainIds.png from csCreateTrainIdLabelImgs, used if present)\n"
        "cityscapes/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png\n"
        "  (optional, in gtFine_trainvaltest.zip: instance ids, labelId * 1000 + k on objects)\n"
        "  (also accepted: cityscapes/leftImg8bit_trainvaltest/leftImg8bit/... and\n"
        "  cityscapes/gtFine_trainvaltest/gtFine/..., each zip unpacked into a folder of its name)"
    )
    source: ClassVar[str] = (
        "https://www.cityscapes-dataset.com/downloads/ (free account): leftImg8bit_trainvaltest.zip"
        " and gtFine_trainvaltest.zip, both unpacked into <data root>/cityscapes/"
    )
    description: ClassVar[str] = (
        "Cityscapes gtFine (2048x1024 street scenes from 50 cities), 19 evaluated classes "
        "(trainIds; other labelIds are void). No anomaly labels: rows report mIoU only. "
        "Splits train/val/test = 2975/500/1525; test labels are not public, val is evaluated. "
        "Instance ids (person..bicycle) from *_gtFine_instanceIds.png where present."
    )

    def list_files(self, split: str) -> list[FrameFiles]:
        pattern = f"{{city}}/*{LABEL_IDS_SUFFIX}"
        labels = find_dir("labels", pattern, candidates(self.folder, LABEL_DIRS, split))
        images = find_dir(
            "images", f"{{city}}/*{IMAGE_SUFFIX}", candidates(self.folder, IMAGE_DIRS, split)
        )

        def label_candidates(city: str, frame_id: str) -> tuple[Path, ...]:
            return (
                labels / city / (frame_id + TRAIN_IDS_SUFFIX),
                labels / city / (frame_id + LABEL_IDS_SUFFIX),
            )

        frames = city_frames(images, label_candidates)
        files = []
        for fid, image, label in frames:
            instances = label.parent / (fid + INSTANCE_IDS_SUFFIX)
            files.append(
                FrameFiles(
                    fid, image, semantic=label, instances=instances if instances.is_file() else None
                )
            )
        return files

    def decode_semantic(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """labelTrainIds files are validated as they are; labelIds files are mapped."""
        if path.name.endswith(TRAIN_IDS_SUFFIX):
            return super().decode_semantic(raw, path)
        return label_ids_to_train_ids(raw, path)

    def decode_instances(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """The official instanceIds encoding -> instance ids (module docstring)."""
        return instance_ids(raw, path)
