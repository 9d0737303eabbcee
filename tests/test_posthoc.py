"""Post-hoc logit scores: hand-computed values, sign convention, shapes and stability."""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import pytest
import torch

from owsbench.methods.posthoc import (
    MSP,
    Energy,
    Entropy,
    MaxLogit,
    energy_score,
    entropy_score,
    maxlogit_score,
    msp_score,
)
from owsbench.segmenters.base import SegmenterOutput

SCORES = [msp_score, maxlogit_score, entropy_score, energy_score]


def two_pixels() -> torch.Tensor:
    """Logits ``(1, 2, 1, 2)``: pixel 0 = ``[0, 0]`` (p = 1/2, 1/2), pixel 1 = ``[log 3, 0]``."""
    return torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])


def test_hand_computed_values():
    logits = two_pixels()
    entropy_1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2.0)
    expected = {
        msp_score: [0.5, 0.25],
        maxlogit_score: [0.0, -math.log(3.0)],
        entropy_score: [1.0, entropy_1],
        energy_score: [-math.log(2.0), -math.log(4.0)],
    }
    for fn, values in expected.items():
        assert torch.allclose(fn(logits), torch.tensor([[values]]), atol=1e-6), fn.__name__


def test_energy_temperature():
    logits = two_pixels()
    # -T logsumexp(z / T) with T = 2: pixel 1 = -2 log(exp(log(3) / 2) + 1) = -2 log(sqrt(3) + 1)
    expected = torch.tensor([[[-2.0 * math.log(2.0), -2.0 * math.log(math.sqrt(3.0) + 1.0)]]])
    assert torch.allclose(energy_score(logits, temperature=2.0), expected, atol=1e-6)
    with pytest.raises(ValueError):
        energy_score(logits, temperature=0.0)


@pytest.mark.parametrize("fn", SCORES, ids=lambda fn: fn.__name__)
def test_confident_pixel_scores_lower(fn):
    confident = torch.tensor([10.0, 0.0, 0.0])
    uncertain = torch.tensor([1.0, 0.9, 0.8])
    logits = torch.stack([confident, uncertain], dim=1)[None, :, None, :]  # (1, 3, 1, 2)
    score = fn(logits)
    assert score[0, 0, 0] < score[0, 0, 1]


@pytest.mark.parametrize("fn", SCORES, ids=lambda fn: fn.__name__)
def test_shape_and_dtype(fn):
    logits = torch.randn(2, 5, 3, 4)
    assert fn(logits).shape == (2, 3, 4)
    half = fn(logits.half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_stable_with_large_logits():
    # pixel 0 = [1e4, 0] (certain), pixel 1 = [1e4, 1e4] (a tie)
    logits = torch.tensor([[[[1e4, 1e4]], [[0.0, 1e4]]]])
    for fn in SCORES:
        assert torch.isfinite(fn(logits)).all(), fn.__name__
    assert torch.allclose(msp_score(logits), torch.tensor([[[0.0, 0.5]]]))
    assert torch.allclose(entropy_score(logits), torch.tensor([[[0.0, 1.0]]]), atol=1e-6)
    expected_energy = torch.tensor([[[-1e4, -1e4 - math.log(2.0)]]])
    assert torch.allclose(energy_score(logits), expected_energy, rtol=1e-6)


def test_entropy_needs_two_classes():
    with pytest.raises(ValueError):
        entropy_score(torch.zeros(1, 1, 2, 2))


def test_methods_apply_their_score_to_the_logits():
    logits = torch.randn(2, 4, 3, 5)
    outputs = SegmenterOutput(logits=logits)
    for method, fn in [
        (MSP(), msp_score),
        (MaxLogit(), maxlogit_score),
        (Entropy(), entropy_score),
    ]:
        assert torch.equal(method.score(outputs), fn(logits)), method.name
        assert dataclasses.asdict(method.config) == {"convention": "probabilities"}
        assert method.summary
    energy = Energy(Energy.Config(temperature=2.0))
    assert torch.equal(energy.score(outputs), energy_score(logits, temperature=2.0))
    assert dataclasses.asdict(energy.config) == {"convention": "probabilities", "temperature": 2.0}
    assert [m.name for m in (MSP, MaxLogit, Entropy, Energy)] == [
        "msp",
        "maxlogit",
        "entropy",
        "energy",
    ]


def test_predict_through_a_segmenter():
    class Fixed(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> SegmenterOutput:
            return SegmenterOutput(logits=images * 10.0)

    images = torch.rand(2, 3, 4, 6)
    prediction = MaxLogit(segmenter=Fixed()).predict(images)
    assert torch.equal(prediction.semantic, images.argmax(1))
    assert torch.equal(prediction.anomaly, -(images * 10.0).amax(1))
