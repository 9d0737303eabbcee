"""ComponentMetric (SMIYC sIoU, PPV, component F1) on hand-built frames, values worked out by hand.

Frames are drawn as text, one character per pixel, threshold 0.5:

    .  inlier (label 0), score 0       p  inlier, score 1: a predicted background pixel
    g  anomaly (label 1), score 0      G  anomaly, score 1: a predicted anomaly pixel
    v  void (label 255), score 1: above the threshold but never part of the prediction

taus = 0.25, 0.30, ..., 0.75 (11 values).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from owsbench.metrics import ComponentMetric
from owsbench.metrics.components import SMIYC_SIZE_FILTERS, SMIYC_TAUS

CODES = {".": (0, 0.0), "p": (0, 1.0), "g": (1, 0.0), "G": (1, 1.0), "v": (255, 1.0)}


def frame(art: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32, labels uint8) of a text drawing (see the module docstring)."""
    rows = [r.replace(" ", "") for r in art.strip().splitlines()]
    labels = np.array([[CODES[c][0] for c in r] for r in rows], np.uint8)
    scores = np.array([[CODES[c][1] for c in r] for r in rows], np.float32)
    return scores, labels


def run(*arts: str, **kwargs) -> ComponentMetric:
    m = ComponentMetric(0.5, **kwargs)
    for art in arts:
        m.update(*frame(art))
    return m


def assert_result(m: ComponentMetric, want: dict[str, float]) -> None:
    got = m.compute()
    assert got["threshold"] == 0.5
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), (key, got[key])
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), (key, got[key], value)


PERFECT = """
. . . . . .
. G G G . .
. G G G . .
. G G G . .
. . . . . .
"""

HALF = """
. . . . . .
. G G g g .
. G G g g .
. . . . . .
"""

FALSE_POSITIVE = """
. . . . . . . .
. G G . . . . .
. G G . . p p .
. . . . . p p .
"""


def test_perfect_prediction() -> None:
    # GT 9 px, one predicted component on exactly those 9 px: sIoU = 9 / 9, PPV = 9 / 9,
    # TP = 1, FN = FP = 0 at every tau, so F1_tau = 2 / 2 = 1.
    m = run(PERFECT)
    np.testing.assert_array_equal(m.siou, [1.0])
    np.testing.assert_array_equal(m.ppv, [1.0])
    assert_result(m, {"sIoU": 1, "PPV": 1, "mean_F1": 1, "F1_25": 1, "F1_50": 1, "F1_75": 1})


def test_half_covered_component() -> None:
    # GT 8 px, prediction on 4 of them and nowhere else: sIoU = 4 / (8 + 0) = 0.5, PPV = 4 / 4.
    # sIoU >= tau for the 6 taus 0.25..0.50 (TP, F1 = 2 / 2 = 1), < tau for the 5 taus
    # 0.55..0.75 (FN, F1 = 0 / 1 = 0); FP = 0 everywhere. mean F1 = 6 / 11.
    m = run(HALF)
    np.testing.assert_array_equal(m.siou, [0.5])
    c = m.counts()
    np.testing.assert_array_equal(c["TP"], [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(c["FN"], [0] * 6 + [1] * 5)
    np.testing.assert_array_equal(c["FP"], [0] * 11)
    assert_result(m, {"sIoU": 0.5, "PPV": 1, "mean_F1": 6 / 11, "F1_50": 1, "F1_75": 0})


def test_prediction_touching_two_gt_components() -> None:
    # GT a = columns 1-3, GT b = columns 7-9; one predicted component, columns 2-8 (7 px):
    # 2 px on a, 3 on background, 2 on b. For a: K̂ = that component, A(a) = its 2 px on b,
    # sIoU(a) = |a ∩ K̂| / (|K̂| + |a| - |a ∩ K̂| - |A(a)|) = 2 / (7 + 3 - 2 - 2) = 1/3
    # (2 / 8 = 0.25 without the adjustment); b is the mirror image, 1/3.
    # PPV = (2 + 2) / 7 = 4/7 = 0.571.
    # tau 0.25, 0.30: TP 2, FN 0, FP 0 -> F1 1. tau 0.35..0.55 (5): TP 0, FN 2, FP 0 -> 0.
    # tau 0.60..0.75 (4, PPV < tau): TP 0, FN 2, FP 1 -> 0. mean F1 = 2 / 11.
    m = run(
        """
        . . . . . . . . . . .
        . g G G p p p G G g .
        . . . . . . . . . . .
        """
    )
    np.testing.assert_allclose(m.siou, [1 / 3, 1 / 3], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(m.counts()["FP"], [0] * 7 + [1] * 4)
    assert_result(
        m, {"sIoU": 1 / 3, "PPV": 4 / 7, "mean_F1": 2 / 11, "F1_25": 1, "F1_50": 0, "F1_75": 0}
    )


def test_gt_component_met_by_two_predictions() -> None:
    # GT columns 1-6 (6 px); predicted components columns 0-1 (1 px background, 1 on GT) and
    # columns 5-7 (2 on GT, 1 background). K̂ = both: sIoU = 3 / (6 + 1 + 1) = 3/8.
    # PPV = 1/2 and 2/3, mean 7/12.
    m = run(
        """
        . . . . . . . . .
        p G g g g G G p .
        . . . . . . . . .
        """
    )
    np.testing.assert_array_equal(m.siou, [3 / 8])
    np.testing.assert_allclose(m.ppv, [1 / 2, 2 / 3], rtol=0, atol=1e-15)
    assert_result(m, {"sIoU": 3 / 8, "PPV": 7 / 12})


def test_false_positive_blob() -> None:
    # GT 4 px perfectly predicted (sIoU 1, PPV 1) and a 4 px predicted blob on background
    # (PPV 0 < tau: FP at every tau). TP 1, FN 0, FP 1 -> F1 = 2 / (2 + 0 + 1) = 2/3 everywhere.
    m = run(FALSE_POSITIVE)
    np.testing.assert_array_equal(m.ppv, [1.0, 0.0])
    np.testing.assert_array_equal(m.counts()["FP"], [1] * 11)
    want = {"sIoU": 1, "PPV": 0.5, "mean_F1": 2 / 3, "F1_25": 2 / 3, "F1_50": 2 / 3, "F1_75": 2 / 3}
    assert_result(m, want)


def test_no_gt_components() -> None:
    # Only a false positive: no GT component, so sIoU is undefined; PPV = 0 / 2;
    # TP = FN = 0, FP = 1 -> F1 = 0 / 1 = 0.
    only_fp = run(
        """
        . . . .
        . p p .
        """
    )
    nan = float("nan")
    assert_result(only_fp, {"sIoU": nan, "PPV": 0, "mean_F1": 0, "F1_25": 0, "F1_75": 0})
    # Nothing at all: every mean and F1 is 0 / 0.
    empty = run("...\n...")
    assert_result(empty, {"sIoU": nan, "PPV": nan, "mean_F1": nan, "F1_50": nan})
    assert_result(ComponentMetric(0.5), {"sIoU": nan, "PPV": nan, "mean_F1": nan})


def test_void_pixels_are_not_predicted() -> None:
    # Scores above the threshold on the void column 4 are dropped before labelling, which cuts
    # the prediction into columns 1-3 (4 GT + 2 background px) and column 5 (2 background px).
    # sIoU = 4 / (4 + 2) = 2/3, PPV = 4/6 and 0. (Counting void would give one 10 px component:
    # sIoU 4 / 10, PPV 4 / 10.)
    m = run(
        """
        . . . . v . .
        . G G p v p .
        . G G p v p .
        . . . . v . .
        """
    )
    np.testing.assert_allclose(m.siou, [2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.ppv, [2 / 3, 0], rtol=0, atol=1e-15)


def test_size_filters() -> None:
    art = """
        . . . . . . . . . . .
        . G G p . . . . p p .
        . G G . . . . . p p .
        . . . . . . . . . . .
        . . . . . . . . . . .
        . G G G . . . . . . .
        . p p p . . . . . . .
        . . . . . . . . . . .
        """
    # Without filters: GT 4 px (sIoU 4 / 5) and GT 3 px (row 5, sIoU 3 / 6); predictions
    # 5 px (PPV 4/5), 4 px background (PPV 0), 6 px on rows 5-6 (PPV 3/6).
    m = run(art)
    np.testing.assert_allclose(m.siou, [0.8, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.ppv, [0.8, 0.0, 0.5], rtol=0, atol=1e-15)
    # min_pred_size 5 removes the 4 px background blob (5 px is kept: only smaller ones go);
    # min_gt_size 4 keeps the 4 px GT and turns the 3 px GT into void. The 6 px prediction
    # over it survives (its size is taken before the GT filter) with its 3 ROI pixels, all
    # background: PPV 0. GT: sIoU 0.8 >= every tau -> TP 1, FN 0; FP 1 (PPV 0) at every tau.
    # F1 = 2 / (2 + 0 + 1) = 2/3. PPV mean = (0.8 + 0) / 2 = 0.4.
    m = run(art, min_pred_size=5, min_gt_size=4)
    np.testing.assert_allclose(m.siou, [0.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.ppv, [0.8, 0.0], rtol=0, atol=1e-15)
    assert_result(m, {"sIoU": 0.8, "PPV": 0.4, "mean_F1": 2 / 3, "F1_75": 2 / 3})
    # A prediction lying only on a GT component turned void disappears with it.
    gone = run(". . . .\n. G G .\n. . . .", min_gt_size=3)
    assert gone.siou.size == 0 and gone.ppv.size == 0
    assert SMIYC_SIZE_FILTERS["anomaly"] == {"min_pred_size": 500, "min_gt_size": 100}
    assert SMIYC_SIZE_FILTERS["obstacle"] == {"min_pred_size": 50, "min_gt_size": 10}


def test_diagonal_pixels_are_connected() -> None:
    # GT is a diagonal line of 3 px: one component with 8-connectivity (three with 4). The
    # prediction covers 2 of its pixels, also diagonal: one component. sIoU = 2 / 3, PPV = 1.
    # The diagonal background pair at the bottom right is one more component: PPV 0.
    m = run(
        """
        G . . . . .
        . G . . . .
        . . g . . .
        . . . . p .
        . . . . . p
        """
    )
    np.testing.assert_allclose(m.siou, [2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(m.ppv, [1.0, 0.0])


def test_merge_pools_components_over_frames(tmp_path) -> None:
    # HALF: sIoU 0.5, PPV 1. FALSE_POSITIVE: sIoU 1, PPV 1 and 0. Pooled: sIoU (0.5 + 1) / 2,
    # PPV (1 + 1 + 0) / 3. tau <= 0.5 (6 taus): TP 2, FN 0, FP 1 -> F1 4/5; tau > 0.5 (5): TP 1,
    # FN 1, FP 1 -> 2/4. mean F1 = (6 * 0.8 + 5 * 0.5) / 11 (not the mean of the frames' 6/11
    # and 2/3).
    want = {"sIoU": 0.75, "PPV": 2 / 3, "mean_F1": 7.3 / 11, "F1_50": 0.8, "F1_75": 0.5}
    first, second = run(HALF), run(FALSE_POSITIVE)
    merged = first.merge(second)
    assert_result(merged, want)
    both = run(HALF, FALSE_POSITIVE)
    assert merged.compute() == both.compute()
    np.testing.assert_array_equal(merged.counts()["TP"], [2] * 6 + [1] * 5)
    np.savez(tmp_path / "state.npz", **merged.state_dict())
    loaded = ComponentMetric.from_state_dict(dict(np.load(tmp_path / "state.npz")))
    assert loaded.compute() == both.compute()
    # a batch of frames (N, H, W) is counted frame by frame
    (s1, y1), (s2, y2) = frame(HALF), frame(PERFECT)
    batch = ComponentMetric(0.5)
    batch.update(torch.from_numpy(np.stack([s1, s2[:4]])), torch.from_numpy(np.stack([y1, y2[:4]])))
    assert batch.compute() == run(HALF, "\n".join(PERFECT.strip().splitlines()[:4])).compute()


def test_threshold_is_inclusive() -> None:
    # score == threshold is predicted (score >= threshold, the rule of AnomalyMetric.best_f1)
    scores, labels = frame(PERFECT)
    on_edge = ComponentMetric(1.0)
    on_edge.update(scores, labels)
    assert on_edge.compute()["sIoU"] == 1.0
    strict = ComponentMetric(np.nextafter(1.0, np.inf))  # SMIYC's "score > threshold"
    strict.update(scores, labels)
    assert strict.compute()["sIoU"] == 0.0


def test_bad_inputs_and_configs() -> None:
    m = ComponentMetric(0.5)
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((3, 3)), np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros(9), np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        m.update(np.zeros((2, 2)), np.array([[0, 1], [2, 255]]))
    with pytest.raises(ValueError, match="NaN"):
        m.update(np.array([[0.0, np.nan]]), np.zeros((1, 2), np.uint8))
    assert m.siou.size == 0 and m.ppv.size == 0
    with pytest.raises(ValueError, match="configuration"):
        m.merge(ComponentMetric(0.5, min_pred_size=50))
    with pytest.raises(ValueError, match="threshold"):
        ComponentMetric(0.4).load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m.taus, SMIYC_TAUS)
