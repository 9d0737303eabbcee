"""synthstreets: determinism, label sets, disjoint anomaly sources, manifest, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from owsbench.datasets.labels import TRAIN_ID
from owsbench.datasets.objects import (
    OUTLIER_EXPOSURE_FAMILIES,
    OUTLIER_FAMILIES,
    TEST_ANOMALY_FAMILIES,
    TEST_FAMILIES,
    outlier_exposure_source,
)
from owsbench.datasets.paste import ground_placement, paste_object
from owsbench.datasets.synthstreets import SIZES, SynthStreets, generate_frame
from owsbench.errors import BadInput

QUICK = SIZES["quick"]


def test_frames_are_deterministic_and_seed_dependent():
    a = generate_frame("test", 3, QUICK)
    b = generate_frame("test", 3, QUICK)
    c = generate_frame("test", 3, QUICK, seed=1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], generate_frame("test", 4, QUICK)[0])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_label_value_sets(split):
    for index in range(6):
        image, semantic, anomaly, instances = generate_frame(split, index, QUICK)
        assert image.shape == (QUICK.height, QUICK.width, 3) and image.dtype == np.uint8
        assert semantic.shape == image.shape[:2] and semantic.dtype == np.uint8
        assert set(np.unique(semantic)) <= set(range(19)) | {255}
        assert instances.shape == semantic.shape and instances.dtype == np.int32
        thing = (semantic >= 11) & (semantic <= 18)
        assert np.all(instances[thing] > 0) and np.all(instances[~thing] == 0)
        for instance in np.unique(instances[instances > 0]):  # one class per instance
            assert len(np.unique(semantic[instances == instance])) == 1
        if split == "train":
            assert anomaly is None
            continue
        assert set(np.unique(anomaly)) <= {0, 1, 255}
        assert (anomaly == 1).sum() >= 12
        assert np.all(semantic[anomaly == 1] == 255)  # anomalies are outside the known classes
        assert np.all(anomaly[(semantic == 255) & (anomaly != 1)] == 255)  # void stays void
        assert np.all(anomaly[semantic != 255] == 0)


def test_scenes_cover_at_least_ten_classes_and_road_is_the_main_ground():
    counts = np.zeros(256, np.int64)
    for index in range(24):
        counts += np.bincount(generate_frame("train", index, QUICK)[1].ravel(), minlength=256)
    present = {i for i in range(19) if counts[i] > 0}
    assert len(present) >= 10, present
    assert {
        TRAIN_ID[c] for c in ("road", "sidewalk", "sky", "car", "person", "building")
    } <= present
    ground = [TRAIN_ID[c] for c in ("road", "sidewalk", "terrain")]
    assert counts[TRAIN_ID["road"]] == counts[ground].max()
    assert counts[255] > 0  # void clutter exists


def test_outlier_exposure_and_test_families_are_disjoint():
    assert TEST_ANOMALY_FAMILIES.isdisjoint(OUTLIER_FAMILIES)
    test_sources = {s for f in TEST_FAMILIES for s in f.sources}
    oe_sources = {s for f in OUTLIER_EXPOSURE_FAMILIES for s in f.sources}
    assert test_sources and oe_sources
    assert test_sources.isdisjoint(oe_sources)
    source = outlier_exposure_source()
    rng = np.random.default_rng(0)
    drawn = {source.sample(rng)[1] for _ in range(60)}
    assert drawn <= OUTLIER_FAMILIES and len(drawn) >= 4


def test_outlier_paste_labels_like_test_anomalies():
    image, semantic, _, _ = generate_frame("train", 0, QUICK)
    rng = np.random.default_rng(1)
    cutout, _ = outlier_exposure_source().sample(rng)
    assert cutout.ndim == 3 and cutout.shape[2] == 4 and cutout.dtype == np.uint8
    bottom, col, height = ground_placement(semantic, rng)
    assert semantic[bottom, col] in (TRAIN_ID["road"], TRAIN_ID["sidewalk"])
    new_image, new_semantic, anomaly = paste_object(image, semantic, None, cutout, bottom, col, 30)
    hit = anomaly == 1
    assert hit.any()
    assert np.all(new_semantic[hit] == 255)
    assert set(np.unique(anomaly)) <= {0, 1, 255}
    assert np.array_equal(new_semantic[~hit], semantic[~hit])
    assert not np.array_equal(new_image, image)
    assert np.array_equal(
        anomaly[(semantic == 255) & ~hit], np.full(((semantic == 255) & ~hit).sum(), 255)
    )


def test_generated_once_and_regenerated_when_the_manifest_or_files_change(tmp_path):
    dataset = SynthStreets(tmp_path, preset="quick")
    dataset.prepare(progress=False)
    manifest = json.loads((dataset.folder / "manifest.json").read_text())
    assert manifest["counts"] == {"train": QUICK.train, "val": QUICK.val, "test": QUICK.test}
    assert manifest["generator_version"] and manifest["seed"] is not None
    split = dataset.split("test")
    assert len(split) == QUICK.test
    frame = split[2]
    expected = generate_frame("test", 2, QUICK)
    np.testing.assert_array_equal(frame.image, expected[0])
    np.testing.assert_array_equal(frame.anomaly, expected[2])
    assert dataset.split("train")[0].anomaly is None

    probe = dataset.folder / "test" / "images" / "test_0002.png"
    mtime = probe.stat().st_mtime_ns
    SynthStreets(tmp_path, preset="quick").prepare(progress=False)
    assert probe.stat().st_mtime_ns == mtime  # up to date: nothing rewritten

    probe.write_bytes(b"corrupt")
    assert not SynthStreets(tmp_path, preset="quick").is_current()
    SynthStreets(tmp_path, preset="quick").prepare(progress=False)
    np.testing.assert_array_equal(dataset.split("test")[2].image, expected[0])

    manifest = json.loads((dataset.folder / "manifest.json").read_text())
    manifest["generator_version"] = -1
    (dataset.folder / "manifest.json").write_text(json.dumps(manifest))
    again = SynthStreets(tmp_path, preset="quick")
    assert not again.is_current()
    again.prepare(progress=False)
    assert again.is_current()
    assert not list(tmp_path.joinpath("synthstreets").glob(".quick-*"))  # no staging left


def test_bad_preset_and_split_are_refused(tmp_path):
    with pytest.raises(BadInput, match="unknown synthstreets preset 'tiny'"):
        SynthStreets(tmp_path, preset="tiny")
    dataset = SynthStreets(tmp_path, preset="quick")
    with pytest.raises(BadInput, match="not generated"):
        dataset.split("test")
    dataset.prepare(progress=False)
    with pytest.raises(BadInput, match="no split 'validation'"):
        dataset.split("validation")
