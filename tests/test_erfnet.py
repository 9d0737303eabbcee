"""The ERFNet segmenter: shapes, size of the official model, training, and an end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from dataset_fixtures import TinySplit

from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.segmenters.erfnet import ERFNetConfig, ERFNetSegmenter
from owsbench.training.segmenter import train_segmenter


@pytest.mark.parametrize(("height", "width"), [(64, 128), (17, 31)])
def test_logits_cover_any_input_size(height, width):
    model = ERFNetSegmenter(ERFNetConfig(), num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.logits.shape == (2, 5, height, width)
    padded_h, padded_w = -(-height // 8) * 8, -(-width // 8) * 8
    assert out.features["encoder"].shape == (2, 128, padded_h // 8, padded_w // 8)
    assert out.features["decoder"].shape == (2, 16, padded_h // 2, padded_w // 2)


def test_input_scale_runs_the_network_at_a_lower_resolution():
    model = ERFNetSegmenter(ERFNetConfig(input_scale=0.5), num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 100, 200)).logits.shape == (1, 3, 50, 100)


def test_parameter_count_matches_the_official_erfnet():
    # official train/erfnet.py Net(20): 2,066,836 parameters, of which 2,580 belong to the
    # encoder-only output_conv that this model leaves out
    model = ERFNetSegmenter(ERFNetConfig(), num_classes=20)
    assert sum(p.numel() for p in model.parameters()) == 2_064_256


def test_official_style_weights_load_and_shape_mismatches_are_skipped(tmp_path):
    source = ERFNetSegmenter(ERFNetConfig(), num_classes=20)
    path = tmp_path / "erfnet.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = ERFNetSegmenter(ERFNetConfig(weights_path=str(path)), num_classes=4)
    assert torch.equal(
        model.encoder.initial_block.conv.weight, source.encoder.initial_block.conv.weight
    )
    assert model.decoder.output_conv.weight.shape[1] == 4
    with pytest.raises(BadInput):
        ERFNetSegmenter(ERFNetConfig(weights_path=str(tmp_path / "missing.pth")), num_classes=4)


def test_two_training_steps_give_finite_losses(tmp_path):
    config = ERFNetConfig(steps=2, batch_size=2, crop=(36, 60))
    model = ERFNetSegmenter(config, num_classes=2)
    context = FitContext(seed=0, device=torch.device("cpu"), cache_dir=tmp_path, progress=False)
    log, _ = train_segmenter(model, TinySplit(), config, context)
    assert len(log.loss) == 2 and all(np.isfinite(log.loss))
    assert not model.training


def test_cli_run_with_erfnet_under_two_posthoc_methods(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable, "-m", "owsbench", "run",
            "--methods", "maxlogit@erfnet,msp@erfnet", "--datasets", "synthstreets",
            "--preset", "quick", "--config", str(config), "--seeds", "0", "--device", "cpu",
            "--no-progress", "--data-root", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert {r["segmenter"] for r in rows} == {"erfnet"}
    assert sorted(r["method"] for r in rows) == ["maxlogit@erfnet", "msp@erfnet"]
    for row in rows:
        assert 0.0 <= row["metrics"]["AP"] <= 1.0
