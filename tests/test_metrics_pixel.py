"""AnomalyMetric against scikit-learn: exact on few distinct values, within 1e-4 otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from owsbench.metrics import AnomalyMetric
from owsbench.metrics.pixel import float_to_key, key_to_float

EXACT = 1e-12
BINNED = 1e-4


def reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scikit-learn on the non-void pixels; scores replaced by their ranks so that +-inf work."""
    keep = labels != 255
    y = labels[keep].astype(int)
    ranks = np.unique(np.asarray(scores, np.float32)[keep], return_inverse=True)[1]
    fpr, tpr, _ = roc_curve(y, ranks, drop_intermediate=False)
    return {
        "AP": average_precision_score(y, ranks),
        "AUROC": roc_auc_score(y, ranks),
        "FPR95": fpr[np.searchsorted(tpr, 0.95)],
    }


def quantize(scores: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 scores down to their bin's lower edge (independent of the implementation)."""
    u = (np.asarray(scores, np.float32) + np.float32(0.0)).view(np.uint32)
    key = np.where(u >> 31 == 1, ~u, u | np.uint32(1 << 31)).astype(np.uint32)
    edge = np.maximum(key & np.uint32(~((1 << (32 - bits)) - 1) & 0xFFFFFFFF), 0x007FFFFF)
    edge = edge.astype(np.uint32)
    return np.where(edge >> 31 == 1, edge & np.uint32(0x7FFFFFFF), ~edge).view(np.float32)


def metric(scores, labels, bits: int = 24) -> dict[str, float]:
    m = AnomalyMetric(bits)
    m.update(scores, labels)
    return m.compute()


def assert_close(got: dict, want: dict, tol: float) -> None:
    for name in ("AP", "AUROC", "FPR95"):
        assert abs(got[name] - want[name]) <= tol, (name, got[name], want[name])


def make(n: int = 200_000, seed: int = 0, rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rate).astype(np.uint8)
    return rng.standard_normal(n).astype(np.float32), labels


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda z, y: sigmoid(2 * y + z), id="probability"),
        pytest.param(lambda z, y: 5 * (3 * y + 2 * z), id="logit"),
        pytest.param(lambda z, y: -15 + 2 * y + 2 * z, id="energy-all-negative"),
        pytest.param(lambda z, y: 1e30 * (y + z), id="huge"),
        pytest.param(lambda z, y: 1e-30 * (y + z), id="tiny"),
    ],
)
def test_continuous_scores_match_sklearn(transform) -> None:
    z, y = make()
    scores = np.asarray(transform(z, y.astype(np.float32)), np.float32)
    got = metric(scores, y)
    assert_close(got, reference(quantize(scores, 24), y), EXACT)
    assert_close(got, reference(scores, y), BINNED)


@pytest.mark.parametrize("bits", [12, 16, 20, 28])
def test_other_bits_equal_sklearn_on_quantized_scores(bits: int) -> None:
    z, y = make(50_000)
    scores = 4 * z + 3 * y
    assert_close(metric(scores, y, bits), reference(quantize(scores, bits), y), EXACT)


def test_mixed_signs_infinities_and_zeros() -> None:
    z, y = make(100_000)
    scores = 5 * (3 * y + 2 * z)
    specials = [np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38]
    scores[: 8 * 50] = np.repeat(specials, 50)
    got = metric(scores, y)
    assert_close(got, reference(quantize(scores, 24), y), EXACT)
    assert_close(got, reference(scores, y), BINNED)


@pytest.mark.parametrize(
    "make_scores",
    [
        pytest.param(lambda z, y: np.round(z, 1), id="rounded"),
        pytest.param(lambda z, y: np.round(z + 2 * y), id="few-values"),
        pytest.param(lambda z, y: (z + y > 1).astype(np.float32), id="binary"),
        pytest.param(lambda z, y: np.full_like(z, 0.3), id="constant"),
        pytest.param(lambda z, y: -np.abs(np.round(z, 2)) - 1, id="all-negative-tied"),
    ],
)
def test_tied_scores_are_exact(make_scores) -> None:
    z, y = make(100_000)
    scores = np.asarray(make_scores(z, y), np.float32)
    assert_close(metric(scores, y), reference(scores, y), EXACT)


def test_constant_score_values() -> None:
    _, y = make(10_000)
    got = metric(np.zeros(y.shape, np.float32), y)
    assert got["AP"] == pytest.approx(y.mean(), abs=EXACT)
    assert got["AUROC"] == pytest.approx(0.5, abs=EXACT)
    assert got["FPR95"] == 1.0


def test_oracle_and_inverted_oracle() -> None:
    z, y = make(10_000)
    oracle = y + 0.01 * np.abs(z)
    assert metric(oracle, y) == {"AP": 1.0, "AUROC": 1.0, "FPR95": 0.0}
    inverted = metric(-oracle, y)
    assert inverted["AUROC"] == 0.0
    assert inverted["FPR95"] == 1.0
    assert_close(inverted, reference(quantize(-oracle, 24), y), EXACT)
    assert_close(inverted, reference(-oracle, y), BINNED)


def test_void_pixels_are_excluded() -> None:
    z, y = make(50_000)
    scores = z + y
    labels = y.copy()
    labels[::7] = 255
    scores_void = scores.copy()
    scores_void[::7] = np.random.default_rng(1).standard_normal(len(scores[::7])) * 1e6
    got = metric(scores_void, labels)
    assert got == metric(scores[labels != 255], labels[labels != 255])
    assert_close(got, reference(scores_void, labels), BINNED)


def test_chunked_updates_merge_and_state_roundtrip(tmp_path) -> None:
    z, y = make(300_000)  # several internal chunks
    scores = (4 * z + 3 * y).reshape(3, 100, 1000)
    labels = y.reshape(3, 100, 1000)
    whole = AnomalyMetric()
    whole.update(scores, labels)
    pieces = AnomalyMetric()
    for i in range(3):
        pieces.update(scores[i, :37], labels[i, :37])
        pieces.update(scores[i, 37:], labels[i, 37:])
    first, second = AnomalyMetric(), AnomalyMetric()
    first.update(scores[:2], labels[:2])
    second.update(scores[2:], labels[2:])
    merged = first.merge(second)
    np.savez(tmp_path / "state.npz", **whole.state_dict())
    loaded = AnomalyMetric.from_state_dict(dict(np.load(tmp_path / "state.npz")))
    for other in (pieces, merged, loaded):
        assert other.compute() == whole.compute()
        assert (other.num_positives, other.num_negatives) == (int(y.sum()), int((y == 0).sum()))


def test_torch_tensors() -> None:
    z, y = make(20_000)
    scores = z + y
    want = metric(scores, y)
    assert metric(torch.from_numpy(scores), torch.from_numpy(y).long()) == want
    assert metric(torch.from_numpy(scores).double(), torch.from_numpy(y).bool()) == want
    half = torch.from_numpy(scores).half()
    assert metric(half, torch.from_numpy(y)) == metric(half.float().numpy(), y)


def test_undefined_values_are_nan() -> None:
    empty = AnomalyMetric().compute()
    assert all(math.isnan(v) for v in empty.values())
    no_pos = metric(np.arange(5.0), np.zeros(5, np.uint8))
    assert all(math.isnan(v) for v in no_pos.values())
    no_neg = metric(np.arange(5.0), np.ones(5, np.uint8))
    assert no_neg["AP"] == 1.0
    assert math.isnan(no_neg["AUROC"]) and math.isnan(no_neg["FPR95"])
    only_void = metric(np.arange(5.0), np.full(5, 255, np.uint8))
    assert all(math.isnan(v) for v in only_void.values())


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(4), np.zeros(5, np.uint8), "shape"),
        (np.array([0.0, np.nan]), np.zeros(2, np.uint8), "NaN"),
        (np.zeros(3), np.array([0, 1, 2], np.uint8), "labels"),
        (np.zeros(3), np.array([0, 1, -1]), "labels"),
        (np.zeros(3), np.array([0, 1, 256]), "labels"),
        (np.zeros(3), np.array([0.0, 1.0, 1.0]), "integers"),
        (np.array(["a", "b"]), np.zeros(2, np.uint8), "real"),
    ],
)
def test_bad_inputs_raise(scores, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyMetric().update(scores, labels)


def test_failed_update_leaves_counts_unchanged() -> None:
    z, y = make(200_000)
    m = AnomalyMetric()
    m.update(z[:1000], y[:1000])
    before = m.compute()
    bad = z.copy()
    bad[-1] = np.nan  # in the last internal chunk
    with pytest.raises(ValueError, match="NaN"):
        m.update(bad, y)
    assert m.compute() == before
    assert m.num_positives + m.num_negatives == 1000


def test_merge_and_load_need_same_bits() -> None:
    with pytest.raises(ValueError, match="bits"):
        AnomalyMetric(24).merge(AnomalyMetric(20))
    with pytest.raises(ValueError, match="bits"):
        AnomalyMetric(24).load_state_dict(AnomalyMetric(20).state_dict())
    with pytest.raises(ValueError, match="bits"):
        AnomalyMetric(8)


def test_curve_matches_sklearn_on_distinct_values() -> None:
    z, y = make(20_000)
    scores = np.round(z + y, 1).astype(np.float32)
    c = AnomalyMetric()
    c.update(scores, y)
    curve = c.curve()
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
    # lower bin edges; sklearn prepends +inf
    np.testing.assert_array_equal(curve.thresholds, quantize(thresholds[1:], 24))
    np.testing.assert_allclose(curve.tpr, tpr[1:], atol=EXACT)
    np.testing.assert_allclose(curve.fpr, fpr[1:], atol=EXACT)
    np.testing.assert_array_equal(curve.recall, curve.tpr)
    tp = curve.tpr * y.sum()
    np.testing.assert_allclose(curve.precision, tp / (tp + curve.fpr * (y == 0).sum()))


def test_bin_edges_are_exact_thresholds() -> None:
    z, y = make(20_000)
    scores = 7 * z + y
    curve = AnomalyMetric(16)
    curve.update(scores, y)
    c = curve.curve()
    assert np.all(np.diff(c.thresholds) < 0)
    for k in (0, len(c.thresholds) // 3, len(c.thresholds) - 1):
        flagged = scores >= c.thresholds[k]
        assert c.tpr[k] == flagged[y == 1].mean()
        assert c.fpr[k] == flagged[y == 0].mean()


def test_key_is_order_preserving() -> None:
    values = np.array(
        [-np.inf, -3e38, -1.0, -1e-45, 0.0, 1e-45, 1.0, 3e38, np.inf], dtype=np.float32
    )
    keys = float_to_key(values)
    assert np.all(np.diff(keys.astype(np.int64)) > 0)
    assert float_to_key(np.float32(-0.0)) == float_to_key(np.float32(0.0))
    np.testing.assert_array_equal(key_to_float(keys), values)


def hendrycks_fpr95(labels: np.ndarray, scores: np.ndarray) -> float:
    """``fpr_and_fdr_at_recall`` of hendrycks/anomaly-seg (anom_utils.py), step by step."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], labels[order] == 1
    idx = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    recall, fps = np.r_[recall[last::-1], 1], np.r_[fps[last::-1], 0]
    return fps[np.argmin(np.abs(recall - 0.95))] / np.sum(~y)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "make_scores",
    [
        pytest.param(lambda z, y: quantize(z + y, 24), id="distinct"),
        pytest.param(lambda z, y: np.round(z + 2 * y, 1), id="rounded"),
        pytest.param(lambda z, y: np.round(2 * z + y), id="few-values"),
    ],
)
def test_nearest_fpr_matches_hendrycks(seed: int, make_scores) -> None:
    z, y = make(int(np.random.default_rng(seed).integers(20, 3000)), seed, rate=0.1)
    scores = np.asarray(make_scores(z, y), np.float32)
    m = AnomalyMetric()
    m.update(scores, y)
    assert m.compute("nearest")["FPR95"] == hendrycks_fpr95(y, scores)
    assert m.compute("first") == m.compute()


def test_nearest_fpr_tie_rules() -> None:
    # 20 positives: 19 at score 10, then negatives at 9, 8, 7 (2 each), then 1 positive at 0 and
    # 4 negatives at 0. Recall is 19/20 = 0.95 (distance 0) at thresholds 10, 9, 8, 7, so
    # "first" takes 10 (FPR 0/10) and Hendrycks the lowest of the tied points, 7 (FPR 6/10).
    scores = np.r_[[10.0] * 19, [9, 9, 8, 8, 7, 7], 0, [0] * 4].astype(np.float32)
    labels = np.r_[[1] * 19, [0] * 6, 1, [0] * 4].astype(np.uint8)
    m = AnomalyMetric()
    m.update(scores, labels)
    assert m.compute("first")["FPR95"] == 0.0
    assert m.compute("nearest")["FPR95"] == 0.6 == hendrycks_fpr95(labels, scores)
    # Full recall only at the last threshold: points below it do not exist, and recall 1 ties
    # with nothing. 2 positives: recall 0.5 at 5 (distance 0.45), 1.0 at 1 (distance 0.05).
    m = AnomalyMetric()
    m.update(np.array([5, 3, 1, 1], np.float32), np.array([1, 0, 1, 0], np.uint8))
    assert m.compute("nearest")["FPR95"] == 1.0 == m.compute("first")["FPR95"]
    # Full recall reached at 1; the lower threshold 0 (recall 1, more negatives) is dropped.
    m = AnomalyMetric()
    m.update(np.array([1, 1, 0, 0], np.float32), np.array([1, 1, 0, 0], np.uint8))
    assert m.compute("nearest")["FPR95"] == 0.0


def test_fpr_rule_is_checked() -> None:
    with pytest.raises(ValueError, match="fpr_rule"):
        AnomalyMetric().compute("interpolate")


def brute_force_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """max over unique scores u (highest u on ties) of the F1 of the rule ``score >= u``."""
    best = (-1.0, np.nan)
    for u in np.unique(scores)[::-1]:
        flagged = scores >= u
        tp = np.sum(flagged & (labels == 1))
        fp = np.sum(flagged & (labels == 0))
        fn = np.sum(~flagged & (labels == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, float(u))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_matches_brute_force(seed: int) -> None:
    z, y = make(500, seed, rate=0.2)
    scores = z + 1.5 * y
    if seed % 2:
        scores = np.round(scores, 1)  # ties
    scores = quantize(scores, 24)  # each score is its own bin's lower edge
    labels = y.copy()
    labels[::11] = 255
    m = AnomalyMetric()
    m.update(scores, labels)
    keep = labels != 255
    f1, threshold = m.best_f1()
    want_f1, want_threshold = brute_force_best_f1(scores[keep], labels[keep])
    assert f1 == pytest.approx(want_f1, abs=EXACT)
    assert threshold == want_threshold


def test_best_f1_ties_and_undefined() -> None:
    # thresholds 4, 3, 2, 1: F1 = 2/3, 2/4, 2/5, 4/6; the tie 2/3 goes to the higher threshold 4
    m = AnomalyMetric()
    m.update(np.array([4, 3, 2, 1], np.float32), np.array([1, 0, 0, 1], np.uint8))
    assert m.best_f1() == (2 / 3, 4.0)
    assert all(math.isnan(v) for v in AnomalyMetric().best_f1())
    no_pos = AnomalyMetric()
    no_pos.update(np.arange(3.0), np.zeros(3, np.uint8))
    assert all(math.isnan(v) for v in no_pos.best_f1())


def test_the_kernel_splits_keys_into_the_metrics_blocks() -> None:
    """The compiled kernel and the metric agree on the block bits (a key's top 9), and the
    kernel's block of a float equals the numpy key's top bits."""
    from owsbench.metrics import pixel, pixel_kernels

    assert pixel_kernels.BLOCK_BITS == pixel._BLOCK_BITS
    values = np.array([-np.inf, -3.5, -0.0, 0.0, 1e-30, 0.75, 2.0, np.inf], np.float32)
    keys = pixel.float_to_key(values)
    blocks = [pixel_kernels.block_of(b) for b in values.view(np.uint32)]
    assert blocks == [int(k) >> (32 - pixel._BLOCK_BITS) for k in keys]
