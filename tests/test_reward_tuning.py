"""Reward fine-tuning: rewards on hand-made maps, the REINFORCE gradient on a tiny categorical
problem, the leave-one-out baseline's unbiasedness, the tuning phase, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from dataset_fixtures import TinySplit

from owsbench.config import apply_overrides
from owsbench.curves import log_curves
from owsbench.datasets.base import VOID
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.plan import reward_tuning
from owsbench.segmenters.base import SegmenterConfig
from owsbench.segmenters.smp_models import SmpSegmenter
from owsbench.training.reward import (
    RewardConfig,
    RewardSupervision,
    baselines,
    binary_ap,
    gumbel_samples,
    reward_of,
)
from owsbench.training.reward_tuning import tune_segmenter

LABELS = torch.tensor([[0, 0, 1, 1], [0, 0, 1, VOID]])


def test_rewards_on_hand_made_maps():
    perfect = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]])  # the void pixel does not count
    swapped = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])  # one class-1 pixel called 0
    samples = torch.stack([perfect, swapped])
    miou = reward_of("miou", samples, LABELS, 3)
    # swapped: IoU_0 = 4 / 5, IoU_1 = 2 / 3 (class 2 absent from both: left out)
    assert miou.tolist() == pytest.approx([1.0, (4 / 5 + 2 / 3) / 2])
    accuracy = reward_of("pixel-accuracy", samples, LABELS, 3)
    assert accuracy.tolist() == pytest.approx([1.0, 6 / 7])
    weighted = reward_of("class-weighted-miou", samples, LABELS, 3, torch.tensor([1.0, 3.0, 5.0]))
    assert weighted.tolist() == pytest.approx([1.0, (4 / 5 + 3 * 2 / 3) / 4])
    wrong_class = torch.full((1, 2, 4), 2)  # class 2 predicted everywhere: three classes, IoU 0
    assert reward_of("miou", wrong_class, LABELS, 3).item() == 0.0


def test_leave_one_out_baseline_is_the_mean_of_the_others():
    rewards = torch.tensor([1.0, 2.0, 6.0])
    assert baselines(rewards, "leave-one-out", None).tolist() == [4.0, 3.5, 1.5]
    assert baselines(rewards, "greedy", torch.tensor([2.5])).tolist() == [2.5, 2.5, 2.5]


def _categorical_gradient(baseline: str, draws: int, seed: int) -> torch.Tensor:
    """Mean REINFORCE gradient on one 3-way categorical with reward 1 for class 2, else 0."""
    torch.manual_seed(seed)
    logits = torch.zeros(3, 1, 1, requires_grad=True)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(3, 1, 1)
    for _ in range(draws):
        samples = gumbel_samples(logits, 4, generator)  # (4, 1, 1)
        rewards = (samples[:, 0, 0] == 2).float()
        greedy = torch.tensor([0.0])
        advantage = rewards - baselines(rewards, baseline, greedy)
        log_p = torch.log_softmax(logits, 0).gather(0, samples).reshape(-1)
        loss = -(advantage * log_p).mean()
        (grad,) = torch.autograd.grad(loss, logits)
        total += grad
    return (total / draws)[:, 0, 0]


def test_reinforce_gradient_matches_the_analytic_expectation():
    """E[-R grad log p] = -grad E[R] = -grad p_2; at uniform logits p = 1/3:
    d p_2 / d z = p_2 (1[k=2] - p) = (-1/9, -1/9, 2/9), so the loss gradient is
    (1/9, 1/9, -2/9) (4 samples of mean loss: the same scale). Descent raises z_2."""
    expected = torch.tensor([1 / 9, 1 / 9, -2 / 9])
    plain = _categorical_gradient("greedy", 3000, 0)  # greedy baseline 0 here: plain REINFORCE
    assert torch.allclose(plain, expected, atol=0.02)
    assert plain[2] < 0 < plain[0]


def test_leave_one_out_keeps_the_gradient_unbiased():
    """Each sample's leave-one-out baseline depends only on the other samples, so
    E[(R_s - b_s) grad log p(m_s)] = grad E[R]: the mean over many draws matches the analytic
    gradient, as the plain estimator's does."""
    expected = torch.tensor([1 / 9, 1 / 9, -2 / 9])
    loo = _categorical_gradient("leave-one-out", 3000, 1)
    assert torch.allclose(loo, expected, atol=0.02)


def test_a_tuning_phase_logs_rewards_and_reports_the_baseline(tmp_path):
    tuning = {"steps": 3, "samples": 3, "batch_size": 2}
    config = SegmenterConfig(steps=2, batch_size=2, crop=(32, 64), reward_tuning=tuning)
    model = SmpSegmenter(config, num_classes=2)
    context = FitContext(0, torch.device("cpu"), tmp_path, progress=False, validation=TinySplit())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log, report = tune_segmenter(model, TinySplit(), config, context)
    assert len(log.loss) == 3 and len(log.scalars["reward"]) == 3
    assert all(0.0 <= r <= 1.0 for r in log.scalars["reward"])
    assert report["reward"] == "miou" and report["baseline"] == "leave-one-out"
    assert {"val_miou_before", "val_miou_after", "variance_reduction"} <= set(report)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_the_kl_term_keeps_a_frozen_copy_of_the_start():
    config = SegmenterConfig(steps=1)
    model = SmpSegmenter(config, num_classes=2)
    tuning = RewardConfig(kl_weight=0.5, samples=2)
    supervision = RewardSupervision(model, config, tuning, None, 0, torch.device("cpu"))
    assert supervision.reference is not model
    assert not any(p.requires_grad for p in supervision.reference.parameters())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reward": "iou"}, "segmenter.reward_tuning.reward must be"),
        ({"samples": 1}, "segmenter.reward_tuning.samples must be >= 2 with the leave-one-out"),
        ({"temperature": 0}, "segmenter.reward_tuning.temperature must be a number in (0, 100]"),
        ({"stepz": 3}, "unknown segmenter.reward_tuning option 'stepz'"),
        ({"reward": "anomaly-ap"}, "segmenter.reward_tuning.reward anomaly-ap needs a model"),
    ],
)
def test_bad_reward_tuning_is_one_line_bad_input(values, message):
    with pytest.raises(BadInput) as err:
        reward_tuning(values, "deeplabv3plus")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_greedy_baseline_allows_one_sample():
    assert apply_overrides(RewardConfig(), {"samples": 1, "baseline": "greedy"}, "t").samples == 1


def test_a_reward_tuned_run_labels_its_rows_and_reuses_the_mle_fit(tmp_path):
    config = tmp_path / "tuned.yaml"
    config.write_text(
        "segmenter: {steps: 3, validate_every: 3, reward_tuning: {steps: 2, samples: 2}}\n"
    )
    args = [
        sys.executable, "-m", "owsbench", "run", "--preset", "quick", "--methods", "msp",
        "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress",
        "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "msp [reward miou]" in result.stdout
    row = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert row["segmenter_config"]["reward_tuning"]["samples"] == 2
    fits = sorted(p.name for p in (tmp_path / "cache" / "fits").glob("segmenter-*.pt"))
    assert len(fits) == 2  # the MLE fit and the tuned one, each cached
    # the row names both training logs, MLE first; the tuned curve continues the MLE one
    mle_path, tuned_path = row["artifacts"]["training"][:2]
    mle, tuned = (json.loads((tmp_path / "out" / p).read_text()) for p in (mle_path, tuned_path))
    assert tuned["continues"] == mle_path and tuned["step_offset"] == len(mle["train_loss"]) == 3
    curves = log_curves("tuned", tuned)
    assert curves.series("loss")[0].tolist() == [4.0, 5.0]  # steps 3 + 1, 3 + 2
    figures = subprocess.run(
        [sys.executable, "-m", "owsbench", "report", str(tmp_path / "out"), "--figures"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert (tmp_path / "out" / "figures" / "training.png").is_file()


def test_ce_and_kl_terms_join_the_objective(tmp_path):
    tuning = {"steps": 1, "samples": 2, "batch_size": 2, "ce_weight": 1.0, "kl_weight": 1.0}
    config = SegmenterConfig(steps=1, batch_size=2, crop=(32, 64), reward_tuning=tuning)
    model = SmpSegmenter(config, num_classes=2)
    context = FitContext(0, torch.device("cpu"), tmp_path, progress=False)
    log, _ = tune_segmenter(model, TinySplit(), config, context)
    # the total is the policy term plus a positive CE (KL is 0 at the first step: same model)
    assert log.loss[0] > log.scalars["policy"][0]


def test_binary_ap_is_sklearns_average_precision_of_a_binary_map():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(3)
    target = (torch.rand(20, 30, generator=g) < 0.1).to(torch.uint8)
    target[:2] = VOID
    samples = (
        torch.rand(5, 20, 30, generator=g) < torch.tensor([0.0, 0.05, 0.3, 0.9, 1.0])[:, None, None]
    )
    valid = target != VOID
    expected = [
        average_precision_score(target[valid].numpy(), sample[valid].numpy().astype(float))
        for sample in samples
    ]
    got = binary_ap(samples, target).tolist()
    assert got == pytest.approx(expected, abs=1e-6)
    assert binary_ap(samples, torch.zeros(20, 30, dtype=torch.uint8)).tolist() == [0.0] * 5


def test_a_reward_tuned_dual_head_reuses_its_plain_fit(tmp_path):
    base = "method_configs: {dual-head: {steps: 3, batch_size: 2%s}}\n"
    tuned = base % ", reward_tuning: {steps: 2, samples: 2, batch_size: 2}"

    def run(name: str, text: str) -> subprocess.CompletedProcess:
        (tmp_path / f"{name}.yaml").write_text(text)
        args = [
            sys.executable, "-m", "owsbench", "run", "--preset", "quick", "--methods",
            "dual-head", "--config", str(tmp_path / f"{name}.yaml"), "--no-progress",
            "--out", str(tmp_path / name), "--data-root", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"),
        ]  # fmt: skip
        return subprocess.run(args, capture_output=True, text=True, check=False)

    result = run("tuned", tuned)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dual-head [reward anomaly-ap]" in result.stdout
    row = json.loads((tmp_path / "tuned" / "results.jsonl").read_text().splitlines()[0])
    report = row["fit_report"]
    assert report["reward"] == "anomaly-ap" and 0 <= report["reward_last_steps"] <= 1
    assert row["method_config"]["reward_tuning"]["samples"] == 2
    assert len(row["artifacts"]["training"]) == 2  # the MLE fit's log, then the tuned one's
    assert run("plain", base % "").returncode == 0
    assert len(list((tmp_path / "cache" / "fits").glob("method-dual-head-*.pt"))) == 2
    bad = run("bad", base % ", reward_tuning: {reward: miou}")
    assert bad.returncode == 2 and "anomaly-ap" in bad.stderr.strip().splitlines()[-1]
