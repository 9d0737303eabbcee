"""BDD-Anomaly adapter and the cityscapes-cocopaste generator/adapter on tiny official trees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import make_cityscapes_tree
from fixtures_bdd_coco import COCO_INSTANCES, make_bdd_tree, make_coco_tree
from PIL import Image

from owsbench.cli import main
from owsbench.datasets import io as dataset_io
from owsbench.datasets.bdd_anomaly import BDDAnomaly
from owsbench.datasets.cityscapes import Cityscapes
from owsbench.datasets.cocopaste import (
    EXCLUDED_CATEGORIES,
    FORBIDDEN_UNDER,
    CityscapesCocoPaste,
    generate,
)
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.errors import BadInput

# ---------------------------------------------------------------- BDD-Anomaly


@pytest.fixture(scope="module")
def bdd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bdd")
    make_bdd_tree(root)
    return root


def test_bdd_split_construction(bdd_root: Path) -> None:
    dataset = BDDAnomaly(bdd_root)
    ids = {s: [f.frame_id for f in dataset.files(s)] for s in dataset.splits}
    # anomalous frames from both folders go to test (train folder first); t9 has no label
    assert ids == {"train": ["t0", "t2"], "val": ["v0", "v2"], "test": ["t1", "t3", "v1"]}
    assert dataset.eval_splits == ("test",) and dataset.train_on == "bdd-anomaly"
    assert dataset.expected_counts == {"train": 6280, "val": 910, "test": 810}


def test_bdd_scan_is_cached_outside_the_dataset(bdd_root: Path) -> None:
    before = sorted(p for p in (bdd_root / "bdd-anomaly").rglob("*"))
    BDDAnomaly(bdd_root).files("test")
    assert sorted(p for p in (bdd_root / "bdd-anomaly").rglob("*")) == before
    from owsbench.cache import user_cache_dir

    assert list((user_cache_dir() / "index").glob("bdd-anomaly-*.json"))


def test_bdd_label_mapping(bdd_root: Path) -> None:
    dataset = BDDAnomaly(bdd_root)
    assert len(dataset.class_names) == 17 and dataset.class_names[-1] == "other"
    assert dataset.class_names[:16] == CITYSCAPES_TRAINID_NAMES[:16]
    frame = dataset.split("test")[0]  # t1: motorcycle in rows 4..7, cols 4..11
    raw = np.asarray(Image.open(bdd_root / "bdd-anomaly/seg/train_labels/train/t1_train_id.png"))
    assert (raw[4:8, 4:12] == 19).all()
    assert (frame.anomaly[4:8, 4:12] == 1).all() and (frame.semantic[4:8, 4:12] == 255).all()
    assert frame.semantic[0, 0] == 255 and frame.anomaly[0, 0] == 255  # value 0: unused/void
    assert frame.semantic[0, 1] == 16 and frame.anomaly[0, 1] == 0  # value 1: other
    for value in np.unique(raw):  # value k + 2 -> Cityscapes trainId k for road..bus
        if 2 <= value <= 17:
            assert (frame.semantic[raw == value] == value - 2).all()
            assert (frame.anomaly[raw == value] == 0).all()
    assert set(np.unique(frame.anomaly)) <= {0, 1, 255}


def test_bdd_paper_variant(bdd_root: Path) -> None:
    dataset = BDDAnomaly(bdd_root, anomaly_classes=("train", "motorcycle"))
    ids = {s: [f.frame_id for f in dataset.files(s)] for s in dataset.splits}
    assert ids == {"train": ["t0", "t2", "t3"], "val": ["v0", "v2"], "test": ["t1", "v1"]}
    assert dataset.class_names[16:] == ("bicycle", "other")
    assert dataset.expected_counts["test"] == 361
    frame = dataset.split("train")[2]  # t3: bicycle (value 20) is now known class 16
    assert (frame.semantic[4:8, 4:12] == 16).all() and (frame.anomaly[4:8, 4:12] == 0).all()
    assert frame.semantic[0, 1] == 17
    with pytest.raises(BadInput, match="Cityscapes class names"):
        BDDAnomaly(bdd_root, anomaly_classes=("unicorn",))


def test_bdd_bad_values_and_missing_folder(tmp_path: Path) -> None:
    make_bdd_tree(tmp_path)
    label = tmp_path / "bdd-anomaly/seg/train_labels/val/v0_train_id.png"
    Image.fromarray(np.full((36, 64), 77, np.uint8)).save(label)
    with pytest.raises(BadInput, match="v0_train_id.png: unexpected label values 77"):
        BDDAnomaly(tmp_path).split("val")[0]
    (tmp_path / "empty" / "bdd-anomaly").mkdir(parents=True)
    with pytest.raises(BadInput, match="seg/images/train not found; expected .*/<id>.jpg"):
        BDDAnomaly(tmp_path / "empty").files("train")


# ---------------------------------------------------------------- cityscapes-cocopaste

EXCLUDED_ANNOTATIONS = {
    1000 + n
    for n, (_, category, *_rest, crowd) in enumerate(COCO_INSTANCES)
    if category in (1, 3) or crowd or n == 5
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    cityscapes = make_cityscapes_tree(root, {"train": 3, "val": 4}, height=128, width=256)
    coco = make_coco_tree(root, ("val2017", "train2017"))
    return cityscapes, coco


@pytest.fixture(scope="module")
def made(sources: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A val set made through the CLI (seed 3)."""
    cityscapes, coco = sources
    root = tmp_path_factory.mktemp("made")
    args = ["data", "make", "cityscapes-cocopaste", "--cityscapes", str(cityscapes)]
    main([*args, "--coco", str(coco), "--seed", "3", "--data-root", str(root), "--no-progress"])
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_cocopaste_is_deterministic(sources: tuple[Path, Path], made: Path, tmp_path: Path) -> None:
    cityscapes, coco = sources
    again = generate(cityscapes, coco, tmp_path / "a", seed=3, progress=False)
    assert _files(again) == _files(made / "cityscapes-cocopaste" / "val")
    other = generate(cityscapes, coco, tmp_path / "b", seed=4, progress=False)
    assert _files(other) != _files(again)
    assert not list((tmp_path / "a" / "cityscapes-cocopaste").glob(".*"))  # no staging left


def test_cocopaste_manifest_and_exclusions(made: Path) -> None:
    manifest = json.loads((made / "cityscapes-cocopaste/val/manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["sources"] == {"cityscapes": "val", "coco": "val2017"}
    objects = [o for frame in manifest["frames"] for o in frame["objects"]]
    assert manifest["counts"]["frames"] == 4 and manifest["counts"]["objects"] == len(objects) > 0
    assert {o["annotation_id"] for o in objects}.isdisjoint(EXCLUDED_ANNOTATIONS)
    assert set(manifest["categories"]) <= {"dog", "chair", "cat"}
    assert {"car", "person", "train", "stop sign"} <= set(EXCLUDED_CATEGORIES)
    assert len(manifest["checksums"]) == 12


def test_cocopaste_labels_and_placement(sources: tuple[Path, Path], made: Path) -> None:
    cityscapes, _ = sources
    originals = Cityscapes(cityscapes.parent).split("val")
    generated = CityscapesCocoPaste(made).split("val")
    assert len(generated) == 4
    for original, frame in zip(originals, generated, strict=True):
        assert frame.frame_id == original.frame_id and frame.image.shape == original.image.shape
        pasted = frame.anomaly == 1
        assert set(np.unique(frame.anomaly)) <= {0, 1, 255}
        assert not np.isin(original.semantic[pasted], FORBIDDEN_UNDER).any()
        assert (frame.semantic[pasted] == 255).all()
        assert (frame.semantic[~pasted] == original.semantic[~pasted]).all()
        assert (frame.anomaly[~pasted & (original.semantic == 255)] == 255).all()
        assert (frame.anomaly[~pasted & (original.semantic != 255)] == 0).all()
        assert not np.array_equal(frame.image[pasted], original.image[pasted])
    assert any((f.anomaly == 1).any() for f in generated)


def test_cocopaste_adapter(made: Path, tmp_path: Path) -> None:
    dataset = CityscapesCocoPaste(made)
    assert dataset.eval_splits == ("val",) and dataset.train_on == "cityscapes"
    assert dataset.check(progress=False)[0].startswith("cityscapes-cocopaste/val: 4 frames")
    assert dataset.fingerprint().startswith("cityscapes-cocopaste/")
    with pytest.raises(BadInput, match="not generated.*data make cityscapes-cocopaste"):
        CityscapesCocoPaste(tmp_path).split("val")


def test_cocopaste_train_variant_never_reads_evaluation_data(
    sources: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cityscapes, coco = sources
    read: list[Path] = []
    original_open = dataset_io._open

    def recording_open(path: Path):
        read.append(Path(path).resolve())
        return original_open(path)

    monkeypatch.setattr(dataset_io, "_open", recording_open)
    out = generate(cityscapes, coco, tmp_path, split="train", seed=0, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"] == {"cityscapes": "train", "coco": "train2017"}
    assert manifest["counts"]["frames"] == 3 and read
    forbidden = [(cityscapes / k / "val").resolve() for k in ("leftImg8bit", "gtFine")]
    forbidden.append((coco / "val2017").resolve())
    assert not any(f in p.parents for p in read for f in forbidden)
    train_ids = {2000 + n for n in range(len(COCO_INSTANCES))}
    assert {o["annotation_id"] for fr in manifest["frames"] for o in fr["objects"]} <= train_ids
    assert len(CityscapesCocoPaste(tmp_path).split("train")) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--cityscapes", "{tmp}/nope"], "Cityscapes folder {tmp}/nope not found"),
        (["--coco", "{tmp}/empty"], "missing COCO annotations {tmp}/empty/annotations/"),
        (["--split", "test"], "Cityscapes test labels are not public"),
    ],
)
def test_cocopaste_bad_input_exits_2(
    sources: tuple[Path, Path], tmp_path: Path, change: list[str], message: str
) -> None:
    cityscapes, coco = sources
    (tmp_path / "empty").mkdir()
    options = {"--cityscapes": str(cityscapes), "--coco": str(coco), "--split": "val"}
    options[change[0]] = change[1].format(tmp=tmp_path)
    args = [a for pair in options.items() for a in pair]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "owsbench",
            "data",
            "make",
            "cityscapes-cocopaste",
            *args,
            "--data-root",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], result.stderr
