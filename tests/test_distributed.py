"""Data-parallel training on CPU (gloo, 2 processes forked by the loop): one optimiser step of
2 processes x batch 4 equals one of 1 process x batch 8 (a model without batch norm, a mean
loss over equally many pixels per image, SGD so the step is proportional to the gradient); a
segmenter fit with 2 processes completes; a batch that does not split is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit, TinySplit, scene

from owsbench.cli import main
from owsbench.datasets.base import Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.anomaly_head import AnomalyHeadStats
from owsbench.methods.base import FitContext
from owsbench.methods.dual_head import DualHead
from owsbench.methods.rba_oe import RbAOE
from owsbench.results import read_rows
from owsbench.segmenters.erfnet import ERFNetConfig, ERFNetSegmenter
from owsbench.segmenters.smp_models import SegmenterConfig, SmpSegmenter
from owsbench.training.batches import Batch
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.segmenter_loop import run_supervised
from owsbench.training.supervision import FullSupervision, Supervision


class PixelClassifier(Supervision):
    """A 3x3 convolution to 3 classes, cross-entropy (mean over every pixel: no void)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def batch(self, items: list, rng: np.random.Generator) -> Batch:
        images = torch.stack([torch.from_numpy(rng.random((3, 8, 8), np.float32)) for _ in items])
        labels = torch.from_numpy(rng.integers(0, 3, (len(items), 8, 8)))
        return Batch(images=images, labels=labels)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.model(batch.images)
        return {"total": torch.nn.functional.cross_entropy(logits, batch.labels)}


def one_step(processes: int) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    recipe = Recipe(steps=1, batch_size=8, lr=0.5, weight_decay=0.0, optimizer="sgd")
    loop = Loop(recipe, torch.device("cpu"), Streams.seeded(0), progress=False,
                processes=processes)  # fmt: skip
    log = loop.run(model.parameters(), list(range(16)), PixelClassifier(model))
    return model, log.loss


def test_two_processes_of_batch_4_take_the_step_of_one_process_of_batch_8():
    single, single_loss = one_step(1)
    double, double_loss = one_step(2)
    torch.manual_seed(0)
    start = torch.nn.Conv2d(3, 3, 3, padding=1)
    assert not torch.allclose(start.weight, single.weight)  # the step moved the weights
    for a, b in zip(single.parameters(), double.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert double_loss == pytest.approx(single_loss, rel=1e-5)  # the mean over both ranks


def test_a_segmenter_fit_on_two_processes_completes(tmp_path):
    config = ERFNetConfig(steps=3, batch_size=4, crop=(32, 48))
    torch.manual_seed(0)
    model = ERFNetSegmenter(config, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context = FitContext(0, torch.device("cpu"), tmp_path, progress=False, processes=2)
    log, _ = run_supervised(model, TinySplit(), config, context, FullSupervision(model, config),
                            "full")  # fmt: skip
    assert len(log.loss) == 3 and all(np.isfinite(log.loss))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_owsbench_run_with_two_processes_per_job(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text("segmenter: {steps: 2, batch_size: 4}\n")
    argv = [
        "run", "--methods", "msp", "--datasets", "synthstreets", "--preset", "quick",
        "--config", str(tmp_path / "tiny.yaml"), "--device", "cpu", "--no-progress",
        "--procs-per-job", "2", "--data-root", str(tmp_path / "data"),
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    main(argv)
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert row["method"] == "msp" and 0 <= row["metrics"]["AP"] <= 1


def test_a_batch_that_does_not_split_over_the_processes_is_bad_input():
    recipe = Recipe(steps=1, batch_size=5, lr=0.1, weight_decay=0.0)
    with pytest.raises(BadInput, match="does not split over 2 processes"):
        Loop(recipe, torch.device("cpu"), Streams.seeded(0), processes=2)


def head_fits(processes: int) -> AnomalyHeadStats:
    """A stats-only anomaly head fitted for 2 steps of batch 4 over a frozen segmenter."""
    torch.manual_seed(0)
    segmenter = SmpSegmenter(SegmenterConfig(), num_classes=19).eval()
    config = AnomalyHeadStats.Config(steps=2, batch_size=4, crop=(64, 64), paste_probability=1.0)
    method = AnomalyHeadStats(config, segmenter=segmenter)
    frames = ListSplit([Frame(f"f{s}", *scene(s)) for s in range(4)])
    context = FitContext(0, torch.device("cpu"), None, progress=False, processes=processes,
                         outlier_source=outlier_exposure_source())  # fmt: skip
    method.fit(frames, context)
    return method


def test_a_data_parallel_method_trains_on_two_processes_and_counts_the_global_batch():
    single, double = head_fits(1), head_fits(2)
    assert AnomalyHeadStats.data_parallel and DualHead.data_parallel and RbAOE.data_parallel
    assert len(double.train_log.loss) == 2 and all(np.isfinite(double.train_log.loss))
    assert double.fit_report["oe_anomaly_pixel_fraction"] > 0  # pastes of both slices counted
    assert double.fit_report["oe_anomaly_pixel_fraction"] == pytest.approx(
        single.fit_report["oe_anomaly_pixel_fraction"], rel=1e-12
    )
    torch.manual_seed(0)  # the fit's seed: the head as it was before training
    initial = double.build_head(None).state_dict()
    trained = double.head.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    assert all(torch.isfinite(v).all() for v in trained.values() if v.is_floating_point())
    assert double.loop_processes(FitContext(0, torch.device("cpu"), None, processes=2)) == 2


def test_a_method_with_cross_batch_statistics_trains_on_one_process():
    from owsbench.methods.contmav import ContMAV

    assert not ContMAV.data_parallel
    assert ContMAV().loop_processes(FitContext(0, torch.device("cpu"), None, processes=4)) == 1
