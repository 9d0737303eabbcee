"""SemanticMetric: hand-computed confusion matrices, void, absent classes, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from owsbench.metrics import SemanticMetric


def metric(pred, label, num_classes: int = 3, ignore_index: int = 255) -> SemanticMetric:
    m = SemanticMetric(num_classes, ignore_index)
    m.update(pred, label)
    return m


def test_hand_computed_confusion() -> None:
    # label: 0 0 1 1 1 2 2 ; pred: 0 1 1 1 2 2 0
    m = metric(np.array([0, 1, 1, 1, 2, 2, 0]), np.array([0, 0, 1, 1, 1, 2, 2], np.uint8))
    np.testing.assert_array_equal(m.confusion, [[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    out = m.compute()
    # IoU_0 = 1 / (1 + 1 + 1), IoU_1 = 2 / (2 + 1 + 1), IoU_2 = 1 / (1 + 1 + 1)
    np.testing.assert_allclose(out["per_class_iou"], [1 / 3, 1 / 2, 1 / 3])
    assert out["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert out["pixel_accuracy"] == pytest.approx(4 / 7)


def test_void_is_ignored() -> None:
    pred = np.array([0, 1, 2, 2, 1, 0])
    label = np.array([0, 1, 2, 255, 255, 255], np.uint8)
    m = metric(pred, label)
    assert m.confusion.sum() == 3
    assert m.compute() == metric(pred[:3], label[:3]).compute()
    assert m.compute()["mIoU"] == 1.0


def test_absent_classes_are_skipped() -> None:
    m = metric(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), num_classes=4)
    out = m.compute()
    assert math.isnan(out["per_class_iou"][2]) and math.isnan(out["per_class_iou"][3])
    # IoU_0 = 2 / 3, IoU_1 = 1 / 2
    assert out["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_only_predicted_counts_as_zero() -> None:
    out = metric(np.array([0, 2]), np.array([0, 0])).compute()
    assert out["per_class_iou"][2] == 0.0
    assert math.isnan(out["per_class_iou"][1])
    assert out["mIoU"] == pytest.approx((1 / 2 + 0.0) / 2)


def test_predictions_outside_classes_are_false_negatives_only() -> None:
    m = metric(np.array([0, 3, -1, 1]), np.array([0, 0, 1, 1]))
    out = m.compute()
    np.testing.assert_array_equal(m.confusion, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(out["per_class_iou"][:2], [1 / 2, 1 / 2])
    assert out["pixel_accuracy"] == 0.5


def test_perfect_prediction() -> None:
    label = np.random.default_rng(0).integers(0, 19, (2, 64, 64))
    out = metric(label, label.astype(np.uint8), num_classes=19).compute()
    assert out["mIoU"] == 1.0 and out["pixel_accuracy"] == 1.0


def brute_force_iou(pred: np.ndarray, label: np.ndarray, k: int) -> list[float]:
    valid = label != 255
    ious = []
    for c in range(k):
        inter = np.sum((pred == c) & (label == c) & valid)
        union = np.sum(((pred == c) | (label == c)) & valid)
        ious.append(inter / union if union else math.nan)
    return ious


def test_random_against_brute_force_and_streaming(tmp_path) -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 6, 200_000).astype(np.uint8)  # 5 classes + void (5 -> 255)
    label[label == 5] = 255
    pred = np.where(rng.random(label.size) < 0.7, label, rng.integers(0, 5, label.size))
    pred[pred == 255] = 7
    whole = metric(pred, label, num_classes=5)
    np.testing.assert_allclose(
        whole.compute()["per_class_iou"], brute_force_iou(pred, label, 5), rtol=1e-12
    )
    halves = metric(pred[:77_777], label[:77_777], num_classes=5)
    halves.merge(metric(pred[77_777:], label[77_777:], num_classes=5))
    np.savez(tmp_path / "state.npz", **whole.state_dict())
    loaded = SemanticMetric.from_state_dict(dict(np.load(tmp_path / "state.npz")))
    for other in (halves, loaded):
        np.testing.assert_array_equal(other.confusion, whole.confusion)
        assert other.compute() == whole.compute()


def test_torch_tensors() -> None:
    pred, label = np.array([[0, 1], [2, 2]]), np.array([[0, 1], [1, 255]], np.uint8)
    got = metric(torch.from_numpy(pred), torch.from_numpy(label)).compute()
    assert got == metric(pred, label).compute()


def test_empty_is_nan() -> None:
    out = SemanticMetric(3).compute()
    assert math.isnan(out["mIoU"]) and math.isnan(out["pixel_accuracy"])


def test_bad_inputs_raise_and_leave_counts_unchanged() -> None:
    m = metric(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="labels must be"):
        m.update(np.zeros(70_000, int), np.r_[np.zeros(69_999, int), 3])
    with pytest.raises(ValueError, match="integers"):
        m.update(np.zeros(3), np.zeros(3, int))
    assert m.confusion.sum() == 2
    with pytest.raises(ValueError, match="merge"):
        m.merge(SemanticMetric(4))
    with pytest.raises(ValueError, match="ignore_index"):
        SemanticMetric(3, ignore_index=1)
