"""Scores on mask-classification segmenters: RbA, the two conventions of the logit scores, the
anomaly heads' mask statistics, and the refusal of RbA on a per-pixel classifier."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from owsbench.config import PRESETS, RunConfig
from owsbench.errors import BadInput
from owsbench.methods.anomaly_head import AnomalyHeadHybrid, AnomalyHeadStats, mask_statistics
from owsbench.methods.posthoc import MSP, Energy, Entropy, MaxLogit, ScoreConfig
from owsbench.methods.rba import RbA, RbAConfig
from owsbench.plan import validate
from owsbench.segmenters.base import SegmenterOutput
from owsbench.segmenters.eomt import EoMTConfig, EoMTSegmenter
from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter

TINY = EoMTConfig(embed_dim=32, depth=2, num_heads=2, num_queries=4, num_blocks=1)


def hand_made() -> torch.Tensor:
    """Class scores ``(1, 3, 1, 2)``: pixel 0 = [0.9, 0.05, 0.0] (known), pixel 1 = [0.1]*3."""
    return torch.tensor([[[[0.9, 0.1]], [[0.05, 0.1]], [[0.0, 0.1]]]])


def eomt() -> EoMTSegmenter:
    return EoMTSegmenter(TINY, num_classes=3).eval()


def test_rba_is_minus_the_sum_of_tanh():
    out = RbA(segmenter=eomt()).score(SegmenterOutput(hand_made()))
    expected = [-(math.tanh(0.9) + math.tanh(0.05)), -3 * math.tanh(0.1)]
    assert torch.allclose(out, torch.tensor([[expected]]), atol=1e-6)
    assert out[0, 0, 1] > out[0, 0, 0]  # rejected by all classes = more anomalous


def test_probability_convention_reads_the_scores_directly():
    scores, model = hand_made(), eomt()
    out = SegmenterOutput(scores)
    assert torch.allclose(MSP(segmenter=model).score(out), torch.tensor([[[0.1, 0.9]]]))
    assert torch.allclose(MaxLogit(segmenter=model).score(out), torch.tensor([[[-0.9, -0.1]]]))
    energy = Energy(segmenter=model).score(out)
    assert torch.allclose(energy, torch.tensor([[[-math.log(0.95), -math.log(0.3)]]]), atol=1e-5)
    floor = 1e-7 * math.log(1e-7)
    entropy_0 = -(0.9 * math.log(0.9) + 0.05 * math.log(0.05) + floor) / math.log(3)
    assert Entropy(segmenter=model).score(out)[0, 0, 0] == pytest.approx(entropy_0, abs=1e-6)


def test_logit_convention_treats_the_scores_as_logits_and_differs():
    scores, model = hand_made(), eomt()
    out = SegmenterOutput(scores)
    as_logits = MSP(ScoreConfig("logits"), segmenter=model).score(out)
    assert torch.allclose(as_logits, 1 - torch.softmax(scores, dim=1).amax(dim=1))
    assert not torch.allclose(as_logits, MSP(segmenter=model).score(out))
    energy = Energy(Energy.Config(convention="logits"), segmenter=model).score(out)
    assert torch.allclose(energy, -torch.logsumexp(scores, dim=1))


def test_convention_changes_nothing_on_a_pixel_classifier():
    z = torch.randn(1, 3, 2, 2)
    pixel = SmpSegmenter(SegmenterConfig(), num_classes=3)
    for convention in ("probabilities", "logits"):
        score = MSP(ScoreConfig(convention), segmenter=pixel).score(SegmenterOutput(z))
        assert torch.allclose(score, 1 - torch.softmax(z, dim=1).amax(dim=1))


def run(tmp_path: Path, methods: list[str]) -> RunConfig:
    return RunConfig(
        methods=methods, datasets=["synthstreets"], seeds=[0], preset=PRESETS["quick"],
        device="cpu", data_root=tmp_path, out=tmp_path / "out", cache_dir=tmp_path / "c",
        progress=False,
    )  # fmt: skip


def test_rba_is_refused_on_a_pixel_classifier_unless_asked_for(tmp_path):
    with pytest.raises(BadInput, match="mask-classification"):
        validate(run(tmp_path, ["rba"]))
    with pytest.raises(BadInput):
        RbA(segmenter=SmpSegmenter(SegmenterConfig(), num_classes=3))
    validate(run(tmp_path, ["rba@eomt", "msp@eomt"]))
    allowed = run(tmp_path, ["rba"])
    allowed.method_overrides = {"rba": {"allow_pixel_classifier": True}}
    validate(allowed)
    RbA(RbAConfig(allow_pixel_classifier=True), SmpSegmenter(SegmenterConfig(), num_classes=3))


def test_mask_statistics_are_max_entropy_sum_and_one_minus_max():
    stats = mask_statistics(hand_made())
    assert stats.shape == (1, 4, 1, 2)
    assert torch.allclose(
        stats[0, :, 0, 1], torch.tensor([0.1, -3 * 0.1 * math.log(0.1), 0.3, 0.9])
    )


def test_heads_on_eomt_read_mask_statistics_and_the_patch_tokens():
    model = eomt()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    stats = AnomalyHeadStats(segmenter=model)
    stats.head = stats.build_head(None)
    assert stats.head.inputs(out.logits).shape == (1, 4, 32, 32)
    hybrid = AnomalyHeadHybrid(segmenter=model)
    assert hybrid.feature_map(out) is out.features["tokens"]
    hybrid.head = hybrid.build_head(out.features["tokens"].shape[1])
    assert hybrid.score(out).shape == (1, 32, 32)
    state = hybrid.state_dict()
    assert state["mask_scores"] is True
    with pytest.raises(ValueError, match="another kind"):
        AnomalyHeadHybrid(segmenter=SmpSegmenter(SegmenterConfig(), 3)).load_state_dict(state)


NEW_IDS = [
    "msp@eomt", "maxlogit@eomt", "entropy@eomt", "energy@eomt", "rba@eomt", "sml@eomt",
    "rba-oe@eomt", "anomaly-head-stats@eomt", "anomaly-head-hybrid@eomt",
]  # fmt: skip


def owsbench(tmp_path: Path, methods: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, "-m", "owsbench", "run", "--methods", methods,
            "--datasets", "synthstreets", "--preset", "quick", "--config", str(config),
            "--seeds", "0", "--device", "cpu", "--no-progress",
            "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out"),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_quick_run_with_every_new_id(tmp_path):
    config = tmp_path / "small.yaml"
    small = "{steps: 2, batch_size: 2}"
    config.write_text(
        f"segmenter: {{steps: 2, batch_size: 2, depth: 2, num_blocks: 1, num_queries: 8}}\n"
        f"method_configs: {{rba-oe: {small}, anomaly-head-stats: {small}, "
        f"anomaly-head-hybrid: {small}}}\n"
    )
    result = owsbench(tmp_path, ",".join(NEW_IDS), config)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "out" / "results.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted(r["method"] for r in rows) == sorted(NEW_IDS)
    assert {r["segmenter"] for r in rows} == {"eomt"}
    assert all(0.0 <= r["metrics"]["AP"] <= 1.0 for r in rows)
    refused = owsbench(tmp_path, "rba", config)
    assert refused.returncode == 2 and "mask-classification" in refused.stderr
