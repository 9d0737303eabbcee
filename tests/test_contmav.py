"""ContMAV: losses, MAV bookkeeping and unknown score on hand-checked tensors; the Method."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit

from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.synthstreets import SIZES, generate_frame
from owsbench.methods.base import FitContext
from owsbench.methods.contmav import ContMAV, ContMAVConfig, ContMAVFocalConfig
from owsbench.methods.nn.contmav_losses import (
    ClassStats,
    MAVAccumulator,
    contrastive_loss,
    contrastive_score,
    feature_loss,
    gaussian_log_similarity,
    objectosphere_loss,
    unknown_score,
)
from owsbench.training.losses import semantic_ce

V = VOID


def _map(values: list[list[float]]) -> torch.Tensor:
    """Per-pixel vectors ``[[v_p0...], ...]`` on a 1 x N strip -> ``(1, D, 1, N)``."""
    return torch.tensor(values, dtype=torch.float32).T[None, :, None, :]


def test_objectosphere_hand_checked():
    # pixels: void with f=(1,2) -> ||f||^2 = 5; known with f=(0.5,0) -> relu(1-0.25) = 0.75;
    # known with f=(2,0) -> relu(1-4) = 0
    emb = _map([[1.0, 2.0], [0.5, 0.0], [2.0, 0.0]])
    labels = torch.tensor([[[V, 0, 1]]])
    loss = objectosphere_loss(emb, labels, xi=1.0, unknown_weight=10.0)
    assert loss.item() == pytest.approx(10 * 5 + (0.75 + 0.0) / 2)
    # no void pixel: the known term only; no known pixel: the void term only
    assert objectosphere_loss(emb[..., 1:], labels[..., 1:]).item() == pytest.approx(0.375)
    assert objectosphere_loss(emb[..., :1], labels[..., :1]).item() == pytest.approx(50.0)


def test_semantic_ce_ignores_void_and_handles_all_void():
    logits = _map([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([[[0, V]]])
    assert semantic_ce(logits, labels).item() == pytest.approx(math.log(1 + math.exp(-2)))
    all_void = semantic_ce(logits.requires_grad_(), torch.full((1, 1, 2), V))
    assert all_void.item() == 0.0
    all_void.backward()  # stays differentiable


def test_feature_loss_hand_checked_and_no_class_dropped():
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    variances = torch.tensor([[1.0, 4.0], [0.5, 0.5], [1.0, 1.0]])
    valid = torch.tensor([True, True, False])
    # class 0 pixels: z=(2,0): |1|/1, |0|/4 -> mean 0.5 ; z=(1,2): 0, 2/4 -> 0.25; class mean 0.375
    # class 1 pixel: z=(0,0): 0/0.5, 1/0.5 -> mean 1.0 ; class 2 has no MAV (ignored)
    logits = _map([[2.0, 0.0], [1.0, 2.0], [0.0, 0.0], [9.0, 9.0], [7.0, 7.0]])
    labels = torch.tensor([[[0, 0, 1, 2, V]]])
    loss = feature_loss(logits, labels, means, variances, valid, eps=0.0)
    assert loss.item() == pytest.approx(0.375 + 1.0)
    # no void pixel in the batch: the highest class still counts (official gt_labels[:-1] bug)
    loss = feature_loss(logits[..., 2:3], labels[..., 2:3], means, variances, valid, eps=0.0)
    assert loss.item() == pytest.approx(1.0)


def test_contrastive_loss_hand_checked():
    means = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])  # class 2: no MAV (zero row)
    valid = torch.tensor([True, True, False])
    tau = 0.1
    # image 0: class 0 pixels f=(1,0) and (0,5) -> normalised mean (0.5, 0.5)
    #          class 1 pixel f=(0,2) -> (0, 1); void pixel ignored; class 2 pixel not a target
    emb = _map([[1.0, 0.0], [0.0, 5.0], [0.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    labels = torch.tensor([[[0, 0, 1, V, 2]]])
    loss = contrastive_loss(emb, labels, means, valid, tau)

    def ce(scores: list[float], target: int) -> float:
        return -scores[target] + math.log(sum(math.exp(s) for s in scores))

    expected = (ce([5.0, 5.0, 0.0], 0) + ce([0.0, 10.0, 0.0], 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # an all-void image does not dilute the batch mean
    emb2 = torch.cat([emb, emb], dim=0)
    labels2 = torch.cat([labels, torch.full_like(labels, V)], dim=0)
    assert contrastive_loss(emb2, labels2, means, valid, tau).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_mav_accumulator_true_positives_only():
    acc = MAVAccumulator(num_classes=2)
    # argmax: p0 -> 0 (label 0, TP), p1 -> 0 (label 0, TP), p2 -> 0 (label 1, FP for 0, FN for 1),
    # p3 -> 1 (label 1, TP), p4 -> 1 (void: ignored)
    logits = _map([[3.0, 1.0], [5.0, 1.0], [4.0, 0.0], [0.0, 2.0], [0.0, 9.0]])
    labels = torch.tensor([[[0, 0, 1, 1, V]]])
    acc.update(logits, labels)
    acc.update(_map([[1.0, 4.0]]), torch.tensor([[[1]]]))  # a second step: TP of class 1
    stats = acc.finalize()
    assert stats.counts.tolist() == [2.0, 2.0]
    assert stats.means.tolist() == [[4.0, 1.0], [0.5, 3.0]]
    # population variance per dimension: class 0 dims (3,5)->1, (1,1)->0; class 1 (0,1)->0.25,
    # (2,4)->1
    assert torch.allclose(stats.variances, torch.tensor([[1.0, 0.0], [0.25, 1.0]]))
    # the sums were reset; a class with no TP this epoch keeps its previous statistics
    acc.update(_map([[7.0, 1.0]]), torch.tensor([[[0]]]))
    stats2 = acc.finalize(previous=stats)
    assert stats2.means.tolist() == [[7.0, 1.0], [0.5, 3.0]]
    assert stats2.counts.tolist() == [1.0, 2.0]


def test_gaussian_term_and_unknown_score():
    means = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    variances = torch.tensor([[1.0, 0.25], [1.0, 1.0], [1.0, 1.0]])
    stats = ClassStats(means, variances, torch.tensor([3.0, 3.0, 0.0]))
    z = _map([[2.0, 0.5], [0.0, 2.0]])
    log_g = gaussian_log_similarity(z, means, variances, stats.valid, eps=0.0)
    # pixel 0: class 0: (1/1 + 0.25/0.25)/2 = 1 -> -1; class 1: (4 + 2.25)/2 = 3.125
    assert log_g[0, :2, 0, 0].tolist() == pytest.approx([-1.0, -3.125])
    assert log_g[0, 2].isneginf().all()  # no statistics for class 2
    emb = _map([[0.3, 0.4], [3.0, 0.0]])  # norms 0.5 and 3
    assert contrastive_score(emb).flatten().tolist() == pytest.approx([0.5, 0.0])
    score = unknown_score(z, emb, stats, radius=1.0, eps=0.0)
    g0 = math.exp(-1.0)
    assert score.similarity.flatten().tolist() == pytest.approx([g0, 1.0])
    assert score.semantic.flatten().tolist() == pytest.approx([1 - g0, 0.0])
    assert score.unknown.flatten().tolist() == pytest.approx([(0.5 + 1 - g0) / 2, 0.0])
    assert score.similar_class.flatten().tolist() == [0, 1]


SMALL = dict(decoder_channels=(32, 16, 16), decoder_blocks=1, encoder="resnet18")


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    out = []
    for i in range(4):
        image, semantic, _, _ = generate_frame("train", i, SIZES["quick"])
        out.append(Frame(f"f{i}", image, semantic))
    return out


@pytest.fixture
def one_thread():
    """Train single-threaded: on a shared, loaded CPU two spinning OpenMP threads are often
    slower by an order of magnitude than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ctx(seed: int = 0) -> FitContext:
    return FitContext(seed=seed, device=torch.device("cpu"), cache_dir=Path("."), progress=False)


def _with_stats(method: ContMAV, num_classes: int) -> None:
    """Hand-set MAVs: class c at 5 * e_c with unit variance."""
    means = 5.0 * torch.eye(num_classes)
    method.stats = ClassStats(means, torch.ones(num_classes, num_classes), torch.ones(num_classes))


def test_predict_shapes_and_anomaly_sign():
    torch.manual_seed(0)
    method = ContMAV(ContMAVConfig(num_classes=3, **SMALL))
    _with_stats(method, 3)
    pred = method.predict(torch.rand(2, 3, 40, 70))
    assert pred.semantic.shape == (2, 40, 70) and pred.semantic.dtype == torch.long
    assert pred.anomaly.shape == (2, 40, 70) and pred.anomaly.dtype == torch.float32
    assert pred.logits.shape == (2, 3, 40, 70)
    assert pred.extras["similar_class"].shape == (2, 40, 70)
    assert pred.extras["similar_class"].dtype == torch.long
    # the score itself: logits at a class mean and a large embedding -> known (0); far from every
    # mean with a small embedding -> unknown (higher)
    stats = method.stats
    near = unknown_score(_map([[5.0, 0.0, 0.0]]), _map([[2.0, 0.0, 0.0]]), stats)
    far = unknown_score(_map([[-9.0, 9.0, -9.0]]), _map([[0.1, 0.0, 0.0]]), stats)
    assert near.unknown.item() == pytest.approx(0.0, abs=1e-6)
    assert far.unknown.item() > 0.9 > near.unknown.item()
    assert near.similar_class.item() == 0 and far.similar_class.item() == 1


def test_fit_reduces_loss_and_state_round_trip(frames, one_thread):
    config = ContMAVConfig(
        num_classes=19, steps=8, epoch_steps=4, batch_size=2, lr=2e-3, crop=(64, 128), **SMALL
    )
    split = ListSplit(frames)
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in frames]) / 255.0
    labels = torch.stack([torch.from_numpy(f.semantic).long() for f in frames])

    def batch_loss(method: ContMAV) -> float:
        method.model.train()
        with torch.no_grad():
            logits, emb = method.model(images)
            return method.losses(logits, emb, labels, None)["total"].item()

    torch.manual_seed(0)
    before = batch_loss(ContMAV(config))  # fit re-initialises with torch.manual_seed(ctx.seed)
    method = ContMAV(config)
    method.fit(split, _ctx(0))
    assert len(method.train_log.loss) == 8
    assert method.stats.valid.any()  # MAVs were collected from true positives
    after = batch_loss(method)
    assert after < before
    method.model.eval()

    state = method.state_dict()
    for key in ("model", "mav_means", "mav_variances", "mav_counts"):
        assert key in state
    fresh = ContMAV(config)
    fresh.load_state_dict(state)
    with torch.inference_mode():
        a, b = method.predict(images[:2]), fresh.predict(images[:2])
    assert torch.equal(a.anomaly, b.anomaly)
    assert torch.equal(a.semantic, b.semantic)
    assert torch.equal(a.extras["similar_class"], b.extras["similar_class"])


def test_contmav_runs_through_the_cli(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("method_configs:\n  contmav: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "contmav", "--preset", "quick",
         "--config", str(config), "--data-root", str(tmp_path / "data"),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "contmav" and row["segmenter"] is None
    assert row["method_config"]["steps"] == 2 and row["checkpoint_sha256"]
    assert 0 <= row["metrics"]["AP"] <= 1 and 0 <= row["metrics"]["mIoU"] <= 1


def test_he_init_skips_output_and_depthwise_convs_as_the_official_code():
    """``build_model.py --he_init``: He (fan-out) for hidden convs; the class-count output convs
    and the depthwise upsamples keep their init; biases keep PyTorch's default."""
    from owsbench.methods.nn.contmav_model import ContMAVNet

    torch.manual_seed(0)
    net = ContMAVNet(5, decoder_channels=(64, 32, 16), decoder_blocks=1)
    for decoder in (net.decoder_ss, net.decoder_ow):
        out = decoder.conv_out  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1 / math.sqrt(out.in_channels * 9)
        assert out.weight.abs().max() <= bound and out.weight.std() > 0.3 * bound
        assert out.bias.abs().max() > 0  # not zeroed
        assert torch.equal(decoder.up1.conv.weight[0, 0, 1], torch.tensor([0.125, 0.25, 0.125]))
    hidden = net.decoder_ss.modules_[0].conv[0]  # a 3x3 conv, He init with fan-out
    expected = math.sqrt(2 / (hidden.out_channels * 9))
    assert float(hidden.weight.detach().std()) == pytest.approx(expected, rel=0.1)


def test_staged_recipe_starts_every_variant_from_one_cached_ce_fit(frames, one_thread, tmp_path):
    from owsbench.methods.contmav import ContMAVFocal
    from owsbench.methods.nn.contmav_staged import ce_only_state

    sizes = dict(num_classes=19, batch_size=2, crop=(64, 128), **SMALL)
    ctx = FitContext(
        seed=0, device=torch.device("cpu"), cache_dir=tmp_path, progress=False,
        train_fingerprint="four-frames",
    )  # fmt: skip
    split = ListSplit(frames)
    method = ContMAV(ContMAVConfig(steps=0, init_from_ce=True, ce_steps=3, **sizes))
    method.fit(split, ctx)  # no ContMAV steps: the network is the CE stage's
    report = method.fit_report
    assert report["staged_init"] == "cross-entropy-only fit" and report["ce_steps"] == 3
    assert report["ce_fit_cached"] is False and np.isfinite(report["ce_loss_end"])
    state, again = ce_only_state(method.config, 3, split, ctx)
    assert again["ce_fit_cached"] is True
    model = method.model.state_dict()
    assert all(torch.equal(model[k], v) for k, v in state.items() if "num_batches" not in k)
    variant = ContMAVFocal(ContMAVFocalConfig(steps=2, init_from_ce=True, ce_steps=3, **sizes))
    variant.fit(split, ctx)  # another loss, same architecture and recipe: the same CE fit
    assert variant.fit_report["ce_fit_cached"] is True
    assert len(list((tmp_path / "fits").glob("contmav-ce-*.pt"))) == 1


def test_min_tp_pixels_keeps_thin_class_means_out_of_the_feature_loss():
    config = ContMAVConfig(num_classes=3, **SMALL)
    method = ContMAV(config)
    logits, emb = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    labels = torch.tensor([[0, 1, 2, 2]] * 4)[None]
    stats = ClassStats(torch.zeros(3, 3), torch.ones(3, 3), torch.tensor([2.0, 2.0, 50.0]))
    every = method.losses(logits, emb, labels, stats)["feat"]
    thin = ContMAV(dataclasses.replace(config, min_tp_pixels=10)).losses(
        logits, emb, labels, stats
    )["feat"]
    only_class_2 = ContMAV(config).losses(
        logits, emb, labels,
        ClassStats(stats.means, stats.variances, torch.tensor([0.0, 0.0, 50.0])),
    )["feat"]  # fmt: skip
    assert thin.item() == pytest.approx(only_class_2.item()) and thin.item() < every.item()
