"""Weak supervisions: partial CE, CAMs, the weak-label cache, hybrids, planning checks, costs."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit

from owsbench.costs import annotation_cost, annotation_costs, relative_costs
from owsbench.datasets.base import VOID, Frame, LabelTraits
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.metrics import ObjectCompleteness
from owsbench.segmenters.base import SegmenterConfig
from owsbench.segmenters.smp_models import SmpSegmenter
from owsbench.training.losses import semantic_ce
from owsbench.training.regimes import check_supervision
from owsbench.training.segmenter import train_segmenter
from owsbench.training.weak import (
    CombinedSupervision,
    PointsSupervision,
    cam_pseudo_labels,
    normalised_cams,
    tag_loss,
)

ROAD = LabelTraits(provides_instances=True, thing_classes=(1,), background_class=None)


def frames(count: int = 2) -> ListSplit:
    """Frames with stuff class 0 (bottom), two objects of thing class 1 and a void strip."""
    out = []
    for i in range(count):
        semantic = np.zeros((32, 48), np.uint8)
        instances = np.zeros((32, 48), np.int32)
        semantic[4:12, 4:14], instances[4:12, 4:14] = 1, 1
        semantic[4:14, 30:44], instances[4:14, 30:44] = 1, 2
        semantic[:2] = VOID
        image = np.random.default_rng(i).integers(0, 255, (32, 48, 3), dtype=np.uint8)
        out.append(Frame(f"f{i}", image, semantic, None, instances))
    return ListSplit(out)


def context(tmp_path, fingerprint: str | None = None) -> FitContext:
    return FitContext(
        0, torch.device("cpu"), tmp_path, progress=False, train_fingerprint=fingerprint,
        label_traits=ROAD,
    )  # fmt: skip


def test_partial_ce_ignores_unlabelled_pixels():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), VOID)
    labels[0, 1, 2] = 2
    loss = semantic_ce(logits, labels)
    expected = -torch.log_softmax(logits[0, :, 1, 2], 0)[2]
    assert torch.allclose(loss, expected)
    loss.backward()
    touched = logits.grad.abs().sum(1)[0] > 0
    assert touched.sum() == 1 and touched[1, 2]


def test_cams_are_normalised_per_present_class_and_thresholded():
    logits = torch.zeros(3, 2, 3)
    logits[0] = torch.tensor([[4.0, 2.0, -1.0], [0.0, 0.4, 1.0]])
    logits[1] = 10.0  # class 1 absent from the image: its CAM is zeroed
    logits[2] = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    cams = normalised_cams(logits, torch.tensor([True, False, True]))
    assert torch.allclose(cams[0].max(), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(cams[0, 0, 1], torch.tensor(0.5), atol=1e-4)
    assert cams[0, 0, 2] == 0 and cams[1].abs().sum() == 0
    labels = cam_pseudo_labels(cams, 0.15, None)
    assert labels.tolist() == [[0, 0, 2], [VOID, VOID, 0]]
    assert cam_pseudo_labels(cams, 0.15, 1)[1, 0] == 1  # background class below the threshold


def test_tag_loss_is_the_multilabel_soft_margin_of_the_global_average():
    logits = torch.randn(2, 3, 5, 5)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pooled = logits.mean(dim=(2, 3))
    manual = -(tags * torch.nn.functional.logsigmoid(pooled))
    manual -= (1 - tags) * torch.nn.functional.logsigmoid(-pooled)
    assert torch.allclose(tag_loss(logits, tags), manual.mean(1).mean())


def test_weak_labels_are_cached_seeded_and_never_on_void(tmp_path):
    config = SegmenterConfig(supervision="points", points_per_object=3)
    supervision = PointsSupervision(SmpSegmenter(config, 2), config)
    supervision.prepare(frames(), context(tmp_path, "fp"))
    store = supervision.parts[0].store
    folders = list((tmp_path / "weak").iterdir())
    assert len(folders) == 1 and (folders[0] / "manifest.json").exists()
    maps = [store.get(f"f{i}") for i in range(2)]
    for labels, frame in zip(maps, frames(), strict=True):
        assert not (labels[frame.semantic == VOID] != VOID).any()
        assert (labels != VOID).sum() == 3 * 3  # three regions, three points each
        assert (labels[labels != VOID] == frame.semantic[labels != VOID]).all()
    again = PointsSupervision(SmpSegmenter(config, 2), config)
    again.prepare(frames(), context(tmp_path, "fp"))
    assert np.array_equal(again.parts[0].store.get("f0"), maps[0])
    assert len(list((tmp_path / "weak").iterdir())) == 1  # the cached labels were reused
    other = dataclasses.replace(config, weak_label_seed=1)
    third = PointsSupervision(SmpSegmenter(other, 2), other)
    third.prepare(frames(), context(tmp_path, None))  # no fingerprint: in memory only
    assert len(list((tmp_path / "weak").iterdir())) == 1
    assert not np.array_equal(third.parts[0].store.get("f0"), maps[0])


def test_weak_labels_without_instance_ids_are_bad_input(tmp_path):
    split = ListSplit([dataclasses.replace(f, instances=None) for f in frames(1)])
    with pytest.raises(BadInput, match="need instance ids; frame f0 has none"):
        weak_labels_of("boxes", split, tmp_path)


def weak_labels_of(regime: str, split, tmp_path):
    config = SegmenterConfig(supervision=regime)
    supervision = CombinedSupervision(SmpSegmenter(config, 2), config)
    supervision.prepare(split, context(tmp_path))
    return supervision


def test_hybrid_logs_each_part_and_weights_the_total(tmp_path):
    weights = {"tags": 0.5, "points": 2.0}
    config = SegmenterConfig(
        supervision="tags+points", supervision_weights=weights, steps=2, batch_size=2,
        crop=(32, 32),
    )  # fmt: skip
    model = SmpSegmenter(config, 2)
    log, report = train_segmenter(model, frames(), config, context(tmp_path))
    assert set(log.scalars) == {"tags", "points"}
    for step in range(2):
        total = 0.5 * log.scalars["tags"][step] + 2.0 * log.scalars["points"][step]
        assert log.loss[step] == pytest.approx(total, rel=1e-5)
    assert 0 < report["points_labelled_fraction"] < 0.01


def test_tags_alone_fits_a_classifier_then_trains_on_its_pseudo_masks(tmp_path):
    config = SegmenterConfig(supervision="tags", steps=2, batch_size=2, crop=(32, 32))
    log, report = train_segmenter(SmpSegmenter(config, 2), frames(), config, context(tmp_path))
    assert len(log.loss) == 2 and np.isfinite(log.loss).all()
    assert np.isfinite(report["tags_classifier_final_loss"])
    assert 0 < report["tags_labelled_fraction"] <= 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"supervision": "point"}, "unknown supervision 'point'; did you mean points"),
        ({"supervision": "full+points"}, "'full' cannot be part of a '+' combination"),
        ({"supervision": "points+points"}, "names a regime twice"),
        (
            {"supervision": "tags+points", "supervision_weights": {"boxes": 1.0}},
            "supervision_weights names 'boxes', which is not in 'tags+points'",
        ),
        ({"supervision": "points", "points_per_object": 0}, "points_per_object must be"),
        ({"supervision": "boxes", "box_inner_fraction": 1.5}, "box_inner_fraction must be"),
    ],
)
def test_bad_supervision_configs_are_refused(changes, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        check_supervision(SegmenterConfig(**changes), ROAD, "synthstreets")


def test_a_regime_needing_instances_on_a_dataset_without_is_refused():
    check_supervision(SegmenterConfig(supervision="tags"), LabelTraits(), "streethazards")
    with pytest.raises(BadInput, match="'scribbles' needs instance ids, which streethazards"):
        check_supervision(SegmenterConfig(supervision="scribbles"), LabelTraits(), "streethazards")


def test_cli_refuses_an_unknown_regime_with_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "msp", "--preset", "quick",
         "--supervision", "full,scribble", "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("owsbench: error: unknown supervision")
    assert not (tmp_path / "out").exists()


def test_costs_sum_over_parts_and_take_the_config_file_overrides():
    table = relative_costs({"points": 3})
    assert annotation_cost("tags+points", table) == 4.0
    assert annotation_costs("full", relative_costs()) == {"relative": 30.0, "seconds": 239.7}
    assert annotation_cost("left-half", table) is None
    with pytest.raises(BadInput, match="annotation_costs: unknown regime 'point'"):
        relative_costs({"point": 1})


def test_object_completeness_is_the_share_of_each_object_predicted_as_its_class():
    metric = ObjectCompleteness(3)
    label = np.array([[1, 1, 1, 1], [2, 2, VOID, 0]], np.uint8)
    ids = np.array([[1, 1, 2, 2], [3, 3, 3, 0]])
    pred = np.array([[1, 0, 1, 1], [2, 0, 2, 2]])
    metric.update(pred, label, ids)
    values = metric.compute()
    # objects: 1 -> 1/2, 2 -> 2/2 (class 1); 3 -> 1/2 (class 2, its void pixel left out)
    assert values["object_completeness"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    per_class = values["per_class_completeness"]
    assert np.isnan(per_class[0]) and per_class[1] == 0.75 and per_class[2] == 0.5


def test_tag_pseudo_masks_are_cached_per_classifier(tmp_path):
    config = SegmenterConfig(supervision="tags", steps=1, batch_size=2, crop=(32, 32))
    for seed in (0, 1, 0):
        ctx = dataclasses.replace(context(tmp_path, "fp"), seed=seed)
        train_segmenter(SmpSegmenter(config, 2), frames(), config, ctx)
    assert len(list((tmp_path / "fits").glob("tags-classifier-*.pt"))) == 2
    assert len(list((tmp_path / "weak").glob("tags-*"))) == 2  # one per classifier, reused


def test_reports_show_the_regime_tables_only_with_two_or_more_regimes():
    from owsbench.html_report import render_html
    from owsbench.report import markdown
    from owsbench.tables import leaderboard_tables

    def row(supervision: str, seed: int, miou: float) -> dict:
        return {
            "method": "msp", "method_name": "msp", "segmenter": "deeplabv3plus",
            "supervision": supervision, "annotation_cost": {"relative": 2.0, "seconds": 22.1},
            "dataset": "d", "split": "test", "seed": seed,
            "metrics": {"AP": 0.1, "mIoU": miou, "per_class_iou": {"road": miou}},
        }  # fmt: skip

    one = [row("full", 0, 0.5), row("full", 1, 0.7)]
    assert "supervision regimes" not in markdown(one)
    two = [*one, row("points", 0, 0.2), row("points", 1, 0.4)]
    text = markdown(two)
    assert "msp (points)" in text and "d / test: supervision regimes" in text
    assert "30.00 ± 14.14" in text  # points' mIoU: mean and std over the two seeds
    page = render_html(two, leaderboard_tables(two), [])
    assert '<section id="supervision">' in page and "d / test: supervision regimes" in page
    assert '<section id="supervision">' not in render_html(one, leaderboard_tables(one), [])
