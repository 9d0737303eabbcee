"""``smiyc-ra21`` and ``smiyc-ro21``: the SegmentMeIfYouCan RoadAnomaly21 and RoadObstacle21 tracks.

Layouts (``dataset_AnomalyTrack.zip`` / ``dataset_ObstacleTrack.zip`` from Zenodo unpacked as-is
under ``<data root>/smiyc-ra21/`` / ``<data root>/smiyc-ro21/``), checked against
``SegmentMeIfYouCan/road-anomaly-benchmark: road_anomaly_benchmark/datasets/tracks.py`` (channel
templates, ``DatasetObstacleTrack`` scenes) and ``tracks_extra.py`` (``RoadAnomalyByClass``
frame lists)::

    dataset_AnomalyTrack/images/{fid}.jpg
    dataset_AnomalyTrack/labels_masks/{fid}_labels_semantic.png
    dataset_ObstacleTrack/images/{fid}.webp
    dataset_ObstacleTrack/labels_masks/{fid}_labels_semantic.png

Also accepted: ``images/`` and ``labels_masks/`` straight in the dataset folder (the zip's
contents without its top folder) and ``dataset_*Track/dataset_*Track/`` (unpacked into a folder
named after the zip); :data:`TRACK_DIRS`.

Labels (``DatasetRA.get_frame``): 0 = not anomaly (RoadObstacle21: road), 1 = anomaly /
obstacle, 255 = void; already the project's anomaly convention. There are no semantic labels;
models evaluated here are trained on Cityscapes.

Splits, as the official code selects them by frame id (only validation labels are public; the
test labels are hidden and scored by the SMIYC server):

- RoadAnomaly21 (110 frames): ``AnomalyTrack-validation`` is ``validation0000`` ..
  ``validation0009`` (10), ``AnomalyTrack-test`` the other 100 (animals, vehicles, ...).
- RoadObstacle21: a frame's scene is its id up to the first ``_``. ``ObstacleTrack-validation``
  is scene ``validation`` minus ids starting with ``validation_19`` or ``validation_21`` ..
  ``validation_29`` (30 frames); ``ObstacleTrack-test`` is the scenes curvy-street,
  one-way-street, gravel, greyasphalt, motorway, paving, darkasphalt, darkasphalt2 (327 frames;
  snowstorm and night scenes excluded).

Component metrics use the official size filters of each track (``SMIYC_TRACK_FILTERS``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from owsbench.datasets.base import FileDataset, FrameFiles
from owsbench.datasets.cityscapes import require_dir
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import AS_IS, FLAT, NAMED_FOLDER, candidates, find_dir
from owsbench.metrics.components import SMIYC_TRACK_FILTERS

LABEL_SUFFIX = "_labels_semantic.png"
# where a track's folder may be under <data root>/<id> ("{0}": the archive folder), preferred first
TRACK_DIRS = (("{0}", AS_IS), ("", FLAT), ("{0}/{0}", NAMED_FOLDER))
HIDDEN_TEST_LABELS = (
    "SMIYC test labels are hidden; submit test predictions to the SMIYC server "
    "(https://segmentmeifyoucan.com) and evaluate locally on validation"
)


class SmiycTrack(FileDataset):
    """One SMIYC track: ``<archive folder>/images/{fid}.<ext>`` with binary labels.

    Subclasses name the archive folder, the image extension and which frame ids form the
    validation split (:meth:`is_validation`).
    """

    archive_folder: ClassVar[str]
    image_ext: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("validation", "test")
    eval_splits: ClassVar[tuple[str, ...]] = ("validation",)
    unlabelled_splits: ClassVar[dict[str, str]] = {"test": HIDDEN_TEST_LABELS}

    @classmethod
    @abstractmethod
    def is_validation(cls, frame_id: str) -> bool:
        """Whether ``frame_id`` belongs to the official validation split."""

    def list_files(self, split: str) -> list[FrameFiles]:
        """The validation frames (the only labelled split) sorted by frame id."""
        dirs = [(sub.format(self.archive_folder), layout) for sub, layout in TRACK_DIRS]
        images = find_dir(
            "images", f"{{fid}}.{self.image_ext}", candidates(self.folder, dirs, "images")
        )
        labels = images.parent / "labels_masks"
        require_dir(labels, f"labels as {labels}/{{fid}}{LABEL_SUFFIX}")
        return [
            FrameFiles(path.stem, path, anomaly=labels / f"{path.stem}{LABEL_SUFFIX}")
            for path in sorted(images.glob(f"*.{self.image_ext}"))
            if self.is_validation(path.stem)
        ]


class RoadAnomaly21(SmiycTrack):
    """SMIYC RoadAnomaly21 (anomaly track): 10 labelled validation frames, 100 hidden test."""

    name: ClassVar[str] = "smiyc-ra21"
    archive_folder: ClassVar[str] = "dataset_AnomalyTrack"
    image_ext: ClassVar[str] = "jpg"
    expected_counts: ClassVar[dict[str, int]] = {"validation": 10, "test": 100}
    component_size_filters: ClassVar[tuple[int, int]] = SMIYC_TRACK_FILTERS["anomaly"]
    layout: ClassVar[str] = (
        "smiyc-ra21/dataset_AnomalyTrack/images/{fid}.jpg  (110 frames)\n"
        "smiyc-ra21/dataset_AnomalyTrack/labels_masks/{fid}_labels_semantic.png  "
        "(validation0000..validation0009 only)\n"
        "  (also accepted: images/ and labels_masks/ straight in smiyc-ra21/, or one more "
        "dataset_AnomalyTrack/ level)"
    )
    source: ClassVar[str] = (
        "https://segmentmeifyoucan.com/datasets (Zenodo record 5270237): dataset_AnomalyTrack.zip,"
        " unpacked into <data root>/smiyc-ra21/"
    )
    description: ClassVar[str] = (
        "SegmentMeIfYouCan RoadAnomaly21: 110 web images of unusual objects (animals, vehicles, "
        "...) anywhere in road scenes; anomaly labels only (0 inlier, 1 anomaly, 255 void). Only "
        "the 10 validation frames (validation0000..0009) have public labels and are evaluated; "
        "the 100 test frames are scored by the SMIYC server. Models train on Cityscapes."
    )

    @classmethod
    def is_validation(cls, frame_id: str) -> bool:
        return frame_id.startswith("validation")


class RoadObstacle21(SmiycTrack):
    """SMIYC RoadObstacle21 (obstacle track): 30 labelled validation frames, 327 hidden test."""

    name: ClassVar[str] = "smiyc-ro21"
    archive_folder: ClassVar[str] = "dataset_ObstacleTrack"
    image_ext: ClassVar[str] = "webp"
    expected_counts: ClassVar[dict[str, int]] = {"validation": 30, "test": 327}
    component_size_filters: ClassVar[tuple[int, int]] = SMIYC_TRACK_FILTERS["obstacle"]
    # ``ObstacleTrack-validation.exclude_prefix`` in tracks.py
    EXCLUDED_VALIDATION_PREFIXES: ClassVar[tuple[str, ...]] = (
        "validation_19",
        *(f"validation_{i}" for i in range(21, 30)),
    )
    layout: ClassVar[str] = (
        "smiyc-ro21/dataset_ObstacleTrack/images/{scene}_{...}.webp\n"
        "smiyc-ro21/dataset_ObstacleTrack/labels_masks/{fid}_labels_semantic.png  "
        "(validation scene only)\n"
        "  (also accepted: images/ and labels_masks/ straight in smiyc-ro21/, or one more "
        "dataset_ObstacleTrack/ level)"
    )
    source: ClassVar[str] = (
        "https://segmentmeifyoucan.com/datasets (Zenodo record 5281633): "
        "dataset_ObstacleTrack.zip, unpacked into <data root>/smiyc-ro21/"
    )
    description: ClassVar[str] = (
        "SegmentMeIfYouCan RoadObstacle21: small obstacles on the road; anomaly labels only "
        "(0 road, 1 obstacle, 255 off-road void). Only the 30 validation frames have public "
        "labels and are evaluated; the 327 test frames are scored by the SMIYC server. Models "
        "train on Cityscapes."
    )

    @classmethod
    def is_validation(cls, frame_id: str) -> bool:
        return frame_id.split("_")[0] == "validation" and not frame_id.startswith(
            cls.EXCLUDED_VALIDATION_PREFIXES
        )
