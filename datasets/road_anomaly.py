"""``road-anomaly``: Road Anomaly (Lis et al., ICCV 2019), 60 web images of unusual road obstacles.

Layout (``RoadAnomaly_jpg.zip`` from the EPFL CVLab page unpacked as-is under
``<data root>/road-anomaly/``, which creates the ``RoadAnomaly_jpg/`` folder)::

    RoadAnomaly_jpg/frames/{name}.jpg
    RoadAnomaly_jpg/frames/{name}.labels/labels_semantic.png

Also accepted: ``frames/`` straight in ``road-anomaly/`` (the zip's contents without its top
folder) and ``RoadAnomaly_jpg/RoadAnomaly_jpg/frames/`` (unpacked into a folder named after it).

Checked against the dataset's own ``readme.md`` ("per pixel label, background = 0 and anomaly =
2"), a loader in the authors' code (dataset ``RoadAnomaly``: class names background, road,
anomaly; ``anomaly_gt = labels_source >= 2``) and ``kkirchheim/pytorch-ood:
src/pytorch_ood/dataset/img/roadanomaly.py`` (60 frames, ``frames/*.jpg`` with
``{stem}.labels/labels_semantic.png``). Values 0 and 1 are inliers (0), 2 is anomaly (1); no
pixel is void. There are no semantic labels; models evaluated here are trained on Cityscapes.
The frames are the whole dataset: one ``test`` split.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from owsbench.datasets.base import FileDataset, FrameFiles
from owsbench.datasets.io import check_values
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import AS_IS, FLAT, NAMED_FOLDER, candidates, find_dir

ARCHIVE_FOLDER = "RoadAnomaly_jpg"
LABEL_FILE = "labels_semantic.png"
ANOMALY_VALUE = 2
# where the frames folder may be under <data root>/road-anomaly (preferred first)
FRAME_DIRS = (
    (f"{ARCHIVE_FOLDER}/frames", AS_IS),
    ("frames", FLAT),
    (f"{ARCHIVE_FOLDER}/{ARCHIVE_FOLDER}/frames", NAMED_FOLDER),
)


class RoadAnomaly(FileDataset):
    """Road Anomaly: anomaly labels only (0/1 background/road -> 0, 2 -> 1), one test split."""

    name: ClassVar[str] = "road-anomaly"
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("test",)
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    expected_counts: ClassVar[dict[str, int]] = {"test": 60}
    layout: ClassVar[str] = (
        "road-anomaly/RoadAnomaly_jpg/frames/{name}.jpg\n"
        "road-anomaly/RoadAnomaly_jpg/frames/{name}.labels/labels_semantic.png\n"
        "  (also accepted: road-anomaly/frames/... and road-anomaly/RoadAnomaly_jpg/"
        "RoadAnomaly_jpg/frames/...)"
    )
    source: ClassVar[str] = (
        "https://www.epfl.ch/labs/cvlab/data/road-anomaly/: RoadAnomaly_jpg.zip, unpacked into "
        "<data root>/road-anomaly/"
    )
    description: ClassVar[str] = (
        "Road Anomaly (Lis et al. 2019): 60 web images of animals, vehicles and other unusual "
        "objects on or near roads; anomaly labels only (label PNG 2 = anomaly, 0/1 = inlier, no "
        "void). Models train on Cityscapes."
    )

    def list_files(self, split: str) -> list[FrameFiles]:
        frames = find_dir("images", "{name}.jpg", candidates(self.folder, FRAME_DIRS))
        return [
            FrameFiles(path.stem, path, anomaly=frames / f"{path.stem}.labels" / LABEL_FILE)
            for path in sorted(frames.glob("*.jpg"))
        ]

    def decode_anomaly(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """0 (background), 1 (road) -> 0; 2 (anomaly) -> 1."""
        check_values(raw, {0, 1, ANOMALY_VALUE}, path)
        return (raw == ANOMALY_VALUE).astype(np.uint8)
