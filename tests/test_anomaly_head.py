"""Anomaly heads: statistics and loss by hand, training on OE pastes of the train split only with a
frozen segmenter, state round trip, and an end-to-end run of fre and both heads through the CLI."""

from __future__ import annotations

import copy
import io
import json
import math
import os

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit, scene

from owsbench.config import PRESETS, RunConfig, parse_method
from owsbench.datasets.base import VOID, Frame, Split
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.anomaly_head import (
    AnomalyHeadHybrid,
    AnomalyHeadStats,
    PixelAnomalyHead,
    semantic_statistics,
)
from owsbench.methods.base import FitContext, image_batch
from owsbench.methods.fre import features_to_logits
from owsbench.methods.nn.outlier_exposure import PasteConfig, outlier_batch, split_outlier_labels
from owsbench.runner import Runner
from owsbench.segmenters.base import SegmenterOutput
from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter
from owsbench.training.losses import masked_bce


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: the cores of the test machine are shared, and two threads contending
    with other processes are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- inputs and loss by hand


def test_statistics_by_hand():
    # two pixels, K = 3: logits (0, ln 2, ln 5) -> p = (1, 2, 5) / 8; and (0, 0, 0) -> 1/3 each
    logits = torch.tensor([[0.0, math.log(2), math.log(5)], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)
    stats = semantic_statistics(logits)
    assert stats.shape == (1, 5, 1, 2)
    p = [1 / 8, 2 / 8, 5 / 8]
    first = [
        5 / 8,  # max probability
        -sum(q * math.log(q) for q in p),  # entropy
        -math.log(8),  # energy -logsumexp = -log(1 + 2 + 5)
        3 / 8,  # MSP 1 - max p
        math.log(5),  # max logit
    ]
    second = [1 / 3, math.log(3), -math.log(3), 2 / 3, 0.0]
    expected = torch.tensor([first, second]).T.reshape(1, 5, 1, 2)
    assert torch.allclose(stats, expected, atol=1e-6)


def test_entropy_clamps_zero_probabilities():
    logits = torch.tensor([0.0, -200.0]).view(1, 2, 1, 1)  # p = (1, ~0): entropy 0, not NaN
    stats = semantic_statistics(logits)
    assert torch.isfinite(stats).all() and stats[0, 1].abs().item() < 1e-6


def test_hybrid_input_has_37_channels_and_uses_the_features():
    torch.manual_seed(0)
    head = PixelAnomalyHead(feature_channels=6)
    logits = torch.randn(2, 4, 8, 12)
    features = torch.randn(2, 6, 2, 3)  # stride 4 over the 8 x 12 input
    inputs = head.inputs(logits, features, multiple=4)
    assert inputs.shape == (2, 37, 8, 12)
    assert torch.equal(inputs[:, :5], semantic_statistics(logits))
    projected = features_to_logits(head.feature_proj(features), (8, 12), 4)
    assert torch.allclose(inputs[:, 5:], projected)
    assert (inputs[:, 5:] > 0).any()
    changed = head.inputs(logits, features + torch.randn_like(features), multiple=4)
    assert torch.equal(changed[:, :5], inputs[:, :5]) and not torch.equal(changed, inputs)
    assert PixelAnomalyHead().inputs(logits).shape == (2, 5, 8, 12)
    # MLP 37 -> 64 -> 32 -> 1 as 1x1 convolutions with dropout 0.1
    convs = [m for m in head.mlp if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(37, 64), (64, 32), (32, 1)]
    assert [m.p for m in head.mlp if isinstance(m, torch.nn.Dropout)] == [0.1, 0.1]


def test_bce_masks_void_and_weights_anomalies():
    logit = torch.tensor([[0.0, 2.0, -1.0]])
    target = torch.tensor([[1, 0, VOID]])
    # anomaly at logit 0: 10 * log(1 + e^0); inlier at logit 2: log(1 + e^2); void ignored
    expected = (10 * math.log(2) + math.log(1 + math.exp(2))) / 2
    assert masked_bce(logit, target, 10.0).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(logit, target, 1.0).item() == pytest.approx(
        (math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6
    )
    other = torch.tensor([[0.0, 2.0, float("inf")]])
    assert masked_bce(other, target, 10.0).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(logit, torch.tensor([[VOID, VOID, VOID]]), 10.0).item() == 0.0


# ---------------------------------------------------------------- training


class RecordingSplit(ListSplit):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__(frames)
        self.read: set[int] = set()

    def __getitem__(self, index: int) -> Frame:
        self.read.add(index)
        return super().__getitem__(index)


class ForbiddenSplit(Split):
    name = "val"

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Frame:
        raise AssertionError("the head read a split other than the one passed to fit")


def train_split() -> RecordingSplit:
    return RecordingSplit([Frame(f"f{s}", *scene(s)) for s in range(4)])


def context(seed: int = 0, source=True) -> FitContext:
    return FitContext(
        seed=seed,
        device=torch.device("cpu"),
        cache_dir=None,
        progress=False,
        outlier_source=outlier_exposure_source() if source else None,
        validation=ForbiddenSplit(),
    )


def segmenter() -> SmpSegmenter:
    torch.manual_seed(0)
    return SmpSegmenter(SegmenterConfig(), num_classes=19).eval()


RECIPE = dict(steps=15, batch_size=2, crop=(64, 64), lr=1e-2, paste_probability=1.0)


@pytest.fixture(scope="module")
def trained():
    """Both heads, each trained for 15 steps on four frames; the segmenter before and after."""
    out = {}
    for cls in (AnomalyHeadStats, AnomalyHeadHybrid):
        model = segmenter()
        before = copy.deepcopy(model.state_dict())
        split = train_split()
        method = cls(cls.Config(**RECIPE), segmenter=model)
        method.fit(split, context())
        out[cls.name] = (method, model, before, split)
    return out


@pytest.mark.parametrize("name", ["anomaly-head-stats", "anomaly-head-hybrid"])
def test_training_reduces_the_loss_on_a_fixed_pasted_batch(trained, name):
    method, model, _, split = trained[name]
    frames = [split.frames[i] for i in range(4)]
    images, labels = outlier_batch(
        frames, outlier_exposure_source(), np.random.default_rng(7), PasteConfig(probability=1.0)
    )
    _, target = split_outlier_labels(labels)
    assert (target == 1).any()
    torch.manual_seed(0)  # the fit's seed: the head as it was before training
    initial = method.build_head(method.head.feature_proj[0].in_channels if method.hybrid else None)
    with torch.no_grad():
        outputs = model(images)
        start = masked_bce(
            initial.eval()(outputs.logits, method.feature_map(outputs), 32), target, 10.0
        )
        end = masked_bce(method.score(outputs), target, 10.0)
    assert end < 0.9 * start
    assert len(method.train_log.loss) == 15 and len(method.train_log.lr) == 15
    assert 0 < method.fit_report["oe_anomaly_pixel_fraction"] < 1


@pytest.mark.parametrize("name", ["anomaly-head-stats", "anomaly-head-hybrid"])
def test_only_the_train_split_is_read_and_the_segmenter_is_frozen(trained, name):
    method, model, before, split = trained[name]
    assert split.read == {0, 1, 2, 3}  # the validation split raises when touched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["anomaly-head-stats", "anomaly-head-hybrid"])
def test_state_round_trip_and_score_outputs(trained, name):
    method, model, _, _ = trained[name]
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    cls = type(method)
    restored = cls(segmenter=model)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    images = image_batch([scene(11, 50, 70)[0]])  # padded to 64 x 96 inside the segmenter
    with torch.inference_mode():
        outputs = model(images)
        score = method.score(outputs)
        assert score.shape == (1, 50, 70) and torch.isfinite(score).all()
        assert torch.equal(restored.score(outputs), score)
        probability = cls(cls.Config(score_output="probability"), segmenter=model)
        probability.load_state_dict(method.state_dict())
        assert torch.allclose(probability.score(outputs), torch.sigmoid(score))
        prediction = restored.predict(images)
        assert torch.equal(prediction.anomaly, score)


def test_same_seed_same_head_other_seed_other_head():
    recipe = dict(RECIPE, steps=3)
    states = []
    for seed in (0, 0, 1):
        method = AnomalyHeadStats(AnomalyHeadStats.Config(**recipe), segmenter=segmenter())
        method.fit(train_split(), context(seed))
        states.append(method.state_dict()["head"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_missing_outlier_source_is_a_clear_error():
    method = AnomalyHeadHybrid(segmenter=segmenter())
    with pytest.raises(BadInput, match="outlier-exposure source"):
        method.fit(train_split(), context(source=False))


def test_score_before_fit_is_an_error():
    outputs = SegmenterOutput(logits=torch.zeros(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="no head"):
        AnomalyHeadStats().score(outputs)


# ---------------------------------------------------------------- end to end


def test_fre_and_heads_run_through_the_cli(tmp_path, monkeypatch):
    from owsbench.cli import main

    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # the runner sizes its torch threads by it
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "segmenter: {steps: 2, batch_size: 2}\n"
        "method_configs:\n"
        "  fre: {max_pixels: 2000}\n"
        "  anomaly-head-stats: {steps: 2, batch_size: 2, crop: [64, 64]}\n"
        "  anomaly-head-hybrid: {steps: 2, batch_size: 2, crop: [64, 64]}\n"
    )
    out = tmp_path / "out"
    methods = ["fre", "anomaly-head-stats", "anomaly-head-hybrid", "msp"]
    main(
        ["run", "--methods", ",".join(methods), "--datasets", "synthstreets", "--preset", "quick",
         "--config", str(config), "--seeds", "0", "--device", "cpu", "--no-progress",
         "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
         "--out", str(out)]
    )  # fmt: skip
    lines = (out / "results.jsonl").read_text().splitlines()
    rows = {r["method"]: r for r in map(json.loads, lines)}
    assert sorted(rows) == sorted(methods)
    for name in methods:
        metrics = rows[name]["metrics"]
        assert 0 <= metrics["AP"] <= 1 and 0 <= metrics["AUROC"] <= 1, name
        assert rows[name]["segmenter"] == "deeplabv3plus"
    assert len({r["metrics"]["mIoU"] for r in rows.values()}) == 1  # one shared segmenter
    assert rows["fre"]["fit_report"]["fre_decoder_pixels"] <= 2000
    assert rows["anomaly-head-hybrid"]["method_config"]["steps"] == 2
    for name in ("anomaly-head-stats", "anomaly-head-hybrid"):
        logs = rows[name]["artifacts"]["training"]  # the head's training curve is saved
        assert any(f"method-{name}-" in log for log in logs), logs


@pytest.mark.parametrize("name", ["anomaly-head-stats", "anomaly-head-hybrid"])
def test_quick_preset_sizes_the_heads_default_keeps_theirs(tmp_path, name):
    sizes = {}
    for preset in ("quick", "default"):
        run = RunConfig(
            methods=[name], datasets=["synthstreets"], seeds=[0], preset=PRESETS[preset],
            device="cpu", data_root=tmp_path, out=tmp_path / "o", cache_dir=tmp_path / "c",
        )  # fmt: skip
        config = Runner(run).method_config(parse_method(name))
        sizes[preset] = (config.steps, config.crop)
    assert sizes == {"quick": (60, (96, 96)), "default": (150, (128, 128))}
