"""Fishyscapes validation sets (Blum et al.): ``fishyscapes-laf`` and ``fishyscapes-static``.

Both ship as a flat zip of anomaly masks named ``{NNNN}_{base frame id}_labels.png`` (uint8:
0 = inlier, 1 = anomaly, 255 = void), without the images: those come from the base dataset and
are matched by the base frame id. Checked against ``hermannsblum/bdl-benchmark:
bdlb/fishyscapes/fishyscapes_tfds.py`` (download URLs, ``([0-9]+)_(.+)_labels.png`` file names,
1024x2048 images, ``clip(cityscapes + overlay)`` for Static, Static version 3.0.0) and
``bdlb/fishyscapes/benchmark.py`` (``mask == 1`` anomaly, ``mask > 1`` void), and
``kkirchheim/pytorch-ood: dataset/img/fishyscapes.py`` (L&F image lookup in LostAndFound
``leftImg8bit/{train,test}/{sequence}/``).

The images may sit in the Fishyscapes folder itself or be shared with the base dataset's folder
in the same data root (``lostandfound/`` for L&F, ``cityscapes/`` for Static); the own folder
wins. Only anomaly labels exist; models are trained on Cityscapes.

The mask zips have no top folder: unpacked as-is the masks lie straight in the dataset folder
(``fishyscapes-laf/{NNNN}_{id}_labels.png``), unpacked into a folder named after the zip one
level down (``fishyscapes-laf/fishyscapes_lostandfound/...``); both are accepted, the named
folder first. The images' ``leftImg8bit`` folder may have the base dataset's alternative layouts
too (``lostandfound.IMAGE_DIRS``, ``cityscapes.IMAGE_DIRS``).
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from owsbench.datasets import cityscapes, lostandfound
from owsbench.datasets.base import FileDataset, Frame, FrameFiles
from owsbench.datasets.cityscapes import IMAGE_SUFFIX
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.layouts import find_dir
from owsbench.datasets.lostandfound import scene_folder
from owsbench.errors import BadInput
from owsbench.metrics.components import SMIYC_TRACK_FILTERS

LABEL_FILE = re.compile(r"(?P<fs_id>[0-9]+)_(?P<base_id>.+)_labels\.png")
LABEL_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_rgb.npz"


class FishyscapesDataset(FileDataset):
    """A Fishyscapes mask folder whose frames take their images from a base dataset.

    Subclasses name the mask folder (``label_dir``, also the zip's name), the base dataset id
    whose folder may hold the images (``base_dataset``), where its ``leftImg8bit`` folder may be
    (``image_dirs``) and the image paths a base frame id may have (``image_candidates``).
    """

    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("val",)
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    label_dir: ClassVar[str]
    base_dataset: ClassVar[str]
    image_dirs: ClassVar[tuple[tuple[str, str], ...]]

    @abstractmethod
    def image_candidates(self, images_root: Path, base_id: str) -> tuple[Path, ...]:
        """Where the image of base frame ``base_id`` may be, under a ``leftImg8bit`` folder."""

    def list_files(self, split: str) -> list[FrameFiles]:
        labels = find_dir(
            "the unpacked masks",
            f"{{NNNN}}_{{frame id}}{LABEL_SUFFIX}",
            [
                (self.folder / self.label_dir, f"{self.label_dir}.zip into a folder of its name"),
                (self.folder, f"{self.label_dir}.zip as unpacked: no top folder"),
            ],
            contains=f"*{LABEL_SUFFIX}",
        )
        bases = (self.folder, self.root / self.base_dataset)
        roots = [base / sub for base in bases for sub, _ in self.image_dirs]
        frames = []
        for label in sorted(labels.glob(f"*{LABEL_SUFFIX}")):
            match = LABEL_FILE.fullmatch(label.name)
            if match is None:
                raise BadInput(
                    f"{label}: not a Fishyscapes mask name ({{NNNN}}_{{frame id}}_labels.png)"
                )
            candidates = [p for r in roots for p in self.image_candidates(r, match["base_id"])]
            image = next((p for p in candidates if p.is_file()), None)
            if image is None:
                looked = ", ".join(map(str, candidates))
                raise BadInput(f"{label}: image missing; looked for {looked}")
            frames.append(FrameFiles(label.name[: -len(LABEL_SUFFIX)], image, anomaly=label))
        return frames


class FishyscapesLostAndFound(FishyscapesDataset):
    """Fishyscapes Lost & Found validation: 100 LostAndFound frames with Fishyscapes masks."""

    name: ClassVar[str] = "fishyscapes-laf"
    label_dir: ClassVar[str] = "fishyscapes_lostandfound"
    base_dataset: ClassVar[str] = "lostandfound"
    image_dirs: ClassVar[tuple[tuple[str, str], ...]] = lostandfound.IMAGE_DIRS
    expected_counts: ClassVar[dict[str, int]] = {"val": 100}
    # SMIYC evaluates FishyLAFAnomaly-val with the anomaly-track filters (metrics/components.py).
    component_size_filters: ClassVar[tuple[int, int]] = SMIYC_TRACK_FILTERS["anomaly"]
    layout: ClassVar[str] = (
        "fishyscapes-laf/fishyscapes_lostandfound/{NNNN}_{LAF frame id}_labels.png  "
        "(fishyscapes_lostandfound.zip, unpacked flat; or straight into fishyscapes-laf/)\n"
        "fishyscapes-laf/leftImg8bit/{train,test}/{NN}_{scene}/{LAF frame id}_leftImg8bit.png  "
        "(LostAndFound leftImg8bit.zip; or shared from lostandfound/leftImg8bit/)"
    )
    source: ClassVar[str] = (
        "masks: http://robotics.ethz.ch/~asl-datasets/Fishyscapes/fishyscapes_lostandfound.zip; "
        "images: LostAndFound leftImg8bit.zip from "
        "http://wwwlehre.dhbw-stuttgart.de/~sgehrig/lostAndFoundDataset/index.html"
    )
    description: ClassVar[str] = (
        "Fishyscapes Lost & Found validation: 100 LostAndFound frames (2048x1024) with "
        "Fishyscapes anomaly masks (0 inlier, 1 anomaly, 255 void); no semantic labels. "
        "Models train on Cityscapes. SMIYC anomaly-track component size filters."
    )

    def image_candidates(self, images_root: Path, base_id: str) -> tuple[Path, ...]:
        folder = scene_folder(base_id)
        if folder is None:
            raise BadInput(
                f"{base_id!r} is not a LostAndFound frame id ({{NN}}_{{scene}}_{{seq}}_{{frame}})"
            )
        return tuple(
            images_root / s / folder / f"{base_id}{IMAGE_SUFFIX}" for s in ("test", "train")
        )


class FishyscapesStatic(FishyscapesDataset):
    """Fishyscapes Static validation (v3.0.0): Cityscapes val images with blended overlays."""

    name: ClassVar[str] = "fishyscapes-static"
    label_dir: ClassVar[str] = "fs_val_v3"
    base_dataset: ClassVar[str] = "cityscapes"
    image_dirs: ClassVar[tuple[tuple[str, str], ...]] = cityscapes.IMAGE_DIRS
    expected_counts: ClassVar[dict[str, int]] = {"val": 30}  # commonly cited, not verified
    layout: ClassVar[str] = (
        "fishyscapes-static/fs_val_v3/{NNNN}_{cityscapes id}_labels.png and "
        "{NNNN}_{cityscapes id}_rgb.npz  (fs_val_v3.zip, unpacked flat; or straight into "
        "fishyscapes-static/)\n"
        "cityscapes/leftImg8bit/val/{city}/{cityscapes id}_leftImg8bit.png  (the Cityscapes "
        "folder of the same data root; or fishyscapes-static/leftImg8bit/val/...)"
    )
    source: ClassVar[str] = (
        "overlays and masks: http://robotics.ethz.ch/~asl-datasets/Fishyscapes/fs_val_v3.zip "
        "(version 3.0.0); images: Cityscapes leftImg8bit_trainvaltest.zip"
    )
    description: ClassVar[str] = (
        "Fishyscapes Static validation v3.0.0: Cityscapes val images with PASCAL VOC objects "
        "blended in (image = clip(cityscapes + overlay)); masks 0 inlier, 1 anomaly, 255 void; "
        "no semantic labels. 30 frames (commonly cited, not verified). Models train on Cityscapes."
    )

    def image_candidates(self, images_root: Path, base_id: str) -> tuple[Path, ...]:
        city = base_id.split("_", 1)[0]
        return (images_root / "val" / city / f"{base_id}{IMAGE_SUFFIX}",)

    def load_frame(self, files: FrameFiles) -> Frame:
        """The Cityscapes image plus the frame's ``rgb`` overlay, clipped to 0..255."""
        frame = super().load_frame(files)
        assert files.anomaly is not None
        overlay_path = files.anomaly.with_name(
            files.anomaly.name[: -len(LABEL_SUFFIX)] + OVERLAY_SUFFIX
        )
        overlay = read_overlay(overlay_path, frame.image.shape)
        image = np.clip(frame.image.astype(np.int32) + overlay, 0, 255).astype(np.uint8)
        return dataclasses.replace(frame, image=image)


def read_overlay(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The ``rgb`` array of a Fishyscapes Static overlay ``.npz`` as int32 of ``shape``."""
    try:
        with np.load(path) as archive:
            overlay = archive["rgb"].astype(np.int32)
    except FileNotFoundError:
        raise BadInput(f"missing file: {path}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise BadInput(f"cannot read {path}: not an overlay archive with 'rgb' ({err})") from None
    if overlay.shape != shape:
        raise BadInput(f"{path}: overlay has shape {overlay.shape}, its image {shape}")
    return overlay
