"""Cityscapes, LostAndFound and Fishyscapes adapters on tiny trees in the official layouts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import make_cityscapes_tree, save
from fixtures_fishy_laf import (
    LAF_TEST_FRAMES,
    OBSTACLE_BOX,
    laf_id,
    make_fishyscapes_laf_tree,
    make_fishyscapes_static_tree,
    make_lostandfound_tree,
)
from PIL import Image

from owsbench.datasets import lostandfound
from owsbench.datasets.cityscapes import Cityscapes
from owsbench.datasets.fishyscapes import FishyscapesLostAndFound, FishyscapesStatic
from owsbench.datasets.lostandfound import LostAndFound, decode_gt_coarse
from owsbench.errors import BadInput


def build(root: Path) -> Path:
    """Every dataset of this module under ``root`` (Cityscapes 8/4/2 frames)."""
    make_cityscapes_tree(root)
    make_lostandfound_tree(root)
    make_fishyscapes_laf_tree(root)
    make_fishyscapes_static_tree(root)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("data"))


@pytest.fixture
def own_root(tmp_path: Path) -> Path:
    """A private copy to break."""
    return build(tmp_path / "data")


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def owsbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "owsbench", *args], capture_output=True, text=True, timeout=600
    )


# -- Cityscapes ----------------------------------------------------------------------------------
def test_cityscapes_maps_label_ids_to_train_ids(data_root: Path):
    dataset = Cityscapes(data_root)
    val = dataset.split("val")
    assert len(val) == 4 and len(dataset.split("train")) == 8
    ids = [f.frame_id for f in val.files]
    assert ids == sorted(ids) and ids[0] == "frankfurt_000000_000019"
    frame = val[0]
    raw = read(
        data_root / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    )
    assert frame.anomaly is None and frame.image.shape == (64, 128, 3)
    assert {7, 0} <= set(np.unique(raw).tolist())
    assert (frame.semantic[raw == 7] == 0).all()  # road
    assert (frame.semantic[raw == 0] == 255).all()  # unlabeled
    assert (frame.semantic[raw == 26] == 13).all()  # car
    assert set(np.unique(frame.semantic).tolist()) <= set(range(19)) | {255}


def test_cityscapes_prefers_label_train_ids(own_root: Path):
    folder = own_root / "cityscapes/gtFine/val/frankfurt"
    train_ids = np.full((64, 128), 255, np.uint8)
    train_ids[:8] = 18
    save(folder / "frankfurt_000000_000019_gtFine_labelTrainIds.png", train_ids)
    assert (Cityscapes(own_root).split("val")[0].semantic == train_ids).all()
    train_ids[0, 0] = 19
    save(folder / "frankfurt_000000_000019_gtFine_labelTrainIds.png", train_ids)
    with pytest.raises(BadInput, match="labelTrainIds.png: unexpected label values 19"):
        Cityscapes(own_root).split("val")[0]


def test_cityscapes_test_split_is_refused(data_root: Path):
    with pytest.raises(BadInput, match="test labels are not public"):
        Cityscapes(data_root).split("test")


# -- LostAndFound --------------------------------------------------------------------------------
def test_lostandfound_decodes_gt_coarse(data_root: Path):
    dataset = LostAndFound(data_root)
    assert len(dataset.split("test")) == 4
    no_known = dataset.split("testNoKnown")
    assert [f.frame_id for f in no_known.files] == sorted(
        laf_id(*f) for f in LAF_TEST_FRAMES if not f[0].startswith("15_Rechbergstr")
    )
    frame = no_known[0]
    raw = read(no_known.files[0].anomaly)
    assert frame.semantic is None
    assert (frame.anomaly[raw == 1] == 0).all()
    assert (frame.anomaly[raw == 5] == 1).all() and (frame.anomaly[OBSTACLE_BOX] == 1).all()
    assert (frame.anomaly[raw == 0] == 255).all()
    assert decode_gt_coarse(np.array([0, 1, 2, 200, 201, 255])).tolist() == [
        255, 0, 1, 1, 255, 255
    ]  # fmt: skip


def test_lostandfound_drops_smiyc_invalid_indices_on_the_full_split(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(lostandfound, "FULL_TEST_FRAMES", 4)
    monkeypatch.setattr(lostandfound, "INVALID_TEST_INDICES", (0,))
    ids = [f.frame_id for f in LostAndFound(data_root).split("testNoKnown").files]
    assert ids == [laf_id(*LAF_TEST_FRAMES[1]), laf_id(*LAF_TEST_FRAMES[2])]


# -- Fishyscapes ---------------------------------------------------------------------------------
def test_fishyscapes_laf_pairs_masks_with_lostandfound_images(data_root: Path):
    val = FishyscapesLostAndFound(data_root).split("val")
    assert len(val) == 5  # 4 LostAndFound test frames and 1 train frame
    train_frame = next(i for i, f in enumerate(val.files) if "Hanns_Klemm" in f.frame_id)
    assert val.files[train_frame].image.parts[-3] == "train"
    frame = val[0]
    assert frame.frame_id == f"0000_{laf_id(*LAF_TEST_FRAMES[0])}" and frame.semantic is None
    assert set(np.unique(frame.anomaly).tolist()) <= {0, 1, 255}
    assert (frame.anomaly[OBSTACLE_BOX] == 1).all()
    assert (frame.image == read(val.files[0].image)).all()


def test_fishyscapes_static_adds_the_overlay(data_root: Path):
    val = FishyscapesStatic(data_root).split("val")
    assert len(val) == 4
    files = val.files[1]
    overlay = np.load(str(files.anomaly).replace("_labels.png", "_rgb.npz"))["rgb"]
    expected = np.clip(read(files.image).astype(int) + overlay, 0, 255)
    frame = val[1]
    assert (frame.image == expected).all() and (frame.anomaly[OBSTACLE_BOX] == 1).all()
    assert files.image.is_relative_to(data_root / "cityscapes")


# -- owsbench data check -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dataset_id", "warning"),
    [
        ("cityscapes", "cityscapes/train: 8 frames found, the official split has 2975"),
        ("lostandfound", "lostandfound/testNoKnown: 3 frames found, the official split has 1043"),
        ("fishyscapes-laf", "fishyscapes-laf/val: 5 frames found, the official split has 100"),
        ("fishyscapes-static", "fishyscapes-static/val: 4 frames found, the official split has 30"),
    ],
)
def test_data_check_reports_subsets(data_root: Path, dataset_id: str, warning: str):
    result = owsbench("data", "check", dataset_id, "--data-root", str(data_root))
    assert result.returncode == 0, result.stderr
    assert warning in result.stdout


def break_tree(root: Path, problem: str) -> tuple[str, str]:
    """Damage ``root``; return the dataset id to check and the expected message part."""
    cs_val = root / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    laf_label = next((root / "lostandfound/gtCoarse/test").glob("*/*.png"))
    if problem == "missing folder":
        shutil.rmtree(root / "cityscapes/gtFine")
        return "cityscapes", "cityscapes/gtFine/train not found"
    if problem == "missing label":
        laf_label.unlink()
        return (
            "lostandfound",
            f"{laf_label.name.replace('gtCoarse_labelIds', 'leftImg8bit')}: label",
        )
    if problem == "unexpected values":
        labels = read(cs_val).copy()
        labels[0, 0] = 40
        save(cs_val, labels)
        return "cityscapes", f"{cs_val.name}: unexpected label values 40"
    if problem == "fishy values":
        mask = next((root / "fishyscapes-laf/fishyscapes_lostandfound").glob("*.png"))
        save(mask, np.full((64, 128), 7, np.uint8))
        return "fishyscapes-laf", f"{mask.name}: unexpected label values 7"
    if problem == "size mismatch":
        save(laf_label, np.ones((32, 128), np.uint8))
        return "lostandfound", f"{laf_label.name}: label is 128x32 but its image is 128x64"
    assert problem == "truncated png"
    image = root / "cityscapes/leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:200])
    return "cityscapes", f"cannot read {image}: corrupt or truncated"


@pytest.mark.parametrize(
    "problem",
    [
        "missing folder",
        "missing label",
        "unexpected values",
        "fishy values",
        "size mismatch",
        "truncated png",
    ],
)
def test_data_check_fails_with_one_line(own_root: Path, problem: str):
    dataset_id, message = break_tree(own_root, problem)
    result = owsbench("data", "check", dataset_id, "--data-root", str(own_root))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # earlier lines: check's progress bars
    assert message in last and "Traceback" not in result.stderr


# -- end to end ----------------------------------------------------------------------------------
def test_run_scores_cityscapes_and_fishyscapes(data_root: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = owsbench(
        "run", "--methods", "msp,maxlogit", "--datasets", "cityscapes,fishyscapes-laf",
        "--preset", "quick", "--config", str(config), "--device", "cpu",
        "--data-root", str(data_root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["dataset"], r["method"]) for r in rows) == [
        ("cityscapes", "maxlogit"),
        ("cityscapes", "msp"),
        ("fishyscapes-laf", "maxlogit"),
        ("fishyscapes-laf", "msp"),
    ]
    for row in rows:
        assert row["trained_on"] == "cityscapes"
        metrics = row["metrics"]
        if row["dataset"] == "cityscapes":
            assert row["split"] == "val" and row["frames"] == 4
            assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["AP"] is None
        else:
            assert row["split"] == "val" and row["frames"] == 5
            assert 0.0 <= metrics["AP"] <= 1.0 and metrics["mIoU"] is None
    # one segmenter fitted on cityscapes/train serves both datasets
    assert len({r["checkpoint_sha256"] for r in rows}) == 1
