"""FRE: PCA subspace of known synthetic features, bounded subsample, alignment, state round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import ListSplit

from owsbench.datasets.base import Frame
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, image_batch
from owsbench.methods.fre import (
    FRE,
    features_to_logits,
    pad_multiple,
    padded_size,
    reconstruction_error,
    valid_feature_extent,
)
from owsbench.segmenters.base import SegmenterOutput

C = 8  # feature channels of the fake segmenter
BASIS = torch.linalg.qr(torch.randn(C, C, generator=torch.Generator().manual_seed(3)))[0]
SPAN = BASIS[:, :3]  # the features live in offset + span(SPAN) (plus a tiny noise direction)
NOISE_DIR, OFF_DIR = BASIS[:, 3], BASIS[:, 4]  # both orthogonal to SPAN and to each other
OFFSET = torch.linspace(-1.0, 1.0, C)
NOISE = 0.01


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: the test machine's cores are shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SubspaceSegmenter(torch.nn.Module):
    """Features at stride 2: ``OFFSET + SPAN (x - 0.5) * 4 + NOISE sin(...) NOISE_DIR``, with ``x``
    the 2x2-pooled image; ``"encoder"`` is twice ``"decoder"``. Records its modes."""

    output_stride = 2

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        self.modes.append(self.training)
        x = (F.avg_pool2d(images, 2) - 0.5) * 4.0
        wiggle = NOISE * torch.sin(97.0 * x.sum(1, keepdim=True) + 1.0)
        feats = (
            torch.einsum("ck,bkhw->bchw", SPAN, x)
            + OFFSET.view(1, C, 1, 1)
            + wiggle * NOISE_DIR.view(1, C, 1, 1)
        )
        logits = torch.zeros(images.shape[0], 2, *images.shape[-2:])
        return SegmenterOutput(logits=logits, features={"decoder": feats, "encoder": 2 * feats})


class RecordingSplit(ListSplit):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__(frames)
        self.read: set[int] = set()

    def __getitem__(self, index: int) -> Frame:
        self.read.add(index)
        return super().__getitem__(index)


def make_split(count: int, size: tuple[int, int] = (16, 16)) -> RecordingSplit:
    rng = np.random.default_rng(0)
    return RecordingSplit(
        [Frame(str(i), rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for i in range(count)]
    )


def context(tmp_path, max_stat_frames: int | None = None, seed: int = 0) -> FitContext:
    return FitContext(
        seed=seed,
        device=torch.device("cpu"),
        cache_dir=tmp_path,
        progress=False,
        max_stat_frames=max_stat_frames,
    )


def pixels(vectors: torch.Tensor) -> SegmenterOutput:
    """``(N, C)`` vectors -> outputs with a ``(1, C, 1, N)`` decoder feature at logits size."""
    feats = vectors.T.reshape(1, C, 1, -1)
    return SegmenterOutput(
        logits=torch.zeros(1, 2, 1, vectors.shape[0]), features={"decoder": feats}
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    segmenter = SubspaceSegmenter()
    method = FRE(FRE.Config(stat_batch_size=2), segmenter=segmenter)
    method.fit(make_split(5), context(tmp_path_factory.mktemp("fre")))
    return method, segmenter


def test_subspace_keeps_the_variance_and_spans_the_data(fitted):
    method, segmenter = fitted
    assert segmenter.modes == [False] * 3 and segmenter.training  # eval in fit, mode restored
    report = method.fit_report
    assert report["fre_decoder_components"] == 3
    assert 0.97 <= report["fre_decoder_variance_kept"] < 1.0
    assert report["fre_decoder_pixels"] == 5 * 8 * 8
    components = method.subspaces["decoder"]["components"].double()
    # the fitted directions span SPAN: projecting SPAN onto them loses (almost) nothing
    span = SPAN.double()
    assert torch.allclose(components.T @ (components @ span), span, atol=1e-3)


def test_in_subspace_scores_zero_off_subspace_scores_squared_distance(fitted):
    method = FRE()  # no segmenter: features taken to cover the logits exactly (stride 1)
    method.load_state_dict(fitted[0].state_dict())
    coeffs = torch.tensor([[0.3, -1.2, 0.7], [2.0, 0.0, -0.5], [-1.0, 1.0, 1.0]])
    inside = OFFSET + coeffs @ SPAN.T
    distances = torch.tensor([0.5, 1.0, 2.0])
    outside = inside + distances[:, None] * OFF_DIR
    score_in = method.score(pixels(inside))
    score_out = method.score(pixels(outside))
    assert score_in.shape == (1, 1, 3)
    assert score_in.abs().max() < 1e-4
    # ||t n||^2 / C for a unit n orthogonal to the subspace: 0.25/8, 1/8, 4/8
    expected = (distances**2 / C).view(1, 1, 3)
    assert torch.allclose(score_out, expected, rtol=1e-3, atol=1e-4)


def test_reconstruction_error_by_hand():
    mean = torch.tensor([1.0, 0.0, 0.0, 0.0])
    components = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    # u = (5, 2, 3, 4): centred (4, 2, 3, 4); residual (0, 0, 3, 4); 25 / 4 channels
    features = torch.tensor([5.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    assert reconstruction_error(features, mean, components).item() == pytest.approx(6.25)


def test_subsample_is_bounded_and_frames_capped(tmp_path, monkeypatch):
    from sklearn.decomposition import PCA

    seen: list[tuple[int, ...]] = []
    original = PCA.fit

    def recording_fit(self, X, y=None):
        seen.append(np.asarray(X).shape)
        return original(self, X, y)

    monkeypatch.setattr(PCA, "fit", recording_fit)
    split = make_split(6)
    method = FRE(FRE.Config(max_pixels=100, layers=("decoder", "encoder")), SubspaceSegmenter())
    method.fit(split, context(tmp_path, max_stat_frames=4))
    assert seen == [(100, C), (100, C)]  # one PCA per layer, 100 of 4 * 64 vectors each
    assert split.read == {0, 1, 2, 3}
    # a budget larger than the data takes every (unpadded) feature vector once
    seen.clear()
    FRE(FRE.Config(max_pixels=10_000), SubspaceSegmenter()).fit(make_split(3), context(tmp_path))
    assert seen == [(3 * 64, C)]


def test_subsample_depends_on_the_seed(tmp_path):
    first = FRE(FRE.Config(max_pixels=50), SubspaceSegmenter())
    first.fit(make_split(4), context(tmp_path, seed=0))
    again = FRE(FRE.Config(max_pixels=50), SubspaceSegmenter())
    again.fit(make_split(4), context(tmp_path, seed=0))
    other = FRE(FRE.Config(max_pixels=50), SubspaceSegmenter())
    other.fit(make_split(4), context(tmp_path, seed=1))
    mean = first.subspaces["decoder"]["mean"]
    assert torch.equal(mean, again.subspaces["decoder"]["mean"])
    assert not torch.equal(mean, other.subspaces["decoder"]["mean"])


def test_state_round_trip_gives_identical_scores(fitted):
    method, _ = fitted
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = FRE(segmenter=SubspaceSegmenter())
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    images = image_batch([np.random.default_rng(5).integers(0, 256, (12, 20, 3), dtype=np.uint8)])
    outputs = SubspaceSegmenter()(images)
    assert torch.equal(restored.score(outputs), method.score(outputs))
    assert restored.score(outputs).shape == (1, 12, 20)


def test_layers_are_summed(tmp_path):
    both = FRE(FRE.Config(layers=("decoder", "encoder")), SubspaceSegmenter())
    both.fit(make_split(3), context(tmp_path))
    outputs = SubspaceSegmenter()(image_batch([make_split(1)[0].image]))
    parts = []
    for layer in ("decoder", "encoder"):
        single = FRE(FRE.Config(layers=(layer,)), SubspaceSegmenter())
        single.load_state_dict(both.state_dict())
        parts.append(single.score(outputs))
    assert torch.allclose(both.score(outputs), parts[0] + parts[1])


def test_features_line_up_with_cropped_logits():
    # logits 20 x 30 from an input padded to 32 x 32; features at stride 4 cover 32 x 32
    assert padded_size((20, 30), (8, 8), 32) == (32, 32)
    assert padded_size((20, 30), (8, 8), None) == (32, 32)  # smallest power-of-two stride
    assert valid_feature_extent((20, 30), (8, 8), 32) == (5, 8)
    maps = torch.arange(64.0).view(1, 1, 8, 8)
    aligned = features_to_logits(maps, (20, 30), 32)
    expected = F.interpolate(maps, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(aligned, expected[..., :20, :30])


def test_real_segmenter_padding_and_score_shape(tmp_path):
    from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter

    torch.manual_seed(0)
    segmenter = SmpSegmenter(SegmenterConfig(), num_classes=3).eval()
    assert pad_multiple(segmenter) == 32
    split = make_split(2, size=(40, 50))  # padded to 64 x 64: decoder features 16 x 16
    method = FRE(FRE.Config(max_pixels=1000), segmenter=segmenter)
    method.fit(split, context(tmp_path))
    # only the 10 x 13 decoder cells that overlap the 40 x 50 image are sampled
    assert method.fit_report["fre_decoder_pixels"] == 2 * 10 * 13
    prediction = method.predict(image_batch([split[0].image]))
    assert prediction.anomaly.shape == (1, 40, 50)
    assert torch.isfinite(prediction.anomaly).all() and (prediction.anomaly >= 0).all()


def test_unknown_layer_is_a_clear_error(tmp_path):
    method = FRE(FRE.Config(layers=("neck",)), SubspaceSegmenter())
    with pytest.raises(BadInput, match="no feature 'neck'"):
        method.fit(make_split(2), context(tmp_path))
