"""dual-head: masked and weighted anomaly loss, pastes void for CE, prediction, training, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dataset_fixtures import ListSplit, scene

from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.methods.dual_head import DualHead, DualHeadConfig
from owsbench.methods.nn.outlier_exposure import OUTLIER
from owsbench.training.losses import masked_bce

V = VOID


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_masked_bce_hand_checked_with_pos_weight_and_void_mask():
    # pixels: anomaly with a=0.5, inlier with a=2.0, void (ignored) with a=-7
    logit = torch.tensor([[[[0.5, 2.0, -7.0]]]])
    target = torch.tensor([[[1, 0, V]]])
    # -log sigmoid(a) = softplus(-a); -log(1 - sigmoid(a)) = softplus(a); mean over 2 pixels
    expected = (3.0 * _softplus(-0.5) + _softplus(2.0)) / 2
    assert masked_bce(logit, target, pos_weight=3.0).item() == pytest.approx(expected, rel=1e-6)
    expected_1 = (_softplus(-0.5) + _softplus(2.0)) / 2
    assert masked_bce(logit, target, pos_weight=1.0).item() == pytest.approx(expected_1, rel=1e-6)
    # anything at the void pixel (even inf) leaves the loss unchanged
    changed = logit.clone()
    changed[..., 2] = float("inf")
    assert masked_bce(changed, target, 3.0).item() == pytest.approx(expected, rel=1e-6)
    # all void: 0 and still differentiable
    grad_logit = logit.clone().requires_grad_()
    zero = masked_bce(grad_logit, torch.full_like(target, V), 3.0)
    assert zero.item() == 0.0
    zero.backward()


def test_losses_pastes_are_void_for_ce_and_positive_for_bce():
    method = DualHead(DualHeadConfig(num_classes=2, pos_weight=2.0, anomaly_weight=0.5))
    # pixels: known class 0, known class 1, paste, void
    labels = torch.tensor([[[0, 1, OUTLIER, V]]])
    logits = torch.tensor([[[[2.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]]]])
    anomaly = torch.tensor([[[[-1.0, -2.0, 1.5, 0.0]]]])
    terms = method.losses(logits, anomaly, labels)
    ce = (_softplus(-2.0) + _softplus(-1.0)) / 2  # two known pixels
    bce = (_softplus(-1.0) + _softplus(-2.0) + 2.0 * _softplus(-1.5)) / 3
    assert terms["sem"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["anom"].item() == pytest.approx(bce, rel=1e-6)
    assert terms["total"].item() == pytest.approx(ce + 0.5 * bce, rel=1e-6)
    # the semantic logits at the paste and void pixels do not matter; the anomaly logit at the
    # paste does, at the void pixel it does not
    logits2, anomaly2 = logits.clone(), anomaly.clone()
    logits2[..., 2:] = torch.tensor([[[-9.0, 9.0]], [[9.0, -9.0]]])
    anomaly2[..., 3] = 50.0
    terms2 = method.losses(logits2, anomaly2, labels)
    assert terms2["sem"].item() == pytest.approx(ce, rel=1e-6)
    assert terms2["anom"].item() == pytest.approx(bce, rel=1e-6)
    anomaly2[..., 2] = -1.5
    assert method.losses(logits, anomaly2, labels)["anom"].item() > bce + 0.5


SMALL = dict(anomaly_head_channels=16)


def test_predict_shapes_and_sigmoid_score():
    torch.manual_seed(0)
    method = DualHead(DualHeadConfig(num_classes=3, **SMALL))
    images = torch.rand(2, 3, 40, 70)
    pred = method.predict(images)
    assert pred.semantic.shape == (2, 40, 70) and pred.semantic.dtype == torch.long
    assert pred.anomaly.shape == (2, 40, 70) and pred.anomaly.dtype == torch.float32
    assert pred.logits.shape == (2, 3, 40, 70)
    assert ((pred.anomaly >= 0) & (pred.anomaly <= 1)).all()
    assert torch.equal(pred.semantic, pred.logits.argmax(1))
    # the score is sigmoid(anomaly logit): set the last conv of the head by hand
    last = method.model.anomaly_head[-1][0]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(2.0)
    high = method.predict(images).anomaly
    with torch.no_grad():
        last.bias.fill_(-2.0)
    low = method.predict(images).anomaly
    assert torch.allclose(high, torch.full_like(high, 1 / (1 + math.exp(-2.0))))
    assert torch.allclose(low, 1 - high)


def _ctx(seed: int = 0, source: object | None = None) -> FitContext:
    return FitContext(
        seed=seed,
        device=torch.device("cpu"),
        cache_dir=Path("."),
        progress=False,
        outlier_source=source,
    )


@pytest.fixture(scope="module")
def split() -> ListSplit:
    frames = []
    for seed in range(6):
        image, semantic = scene(seed)
        frames.append(Frame(f"f{seed}", image, semantic))
    return ListSplit(frames)


@pytest.fixture
def one_thread():
    """Train single-threaded: on a shared, loaded CPU two spinning threads are often slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fit_without_outlier_source_is_a_one_line_error(split):
    with pytest.raises(BadInput, match="outlier-exposure source") as err:
        DualHead(DualHeadConfig(steps=1, batch_size=2)).fit(split, _ctx(0, None))
    assert "\n" not in str(err.value)


def test_fit_reduces_both_losses_and_state_round_trip(split, one_thread):
    steps = 48
    config = DualHeadConfig(
        steps=steps,
        batch_size=2,
        lr=2e-3,
        crop=(64, 96),
        scale_range=(0.9, 1.1),
        color_jitter=0.0,
        paste_probability=1.0,
        **SMALL,
    )
    method = DualHead(config)
    method.fit(split, _ctx(0, outlier_exposure_source()))
    assert len(method.train_log.loss) == steps == len(method.train_log.lr)
    sem, anom = method.train_log.scalars["sem"], method.train_log.scalars["anom"]
    assert len(sem) == len(anom) == steps
    # mean of the last vs the first 8 steps (seed 0; seeds 0-2 measured: CE ~0.3-0.4x, BCE
    # ~0.65-0.8x: the pasted share varies per batch, so the BCE curve is noisy)
    k = 8
    assert sum(sem[-k:]) / k < 0.6 * sum(sem[:k]) / k
    assert sum(anom[-k:]) / k < 0.9 * sum(anom[:k]) / k
    assert not method.model.training

    fresh = DualHead(config)
    fresh.load_state_dict(method.state_dict())
    images = torch.stack([torch.from_numpy(split[i].image).permute(2, 0, 1) for i in range(2)])
    images = images.float() / 255.0
    a, b = method.predict(images), fresh.predict(images)
    assert torch.equal(a.anomaly, b.anomaly)
    assert torch.equal(a.semantic, b.semantic)
    assert torch.equal(a.logits, b.logits)
    with pytest.raises(BadInput, match="classes"):
        DualHead(DualHeadConfig(num_classes=5, **SMALL)).load_state_dict(method.state_dict())


def test_dual_head_runs_through_the_cli(tmp_path):
    # data from $OWSBENCH_DATA (conftest: one folder per test session, generated once)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "method_configs:\n  dual-head: {steps: 2, batch_size: 2, anomaly_head_channels: 8}\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "dual-head", "--preset", "quick",
         "--datasets", "synthstreets", "--config", str(config),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "dual-head" and row["segmenter"] is None
    assert row["method_config"]["steps"] == 2 and row["checkpoint_sha256"]
    assert row["method_config"]["crop"] == [96, 96]  # the quick preset's crop
    assert math.isfinite(row["metrics"]["AP"]) and 0 <= row["metrics"]["AP"] <= 1
    assert 0 <= row["metrics"]["mIoU"] <= 1
