"""Layout tolerance: every adapter reads the layouts an official archive gives when unpacked in the
obvious ways (as-is, without its top folder, into a folder named after the archive), and when
none is there the one-line error lists the layouts it looked for."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dataset_fixtures import make_cityscapes_tree
from fixtures_bdd_coco import make_bdd_tree
from fixtures_fishy_laf import (
    make_fishyscapes_laf_tree,
    make_fishyscapes_static_tree,
    make_lostandfound_tree,
)
from fixtures_streethazards_smiyc import (
    make_road_anomaly_tree,
    make_smiyc_tree,
    make_streethazards_tree,
)

from owsbench.catalog import DATASETS
from owsbench.datasets.layouts import find_dir
from owsbench.errors import BadInput


def move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (``dst`` may lie inside ``src``)."""
    staging = src.with_name(src.name + ".moving")
    src.rename(staging)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dst)


def flatten(folder: Path) -> None:
    """Move the contents of ``folder`` one level up and remove it (an archive's top folder)."""
    for child in list(folder.iterdir()):
        child.rename(folder.parent / child.name)
    folder.rmdir()


def build(root: Path, dataset_id: str) -> None:
    """The fixture tree ``dataset_id`` reads (with its base dataset's images)."""
    if dataset_id in ("cityscapes", "fishyscapes-static"):
        make_cityscapes_tree(root)
    if dataset_id in ("lostandfound", "fishyscapes-laf"):
        make_lostandfound_tree(root)
    makers = {
        "fishyscapes-laf": make_fishyscapes_laf_tree,
        "fishyscapes-static": make_fishyscapes_static_tree,
        "road-anomaly": make_road_anomaly_tree,
        "smiyc-ra21": lambda r: make_smiyc_tree(r, "anomaly"),
        "smiyc-ro21": lambda r: make_smiyc_tree(r, "obstacle"),
        "streethazards": lambda r: make_streethazards_tree(r, {"train": 2, "val": 1, "test": 2}),
        "bdd-anomaly": make_bdd_tree,
    }
    if dataset_id in makers:
        makers[dataset_id](root)


def cityscapes_named(root: Path) -> None:
    base = root / "cityscapes"
    move(base / "leftImg8bit", base / "leftImg8bit_trainvaltest" / "leftImg8bit")
    move(base / "gtFine", base / "gtFine_trainvaltest" / "gtFine")


def lostandfound_named(root: Path) -> None:
    base = root / "lostandfound"
    move(base / "leftImg8bit", base / "leftImg8bit" / "leftImg8bit")
    move(base / "gtCoarse", base / "gtCoarse" / "gtCoarse")


def fishy_laf_flat(root: Path) -> None:
    flatten(root / "fishyscapes-laf" / "fishyscapes_lostandfound")
    lostandfound_named(root)  # its images from the other layout of LostAndFound


def fishy_static_flat(root: Path) -> None:
    flatten(root / "fishyscapes-static" / "fs_val_v3")
    cityscapes_named(root)


def road_anomaly_flat(root: Path) -> None:
    flatten(root / "road-anomaly" / "RoadAnomaly_jpg")


def road_anomaly_named(root: Path) -> None:
    base = root / "road-anomaly" / "RoadAnomaly_jpg"
    move(base, base / "RoadAnomaly_jpg")


def smiyc_flat(root: Path) -> None:
    flatten(root / "smiyc-ra21" / "dataset_AnomalyTrack")


def smiyc_named(root: Path) -> None:
    base = root / "smiyc-ro21" / "dataset_ObstacleTrack"
    move(base, base / "dataset_ObstacleTrack")


def streethazards_named(root: Path) -> None:
    base = root / "streethazards"
    move(base / "train", base / "streethazards_train" / "train")
    move(base / "test", base / "test" / "test")


def bdd_as_zipped(root: Path) -> None:
    base = root / "bdd-anomaly"
    move(base / "seg", base / "bdd100k" / "seg")


def bdd_10k_and_clone(root: Path) -> None:
    base = root / "bdd-anomaly"
    move(base / "seg" / "images", base / "bdd100k" / "images" / "10k")
    move(base / "seg", base / "anomaly-seg" / "seg")


ALTERNATIVES: list[tuple[str, Callable[[Path], None]]] = [
    ("cityscapes", cityscapes_named),
    ("lostandfound", lostandfound_named),
    ("fishyscapes-laf", fishy_laf_flat),
    ("fishyscapes-static", fishy_static_flat),
    ("road-anomaly", road_anomaly_flat),
    ("road-anomaly", road_anomaly_named),
    ("smiyc-ra21", smiyc_flat),
    ("smiyc-ro21", smiyc_named),
    ("streethazards", streethazards_named),
    ("bdd-anomaly", bdd_as_zipped),
    ("bdd-anomaly", bdd_10k_and_clone),
]


def listing(root: Path, dataset_id: str) -> dict[str, list[str]]:
    """Frame ids of every labelled split; the first frame of each is decoded too."""
    cls = DATASETS.get(dataset_id)
    dataset = cls(root)
    out = {}
    for split in cls.splits:
        if split in cls.unlabelled_splits:
            continue
        frames = dataset.split(split)
        frames[0]  # decodes the image and its labels
        out[split] = [f.frame_id for f in dataset.files(split)]
    return out


@pytest.mark.parametrize(
    ("dataset_id", "rearrange"), ALTERNATIVES, ids=[f.__name__ for _, f in ALTERNATIVES]
)
def test_an_alternative_layout_reads_the_same_frames(tmp_path, dataset_id, rearrange):
    build(tmp_path / "official", dataset_id)
    expected = listing(tmp_path / "official", dataset_id)
    build(tmp_path / "other", dataset_id)
    rearrange(tmp_path / "other")
    assert listing(tmp_path / "other", dataset_id) == expected
    assert all(expected.values())


# the layout notes each adapter's error names when nothing is where it looks
LOOKED_FOR = {
    "cityscapes": ["cityscapes/gtFine/train/{city}", "gtFine_trainvaltest/gtFine/train"],
    "lostandfound": ["lostandfound/gtCoarse/test/{NN}", "gtCoarse/gtCoarse/test"],
    "fishyscapes-laf": [
        "fishyscapes-laf/fishyscapes_lostandfound/{NNNN}",
        "(fishyscapes_lostandfound.zip as unpacked: no top folder)",
    ],
    "fishyscapes-static": ["fishyscapes-static/fs_val_v3/{NNNN}", "(fs_val_v3.zip as unpacked"],
    "road-anomaly": ["RoadAnomaly_jpg/frames/{name}.jpg", "road-anomaly/frames/{name}.jpg"],
    "smiyc-ra21": ["smiyc-ra21/images/{fid}.jpg", "dataset_AnomalyTrack/dataset_AnomalyTrack/"],
    "smiyc-ro21": ["smiyc-ro21/dataset_ObstacleTrack/images/{fid}.webp"],
    "streethazards": ["streethazards_train/train/images/training", "train/train/images"],
    "bdd-anomaly": ["bdd100k/seg/images/train/<id>.jpg", "bdd100k/images/10k/train"],
}


@pytest.mark.parametrize("dataset_id", sorted(LOOKED_FOR))
def test_a_missing_layout_names_every_layout_looked_for(tmp_path, dataset_id):
    cls = DATASETS.get(dataset_id)
    (tmp_path / dataset_id).mkdir()
    split = next(s for s in cls.splits if s not in cls.unlabelled_splits)
    with pytest.raises(BadInput) as info:
        cls(tmp_path).files(split)
    message = str(info.value)
    assert "\n" not in message and "layouts looked for: " in message
    assert len(message.split("layouts looked for: ")[1].split("; ")) >= 2, message
    for fragment in LOOKED_FOR[dataset_id]:
        assert fragment in message, (fragment, message)


def test_find_dir_prefers_the_first_layout_and_can_require_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x_labels.png").write_bytes(b"")
    options = [(tmp_path / "a", "first"), (tmp_path / "b", "second")]
    assert find_dir("masks", "*.png", options) == tmp_path / "a"
    assert find_dir("masks", "*.png", options, contains="*_labels.png") == tmp_path / "b"
    shutil.rmtree(tmp_path / "b")
    with pytest.raises(BadInput, match=r"a not found; expected masks in one of the layouts"):
        find_dir("masks", "*.png", options, contains="*_labels.png")
