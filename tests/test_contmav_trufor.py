"""contmav-trufor: confidence target, fusion rules, anomaly loss wiring, phase 2, auto fusion."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import ListSplit, scene
from scipy import ndimage

from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.methods.contmav_trufor import (
    FUSIONS,
    ContMAVTruFor,
    ContMAVTruForConfig,
    confidence_loss,
    confidence_target,
    dilate,
    erode,
    fuse,
)
from owsbench.methods.nn.outlier_exposure import (
    PasteConfig,
    outlier_batch,
    paste_outliers,
    split_outlier_labels,
)
from owsbench.metrics import AnomalyMetric

V = VOID
SMALL = dict(decoder_channels=(32, 16, 16), decoder_blocks=1, encoder="resnet18")


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_confidence_target_hand_checked():
    # a 3x3 anomaly inside inliers, one void pixel at the top right
    target = torch.tensor(
        [[[0, 0, 0, 0, 0, V],
          [0, 1, 1, 1, 0, 0],
          [0, 1, 1, 1, 0, 0],
          [0, 1, 1, 1, 0, 0],
          [0, 0, 0, 0, 0, 0]]]
    )  # fmt: skip
    logit = torch.zeros(1, 1, 5, 6)
    logit[0, 0, 2, 2] = math.log(3.0)  # anomaly pixel: p = 0.75 -> TCP 0.75
    logit[0, 0, 1, 5] = math.log(3.0)  # inlier pixel: p = 0.75 -> TCP 0.25
    tcp, valid = confidence_target(logit, target, erosion=3, dilation=3)
    # 3x3 erosion keeps the centre of the anomaly; 3x3 dilation covers columns 0..4, so g0 is
    # column 5 without the void pixel
    expected = torch.zeros(1, 5, 6, dtype=torch.bool)
    expected[0, 2, 2] = True
    expected[0, 1:, 5] = True
    assert torch.equal(valid, expected)
    assert tcp[0, 2, 2].item() == pytest.approx(0.75)
    assert tcp[0, 1, 5].item() == pytest.approx(0.25)
    assert tcp[0, 4, 5].item() == pytest.approx(0.5)
    # MSE of sigmoid(c) = 0.5 against TCP on the valid pixels only
    conf = torch.zeros(1, 1, 5, 6, requires_grad=True)
    loss = confidence_loss(conf, tcp, valid)
    assert loss.item() == pytest.approx((0.25**2 + 0.25**2 + 0 + 0 + 0) / 5)
    # size 1 = no morphology: every anomaly / inlier pixel counts, void never
    _, plain = confidence_target(logit, target, erosion=1, dilation=1)
    assert torch.equal(plain, target != V)
    # no valid pixel: 0, still differentiable
    zero = confidence_loss(conf, tcp, torch.zeros_like(valid))
    assert zero.item() == 0.0
    zero.backward()


def test_morphology_borders_and_void_and_scipy_agreement():
    # all-anomaly 3x3 with void in a corner: the image border does not erode, void does
    target = torch.tensor([[[V, 1, 1], [1, 1, 1], [1, 1, 1]]])
    g1 = erode(target == 1, 3)
    assert g1[0].tolist() == [[False, False, True], [False, False, True], [True, True, True]]
    rng = np.random.default_rng(0)
    mask = rng.random((2, 12, 15)) < 0.4
    for b in range(2):
        ours_d = dilate(torch.from_numpy(mask), 5)[b].numpy()
        ours_e = erode(torch.from_numpy(mask), 5)[b].numpy()
        assert (ours_d == ndimage.binary_dilation(mask[b], np.ones((5, 5)))).all()
        assert (ours_e == ndimage.binary_erosion(mask[b], np.ones((5, 5)), border_value=1)).all()


def test_fusion_rules_values_and_monotonicity():
    u = torch.tensor([0.2, 0.8, 0.0, 1.0])
    a = torch.tensor([0.0, math.log(3.0), 0.0, 0.0])
    c = torch.tensor([0.0, 30.0, -30.0, 0.0])
    assert fuse("anomaly", u, a, c).tolist() == pytest.approx([0.5, 0.75, 0.5, 0.5])
    assert fuse("unknown", u, a, c).tolist() == pytest.approx(u.tolist())
    mean = [0.35, 0.775, 0.25, 0.75]
    assert fuse("mean", u, a, c).tolist() == pytest.approx(mean)
    # sigma(c) = 0.5 -> m / 2 + 1 / 4; sigma(c) ~ 1 -> m; sigma(c) ~ 0 -> 0.5
    shrink = fuse("confidence-shrink", u, a, c).tolist()
    assert shrink == pytest.approx([0.35 / 2 + 0.25, 0.775, 0.5, 0.75 / 2 + 0.25], abs=1e-6)
    logit = fuse("logit-confidence", u, a, c)
    assert logit[0].item() == pytest.approx(math.log(0.25) + math.log(0.5), rel=1e-5)
    assert logit[1].item() == pytest.approx(math.log(4.0) + math.log(3.0), rel=1e-5)
    assert torch.isfinite(logit).all()  # u = 0 and u = 1 are clamped before the logit
    # u = 1 is clamped to 1 - 1e-6 (float32): logit ~13.8, plus a = 0 and log sigma(0)
    assert logit[3].item() == pytest.approx(math.log((1 - 1e-6) / 1e-6) + math.log(0.5), abs=0.05)
    assert logit[2] < logit[0] < logit[1] < logit[3]
    # monotone: non-decreasing in u and in a for every rule (strictly where it uses them)
    base_u, base_a, base_c = torch.tensor([0.3]), torch.tensor([0.5]), torch.tensor([-1.0])
    for name in FUSIONS:
        s = fuse(name, base_u, base_a, base_c)
        up_u = fuse(name, base_u + 0.1, base_a, base_c)
        up_a = fuse(name, base_u, base_a + 1.0, base_c)
        assert (up_u > s).item() == (name != "anomaly"), name
        assert (up_a > s).item() == (name != "unknown"), name
    # the confidence: shrink pulls towards 0.5, the logit rule lowers unreliable pixels
    low_c, high_c = torch.tensor([-3.0]), torch.tensor([3.0])
    m = fuse("mean", base_u, base_a, base_c)
    assert abs(fuse("confidence-shrink", base_u, base_a, low_c) - 0.5) < abs(m - 0.5)
    assert fuse("logit-confidence", base_u, base_a, low_c) < fuse(
        "logit-confidence", base_u, base_a, high_c
    )
    with pytest.raises(BadInput, match="fusion"):
        fuse("max", u, a, c)
    with pytest.raises(BadInput, match="fusion"):
        ContMAVTruFor(ContMAVTruForConfig(num_classes=2, fusion="max", **SMALL))
    with pytest.raises(BadInput, match="odd"):
        ContMAVTruFor(ContMAVTruForConfig(num_classes=2, erosion=4, **SMALL))


def test_anomaly_loss_wiring_hand_checked():
    method = ContMAVTruFor(ContMAVTruForConfig(num_classes=2, **SMALL))
    # pixels: anomaly a=0.5, inlier a=-1, inlier a=2, void a=100
    a = torch.tensor([[[[0.5, -1.0, 2.0, 100.0]]]])
    target = torch.tensor([[[1, 0, 0, V]]])
    ce = (2.5 * _softplus(-0.5) + 0.5 * _softplus(-1.0) + 0.5 * _softplus(2.0)) / 3.5
    s = [_sigmoid(0.5), _sigmoid(-1.0), _sigmoid(2.0)]
    dice = 1 - 2 * s[0] / (sum(s) + 1.0)
    terms = method.anomaly_terms(a, target)
    assert terms["anom_ce"].item() == pytest.approx(0.3 * ce, rel=1e-5)
    assert terms["anom_dice"].item() == pytest.approx(0.7 * dice, rel=1e-5)
    # TruFor's class-weighted 2-class CE on logits (0, a) is the same number
    two = torch.cat([torch.zeros_like(a), a], dim=1)
    torch_ce = F.cross_entropy(two, target, weight=torch.tensor([0.5, 2.5]), ignore_index=V)
    assert terms["anom_ce"].item() == pytest.approx(0.3 * torch_ce.item(), rel=1e-5)
    # the void pixel does not matter
    a2 = a.clone()
    a2[..., 3] = -40.0
    terms2 = method.anomaly_terms(a2, target)
    assert terms2["anom_ce"].item() == pytest.approx(terms["anom_ce"].item(), rel=1e-6)
    assert terms2["anom_dice"].item() == pytest.approx(terms["anom_dice"].item(), rel=1e-6)
    # step_losses: ContMAV's terms plus A's, "total" their sum (semantic void on the paste)
    semantic = torch.tensor([[[V, 0, 1, V]]])
    z = torch.tensor([[[[0.0, 2.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 0.0]]]])
    f = torch.full_like(z, 0.5)
    c = torch.zeros_like(a)
    out = method.step_losses((z, f, a, c), semantic, target, None)
    base = method.losses(z, f, semantic, None)
    assert out["total"].item() == pytest.approx(
        base["total"].item() + 0.3 * ce + 0.7 * dice, rel=1e-5
    )
    assert set(out) == {"sem", "obj", "anom_ce", "anom_dice", "total"}
    # all void: 0, differentiable
    grad_a = a.clone().requires_grad_()
    zero = sum(method.anomaly_terms(grad_a, torch.full_like(target, V)).values())
    assert zero.item() == 0.0
    zero.backward()


# -- training ----------------------------------------------------------------------------------
def _ctx(source=None, validation=None) -> FitContext:
    return FitContext(
        seed=0, device=torch.device("cpu"), cache_dir=Path("."), progress=False,
        outlier_source=source, validation=validation,
    )  # fmt: skip


@pytest.fixture(scope="module")
def split() -> ListSplit:
    return ListSplit([Frame(f"f{s}", *scene(s)) for s in range(6)])


def _pasted(seeds: range, paste_seed: int) -> list[Frame]:
    """Frames with pasted outliers and their anomaly labels (a labelled validation set)."""
    rng = np.random.default_rng(paste_seed)
    frames = []
    for s in seeds:
        image, semantic = scene(s)
        image, labels = paste_outliers(
            Frame("x", image, semantic), outlier_exposure_source(), rng, PasteConfig(1.0, 2)
        )
        sem, anomaly = split_outlier_labels(torch.from_numpy(labels).long())
        frames.append(Frame(f"v{s}", image, sem.numpy().astype(np.uint8), anomaly.numpy()))
    return frames


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch with pastes: images and the anomaly target."""
    rng = np.random.default_rng(123)
    frames = [Frame(f"b{s}", *scene(s)) for s in range(20, 24)]
    images, labels = outlier_batch(frames, outlier_exposure_source(), rng, PasteConfig(1.0, 2))
    return images, split_outlier_labels(labels)[1]


CONFIG = ContMAVTruForConfig(
    num_classes=19, steps=30, batch_size=2, lr=2e-3, crop=(64, 128), scale_range=(0.9, 1.1),
    color_jitter=0.0, paste_probability=1.0, confidence_steps=0, **SMALL,
)  # fmt: skip


def _anomaly_loss(method: ContMAVTruFor, batch) -> dict[str, float]:
    images, target = batch
    method.model.train()
    with torch.no_grad():
        a = method.model(images)[2]
    method.model.eval()
    return {k: v.item() for k, v in method.anomaly_terms(a, target).items()}


def _confidence_loss(method: ContMAVTruFor, batch) -> float:
    images, target = batch
    model = method.model
    model.eval()
    model.decoder_confidence.train()  # the phase-2 mode
    with torch.no_grad():
        _, _, a, c = model(images)
    tcp, valid = confidence_target(a, target, CONFIG.erosion, CONFIG.dilation)
    loss = confidence_loss(c, tcp, valid).item()
    model.eval()
    return loss


@pytest.fixture(scope="module")
def fitted(split, batch):
    """Phase 1 only (``confidence_steps=0``), single-threaded, and the anomaly loss before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # fit re-seeds with ctx.seed before building: the same init
    before = _anomaly_loss(ContMAVTruFor(CONFIG), batch)
    method = ContMAVTruFor(CONFIG)
    method.fit(split, _ctx(outlier_exposure_source()))
    yield method, before
    torch.set_num_threads(threads)


def test_phase1_reduces_the_anomaly_loss(fitted, batch):
    method, before = fitted
    assert len(method.train_log.loss) == CONFIG.steps
    after = _anomaly_loss(method, batch)
    # the weighted BCE halves in 30 steps; the Dice of 1.5 % pasted pixels falls more slowly
    assert after["anom_ce"] < 0.6 * before["anom_ce"]
    assert after["anom_dice"] < before["anom_dice"]
    assert sum(after.values()) < 0.9 * sum(before.values())
    assert not method.model.training
    # no validation split: "auto" is "mean", and the report says why
    assert method.fusion == "mean"
    assert method.fit_report["fusion_auto"] == "mean"
    assert "no validation split" in method.fit_report["fusion_auto_reason"]


def test_phase2_trains_only_the_confidence_decoder(fitted, split, batch):
    method = copy.deepcopy(fitted[0])
    method.config = dataclasses.replace(CONFIG, confidence_steps=25, confidence_lr=3e-3)
    frozen = {
        k: v.clone() for k, v in method.model.state_dict().items()
        if not k.startswith("decoder_confidence.")
    }  # fmt: skip
    conf_before = {k: v.clone() for k, v in method.model.decoder_confidence.state_dict().items()}
    loss_before = _confidence_loss(method, batch)
    torch.set_num_threads(1)
    method.train_confidence(split, _ctx(outlier_exposure_source()))
    after = method.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # params and BN buffers
    changed = method.model.decoder_confidence.state_dict()
    assert any(not torch.equal(v, changed[k]) for k, v in conf_before.items())
    assert len(method.confidence_log.loss) == 25
    assert _confidence_loss(method, batch) < 0.8 * loss_before
    assert method.fit_report["confidence_loss_end"] < method.fit_report["confidence_loss_start"]


def test_auto_fusion_picks_the_best_validation_ap(monkeypatch):
    method = ContMAVTruFor(ContMAVTruForConfig(num_classes=2, batch_size=2, **SMALL))
    labels = np.array([[[1, 1, 0, 0], [0, 0, 0, V]]] * 3, np.uint8)  # 3 frames of 2x4
    frames = [Frame(f"v{i}", np.zeros((2, 4, 3), np.uint8), None, labels[i]) for i in range(3)]
    anomaly = torch.from_numpy(labels == 1)
    # u separates perfectly but is not saturated; A is confidently wrong, which drags every
    # combination below u; c is random
    u = torch.where(anomaly, 0.6, 0.4)
    a = torch.where(anomaly, -5.0, 5.0)
    c = torch.randn(u.shape, generator=torch.Generator().manual_seed(0))

    def fake_forward(images):
        n = images.shape[0]
        fake_forward.calls += n
        sl = slice(fake_forward.calls - n, fake_forward.calls)
        return None, None, u[sl], a[sl], c[sl]

    fake_forward.calls = 0
    monkeypatch.setattr(method, "_forward", fake_forward)
    ctx = _ctx(validation=ListSplit(frames))
    assert method.choose_fusion(ctx) == "unknown"
    report = method.fit_report
    assert report["fusion_auto"] == "unknown" and report["fusion_val_frames"] == 3
    assert set(report["fusion_val_AP"]) == set(FUSIONS)
    for name in FUSIONS:  # the reported APs are those of the rules' maps
        metric = AnomalyMetric()
        metric.update(fuse(name, u, a, c), torch.from_numpy(labels))
        assert report["fusion_val_AP"][name] == pytest.approx(metric.compute()["AP"])
    assert report["fusion_val_AP"]["unknown"] == pytest.approx(1.0)
    assert max(v for k, v in report["fusion_val_AP"].items() if k != "unknown") < 0.9
    # now A is right and u useless: the anomaly map wins
    a = torch.where(anomaly, 5.0, -5.0)
    u = torch.full_like(u, 0.5)
    fake_forward.calls = 0
    assert method.choose_fusion(ctx) == "anomaly"
    assert method.fusion == "anomaly"
    assert method.state_dict()["auto_fusion"] == "anomaly"
    # a fixed config value overrides the fit's choice; fusion is inference-only (not in fit keys)
    assert "fusion" in ContMAVTruFor.inference_fields
    method.config = dataclasses.replace(method.config, fusion="logit-confidence")
    assert method.fusion == "logit-confidence"
    # validation without anomaly labels -> "mean" with a reason
    unlabelled = ListSplit([Frame("w", np.zeros((2, 4, 3), np.uint8), None, None)])
    assert method.choose_fusion(_ctx(validation=unlabelled)) == "mean"
    assert "no anomaly labels" in method.fit_report["fusion_auto_reason"]
    assert "fusion_val_AP" not in method.fit_report and method.fusion_ap == {}


def test_fit_without_outlier_source_is_a_one_line_error(split):
    with pytest.raises(BadInput, match="outlier-exposure source") as err:
        ContMAVTruFor(dataclasses.replace(CONFIG, steps=1)).fit(split, _ctx(None))
    assert "\n" not in str(err.value)


def test_real_validation_choice_and_state_round_trip(fitted):
    method = copy.deepcopy(fitted[0])
    validation = ListSplit(_pasted(range(30, 33), 7))
    winner = method.choose_fusion(_ctx(validation=validation))
    aps = method.fit_report["fusion_val_AP"]
    assert set(aps) == set(FUSIONS) and all(0 < v <= 1 for v in aps.values())
    assert aps[winner] == max(aps.values())
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in validation.frames])
    images = images.float() / 255.0
    for fusion in ("auto", "anomaly", "logit-confidence"):
        config = dataclasses.replace(CONFIG, fusion=fusion)
        method.config = config
        fresh = ContMAVTruFor(config)
        fresh.load_state_dict(method.state_dict())
        assert fresh.fusion == method.fusion == (winner if fusion == "auto" else fusion)
        p, q = method.predict(images), fresh.predict(images)
        assert torch.equal(p.anomaly, q.anomaly) and torch.equal(p.semantic, q.semantic)
        assert torch.equal(p.extras["confidence"], q.extras["confidence"])
        if fusion == "anomaly":  # the extras hold the fusion's inputs
            assert torch.equal(p.anomaly, p.extras["anomaly_probability"])


def test_contmav_trufor_runs_through_the_cli(tmp_path):
    # data: the session's $OWSBENCH_DATA (conftest), so synthstreets is generated once per session
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "method_configs:\n  contmav-trufor: {steps: 2, batch_size: 2, confidence_steps: 1, "
        "decoder_channels: [32, 16, 16], encoder: resnet18}\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "contmav-trufor",
         "--datasets", "synthstreets", "--preset", "quick", "--config", str(config),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "contmav-trufor" and row["checkpoint_sha256"]
    assert row["method_config"]["fusion"] == "auto"
    assert math.isfinite(row["metrics"]["AP"]) and 0 <= row["metrics"]["AP"] <= 1
    report = row["fit_report"]
    assert report["fusion_auto"] in FUSIONS
    assert set(report["fusion_val_AP"]) == set(FUSIONS)
    assert report["fusion_val_AP"][report["fusion_auto"]] == max(report["fusion_val_AP"].values())
