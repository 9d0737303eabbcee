"""Non-finite scores: a method that returns NaN or ±inf on a frame is named on one line with the
dataset/split and the frame, its row is not written, the other rows are, and the run exits 1."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dataset_fixtures import ListSplit

from owsbench.catalog import METHODS
from owsbench.cli import cli
from owsbench.datasets.base import Frame
from owsbench.evaluate import PosthocGroup, TrainedGroup, evaluate_split, first_nonfinite
from owsbench.methods.base import Method, PosthocMethod, Prediction
from owsbench.segmenters.base import SegmenterOutput

BAD_FRAME = 3  # index in the split of the frame the toy method spoils


class NanOnOneFrame(PosthocMethod):
    """Toy post-hoc method: 1 - max softmax, but NaN on the split's frame ``BAD_FRAME``."""

    name: ClassVar[str] = "nan-toy"
    summary: ClassVar[str] = "toy: MSP with NaN on one frame (test only)"

    def start_split(self) -> None:
        self.seen = 0

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        scores = 1 - outputs.logits.softmax(1).amax(1)
        first, self.seen = self.seen, self.seen + len(scores)
        if first <= BAD_FRAME < self.seen:
            scores = scores.clone()
            scores[BAD_FRAME - first, 0, 0] = float("nan")
        return scores


@pytest.fixture
def nan_toy():
    METHODS.register_object("nan-toy", NanOnOneFrame, NanOnOneFrame.summary)
    yield
    METHODS.unregister("nan-toy")


def test_a_nan_method_loses_its_row_the_others_keep_theirs_and_the_run_exits_1(nan_toy, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["run", "--methods", "msp,nan-toy", "--preset", "quick", "--config", str(config),
         "--device", "cpu", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
         "--no-progress"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    expected = (
        f"owsbench: method nan-toy returned non-finite anomaly scores on synthstreets/test "
        f"frame test_{BAD_FRAME:04d}; its row is not written"
    )
    assert [line for line in result.stderr.splitlines() if "non-finite" in line] == [expected]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["method"] for row in rows] == ["msp"]
    assert 0 <= rows[0]["metrics"]["AP"] <= 1
    assert "nan-toy" not in (out / "leaderboard.md").read_text()


# ------------------------------------------------------------------ evaluation, unit by unit


def frames(count: int = 4) -> list[Frame]:
    rng = np.random.default_rng(0)
    anomaly = np.zeros((8, 8), np.uint8)
    anomaly[2:4, 2:4] = 1
    return [
        Frame(f"f{i}", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), None, anomaly)
        for i in range(count)
    ]


class ConstantSegmenter(torch.nn.Module):
    """Two-class logits from the red channel; ``inf`` on batch item ``bad`` when set."""

    def __init__(self, bad: int | None = None) -> None:
        super().__init__()
        self.bad = bad

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        logits = torch.stack([images[:, 0], 1 - images[:, 0]], 1)
        if self.bad is not None:
            logits[self.bad, 1, 0, 0] = float("inf")
        return SegmenterOutput(logits=logits)


class Posthoc(PosthocMethod):
    name: ClassVar[str] = "toy"

    def __init__(self, spoil: float | None = None) -> None:
        super().__init__()
        self.spoil = spoil

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        scores = outputs.logits[:, 0].clone()
        if self.spoil is not None:
            scores[-1, 1, 1] = self.spoil  # the last frame of each batch
        return scores


def evaluate(group, count: int = 4, batch_size: int = 2):
    results, _ = evaluate_split(
        group, ListSplit(frames(count)), 2, batch_size, torch.device("cpu"), progress=False
    )
    return results


def test_first_nonfinite_finds_the_first_bad_item():
    maps = torch.zeros(3, 4, 4)
    assert first_nonfinite(maps) is None
    maps[2, 0, 0], maps[1, 3, 3] = float("-inf"), float("nan")
    assert first_nonfinite(maps) == 1
    assert first_nonfinite(torch.zeros(2, 3, dtype=torch.long)) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_only_the_method_with_non_finite_scores_is_flagged(value):
    group = PosthocGroup(ConstantSegmenter(), {"good": Posthoc(), "bad": Posthoc(value)})
    results = evaluate(group)
    assert results["good"].nonfinite is None
    assert results["bad"].nonfinite == ("anomaly scores", "f1")  # first batch, last frame
    assert results["good"].anomaly.num_positives == 4 * 4  # every frame measured


def test_non_finite_logits_flag_every_method_of_the_group():
    group = PosthocGroup(ConstantSegmenter(bad=0), {"a": Posthoc(), "b": Posthoc()})
    results = evaluate(group, count=3, batch_size=3)
    assert results["a"].nonfinite == results["b"].nonfinite == ("semantic logits", "f0")


class InfLogits(Method):
    """A trained-method stand-in whose logits hold +inf on the second frame of a batch."""

    name: ClassVar[str] = "inf-logits"

    def predict(self, images: torch.Tensor) -> Prediction:
        logits = torch.zeros(len(images), 2, *images.shape[-2:])
        if len(images) > 1:
            logits[1, 0, 0, 0] = float("inf")
        return Prediction(logits.argmax(1), logits[:, 0], logits=logits)


def test_a_trained_method_with_non_finite_logits_is_flagged():
    results = evaluate(TrainedGroup("inf-logits", InfLogits()), count=4, batch_size=4)
    assert results["inf-logits"].nonfinite == ("semantic logits", "f1")


def test_the_samples_leave_out_a_flagged_method():
    from owsbench.evaluate import SampleCollector

    collector = SampleCollector()
    group = PosthocGroup(ConstantSegmenter(), {"good": Posthoc(), "bad": Posthoc(float("nan"))})
    evaluate_split(
        group, ListSplit(frames()), 2, 2, torch.device("cpu"), False, observers=(collector,)
    )
    arrays = collector.arrays()
    assert "score:good" in arrays and "score:bad" not in arrays
