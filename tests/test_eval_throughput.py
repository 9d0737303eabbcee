"""The evaluation path's fast parts give the results of the plain ones: frames decoded in
workers (same order, same arrays, errors as they were), the shared class-axis reductions, the
one-sum non-finite check, the torch counting kernels (equal counts), SML's shifted-view
morphology, and the autocast precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import ListSplit

from owsbench.datasets.base import Frame, Split
from owsbench.errors import BadInput
from owsbench.evaluate import PosthocGroup, evaluate_split, first_nonfinite
from owsbench.frame_loader import loaded_batches
from owsbench.methods.posthoc import MSP, Entropy
from owsbench.methods.sml import _accumulate, _dilate_cross
from owsbench.metrics import AnomalyMetric, SemanticMetric
from owsbench.precision import inference_autocast
from owsbench.segmenters.base import SegmenterOutput


def frames(sizes: list[tuple[int, int]]) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [
        Frame(
            f"f{i}",
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            rng.integers(0, 3, (h, w), dtype=np.uint8),
            rng.choice(np.array([0, 1, 255], np.uint8), (h, w)),
            rng.integers(0, 4, (h, w), dtype=np.int32),
        )
        for i, (h, w) in enumerate(sizes)
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_loaded_batches_keep_order_and_arrays(workers):
    made = frames([(8, 12), (8, 12), (6, 10), (8, 12), (8, 12)])
    batches = list(loaded_batches(ListSplit(made), 3, workers))
    runs = [run for batch in batches for run in batch]
    assert [[f.frame_id for f in run] for run, _ in runs] == [["f0", "f1"], ["f2"], ["f3", "f4"]]
    loaded = [f for run, _ in runs for f in run]
    for want, got in zip(made, loaded, strict=True):
        for name in ("image", "semantic", "anomaly", "instances"):
            assert isinstance(getattr(got, name), np.ndarray)
            assert np.array_equal(getattr(got, name), getattr(want, name))
    for run, pixels in runs:
        assert pixels.dtype == torch.uint8
        assert torch.equal(pixels, torch.from_numpy(np.stack([f.image for f in run])))


class BrokenSplit(Split):
    name = "val"

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Frame:
        if index == 2:
            raise BadInput("broken/val: frame 2.png is not a PNG")
        return frames([(4, 4)])[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_errors_are_raised_as_they_were(workers):
    with pytest.raises(BadInput) as err:
        list(loaded_batches(BrokenSplit(), 1, workers))
    assert str(err.value) == "broken/val: frame 2.png is not a PNG"


def test_class_max_is_argmax_with_first_index_on_ties():
    logits = torch.randn(2, 5, 7, 9)
    logits[:, 3] = logits[:, 1]  # exact ties: the first index wins, as argmax
    logits[0, :, 0, 0] = 1.0
    output = SegmenterOutput(logits)
    values, indices = output.class_max()
    assert torch.equal(indices, logits.argmax(1)) and torch.equal(values, logits.amax(1))
    assert output.class_max()[1] is indices  # computed once
    assert output.log_probabilities() is output.log_probabilities()
    half = SegmenterOutput(logits.to(torch.bfloat16))
    assert half.class_max()[0].dtype == torch.float32


def test_scores_share_one_log_softmax(monkeypatch):
    calls = []
    original = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda *a, **k: calls.append(1) or original(*a, **k))
    output = SegmenterOutput(torch.randn(1, 4, 5, 6))
    MSP().score(output), Entropy().score(output)
    assert len(calls) == 1


def test_first_nonfinite_by_one_sum_with_the_exact_fallback():
    big = torch.full((3, 4, 4), 3e38)  # finite, but the sum overflows: checked element-wise
    assert first_nonfinite(big) is None
    big[2, 1, 1] = float("nan")
    assert first_nonfinite(big) == 2
    maps = torch.zeros(3, 4, 4)
    maps[1, 0, 0] = float("-inf")
    assert first_nonfinite(maps) == 1 and first_nonfinite(torch.zeros(2, 3)) is None


def anomaly_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(50_000, generator=g) < 0.05).to(torch.uint8)
    labels[:500] = 255
    scores = torch.randn(50_000, generator=g) * 30 + 3 * labels
    scores[10:20], scores[20], scores[21], scores[600] = -0.0, float("inf"), float("-inf"), 0.0
    return scores.to(dtype), labels


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_torch_counting_equals_numpy_counting(dtype, device):
    scores, labels = anomaly_inputs(dtype)
    plain, kernel = AnomalyMetric(), AnomalyMetric()
    plain.update(scores.numpy(), labels.numpy())
    kernel.update_tensor(scores.to(device), labels.numpy())
    kernel.update_tensor(scores[:100].reshape(10, 10).to(device), labels[:100].reshape(10, 10))
    plain.update(scores[:100].numpy(), labels[:100].numpy())
    a, b = plain.state_dict(), kernel.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert plain.compute() == kernel.compute()


def test_torch_counting_refuses_bad_input_and_keeps_counts():
    scores, labels = anomaly_inputs(torch.float32)
    metric = AnomalyMetric()
    metric.update_tensor(scores, labels)
    before = metric.state_dict()
    bad = scores.clone()
    bad[5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update_tensor(bad, labels)
    wrong = labels.clone()
    wrong[7] = 2
    with pytest.raises(ValueError, match="labels must be 0"):
        metric.update_tensor(scores, wrong)
    with pytest.raises(ValueError, match="shape"):
        metric.update_tensor(scores[:-1], labels)
    after = metric.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_confusion_equals_numpy_confusion(device):
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(-1, 7, (40, 50), generator=g)  # -1 and 5, 6: outside the 5 classes
    label = torch.randint(0, 5, (40, 50), generator=g).to(torch.uint8)
    label[:3] = 255
    plain, kernel = SemanticMetric(5), SemanticMetric(5)
    plain.update(pred.numpy(), label.numpy())
    kernel.update_tensor(pred.to(device), label.numpy())
    assert np.array_equal(plain.confusion, kernel.confusion)
    assert plain.compute() == kernel.compute()
    label[5, 5] = 9
    with pytest.raises(ValueError, match="labels must be"):
        kernel.update_tensor(pred, label)


def test_sml_morphology_equals_the_pooling_definitions():
    x = (torch.rand(2, 1, 17, 23) > 0.8).float() * torch.randn(2, 1, 17, 23)
    vertical = F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
    horizontal = F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1))
    assert torch.equal(_dilate_cross(x), torch.maximum(vertical, horizontal))
    terms = [torch.randn(3, 4) for _ in range(9)]
    assert torch.equal(_accumulate(iter(terms)), sum(terms))


class TinySegmenter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        return SegmenterOutput(self.conv(images))


def test_precision_autocasts_only_the_forward():
    model = TinySegmenter().eval()
    images = torch.rand(1, 3, 8, 8)
    with inference_autocast(images.device, "bf16"):
        assert model(images).logits.dtype == torch.bfloat16
    with inference_autocast(images.device, "fp32"):
        assert model(images).logits.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        inference_autocast(images.device, "int8")
    split = ListSplit(frames([(8, 8), (8, 8)]))
    group = PosthocGroup(model, {"msp": MSP()})
    results = {}
    for precision in ("fp32", "bf16"):
        metrics, _ = evaluate_split(
            group, split, 3, 2, torch.device("cpu"), False, precision=precision
        )
        results[precision] = metrics["msp"].anomaly.compute()
    assert all(np.isfinite(v) for v in results["bf16"].values())
