"""Cityscapes instance ids from ``*_gtFine_instanceIds.png`` (the official 16-bit encoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import make_cityscapes_tree, save
from PIL import Image

from owsbench.datasets.cityscapes import Cityscapes
from owsbench.datasets.io import read_label
from owsbench.errors import BadInput

FRAME = "frankfurt_000000_000019"


def instance_map(height: int = 64, width: int = 128) -> np.ndarray:
    """Two cars (26001, 26002), a first person (24000), a caravan (29000), a car group (crowd,
    plain 26), road (7) elsewhere: labelId * 1000 + k on objects, the labelId on the rest."""
    raw = np.full((height, width), 7, np.uint16)
    raw[40:50, 10:30] = 26001
    raw[40:50, 40:60] = 26002
    raw[30:40, 70:75] = 24000
    raw[30:40, 80:90] = 29000
    raw[50:60, 100:120] = 26
    return raw


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_cityscapes_tree(root, {"train": 2, "val": 2})
    save(root / f"cityscapes/gtFine/val/frankfurt/{FRAME}_gtFine_instanceIds.png", instance_map())
    return root


def test_instance_png_is_16_bit_and_readable(root: Path):
    path = root / f"cityscapes/gtFine/val/frankfurt/{FRAME}_gtFine_instanceIds.png"
    assert Image.open(path).mode in ("I;16", "I")
    assert read_label(path).max() == 29000


def test_instance_ids_decode_the_official_encoding(root: Path):
    dataset = Cityscapes(root)
    assert dataset.provides_instances and dataset.thing_classes == tuple(range(11, 19))
    val = dataset.split("val")
    files = {f.frame_id: f for f in val.files}
    assert files[FRAME].instances is not None
    frame = val[[f.frame_id for f in val.files].index(FRAME)]
    assert frame.instances.dtype == np.int32 and frame.instances.shape == (64, 128)
    # stuff (7), the crowd region (26) and the caravan (void trainId) are no instance
    assert set(np.unique(frame.instances).tolist()) == {0, 24000, 26001, 26002}
    raw = instance_map()
    assert (frame.instances[raw == 26001] == 26001).all()
    assert (frame.instances[(raw == 7) | (raw == 26) | (raw == 29000)] == 0).all()


def test_two_cars_and_stuff(tmp_path: Path):
    root = tmp_path / "data"
    make_cityscapes_tree(root, {"train": 1, "val": 1})
    raw = np.full((64, 128), 7, np.uint16)
    raw[:10, :10], raw[20:30, 20:30] = 26001, 26002
    save(root / f"cityscapes/gtFine/val/frankfurt/{FRAME}_gtFine_instanceIds.png", raw)
    frame = Cityscapes(root).split("val")[0]
    assert set(np.unique(frame.instances).tolist()) == {0, 26001, 26002}
    assert frame.semantic is not None


def test_frames_without_instance_file_have_none(root: Path):
    dataset = Cityscapes(root)
    val = dataset.split("val")
    others = [i for i, f in enumerate(val.files) if f.frame_id != FRAME]
    assert others and all(val.files[i].instances is None for i in others)
    assert val[others[0]].instances is None
    assert all(frame.instances is None for frame in dataset.split("train"))


def test_unexpected_instance_values_name_the_file(root: Path):
    path = root / f"cityscapes/gtFine/val/frankfurt/{FRAME}_gtFine_instanceIds.png"
    raw = instance_map()
    raw[0, 0] = 7001  # road has no instances
    save(path, raw)
    dataset = Cityscapes(root)
    with pytest.raises(BadInput, match="instanceIds.png: unexpected instance values 7001"):
        dataset.check(progress=False)
