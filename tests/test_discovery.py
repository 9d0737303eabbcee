"""Novel-class discovery: the clustering state, the discovery metric (hand-worked) and ContMAV's
``discovery`` option through the evaluation and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import sklearn.cluster
import torch
from dataset_fixtures import ListSplit

from owsbench.datasets.base import Frame
from owsbench.errors import BadInput
from owsbench.evaluate import TrainedGroup, evaluate_split
from owsbench.methods.contmav import ContMAV, ContMAVConfig
from owsbench.methods.nn.contmav_losses import ClassStats
from owsbench.methods.nn.discovery import NovelClassDiscovery, nearest
from owsbench.metrics import DiscoveryMetric
from owsbench.runner import Runner

SMALL = dict(decoder_channels=(32, 16, 16), decoder_blocks=1, encoder="resnet18")


def _blob(centre: list[float], n: int, seed: int, spread: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(centre, np.float64) + rng.normal(0.0, spread, (n, len(centre)))


# ------------------------------------------------------------------------------ clustering


def test_two_separated_blobs_give_two_ids_with_their_means_as_mavs():
    a, b = _blob([0, 0, 0], 10, 0), _blob([3, 0, 0], 12, 1)
    discovery = NovelClassDiscovery(distance=0.5)
    ids = discovery.assign(np.concatenate([a, b]))
    assert ids.dtype == np.int64 and ids.shape == (22,)
    assert len(set(ids[:10])) == 1 and len(set(ids[10:])) == 1
    assert set(ids) == {0, 1} and discovery.num_classes == 2
    np.testing.assert_allclose(discovery.mavs[ids[0]], a.mean(0))
    np.testing.assert_allclose(discovery.mavs[ids[10]], b.mean(0))


def test_later_image_reuses_near_mav_and_moves_it_half_way():
    discovery = NovelClassDiscovery(distance=0.5)
    first = discovery.assign(np.concatenate([_blob([0, 0, 0], 10, 0), _blob([3, 0, 0], 12, 1)]))
    near_a = first[0]
    old = discovery.mavs.copy()
    later = _blob([0.2, 0, 0], 8, 2)  # every vector within 0.5 of MAV a, far from MAV b
    assert (np.linalg.norm(later - old[near_a], axis=1) <= 0.5).all()
    ids = discovery.assign(later)
    assert (ids == near_a).all() and discovery.num_classes == 2
    np.testing.assert_allclose(discovery.mavs[near_a], (old[near_a] + later.mean(0)) / 2)
    np.testing.assert_array_equal(discovery.mavs[1 - near_a], old[1 - near_a])  # untouched
    # far vectors: a new id (the next free one); a mix: the near ones reuse, the far ones new
    far = _blob([10, 10, 10], 5, 3)
    assert (discovery.assign(far) == 2).all() and discovery.num_classes == 3
    mixed = discovery.assign(np.concatenate([_blob([3, 0, 0], 3, 4), _blob([-9, 5, 0], 4, 5)]))
    assert (mixed[:3] == first[10]).all() and (mixed[3:] == 3).all()


def test_vectors_just_outside_the_radius_form_a_new_class():
    discovery = NovelClassDiscovery(distance=0.5)
    discovery.assign(np.zeros((2, 2)))
    assert (discovery.assign(np.array([[0.4, 0.0]])) == 0).all()  # matched: MAV -> (0.2, 0)
    assert (discovery.assign(np.array([[0.8, 0.0]])) == 1).all()  # 0.6 from (0.2, 0)


def test_subsample_bound_and_determinism(monkeypatch):
    sizes = []
    real = sklearn.cluster.AgglomerativeClustering

    class Recording(real):
        def fit_predict(self, X, y=None):
            sizes.append(len(X))
            assert self.distance_threshold == 0.5 and self.n_clusters is None
            assert self.linkage == "ward" and self.metric == "euclidean"
            return super().fit_predict(X)

    monkeypatch.setattr(sklearn.cluster, "AgglomerativeClustering", Recording)
    x = np.concatenate([_blob([0, 0], 300, 0, 0.3), _blob([6, 0], 200, 1, 0.3)])
    discovery = NovelClassDiscovery(distance=0.5, max_pixels=50, seed=7)
    ids = discovery.assign(x)
    assert sizes == [50]  # at most max_pixels clustered
    assert (ids >= 0).all() and set(ids) == set(range(discovery.num_classes))
    # every pixel sits in a cluster; the MAVs are the means of all their pixels
    for c in range(discovery.num_classes):
        np.testing.assert_allclose(discovery.mavs[c], x[ids == c].mean(0))
    # the blobs are never mixed in one class
    assert not set(ids[:300]) & set(ids[300:])
    # a non-sampled pixel goes to the nearest cluster: the nearest MAV of most pixels is their own
    # (the MAVs moved from the sample means to the full means, so not necessarily all)
    assert (nearest(x, discovery.mavs)[0] == ids).mean() > 0.9
    # deterministic: a fresh state with the same seed gives the same ids
    again = NovelClassDiscovery(distance=0.5, max_pixels=50, seed=7).assign(x)
    np.testing.assert_array_equal(ids, again)
    # below the bound nothing is sampled
    sizes.clear()
    NovelClassDiscovery(distance=0.5, max_pixels=50).assign(x[:40])
    assert sizes == [40]


def test_reset_clears_state_and_edge_inputs():
    discovery = NovelClassDiscovery()
    x = np.concatenate([_blob([0, 0, 0], 10, 0), _blob([3, 0, 0], 12, 1)])
    first = discovery.assign(x)
    discovery.assign(_blob([9, 9, 9], 3, 2))
    assert discovery.num_classes == 3
    discovery.reset()
    assert discovery.num_classes == 0 and discovery.mavs is None and discovery.images == 0
    np.testing.assert_array_equal(discovery.assign(x), first)
    # no pixels: nothing; one pixel: its own class; torch input accepted
    assert discovery.assign(np.zeros((0, 3))).shape == (0,)
    assert discovery.assign(torch.tensor([[50.0, 0.0, 0.0]])).tolist() == [2]
    with pytest.raises(ValueError, match="dims"):
        discovery.assign(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="max_pixels"):
        NovelClassDiscovery(max_pixels=1)


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    x, c = rng.normal(0, 1, (500, 19)), rng.normal(0, 1, (40, 19))
    brute = np.linalg.norm(x[:, None] - c[None], axis=2)
    index, distance = nearest(x, c)
    np.testing.assert_array_equal(index, brute.argmin(1))
    np.testing.assert_allclose(distance, brute.min(1))


# ---------------------------------------------------------------------------------- metric

V = 255
# frame 1: object A (2x2, top left), object B (vertical pair at column 4), a void pixel at (1, 5)
LABELS_1 = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, V],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0],
    ]
)
NOVEL_1 = np.array(
    [
        [3, 3, -1, -1, -1, -1],
        [5, -1, -1, -1, -1, 7],  # 7 lies on void: not a flagged pixel, but a discovered id
        [3, -1, -1, -1, -1, -1],  # (2, 0) is flagged on an inlier
        [-1, -1, -1, -1, -1, -1],
    ]
)
# frame 2: no anomaly; two flagged inliers, one with an id seen before (3), one new (9)
LABELS_2 = np.zeros((4, 6), np.int64)
NOVEL_2 = np.full((4, 6), -1)
NOVEL_2[0, 0], NOVEL_2[3, 5] = 9, 3


def test_discovery_metric_hand_worked_frame():
    metric = DiscoveryMetric()
    metric.update(NOVEL_1, LABELS_1)
    values = metric.compute()
    # flagged (void excluded): (0,0) (0,1) (1,0) on A, (2,0) on an inlier -> 3 / 4
    assert values["discovery_precision"] == pytest.approx(3 / 4)
    # A: 3 of 4 pixels flagged, B: 0 of 2 -> (0.75 + 0) / 2
    assert values["discovery_object_coverage"] == pytest.approx(0.375)
    # A's flagged pixels: ids 3, 3, 5 -> 2/3; B has none and is left out of the purity mean
    assert values["discovery_object_purity"] == pytest.approx(2 / 3)
    assert values["discovery_novel_classes"] == 3  # {3, 5, 7}: ids count on void too
    assert values["discovery_objects"] == 2 and values["discovery_flagged_pixels"] == 4
    np.testing.assert_allclose(metric.coverage, [0.75, 0.0])
    np.testing.assert_allclose(metric.purity, [2 / 3])


def test_discovery_metric_two_frames_merge_and_state_round_trip():
    single = DiscoveryMetric()
    single.update(NOVEL_1, LABELS_1)
    single.update(NOVEL_2, LABELS_2)
    values = single.compute()
    assert values["discovery_precision"] == pytest.approx(3 / 6)
    assert values["discovery_object_coverage"] == pytest.approx(0.375)
    assert values["discovery_object_purity"] == pytest.approx(2 / 3)
    assert values["discovery_novel_classes"] == 4  # {3, 5, 7, 9}: id 3 counted once
    assert values["discovery_flagged_pixels"] == 6
    first, second = DiscoveryMetric(), DiscoveryMetric()
    first.update(NOVEL_1, LABELS_1)
    second.update(NOVEL_2, LABELS_2)
    assert second.merge(first).compute() == values  # merge in either order == one pass
    batch = DiscoveryMetric()
    batch.update(torch.from_numpy(np.stack([NOVEL_1, NOVEL_2])), np.stack([LABELS_1, LABELS_2]))
    assert batch.compute() == values
    restored = DiscoveryMetric.from_state_dict(single.state_dict())
    assert restored.compute() == values


def test_discovery_metric_objects_are_8_connected():
    metric = DiscoveryMetric()
    metric.update(np.array([[0, -1], [-1, 1]]), np.array([[1, 0], [0, 1]]))
    # the diagonal pair is one object, fully covered, split over two ids
    values = metric.compute()
    assert values["discovery_objects"] == 1
    assert values["discovery_object_coverage"] == 1.0
    assert values["discovery_object_purity"] == 0.5
    assert values["discovery_precision"] == 1.0


def test_discovery_metric_empty_cases_are_nan():
    values = DiscoveryMetric().compute()
    assert all(math.isnan(values[k]) for k in ("discovery_precision", "discovery_object_coverage"))
    assert math.isnan(values["discovery_object_purity"])
    assert values["discovery_novel_classes"] == 0 and values["discovery_objects"] == 0
    assert values["discovery_flagged_pixels"] == 0
    # objects but nothing flagged: coverage 0, precision and purity undefined
    metric = DiscoveryMetric()
    metric.update(np.full((2, 3), -1), np.array([[1, 1, 0], [0, 0, V]]))
    values = metric.compute()
    assert values["discovery_object_coverage"] == 0.0 and values["discovery_objects"] == 1
    assert math.isnan(values["discovery_precision"])
    assert math.isnan(values["discovery_object_purity"])
    # flagged pixels but no object: precision 0, coverage and purity undefined
    metric = DiscoveryMetric()
    metric.update(np.array([[0, 1]]), np.array([[0, 0]]))
    values = metric.compute()
    assert values["discovery_precision"] == 0.0 and values["discovery_novel_classes"] == 2
    assert math.isnan(values["discovery_object_coverage"])


def test_discovery_metric_rejects_bad_input():
    metric = DiscoveryMetric()
    with pytest.raises(ValueError, match="shapes"):
        metric.update(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        metric.update(np.full((2, 2), -2), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="integers"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="labels"):
        metric.update(np.zeros((2, 2), np.int64), np.full((2, 2), 2))
    assert metric.flagged == 0 and not metric.coverage.size


# -------------------------------------------------------------------------- ContMAV option


def _method(**overrides) -> ContMAV:
    """An untrained ContMAV with hand-set MAVs; a large radius spreads the unknown scores."""
    torch.manual_seed(0)
    method = ContMAV(ContMAVConfig(num_classes=3, radius=1e3, **SMALL, **overrides))
    method.stats = ClassStats(5.0 * torch.eye(3), torch.ones(3, 3), torch.ones(3))
    return method


def test_discovery_fields_are_inference_only():
    base, on = ContMAVConfig(), ContMAVConfig(discovery=True, discovery_max_pixels=10)
    assert Runner.fit_config(ContMAV, base) == Runner.fit_config(ContMAV, on)
    with pytest.raises(BadInput, match="max_pixels"):
        ContMAV(ContMAVConfig(discovery=True, discovery_max_pixels=1, **SMALL))


def test_contmav_predict_novel_class_and_split_reset():
    images = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    plain = _method().predict(images)
    assert "novel_class" not in plain.extras
    delta = float(plain.anomaly.median())  # an untrained net: flag about half the pixels
    method = _method(discovery=True, threshold=delta, discovery_max_pixels=100)
    pred = method.predict(images)
    novel = pred.extras["novel_class"]
    assert novel.shape == (2, 24, 40) and novel.dtype == torch.long
    flagged = pred.anomaly > delta  # score "unknown" is the anomaly map here
    assert flagged.sum() > 200  # more than max_pixels per image: subsampled
    assert ((novel >= 0) == flagged).all() and (novel[~flagged] == -1).all()
    assert int(novel.max()) + 1 == method.discovery.num_classes
    # the state persists across batches; start_split resets it, so a split replays identically
    method.predict(images)
    method.start_split()
    assert method.discovery.num_classes == 0
    assert torch.equal(method.predict(images).extras["novel_class"], novel)


def _split(n: int) -> ListSplit:
    """``n`` random frames with one anomaly object each and no semantic labels."""
    rng = np.random.default_rng(0)
    anomaly = np.zeros((24, 40), np.uint8)
    anomaly[5:12, 10:20] = 1
    return ListSplit(
        [
            Frame(f"f{i}", rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), anomaly=anomaly)
            for i in range(n)
        ]
    )


def test_evaluate_split_feeds_a_discovery_metric_and_resets_per_split():
    images = torch.from_numpy(np.stack([f.image for f in _split(3)])).permute(0, 3, 1, 2) / 255
    delta = float(_method().predict(images).anomaly.median())
    method = _method(discovery=True, threshold=delta, discovery_max_pixels=100)
    group = TrainedGroup("contmav", method)
    args = (_split(3), 3, 2, torch.device("cpu"))
    first, _ = evaluate_split(group, *args, progress=False)
    second, _ = evaluate_split(group, *args, progress=False)
    values = first["contmav"].discovery.compute()
    assert values["discovery_objects"] == 3 and values["discovery_novel_classes"] > 0
    assert second["contmav"].discovery.compute() == values  # state reset by start_split
    plain, _ = evaluate_split(TrainedGroup("contmav", _method()), *args, progress=False)
    assert plain["contmav"].discovery is None


def _run(tmp_path, name: str, yaml: str) -> list[dict]:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml)
    out = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "contmav",
         "--datasets", "synthstreets", "--preset", "quick", "--seeds", "0",
         "--config", str(config), "--data-root", str(tmp_path / "data"),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_contmav_discovery_through_the_cli_reuses_the_checkpoint(tmp_path):
    (plain,) = _run(tmp_path, "plain", "method_configs:\n  contmav: {steps: 2, batch_size: 2}\n")
    (found,) = _run(
        tmp_path,
        "discovery",
        "method_configs:\n  contmav: {steps: 2, batch_size: 2, discovery: true}\n",
    )
    assert not any(k.startswith("discovery_") for k in plain["metrics"])
    assert found["method_config"]["discovery"] is True
    assert found["fit_cached"] is True  # discovery is inference-only: the same fit
    assert found["checkpoint_sha256"] == plain["checkpoint_sha256"]
    assert found["config_hash"] != plain["config_hash"]
    assert len(list((tmp_path / "cache").rglob("method-contmav-*.pt"))) == 1
    metrics = found["metrics"]
    for key in ("discovery_precision", "discovery_object_coverage", "discovery_object_purity"):
        assert metrics[key] is None or 0 <= metrics[key] <= 1
    assert metrics["discovery_novel_classes"] >= 0 and metrics["discovery_objects"] > 0
    # the standard metrics are the same: discovery only adds keys
    for key in ("AP", "AUROC", "FPR95", "mIoU"):
        assert metrics[key] == plain["metrics"][key]
    report = subprocess.run(
        [sys.executable, "-m", "owsbench", "report", str(tmp_path / "discovery")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "discovery_precision" not in report.stdout  # the leaderboard: standard metrics
