"""Metric specs: every value a row can carry has one, and every consumer (row builder, tables,
regression gate, catalog, `owsbench list metrics`) reads them."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from owsbench import measure
from owsbench.cache import default_data_root
from owsbench.catalog import METRICS
from owsbench.check import compare, parse_tolerances
from owsbench.cli import main
from owsbench.config import PRESETS, RunConfig
from owsbench.errors import BadInput
from owsbench.evaluate import SplitResult
from owsbench.metrics import (
    AnomalyMetric,
    ComponentMetric,
    DiscoveryMetric,
    ObjectCompleteness,
    SemanticMetric,
)
from owsbench.metrics.per_image import PerImageAnomalyMetric
from owsbench.metrics.specs import (
    MetricSpec,
    all_specs,
    has_metric,
    metric_names,
    metric_spec,
    register_metric,
    unregister_metric,
)
from owsbench.report import markdown
from owsbench.runner import Runner
from owsbench.score_eval import component_metrics
from owsbench.score_maps import write_score_map
from owsbench.tables import leaderboard_tables

SCORES = np.array([0.9, 0.8, 0.3, 0.1], np.float32)
LABELS = np.array([1, 0, 1, 0], np.uint8)
# descending thresholds: (TP, FP) = (1, 0), (1, 1), (2, 1), (2, 2); P = N = 2
AP = 0.5 * 1 + 0.5 * 2 / 3  # sum_k (R_k - R_(k-1)) P_k
AUROC = 0.75  # trapezoid over (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
FPR95 = 0.5  # first threshold with TPR >= 0.95 is 0.3: FP 1 of 2


def anomaly() -> AnomalyMetric:
    metric = AnomalyMetric()
    metric.update(SCORES, LABELS)
    return metric


def semantic() -> SemanticMetric:
    metric = SemanticMetric(3)
    metric.update(np.array([0, 1, 1]), np.array([0, 1, 0]))  # IoU 1/2, 1/2, class 2 never seen
    return metric


def discovery() -> DiscoveryMetric:
    metric = DiscoveryMetric()
    # one GT object of 2 pixels, one of them flagged with id 0; nothing else flagged
    metric.update(np.array([[0, -1], [-1, -1]]), np.array([[1, 1], [0, 0]]))
    return metric


def components() -> ComponentMetric:
    metric = ComponentMetric(0.5, min_pred_size=0, min_gt_size=0)
    metric.update(np.array([[0.9, 0.9, 0.0], [0.0, 0.0, 0.8]]), np.array([[1, 1, 0], [0, 0, 0]]))
    return metric


def row(method: str, seed: int = 0, **metrics: float | None) -> dict:
    values = {"AP": 0.5, "AUROC": 0.9, "FPR95": 0.3, "mIoU": 0.6, **metrics}
    return {
        "method": method, "config_hash": "h", "dataset": "synthstreets",
        "dataset_fingerprint": "f", "split": "test", "seed": seed, "preset": "quick",
        "fit_seconds": 1.0, "infer_seconds": 2.0, "metrics": values,
    }  # fmt: skip


# ------------------------------------------------------------------------------- coverage


def every_compute_output() -> dict[str, dict]:
    """What each metric class computes on tiny inputs (also where undefined)."""
    per_image = PerImageAnomalyMetric()
    per_image.update(SCORES, LABELS)
    return {
        "AnomalyMetric first": anomaly().compute("first"),
        "AnomalyMetric nearest": anomaly().compute("nearest"),
        "AnomalyMetric empty": AnomalyMetric().compute(),
        "PerImageAnomalyMetric": per_image.compute(),
        "SemanticMetric": semantic().compute(),
        "ComponentMetric": components().compute(),
        "ComponentMetric empty": ComponentMetric(0.5).compute(),
        "DiscoveryMetric": discovery().compute(),
        "DiscoveryMetric empty": DiscoveryMetric().compute(),
        "ObjectCompleteness": objects().compute(),
    }


def objects() -> ObjectCompleteness:
    metric = ObjectCompleteness(2)
    ids = np.array([[1, 1, 0], [2, 2, 0]])
    metric.update(np.array([[1, 0, 0], [1, 1, 0]]), np.array([[1, 1, 0], [1, 1, 0]]), ids)
    return metric


def test_every_computed_key_has_a_spec(tmp_path):
    outputs = every_compute_output()
    split = [SimpleNamespace(frame_id="f0", anomaly=np.array([[1, 1, 0], [0, 0, 0]], np.uint8))]
    write_score_map(tmp_path / "f0.hdf5", np.array([[0.9, 0.8, 0.1], [0.2, 0.0, 0.7]]))
    dataset = SimpleNamespace(component_size_filters=(0, 0))
    outputs["component_metrics"] = component_metrics(split, tmp_path, dataset, progress=False)
    assert outputs["component_metrics"]  # the split has anomaly pixels
    for what, values in outputs.items():
        missing = [k for k in values if not has_metric(k)]
        assert not missing, f"{what} computes {missing} without a spec"
    computed = {k for values in outputs.values() for k in values}
    assert computed == set(metric_names())  # and no spec is for a value nothing computes


def test_spec_fields_and_lookup():
    names = metric_names()
    assert names[:4] == ["AP", "AUROC", "FPR95", "mIoU"]
    assert [s.name for s in all_specs() if s.leaderboard == "always"] == names[:4]
    assert metric_spec("FPR95").higher_is_better is False and metric_spec("FPR95").arrow == "↓"
    assert metric_spec("AP").higher_is_better is True and metric_spec("AP").arrow == "↑"
    assert metric_spec("threshold").higher_is_better is None
    assert metric_spec("per_class_iou").format == "per_class"
    assert not metric_spec("per_class_iou").is_column
    assert {s.level for s in all_specs()} == {"pixel", "semantic", "component", "discovery"}
    for spec in all_specs():
        assert spec.summary and ".md" not in spec.summary  # public sources, not repo notes
        if spec.format == "percent":
            assert spec.range == (0.0, 1.0)
    with pytest.raises(BadInput, match=r"unknown metric 'FPR96'; did you mean FPR95"):
        metric_spec("FPR96")
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(metric_spec("AP"))
    with pytest.raises(ValueError, match="direction"):
        MetricSpec("x", "up", (0, 1), "percent", "pixel", "x")
    with pytest.raises(ValueError, match="table column"):
        MetricSpec("x", "higher", (0, 1), "per_class", "semantic", "x", "present")


def test_catalog_metrics_are_the_specs():
    assert METRICS.ids() == metric_names()
    for entry in METRICS:
        spec = metric_spec(entry.id)
        assert METRICS.get(entry.id) is spec
        assert entry.summary.startswith(f"{spec.arrow} {spec.level}: ")


def test_specs_import_nothing_heavy():
    code = (
        "import sys\nimport owsbench.metrics.specs\n"
        "heavy = [m for m in ('torch', 'pandas', 'scipy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# ----------------------------------------------------------------------------- row_metrics


def test_row_metrics_equals_the_runner_block():
    result = SplitResult(anomaly=anomaly(), semantic=semantic(), discovery=discovery(), frames=1)
    given = {"sIoU": 0.4, "PPV": math.nan, "mean_F1": 0.25}
    given |= {"F1_25": 0.5, "F1_50": 0.25, "F1_75": 0.0, "threshold": 0.3}
    metrics = measure.row_metrics(result, ["road", "car", "sky"], "first", given)
    expected = {
        "AP": AP, "AUROC": AUROC, "FPR95": FPR95, "mIoU": 0.5,
        "sIoU": 0.4, "PPV": None, "mean_F1": 0.25,
        "F1_25": 0.5, "F1_50": 0.25, "F1_75": 0.0, "threshold": 0.3,
        "discovery_precision": 1.0, "discovery_object_coverage": 0.5,
        "discovery_object_purity": 1.0, "discovery_novel_classes": 1,
        "discovery_objects": 1, "discovery_flagged_pixels": 1,
        "per_class_iou": {"road": 0.5, "car": 0.5, "sky": None},
    }  # fmt: skip
    assert list(metrics) == list(expected)
    assert metrics == {**expected, "AP": pytest.approx(AP, abs=1e-15)}


def test_row_metrics_per_image_and_empty_splits():
    per_image = PerImageAnomalyMetric()
    per_image.update(SCORES, LABELS)
    result = SplitResult(anomaly=anomaly(), per_image=per_image)
    metrics = measure.row_metrics(result, [], "first", {})
    assert metrics == {"AP": pytest.approx(AP), "AUROC": 0.75, "FPR95": 0.5, "mIoU": None}
    empty = measure.row_metrics(SplitResult(), [], "nearest", {})
    assert empty == {"AP": None, "AUROC": None, "FPR95": None, "mIoU": None}


def test_row_metrics_refuses_keys_without_a_spec():
    with pytest.raises(ValueError, match="'bogus', which has no spec"):
        measure.row_metrics(SplitResult(), [], "first", {"bogus": 1.0})
    with pytest.raises(ValueError, match="not in"):
        measure.row_metrics(SplitResult(), [], "first", {"AP": 1.0})  # not a component metric


# ------------------------------------------------------------------------------ toy metric

TOY = MetricSpec(
    "inlier_fraction", "higher", (0.0, 1.0), "percent", "pixel",
    "inlier pixels / labelled pixels = N / (P + N)",
)  # fmt: skip


@pytest.fixture
def toy_metric():
    """One spec + one producer registered in one place, removed again after the test."""

    @measure.producer(TOY)
    def inlier_fraction(result: SplitResult, options: measure.MeasureOptions) -> dict:
        a = result.anomaly
        total = a.num_positives + a.num_negatives
        return {"inlier_fraction": a.num_negatives / total if total else math.nan}

    yield TOY
    measure.unregister_producer("inlier_fraction")
    unregister_metric("inlier_fraction")


def test_toy_metric_reaches_rows_tables_check_and_list(toy_metric, capsys):
    metrics = measure.row_metrics(SplitResult(anomaly=anomaly()), [], "first", {})
    assert metrics["inlier_fraction"] == 0.5 and list(metrics)[-1] == "inlier_fraction"
    assert measure.row_metrics(SplitResult(), [], "first", {})["inlier_fraction"] is None

    rows = [row("msp", inlier_fraction=0.5), row("sml", inlier_fraction=0.75), row("energy")]
    (table,) = leaderboard_tables(rows)
    headers = [c.header() for c in table.columns]
    assert headers[4] == "inlier_fraction ↑"
    column = [cells[4] for cells in table.cells]
    assert [c.value for c in column] == ["50.00", "75.00", "n/a"]
    assert [c.best for c in column] == [False, True, False]
    assert "inlier_fraction ↑" in markdown(rows)
    assert "inlier_fraction" not in [c.name for c in leaderboard_tables([row("msp")])[0].columns]

    now = [row("msp", inlier_fraction=0.4), row("sml", inlier_fraction=0.75), row("energy")]
    regressed = [c for c in compare(now, rows, parse_tolerances(None)) if c.regressed]
    assert [(c.key[0], c.metric) for c in regressed] == [("msp", "inlier_fraction")]
    assert not any(c.regressed for c in compare(now, rows, parse_tolerances("inlier_fraction=0.2")))

    main(["list", "metrics"])
    assert any(
        line.split()[:2] == ["inlier_fraction", "↑"]
        for line in capsys.readouterr().out.splitlines()
    )
    with pytest.raises(ValueError, match="registered twice"):
        measure.register_producer("inlier_fraction", [TOY], lambda result, options: {})


def test_toy_metric_is_gone_after_the_fixture():
    assert not has_metric("inlier_fraction")
    assert "inlier_fraction" not in [p.name for p in measure.producers()]


# ----------------------------------------------------------------------- tables and check


def test_discovery_metrics_become_columns_where_present():
    rows = [row("msp", discovery_precision=0.25, discovery_novel_classes=3, discovery_objects=9)]
    rows += [row("sml", discovery_precision=0.5, discovery_novel_classes=4)]
    (table,) = leaderboard_tables(rows)
    by_name = {c.name: c for c in table.columns}
    assert by_name["discovery_precision"].header() == "discovery_precision ↑"
    assert by_name["discovery_novel_classes"].header() == "discovery_novel_classes"
    assert "discovery_objects" not in by_name  # a support count: kept in rows, not a column
    j = [c.name for c in table.columns].index("discovery_novel_classes")
    assert [cells[j].value for cells in table.cells] == ["3", "4"]  # equal AP: row order
    assert not any(cells[j].best for cells in table.cells)  # no better side: nothing marked


def test_check_tolerances_come_from_the_specs():
    defaults = parse_tolerances(None)
    assert list(defaults)[:4] == ["AP", "AUROC", "FPR95", "mIoU"]
    assert {"sIoU", "F1_50", "discovery_precision"} <= set(defaults)
    assert "threshold" not in defaults and "per_class_iou" not in defaults
    assert parse_tolerances("threshold=0.5")["threshold"] == 0.5
    with pytest.raises(BadInput, match="bad tolerance"):
        parse_tolerances("per_class_iou=0.1")
    base, now = [row("msp", threshold=1.0)], [row("msp", threshold=2.0, FPR95=0.32)]
    assert [c.metric for c in compare(now, base, defaults) if c.regressed] == ["FPR95"]
    flagged = compare(now, base, parse_tolerances("threshold=0.5,FPR95=0.01"))
    assert sorted(c.metric for c in flagged if c.regressed) == ["FPR95", "threshold"]


def test_list_metrics_prints_every_spec_with_its_arrow(capsys):
    main(["list", "metrics"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == metric_names()
    for line, spec in zip(lines, all_specs(), strict=True):
        assert line.split()[1:3] == [spec.arrow, spec.level]
        assert line.endswith(spec.summary)


def test_toy_metric_reaches_runner_rows_the_report_and_the_gate(toy_metric, tmp_path, capsys):
    """The walk-through of docs/architecture.md: a registered metric, end to end."""
    preset = dataclasses.replace(PRESETS["quick"], segmenter={"steps": 2, "batch_size": 2})
    config = RunConfig(
        methods=["msp", "entropy"], datasets=["synthstreets"], seeds=[0], preset=preset,
        device="cpu", data_root=default_data_root(), out=tmp_path / "run",
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    rows = Runner(config).run()
    fractions = {r["metrics"]["inlier_fraction"] for r in rows}
    assert len(fractions) == 1 and 0.5 < fractions.pop() < 1.0  # anomalies are a few pixels
    main(["report", str(tmp_path / "run"), "--format", "md"])
    assert "inlier_fraction ↑" in (tmp_path / "run" / "leaderboard.md").read_text()
    worse = tmp_path / "worse.jsonl"
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    baseline = [json.loads(line) for line in lines]
    for row in baseline:
        row["metrics"]["inlier_fraction"] += 0.5  # the run is now far below this baseline
    worse.write_text("".join(json.dumps(r) + "\n" for r in baseline))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(tmp_path / "run"), "--baseline", str(worse)])
    assert exit_info.value.code == 1
    assert "inlier_fraction" in capsys.readouterr().out
