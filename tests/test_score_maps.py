"""Score maps in the SMIYC layout, `owsbench score-maps evaluate`, per-image aggregation."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from owsbench.datasets.synthstreets import SynthStreets
from owsbench.errors import BadInput
from owsbench.metrics import AnomalyMetric
from owsbench.metrics.per_image import PerImageAnomalyMetric
from owsbench.score_eval import evaluate_score_maps
from owsbench.score_maps import read_score_map, score_map_path, write_score_map


def test_layout_and_round_trip(tmp_path):
    path = score_map_path(tmp_path, "msp", "synthstreets-test", "test_0001")
    assert path == tmp_path / "anomaly_p" / "msp" / "synthstreets-test" / "test_0001.hdf5"
    scores = np.array([[0.25, 1e6], [-1e6, 0.1]], np.float32)
    write_score_map(path, scores)
    with h5py.File(path) as f:
        assert list(f) == ["value"] and f["value"].dtype == np.float16
    back = read_score_map(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, [[0.25, 65504.0], [-65504.0, np.float16(0.1)]])
    with pytest.raises(BadInput, match="score map missing"):
        read_score_map(tmp_path / "nope.hdf5")
    path.write_bytes(b"not hdf5")
    with pytest.raises(BadInput, match="cannot read score map"):
        read_score_map(path)


def test_per_image_mean_skips_frames_without_both_classes():
    metric = PerImageAnomalyMetric()
    metric.update(np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0]))  # perfect: AP 1, FPR95 0
    metric.update(np.array([0.1, 0.9, 0.2]), np.array([1, 0, 0]))  # anomaly ranked last: AP 1/3
    metric.update(np.array([0.5, 0.5]), np.array([0, 0]))  # no anomaly: skipped
    result = metric.compute()
    assert len(metric.values) == 2
    assert result["AP"] == pytest.approx((1 + 1 / 3) / 2)
    assert result["AUROC"] == pytest.approx(0.5)
    assert result["FPR95"] == pytest.approx(0.5)
    assert np.isnan(PerImageAnomalyMetric().compute()["AP"])


@pytest.fixture(scope="module")
def quick_dataset(tmp_path_factory):
    dataset = SynthStreets(tmp_path_factory.mktemp("data"), preset="quick")
    dataset.prepare(progress=False)
    return dataset


def test_evaluate_maps_written_elsewhere(quick_dataset, tmp_path):
    """Maps from "another codebase" (here: the labels plus noise) match the in-memory metric."""
    split = quick_dataset.split("test")
    rng = np.random.default_rng(0)
    expected = AnomalyMetric()
    for frame in split:
        scores = (frame.anomaly == 1) + rng.normal(0, 0.7, frame.anomaly.shape)
        write_score_map(tmp_path / f"{frame.frame_id}.hdf5", scores)
        expected.update(scores.astype(np.float32).astype(np.float16), frame.anomaly)
    metrics = evaluate_score_maps(split, tmp_path, quick_dataset, components=True, progress=False)
    assert metrics["frames"] == len(split)
    for name, value in expected.compute().items():
        assert metrics[name] == pytest.approx(value, abs=1e-12)
    assert 0 <= metrics["sIoU"] <= 1 and 0 <= metrics["mean_F1"] <= 1

    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "score-maps", "evaluate", str(tmp_path),
         "--dataset", "synthstreets", "--preset", "quick", "--no-progress",
         "--data-root", str(quick_dataset.root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"AP                   {100 * expected.compute()['AP']:.2f}" in result.stdout

    (tmp_path / "test_0003.hdf5").unlink()
    with pytest.raises(BadInput, match="test_0003.hdf5"):
        evaluate_score_maps(split, tmp_path, quick_dataset, progress=False)


def test_size_mismatch_names_the_frame(quick_dataset, tmp_path):
    split = quick_dataset.split("test")
    for frame in split:
        write_score_map(tmp_path / f"{frame.frame_id}.hdf5", np.zeros((4, 4)))
    with pytest.raises(BadInput, match=r"score map test_0000.hdf5 is 4x4, labels are 192x96"):
        evaluate_score_maps(split, tmp_path, quick_dataset, progress=False)
