"""StreetHazards, SMIYC (RoadAnomaly21, RoadObstacle21) and Road Anomaly adapters on tiny trees
in the official layouts: label mapping, splits, `data check` warnings and errors, end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import make_cityscapes_tree
from fixtures_streethazards_smiyc import (
    RO21_VALIDATION_EXCLUDED,
    SH_ANOMALY,
    SH_OTHER,
    SH_ROAD,
    SH_UNLABELED,
    make_road_anomaly_tree,
    make_smiyc_tree,
    make_streethazards_tree,
)
from PIL import Image

from owsbench.datasets.road_anomaly import RoadAnomaly
from owsbench.datasets.smiyc import RoadAnomaly21, RoadObstacle21
from owsbench.datasets.streethazards import StreetHazards
from owsbench.errors import BadInput


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root holding all four fixture trees plus a Cityscapes tree (read-only)."""
    root = tmp_path_factory.mktemp("data")
    make_streethazards_tree(root)
    make_smiyc_tree(root, "anomaly")
    make_smiyc_tree(root, "obstacle")
    make_road_anomaly_tree(root)
    make_cityscapes_tree(root)
    return root


def owsbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "owsbench", *args], capture_output=True, text=True, timeout=300
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The error lines on stderr (``data check`` progress bars share stderr)."""
    return [line for line in result.stderr.splitlines() if "error:" in line]


def raw_label(dataset: StreetHazards, split: str, index: int) -> np.ndarray:
    return np.asarray(Image.open(dataset.files(split)[index].semantic))


# --- StreetHazards --------------------------------------------------------------------------


def test_streethazards_official_convention(root: Path):
    dataset = StreetHazards(root)
    assert dataset.num_classes == 13 and dataset.class_names[0] == "unlabeled"
    assert dataset.class_names[3] == "other" and dataset.class_names[7] == "road"
    split = dataset.split("test")
    assert [f.frame_id for f in dataset.files("test")] == ["t5/0", "t5/2", "t6/1", "t6/3"]
    frame, raw = split[0], raw_label(dataset, "test", 0)
    assert frame.image.shape == (64, 128, 3) and frame.semantic.shape == (64, 128)
    for value, semantic, anomaly in (
        (SH_UNLABELED, 0, 0),  # a known class and an inlier, as in the official eval
        (SH_OTHER, 3, 0),
        (SH_ROAD, 7, 0),
        (SH_ANOMALY, 255, 1),
    ):
        where = raw == value
        assert where.any(), value
        assert set(np.unique(frame.semantic[where])) == {semantic}, value
        assert set(np.unique(frame.anomaly[where])) == {anomaly}, value
    assert 255 not in frame.anomaly  # nothing is void in the official convention


def test_streethazards_other_as_void(root: Path):
    dataset = StreetHazards(root, "default", other_as_void=True)
    assert dataset.num_classes == 12 and "other" not in dataset.class_names
    assert dataset.class_names[6] == "road"
    frame, raw = dataset.split("test")[0], raw_label(dataset, "test", 0)
    assert set(np.unique(frame.semantic[raw == SH_ROAD])) == {6}
    assert set(np.unique(frame.semantic[raw == 5])) <= {3}  # pedestrian moves down one
    assert set(np.unique(frame.semantic[raw == SH_OTHER])) == {255}
    assert set(np.unique(frame.anomaly[raw == SH_OTHER])) == {255}
    assert set(np.unique(frame.anomaly[raw == SH_ANOMALY])) == {1}
    assert dataset.fingerprint() != StreetHazards(root).fingerprint()


def test_streethazards_splits(root: Path):
    dataset = StreetHazards(root)
    assert {s: len(dataset.split(s)) for s in dataset.splits} == {"train": 6, "val": 2, "test": 4}
    assert dataset.split("train")[0].anomaly.max() == 0  # training towns have no anomalies


# --- SMIYC and Road Anomaly -----------------------------------------------------------------


def test_smiyc_validation_frames_and_labels(root: Path):
    ra21, ro21 = RoadAnomaly21(root), RoadObstacle21(root)
    assert [f.frame_id for f in ra21.files("validation")] == [
        "validation0000",
        "validation0001",
        "validation0002",
    ]
    assert [f.image.suffix for f in ra21.files("validation")] == [".jpg"] * 3
    ro_ids = [f.frame_id for f in ro21.files("validation")]
    assert ro_ids == ["validation_1", "validation_2", "validation_3"]
    assert RO21_VALIDATION_EXCLUDED not in ro_ids
    assert ro21.files("validation")[0].image.suffix == ".webp"
    for dataset in (ra21, ro21):
        frame = dataset.split("validation")[0]
        assert frame.semantic is None and frame.image.shape == (64, 128, 3)
        assert set(np.unique(frame.anomaly)) == {0, 1, 255}
    assert ra21.component_size_filters == (500, 100)
    assert ro21.component_size_filters == (50, 10)
    assert ra21.train_on == ro21.train_on == "cityscapes"


@pytest.mark.parametrize("cls", [RoadAnomaly21, RoadObstacle21])
def test_smiyc_test_split_refused(root: Path, cls):
    with pytest.raises(BadInput, match="test labels are hidden; submit .* SMIYC server"):
        cls(root).split("test")


def test_road_anomaly_labels(root: Path):
    dataset = RoadAnomaly(root)
    frame = dataset.split("test")[0]
    raw = np.asarray(Image.open(dataset.files("test")[0].anomaly))
    assert set(np.unique(raw)) == {0, 2}
    assert np.array_equal(frame.anomaly, (raw == 2).astype(np.uint8))
    assert frame.semantic is None and len(dataset.split("test")) == 3


# --- `owsbench data check` ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset_id", "split", "found", "official"),
    [
        ("streethazards", "test", 4, 1500),
        ("smiyc-ra21", "validation", 3, 10),
        ("smiyc-ro21", "validation", 3, 30),
        ("road-anomaly", "test", 3, 60),
    ],
)
def test_data_check_warns_about_subsets(root: Path, dataset_id, split, found, official):
    result = owsbench("data", "check", dataset_id, "--data-root", str(root))
    assert result.returncode == 0, result.stderr
    assert f"{dataset_id}/{split}: {found} frames found, the official split has {official}" in (
        result.stdout
    )
    if dataset_id.startswith("smiyc"):
        assert "test: not evaluable (SMIYC test labels are hidden" in result.stdout


def corrupt(root: Path, case: str) -> str:
    """Break a copy of the fixture data; return the text the one-line error must contain."""
    images = root / "streethazards" / "test" / "images" / "test" / "t5"
    labels = root / "streethazards" / "test" / "annotations" / "test" / "t5"
    if case == "missing folder":
        shutil.rmtree(labels.parent)
        return f"{labels.parent} not found"
    if case == "unexpected values":
        Image.fromarray(np.full((64, 128), 15, np.uint8)).save(labels / "0.png")
        return f"{labels / '0.png'}: unexpected label values 15"
    if case == "size mismatch":
        Image.fromarray(np.ones((32, 128), np.uint8)).save(labels / "2.png")
        return f"{labels / '2.png'}: label is 128x32 but its image is 128x64"
    data = (images / "0.png").read_bytes()
    (images / "0.png").write_bytes(data[: len(data) // 2])
    return f"cannot read {images / '0.png'}: corrupt or truncated image"


@pytest.mark.parametrize(
    "case", ["missing folder", "unexpected values", "size mismatch", "truncated image"]
)
def test_data_check_errors_exit_2_with_one_line(tmp_path: Path, case: str):
    make_streethazards_tree(tmp_path, {"train": 1, "val": 1, "test": 4})
    expected = corrupt(tmp_path, case)
    result = owsbench("data", "check", "streethazards", "--data-root", str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_smiyc_missing_label_exits_2(tmp_path: Path):
    base = make_smiyc_tree(tmp_path, "obstacle")
    missing = base / "labels_masks" / "validation_2_labels_semantic.png"
    missing.unlink()
    result = owsbench("data", "check", "smiyc-ro21", "--data-root", str(tmp_path))
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1 and f"missing file: {missing}" in lines[0]


# --- end to end -----------------------------------------------------------------------------


def test_run_streethazards_and_smiyc(root: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = owsbench(
        "run", "--methods", "msp,maxlogit", "--datasets", "streethazards,smiyc-ra21",
        "--preset", "quick", "--config", str(config), "--seeds", "0", "--device", "cpu",
        "--data-root", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    found = {(r["method"], r["dataset"], r["split"]) for r in rows}
    assert found == {
        (m, d, s)
        for m in ("msp", "maxlogit")
        for d, s in (("streethazards", "test"), ("smiyc-ra21", "validation"))
    }
    for row in rows:
        assert 0.0 <= row["metrics"]["AP"] <= 1.0
        if row["dataset"] == "smiyc-ra21":
            assert row["metrics"]["mIoU"] is None
        else:
            assert 0.0 <= row["metrics"]["mIoU"] <= 1.0
