"""SML: every stage on crafted inputs, then fit + score end to end with a fake segmenter."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import ListSplit

from owsbench.config import apply_overrides
from owsbench.datasets.base import Frame
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Prediction, image_batch
from owsbench.methods.sml import (
    SML,
    SMLStatistics,
    boundary_mask,
    dilated_smoothing,
    standardized_max_logit,
    suppress_boundaries,
)
from owsbench.segmenters.base import SegmenterOutput


def pixels_to_logits(rows: list[list[float]], height: int, width: int) -> torch.Tensor:
    """One logit vector per pixel (row-major) -> ``(1, K, height, width)``."""
    return torch.tensor(rows).T.reshape(1, -1, height, width)


# six pixels, K = 3: max logits 2, 4, 3 predicted as class 0; 5, 7, 6 as class 1; none as class 2
SIX_PIXELS = [[2, 0, 0], [4, 1, 0], [3, 0, 1], [0, 5, 0], [0, 7, 1], [0, 6, 0]]


# ---------------------------------------------------------------- statistics


def test_statistics_grouped_by_predicted_class():
    stats = SMLStatistics()
    stats.update(pixels_to_logits(SIX_PIXELS, 2, 3))
    mean, var = stats.compute()
    # class 0: {2, 4, 3} -> mean 3, var (1 + 1 + 0) / 2 = 1; class 1: {5, 7, 6} -> 6, 1
    # class 2 is never predicted: pooled {2, ..., 7} -> mean 4.5, var 17.5 / 5 = 3.5
    assert torch.allclose(mean, torch.tensor([3.0, 6.0, 4.5], dtype=torch.float64))
    assert torch.allclose(var, torch.tensor([1.0, 1.0, 3.5], dtype=torch.float64))


def test_statistics_class_seen_once_gets_pooled_variance():
    stats = SMLStatistics()
    stats.update(pixels_to_logits([[3, 0, 0], [5, 0, 0], [0, 0, 7]], 1, 3))
    mean, var = stats.compute()
    # pooled {3, 5, 7}: mean 5, var 4; class 2 seen once (7): its own mean, pooled variance
    assert torch.allclose(mean, torch.tensor([4.0, 5.0, 7.0], dtype=torch.float64))
    assert torch.allclose(var, torch.tensor([2.0, 4.0, 4.0], dtype=torch.float64))


def test_statistics_two_updates_equal_one_update_and_merge():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4, 5, 6, generator=generator) * 3
    b = torch.randn(3, 4, 5, 6, generator=generator) * 3 + 1
    once, twice, left, right = (SMLStatistics() for _ in range(4))
    once.update(torch.cat([a, b]))
    twice.update(a)
    twice.update(b)
    left.update(a)
    right.update(b)
    left.merge(right)
    for other in (twice, left):
        for x, y in zip(once.compute(), other.compute(), strict=True):
            assert torch.allclose(x, y, rtol=1e-12, atol=1e-12)
    # and both equal torch's own mean / unbiased var per predicted class
    max_logit, pred = torch.cat([a, b]).max(1)
    mean, var = once.compute()
    for c in range(4):
        values = max_logit[pred == c].double()
        assert math.isclose(mean[c], values.mean(), rel_tol=1e-9)
        assert math.isclose(var[c], values.var(), rel_tol=1e-9)


def test_statistics_need_pixels_and_matching_classes():
    with pytest.raises(RuntimeError):
        SMLStatistics().compute()
    stats = SMLStatistics()
    stats.update(torch.zeros(1, 3, 2, 2))
    other = SMLStatistics()
    other.update(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError):
        stats.merge(other)


# ---------------------------------------------------------------- standardisation


def test_standardized_max_logit():
    logits = pixels_to_logits([[2, 0, 0], [0, 9, 1], [0, 1, 4]], 1, 3)
    mean = torch.tensor([1.0, 5.0, 6.0], dtype=torch.float64)
    var = torch.tensor([4.0, 16.0, 1.0], dtype=torch.float64)
    # (2 - 1) / 2, (9 - 5) / 4, (4 - 6) / 1
    expected = torch.tensor([[[0.5, 1.0, -2.0]]])
    assert torch.allclose(standardized_max_logit(logits, mean, var), expected)
    with pytest.raises(ValueError):
        standardized_max_logit(logits, mean[:2], var[:2])


# ---------------------------------------------------------------- boundaries


def two_regions() -> torch.Tensor:
    """6x7 class map: class 3 in the top-left 3x4 rectangle, class 0 elsewhere."""
    pred = torch.zeros(1, 6, 7, dtype=torch.long)
    pred[0, :3, :4] = 3
    return pred


# inside: pixels whose 3x3 square reaches class 0; outside: pixels 4-adjacent to the rectangle
TWO_REGIONS_BOUNDARY = [
    [0, 0, 0, 1, 1, 0, 0],
    [0, 0, 0, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
]


def test_boundary_mask_two_regions():
    expected = torch.tensor([TWO_REGIONS_BOUNDARY], dtype=torch.bool)
    assert torch.equal(boundary_mask(two_regions()), expected)


def test_boundary_mask_dilates_by_cross_and_erodes_by_square():
    # a lone high pixel: the dilation (cross) spreads it to its 4 neighbours only
    pred = torch.zeros(1, 5, 5, dtype=torch.long)
    pred[0, 2, 2] = 1
    expected = torch.zeros(1, 5, 5, dtype=torch.bool)
    expected[0, 2, 1:4] = expected[0, 1:4, 2] = True
    assert torch.equal(boundary_mask(pred), expected)
    # a lone low pixel: the erosion (square) spreads it to all 8 neighbours
    expected = torch.zeros(1, 5, 5, dtype=torch.bool)
    expected[0, 1:4, 1:4] = True
    assert torch.equal(boundary_mask(1 - pred), expected)


def test_boundary_mask_pinned_kornia_border():
    # erosion padded with 1: image-border pixels of class >= 2 become boundaries, class 0 do not
    expected = torch.tensor([TWO_REGIONS_BOUNDARY], dtype=torch.bool)
    expected[0, 0, :4] = expected[0, :3, 0] = True
    assert torch.equal(boundary_mask(two_regions(), erosion_pad=1.0), expected)
    uniform = torch.full((1, 4, 5), 7)
    ring = torch.ones(1, 4, 5, dtype=torch.bool)
    ring[0, 1:-1, 1:-1] = False
    assert torch.equal(boundary_mask(uniform, erosion_pad=1.0), ring)
    assert not boundary_mask(uniform).any()


# ---------------------------------------------------------------- boundary suppression


def test_suppression_hand_worked():
    pred = torch.tensor([[[0, 0, 1, 1]] * 3])  # boundary = columns 1 and 2
    score = torch.arange(1.0, 13.0).reshape(1, 3, 4)
    out = suppress_boundaries(score, pred, width=1, iterations=1)  # one pass, radius 0
    # each boundary pixel takes the mean of column 0 (or 3) over its 3 rows, top/bottom replicated
    expected = torch.tensor(
        [
            [1, (1 + 1 + 5) / 3, (4 + 4 + 8) / 3, 4],
            [5, (1 + 5 + 9) / 3, (4 + 8 + 12) / 3, 8],
            [9, (5 + 9 + 9) / 3, (8 + 12 + 12) / 3, 12],
        ]
    )
    assert torch.allclose(out, expected[None])


def test_suppression_changes_exactly_the_expanded_boundary():
    # vertical split: boundary = columns 7 and 8; the first pass (radius 3) reaches columns 4..11
    pred = torch.zeros(1, 9, 16, dtype=torch.long)
    pred[..., 8:] = 1
    score = torch.rand(1, 9, 16, generator=torch.Generator().manual_seed(0))
    out = suppress_boundaries(score, pred)
    changed = (out != score).any(dim=1)[0]
    assert changed.tolist() == [4 <= col <= 11 for col in range(16)]


def test_suppression_keeps_constants_and_non_boundary_pixels():
    pred = two_regions()
    assert torch.allclose(suppress_boundaries(torch.full((1, 6, 7), 2.5), pred), torch.tensor(2.5))
    score = torch.rand(1, 6, 7, generator=torch.Generator().manual_seed(1))
    untouched = ~boundary_mask(pred)
    out = suppress_boundaries(score, pred, width=1, iterations=1)
    assert torch.equal(out[untouched], score[untouched])
    assert torch.equal(suppress_boundaries(score, pred, iterations=0), score)
    with pytest.raises(ValueError):
        suppress_boundaries(score, pred, width=3, iterations=2)


def test_suppression_keeps_pixels_without_non_boundary_neighbours():
    pred = torch.tensor([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]])  # every pixel is a boundary
    score = torch.rand(1, 3, 3)
    assert torch.equal(suppress_boundaries(score, pred), score)


# ---------------------------------------------------------------- dilated smoothing


def gaussian_2d(size: int, sigma: float) -> np.ndarray:
    centre = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    kernel = np.exp(-((x - centre) ** 2 + (y - centre) ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def test_smoothing_keeps_constants_and_shape():
    for shape in [(2, 40, 50), (1, 3, 5)]:
        out = dilated_smoothing(torch.full(shape, -1.5))
        assert out.shape == shape
        assert torch.allclose(out, torch.tensor(-1.5))
    with pytest.raises(ValueError):
        dilated_smoothing(torch.zeros(1, 5, 5), kernel_size=6)


def test_smoothing_spreads_an_impulse_over_the_dilated_kernel():
    score = torch.zeros(1, 41, 41, dtype=torch.float64)
    score[0, 20, 20] = 1.0
    out = dilated_smoothing(score)  # 7x7, dilation 6: taps at 20 + 6 * (-3..3) = 2..38
    expected = torch.zeros(1, 41, 41, dtype=torch.float64)
    expected[0, 2:39:6, 2:39:6] = torch.from_numpy(gaussian_2d(7, 1.0))
    assert torch.allclose(out, expected, rtol=0, atol=1e-15)
    assert (out != 0).sum() == 49


def test_smoothing_matches_a_dilated_convolution():
    score = torch.rand(2, 23, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kernel = torch.from_numpy(gaussian_2d(5, 1.5))[None, None]
    padded = F.pad(score[:, None], (4, 4, 4, 4), mode="replicate")
    expected = F.conv2d(padded, kernel, dilation=2)[:, 0]
    out = dilated_smoothing(score, kernel_size=5, dilation=2, sigma=1.5)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- SML end to end


class FakeSegmenter(torch.nn.Module):
    """Three-class logits ``10 * image`` (one class per colour channel); records its mode."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        self.modes.append(self.training)
        return SegmenterOutput(logits=images * 10.0)


def make_split(sizes: list[tuple[int, int]]) -> ListSplit:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ListSplit([Frame(frame_id=str(i), image=im) for i, im in enumerate(images)])


def context(tmp_path, max_stat_frames: int | None = None) -> FitContext:
    return FitContext(
        seed=0,
        device=torch.device("cpu"),
        cache_dir=tmp_path,
        progress=False,
        max_stat_frames=max_stat_frames,
    )


def expected_statistics(split: ListSplit, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    max_logit, pred = torch.cat(
        [(image_batch([split[i].image]) * 10.0).flatten(2) for i in range(frames)], dim=2
    ).max(1)
    values = [max_logit[pred == c].double() for c in range(3)]
    return torch.stack([v.mean() for v in values]), torch.stack([v.var() for v in values])


def test_fit_gathers_statistics_in_eval_mode(tmp_path):
    split = make_split([(8, 10)] * 5)
    segmenter = FakeSegmenter()
    method = SML(SML.Config(stat_batch_size=2), segmenter=segmenter)
    method.fit(split, context(tmp_path))
    mean, var = expected_statistics(split, 5)
    assert torch.allclose(method.mean, mean) and torch.allclose(method.var, var)
    assert segmenter.modes == [False] * 3  # batches of 2, 2, 1
    assert segmenter.training  # mode restored


def test_fit_respects_max_stat_frames_and_mixed_sizes(tmp_path):
    split = make_split([(8, 10), (6, 5), (8, 10), (8, 10)])
    method = SML(SML.Config(stat_batch_size=3), segmenter=FakeSegmenter())
    method.fit(split, context(tmp_path, max_stat_frames=3))
    mean, var = expected_statistics(split, 3)
    assert torch.allclose(method.mean, mean) and torch.allclose(method.var, var)


def test_score_is_the_negated_post_processed_sml(tmp_path):
    split = make_split([(12, 16)] * 3)
    segmenter = FakeSegmenter()
    method = SML(segmenter=segmenter)
    method.fit(split, context(tmp_path))
    images = image_batch([split[0].image, split[1].image])
    logits = images * 10.0
    confidence = standardized_max_logit(logits, method.mean, method.var)
    expected = -dilated_smoothing(suppress_boundaries(confidence, logits.argmax(1)))
    prediction = method.predict(images)
    assert isinstance(prediction, Prediction)
    assert prediction.anomaly.shape == (2, 12, 16)
    assert torch.allclose(prediction.anomaly, expected)
    assert torch.equal(prediction.semantic, logits.argmax(1))

    plain = SML(SML.Config(suppress_boundaries=False, smooth=False))
    plain.load_state_dict(method.state_dict())
    assert torch.equal(plain.score(SegmenterOutput(logits=logits)), -confidence)


def test_state_dict_round_trip(tmp_path):
    method = SML(segmenter=FakeSegmenter())
    method.fit(make_split([(8, 10)] * 2), context(tmp_path))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = SML()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    outputs = SegmenterOutput(logits=torch.randn(1, 3, 9, 11))
    assert torch.equal(restored.score(outputs), method.score(outputs))
    assert torch.equal(restored.state_dict()["var"], method.var)


def test_unfitted_and_invalid():
    method = SML()
    with pytest.raises(RuntimeError, match="fit"):
        method.score(SegmenterOutput(logits=torch.randn(1, 3, 4, 4)))
    with pytest.raises(RuntimeError):
        method.state_dict()
    with pytest.raises(BadInput, match="multiple of sml.boundary_iterations"):
        SML(SML.Config(boundary_width=3))
    assert SML.needs_fit and SML.name == "sml"


def test_a_huge_boundary_width_is_refused_and_one_past_the_image_is_clipped_exactly():
    """The issue's hang: ``boundary_width: 1000000`` is refused before any work; widths past
    the image (radius > H + W - 2) give exactly the saturated mask, without looping."""
    with pytest.raises(BadInput, match=r"sml.boundary_width must be an integer in \[0, 4096\]"):
        apply_overrides(SML.Config(), {"boundary_width": 1000000}, "sml")
    torch.manual_seed(0)
    score = torch.randn(1, 6, 40)
    classes = torch.zeros(1, 6, 40, dtype=torch.long)
    classes[..., 20:] = 1  # one vertical boundary: small radii leave most pixels alone
    saturated = suppress_boundaries(score, classes, width=2 * 46, iterations=2)
    assert torch.equal(suppress_boundaries(score, classes, width=4096, iterations=2), saturated)
    assert not torch.equal(suppress_boundaries(score, classes, width=4, iterations=2), saturated)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_result_on_cuda():
    logits = torch.randn(2, 5, 30, 40, generator=torch.Generator().manual_seed(3)) * 3
    stats_cpu, stats_gpu = SMLStatistics(), SMLStatistics()
    stats_cpu.update(logits)
    stats_gpu.update(logits.cuda())
    for x, y in zip(stats_cpu.compute(), stats_gpu.compute(), strict=True):
        assert torch.allclose(x, y, rtol=1e-12)
    method = SML()
    mean, var = stats_cpu.compute()
    method.load_state_dict({"mean": mean, "var": var})
    cpu = method.score(SegmenterOutput(logits=logits))
    gpu = method.score(SegmenterOutput(logits=logits.cuda()))
    assert gpu.is_cuda and torch.allclose(cpu, gpu.cpu(), atol=1e-5)
