"""``lostandfound``: Lost and Found (Pinggera et al., IROS 2016), obstacles on the road.

Layout (the official ``leftImg8bit.zip`` and ``gtCoarse.zip`` unpacked as-is under
``<data root>/lostandfound/``; Cityscapes-style folders, one per recording sequence):

    leftImg8bit/{train,test}/{NN}_{scene}/{NN}_{scene}_{seq:06d}_{frame:06d}_leftImg8bit.png
    gtCoarse/{train,test}/{NN}_{scene}/{NN}_{scene}_{seq:06d}_{frame:06d}_gtCoarse_labelIds.png

Each zip unpacked into a folder named after it (``leftImg8bit/leftImg8bit/...``,
``gtCoarse/gtCoarse/...``: Windows "Extract all", ``unzip -d leftImg8bit``) is accepted too
(:data:`IMAGE_DIRS`, :data:`LABEL_DIRS`).

``*_gtCoarse_labelIds.png`` values, decoded as SMIYC does (``SegmentMeIfYouCan/
road-anomaly-benchmark: road_anomaly_benchmark/datasets/tracks.py``, ``DatasetLostAndFound``,
``LAF_CLASSES``): 1 free road -> 0 (inlier), 2..200 obstacles -> 1 (anomaly), 0 (ignore) and
anything else -> 255 (void). There are no semantic labels; models are trained on Cityscapes.

Splits (frames sorted by frame id, as SMIYC does):

- ``test``: every test frame (SMIYC ``LostAndFound-test``, 1203 frames).
- ``testNoKnown`` (evaluated; SMIYC ``LostAndFound-testNoKnown``, 1043 frames): ``test`` minus
  the 17 frames whose labels are all 0 (SMIYC lists them by index into the sorted full test
  split, :data:`INVALID_TEST_INDICES`) minus the scenes with children or bicycles
  (:data:`KNOWN_OBJECT_PREFIXES`). The indices only identify frames in the complete split: on a
  subset of ``test`` only the scene exclusion is applied (all-ignore frames add no pixels to any
  metric, only to the frame count) and ``check`` says so.

SMIYC's ``LostAndFound-train`` is not offered (no method here trains on it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from owsbench.datasets.base import VOID, FileDataset, FrameFiles
from owsbench.datasets.cityscapes import IMAGE_SUFFIX, city_frames
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import AS_IS, NAMED_FOLDER, candidates, find_dir
from owsbench.metrics.components import SMIYC_TRACK_FILTERS

LABEL_SUFFIX = "_gtCoarse_labelIds.png"
# where each zip's folder may be under <data root>/lostandfound (preferred first)
IMAGE_DIRS = (("leftImg8bit", AS_IS), ("leftImg8bit/leftImg8bit", NAMED_FOLDER))
LABEL_DIRS = (("gtCoarse", AS_IS), ("gtCoarse/gtCoarse", NAMED_FOLDER))
FREE_ROAD = 1
OBSTACLES = (2, 200)  # inclusive range of obstacle labelIds
FULL_TEST_FRAMES = 1203

# ``LostAndFound-testNoKnown`` in SMIYC ``datasets/tracks.py`` (commit 1c7804e / 0555238):
# "invalid frames are those where np.count_nonzero(labels_source) is 0", as indices into the
# sorted test split, and the prefixes of the scenes with known objects (children, bicycles).
INVALID_TEST_INDICES: tuple[int, ...] = (
    17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793
)  # fmt: skip
KNOWN_OBJECT_PREFIXES: tuple[str, ...] = (
    "15_Rechbergstr_Deckenpfronn",  # children
    "01_Hanns_Klemm_Str_45_000006",  # bicycle
    "01_Hanns_Klemm_Str_45_000007",  # bicycle
    "10_Schlossberg_9_000004",  # bicycle
)

# {NN}_{scene}_{seq:06d}_{frame:06d}; the scene folder is {NN}_{scene}.
FRAME_ID = re.compile(r"(?P<folder>[0-9]{2}_.+)_[0-9]{6}_[0-9]{6}")


def scene_folder(frame_id: str) -> str | None:
    """The sequence folder of a LostAndFound frame id (``04_Maurener_Weg_8_000000_000030`` ->
    ``04_Maurener_Weg_8``), or None when the id does not follow the naming scheme."""
    match = FRAME_ID.fullmatch(frame_id)
    return match["folder"] if match else None


def decode_gt_coarse(raw: np.ndarray) -> np.ndarray:
    """gtCoarse labelIds -> anomaly labels: 1 -> 0, 2..200 -> 1, everything else -> 255."""
    out = np.full(raw.shape, VOID, np.uint8)
    out[raw == FREE_ROAD] = 0
    out[(raw >= OBSTACLES[0]) & (raw <= OBSTACLES[1])] = 1
    return out


class LostAndFound(FileDataset):
    """Lost and Found test frames with obstacle (anomaly) labels on the free road."""

    name: ClassVar[str] = "lostandfound"
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("test", "testNoKnown")
    eval_splits: ClassVar[tuple[str, ...]] = ("testNoKnown",)
    expected_counts: ClassVar[dict[str, int]] = {"test": FULL_TEST_FRAMES, "testNoKnown": 1043}
    component_size_filters: ClassVar[tuple[int, int]] = SMIYC_TRACK_FILTERS["obstacle"]
    layout: ClassVar[str] = (
        "lostandfound/leftImg8bit/test/{NN}_{scene}/{NN}_{scene}_{seq}_{frame}_leftImg8bit.png\n"
        "lostandfound/gtCoarse/test/{NN}_{scene}/{NN}_{scene}_{seq}_{frame}_gtCoarse_labelIds.png\n"
        "  (also accepted: leftImg8bit/leftImg8bit/test/..., gtCoarse/gtCoarse/test/...: each "
        "zip unpacked into a folder of its name)"
    )
    source: ClassVar[str] = (
        "http://wwwlehre.dhbw-stuttgart.de/~sgehrig/lostAndFoundDataset/index.html: "
        "leftImg8bit.zip and gtCoarse.zip, both unpacked into <data root>/lostandfound/"
    )
    description: ClassVar[str] = (
        "Lost and Found (2048x1024 stereo-rig left images), small obstacles on the road; "
        "labels: free road = inlier, obstacles = anomaly, rest void (SMIYC encoding). Evaluated "
        "split testNoKnown (SMIYC LostAndFound-testNoKnown, 1043 frames: test minus all-ignore "
        "frames and scenes with children or bicycles); test = all 1203 test frames. No semantic "
        "labels; models train on Cityscapes. SMIYC obstacle-track component size filters."
    )

    def list_files(self, split: str) -> list[FrameFiles]:
        pattern = f"{{NN}}_{{scene}}/*{LABEL_SUFFIX}"
        labels = find_dir("labels", pattern, candidates(self.folder, LABEL_DIRS, "test"))
        images = find_dir(
            "images",
            f"{{NN}}_{{scene}}/*{IMAGE_SUFFIX}",
            candidates(self.folder, IMAGE_DIRS, "test"),
        )

        def label_candidates(folder: str, frame_id: str) -> tuple[Path, ...]:
            return (labels / folder / (frame_id + LABEL_SUFFIX),)

        frames = [
            FrameFiles(fid, image, anomaly=label)
            for fid, image, label in city_frames(images, label_candidates)
        ]
        if split == "testNoKnown":
            if len(frames) == FULL_TEST_FRAMES:
                invalid = set(INVALID_TEST_INDICES)
                frames = [f for i, f in enumerate(frames) if i not in invalid]
            frames = [f for f in frames if not f.frame_id.startswith(KNOWN_OBJECT_PREFIXES)]
        return frames

    def decode_anomaly(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return decode_gt_coarse(raw)

    def check(self, progress: bool = True) -> list[str]:
        warnings = super().check(progress)
        if len(self.files("test")) != FULL_TEST_FRAMES:
            warnings.append(
                f"{self.name}/testNoKnown: the {len(INVALID_TEST_INDICES)} all-ignore frames "
                "SMIYC drops are known only by their index in the complete test split, so they "
                "are kept in this subset"
            )
        return warnings
