"""The training package: one loop (log, hooks, clipping, validation, seeding) and supervisions."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from dataset_fixtures import TinySplit

from owsbench.cache import default_data_root
from owsbench.catalog import SUPERVISIONS
from owsbench.config import PRESETS, RunConfig
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.runner import Runner
from owsbench.segmenters.base import SegmenterConfig, SegmenterOutput
from owsbench.segmenters.smp_models import SmpSegmenter
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.loop import Hook, Loop, Recipe, Streams
from owsbench.training.segmenter import train_segmenter
from owsbench.training.supervision import SegmenterSupervision, Supervision


class Regression(Supervision):
    """Fit ``w`` to the items (floats): loss ``(w - x)^2``; an ``odd`` term on odd steps only."""

    def __init__(self, weight: torch.nn.Parameter) -> None:
        self.weight = weight
        self.step = 0

    def batch(self, items: list, rng: np.random.Generator) -> Batch:
        return Batch(images=torch.tensor(items, dtype=torch.float32))

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        terms = {"total": ((self.weight - batch.images) ** 2).mean()}
        if self.step % 2:
            terms["odd"] = terms["total"].detach() * 2
        self.step += 1
        return terms


class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before(self, loop: Loop) -> None:
        self.calls.append("before")

    def on_step(self, loop: Loop, step: int, terms: dict[str, torch.Tensor]) -> None:
        self.calls.append(f"step{step}")

    def after(self, loop: Loop) -> None:
        self.calls.append("after")


def run_regression(seed: int = 0, **recipe) -> tuple[torch.nn.Parameter, Loop, Recorder]:
    weight = torch.nn.Parameter(torch.zeros(()))
    values = {"steps": 6, "batch_size": 2, "lr": 0.1, "weight_decay": 0.0, **recipe}
    hooks = Recorder()
    loop = Loop(
        Recipe(**values), torch.device("cpu"), Streams.seeded(seed), hooks=[hooks],
        validate=lambda: {"w": float(weight.detach())}, validate_every=4, progress=False,
    )  # fmt: skip
    loop.run([weight], [1.0, 2.0, 3.0, 4.0, 5.0], Regression(weight))
    return weight, loop, hooks


def test_loop_logs_every_step_runs_hooks_in_order_and_validates_periodically():
    weight, loop, hooks = run_regression()
    log = loop.log
    assert len(log.loss) == len(log.lr) == 6
    assert log.lr[0] == pytest.approx(0.1) and log.lr[-1] < log.lr[1]  # warm-up, then decay
    assert hooks.calls == ["before", *(f"step{s}" for s in range(6)), "after"]
    odd = log.scalars["odd"]  # absent on even steps: NaN there, aligned with the steps
    assert len(odd) == 6 and all(math.isnan(v) for v in odd[::2])
    assert not any(math.isnan(v) for v in odd[1::2])
    assert [v["step"] for v in log.validation] == [4, 6]  # every 4 steps and at the end
    assert float(weight.detach()) > 0  # it moved towards the data
    assert log.meta()["validation"] == log.validation


def test_loop_is_seeded_by_its_streams():
    first, _, _ = run_regression(seed=3)
    again, _, _ = run_regression(seed=3)
    other, _, _ = run_regression(seed=4)
    assert float(first.detach()) == float(again.detach())
    assert float(first.detach()) != float(other.detach())  # another data order


def test_gradient_clipping_bounds_each_sgd_step():
    unclipped, _, _ = run_regression(steps=1, warmup_fraction=0.0, optimizer="sgd", momentum=0.0)
    clipped, _, _ = run_regression(
        steps=1, warmup_fraction=0.0, optimizer="sgd", momentum=0.0, grad_clip=0.01
    )
    assert abs(float(unclipped.detach())) > 0.1  # lr 0.1 times a gradient of several units
    assert abs(float(clipped.detach())) == pytest.approx(0.1 * 0.01, rel=1e-5)


def test_an_unknown_optimizer_is_bad_input():
    with pytest.raises(BadInput, match="unknown optimizer 'adam'"):
        run_regression(optimizer="adam")


def test_label_range_check_names_the_bad_label():
    labels = torch.tensor([[0, 1, 255, 254]])
    check_label_range(labels, 2, "x", 254)
    with pytest.raises(BadInput, match="label 254 outside 0..1"):
        check_label_range(labels, 2, "x")


def test_full_supervision_trains_a_segmenter_and_logs_validation_miou(tmp_path):
    config = SegmenterConfig(steps=3, batch_size=2, crop=(32, 64), validate_every=2)
    model = SmpSegmenter(config, num_classes=2)
    context = FitContext(0, torch.device("cpu"), tmp_path, progress=False, validation=TinySplit())
    log, _ = train_segmenter(model, TinySplit(), config, context)
    assert len(log.loss) == 3 and all(np.isfinite(log.loss))
    assert [v["step"] for v in log.validation] == [2, 3]
    assert all(0.0 <= v["mIoU"] <= 1.0 for v in log.validation)
    assert not model.training
    for every, steps in ((None, 4), (0, None)):  # default: four times per fit; 0: never
        config = SegmenterConfig(steps=8, batch_size=2, crop=(32, 64), validate_every=every)
        log, _ = train_segmenter(SmpSegmenter(config, 2), TinySplit(), config, context)
        assert [v["step"] for v in log.validation] == ([2, 4, 6, 8] if steps else [])


def test_an_unknown_supervision_is_bad_input_with_a_suggestion(tmp_path):
    config = SegmenterConfig(steps=1, batch_size=2, supervision="ful")
    with pytest.raises(BadInput, match="unknown supervision 'ful'; did you mean full"):
        context = FitContext(0, torch.device("cpu"), tmp_path, progress=False)
        train_segmenter(SmpSegmenter(config, 2), TinySplit(), config, context)


# -- the walk-through of docs/architecture.md: a toy supervision the runner trains with ----------
class LeftHalf(SegmenterSupervision):
    """Toy: cross-entropy on the left half of each image only (the right half ignored)."""

    name: ClassVar[str] = "left-half"

    def output_losses(self, output: SegmenterOutput, batch: Batch) -> dict[str, torch.Tensor]:
        width = output.logits.shape[-1]
        ce = torch.nn.functional.cross_entropy(
            output.logits[..., : width // 2], batch.labels[..., : width // 2], ignore_index=255
        )
        return {"total": ce, "left_ce": ce}


@pytest.fixture
def left_half():
    SUPERVISIONS.register_object("left-half", LeftHalf, "toy: CE on the left half (test only)")
    yield
    SUPERVISIONS.unregister("left-half")


def test_the_runner_trains_with_a_registered_supervision(left_half, tmp_path):
    preset = dataclasses.replace(PRESETS["quick"], segmenter={"steps": 2, "batch_size": 2})
    runs = {}
    for supervision in ("full", "left-half"):
        config = RunConfig(
            methods=["msp"], datasets=["synthstreets"], seeds=[0], preset=preset, device="cpu",
            data_root=default_data_root(), out=tmp_path / supervision, cache_dir=tmp_path / "cache",
            progress=False, segmenter_overrides={"supervision": supervision},
        )  # fmt: skip
        (runs[supervision],) = Runner(config).run()
    toy, full = runs["left-half"], runs["full"]
    assert toy["segmenter_config"]["supervision"] == "left-half"
    assert full["segmenter_config"]["supervision"] == "full"
    assert toy["checkpoint_sha256"] != full["checkpoint_sha256"]  # its own fit (cache key)
    assert toy["config_hash"] != full["config_hash"]
    fits = sorted((tmp_path / "cache" / "fits").glob("segmenter-*.json"))
    assert len(fits) == 2
