"""The smp segmenter: any input size, input scaling, and training on a scaled model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_fixtures import TinySplit

from owsbench.methods.base import FitContext
from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter
from owsbench.training.segmenter import train_segmenter


@pytest.mark.parametrize(("height", "width"), [(64, 128), (45, 83), (72, 128)])
def test_logits_cover_any_input_size(height, width):
    model = SmpSegmenter(SegmenterConfig(), num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.logits.shape == (2, 5, height, width)
    assert set(out.features) == {"encoder", "decoder"}


def test_input_scale_runs_the_network_at_a_lower_resolution():
    model = SmpSegmenter(SegmenterConfig(input_scale=0.5), num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 100, 200)).logits.shape == (1, 3, 50, 100)


def test_training_a_scaled_model_downsamples_the_labels(tmp_path):
    config = SegmenterConfig(steps=2, batch_size=2, input_scale=0.5, crop=(32, 64))
    model = SmpSegmenter(config, num_classes=2)
    context = FitContext(seed=0, device=torch.device("cpu"), cache_dir=tmp_path, progress=False)
    log, _ = train_segmenter(model, TinySplit(), config, context)
    assert len(log.loss) == 2 and all(np.isfinite(log.loss))
