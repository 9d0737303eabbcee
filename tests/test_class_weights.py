"""Class-frequency statistics and weights: the three formulas on hand-computed counts, the
statistics of a hand-made split, the weighted cross-entropy, the fit that uses them (cached
statistics, weights in the report) and `owsbench data stats`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import ListSplit, TinySplit

from owsbench.cli import main
from owsbench.config import apply_overrides
from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.stats import ClassStats, class_stats
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.segmenters.base import SegmenterConfig
from owsbench.segmenters.smp_models import SmpSegmenter
from owsbench.training.class_weights import cached_class_stats, class_weights
from owsbench.training.losses import semantic_ce
from owsbench.training.segmenter import train_segmenter

# three classes; class 2 never occurs. Frame A: 6 px of class 0, 2 of class 1 (8 labelled);
# frame B: 2 px of class 0 (2 labelled). n = (8, 2, 0), N = 10, P = (10, 8, 0).
STATS = ClassStats(pixels=[8, 2, 0], images=[2, 1, 0], present_pixels=[10, 8, 0], frames=2)


def frame(labels: list[list[int]]) -> Frame:
    semantic = np.array(labels, np.uint8)
    return Frame("f", np.zeros((*semantic.shape, 3), np.uint8), semantic)


def test_statistics_of_a_hand_made_split():
    split = ListSplit(
        [
            frame([[0, 0, 0, 1], [0, 0, 0, 1]]),
            frame([[0, VOID, VOID, VOID], [0, VOID, VOID, VOID]]),
        ]
    )
    assert class_stats(split, 3, progress=False) == STATS


def test_smoothed_weights():
    s = 0.1
    raw = [1 / (8 + 1), 1 / (2 + 1), 1 / (0 + 1)]  # 1 / (n_c + s N), s N = 1
    expected = [3 * w / sum(raw) for w in raw]
    assert class_weights("smoothed", STATS, s) == pytest.approx(expected)
    assert class_weights("smoothed", STATS, s).sum() == pytest.approx(3)


def test_median_frequency_weights():
    g = [8 / 10, 2 / 8]  # n_c / P_c for the classes that occur
    median = (g[0] + g[1]) / 2
    assert class_weights("median-frequency", STATS) == pytest.approx(
        [median / g[0], median / g[1], 0.0]
    )


def test_log_weights():
    expected = [1 / math.log(1.02 + f) for f in (0.8, 0.2, 0.0)]
    assert class_weights("log", STATS) == pytest.approx(expected)
    assert class_weights("none", STATS) is None


def test_weighted_cross_entropy_is_the_weighted_mean():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 3)
    target = torch.tensor([[[0, 1, 2], [VOID, 1, 0]]])
    weight = torch.tensor([0.5, 2.0, 1.0])
    nll = -F.log_softmax(logits, 1)
    labelled = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    num = sum(weight[target[0, i, j]] * nll[0, target[0, i, j], i, j] for i, j in labelled)
    den = sum(weight[target[0, i, j]] for i, j in labelled)
    assert semantic_ce(logits, target, weight).item() == pytest.approx((num / den).item())
    only_zero = torch.tensor([[[2, 2, VOID], [VOID, 2, 2]]])
    loss = semantic_ce(logits.requires_grad_(), only_zero, torch.tensor([1.0, 1.0, 0.0]))
    assert loss.item() == 0.0
    loss.backward()


def test_a_weighted_fit_reports_its_weights_and_caches_the_statistics(tmp_path):
    config = SegmenterConfig(steps=2, batch_size=2, crop=(32, 64), class_weighting="log")
    context = FitContext(
        0, torch.device("cpu"), tmp_path, progress=False, train_fingerprint="tiny/abc"
    )
    _, report = train_segmenter(SmpSegmenter(config, 2), TinySplit(), config, context)
    stats = class_stats(TinySplit(), 2, progress=False)
    assert report["class_weights"] == pytest.approx(list(class_weights("log", stats)), abs=1e-6)
    cached, path, was_cached = cached_class_stats(TinySplit(), 2, "tiny/abc", tmp_path, False)
    assert was_cached and path.parent == tmp_path / "stats" and cached == stats


def test_bad_weighting_values_are_one_line_bad_input():
    with pytest.raises(BadInput, match="segmenter.class_weighting must be"):
        apply_overrides(SegmenterConfig(), {"class_weighting": "inverse"}, "segmenter")
    with pytest.raises(BadInput, match=r"segmenter.class_smooth must be a number in \(0, 1\]"):
        apply_overrides(SegmenterConfig(), {"class_smooth": 0}, "segmenter")


def test_data_stats_prints_the_table_and_writes_the_json(tmp_path, capsys):
    roots = ["--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")]
    args = ["data", "stats", "synthstreets", "--preset", "quick", "--no-progress", *roots]
    main(args)
    out = capsys.readouterr().out
    assert "| road " in out and "w median-frequency" in out and "written:" in out
    main(args)
    assert "cached:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as end:
        main([*args, "--split", "nope"])
    assert end.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
