"""RbA+OE: the outlier loss, a fine-tuning of the copied heads on pasted frames (segmenter
frozen), the attached heads scored in the shared forward pass, and the state round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit, scene

from owsbench.datasets.base import Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.methods.nn.outlier_exposure import PasteConfig, outlier_batch, split_outlier_labels
from owsbench.methods.rba import rba_score
from owsbench.methods.rba_oe import RbAOE, RbAOEConfig, outlier_loss
from owsbench.segmenters.eomt import EoMTConfig, EoMTSegmenter
from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter

TINY = EoMTConfig(
    embed_dim=32, depth=2, num_heads=2, num_queries=6, num_blocks=1, num_points=128, crop=(64, 64)
)


def test_outlier_loss_is_rbas_squared_hinge():
    score = torch.tensor([-1.0, 0.5, -2.0, 7.0])
    target = torch.tensor([0, 0, 1, 1])
    # inliers: ReLU(s - 0)^2 = [0, 0.25]; outliers: ReLU(5 - s)^2 = [49, 0]
    expected = 0.5 * (0.25 / 2) + 0.5 * (49 / 2)
    assert outlier_loss(score, target, 0.0, 5.0).item() == pytest.approx(expected)
    assert outlier_loss(score, torch.full((4,), 255), 0.0, 5.0).item() == 0.0


def test_refused_on_a_pixel_classifier():
    with pytest.raises(BadInput, match="mask-classification"):
        RbAOE(segmenter=SmpSegmenter(SegmenterConfig(), num_classes=3))


def test_fine_tuning_lowers_the_outlier_loss_and_leaves_the_segmenter_alone():
    torch.manual_seed(0)
    model = EoMTSegmenter(TINY, num_classes=19).eval()
    before = copy.deepcopy(model.state_dict())
    frames = [Frame(f"f{s}", *scene(s)) for s in range(4)]
    config = RbAOEConfig(steps=20, batch_size=2, crop=(64, 64), lr=1e-2, paste_probability=1.0)
    method = RbAOE(config, segmenter=model)
    context = FitContext(
        seed=0, device=torch.device("cpu"), cache_dir=None, progress=False,
        outlier_source=outlier_exposure_source(),
    )  # fmt: skip
    images, labels = outlier_batch(
        frames, outlier_exposure_source(), np.random.default_rng(3), PasteConfig(probability=1.0)
    )
    _, target = split_outlier_labels(labels)
    with torch.no_grad():
        start = outlier_loss(rba_score(model(images).logits), target, 0.0, 5.0)
    method.fit(ListSplit(frames), context)
    with torch.no_grad():
        outputs = model(images)
    end = outlier_loss(method.score(outputs), target, 0.0, 5.0)
    assert end < 0.9 * start
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(model.state_dict()) == set(before)  # the attached heads are not saved with it

    other = EoMTSegmenter(TINY, num_classes=19).eval()
    other.load_state_dict(before)
    restored = RbAOE(config, segmenter=other)
    restored.load_state_dict(method.state_dict())
    with torch.no_grad():
        again = restored.score(other(images))
    assert torch.allclose(again, method.score(outputs), atol=1e-5)
