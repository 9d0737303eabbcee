"""End to end: `owsbench run` on synthstreets (quick preset, a 3-step segmenter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from owsbench.metrics import AnomalyMetric

METHODS = "msp,maxlogit,entropy,energy,sml"


def run(tmp_path: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 3, batch_size: 4}\n")
    return subprocess.run(
        [
            sys.executable, "-m", "owsbench", "run",
            "--methods", METHODS, "--datasets", "synthstreets", "--preset", "quick",
            "--config", str(config), "--seeds", "0", "--device", "cpu", "--no-progress",
            "--data-root", str(tmp_path / "data"), "--cache-dir", str(cache), "--out", str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run(tmp_path, out, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, out, cache, result


def test_run_writes_rows_and_leaderboards(first_run):
    _, out, _, result = first_run
    found = rows(out)
    assert sorted(r["method"] for r in found) == sorted(METHODS.split(","))
    for row in found:
        assert row["dataset"] == "synthstreets" and row["split"] == "test" and row["seed"] == 0
        for metric in ("AP", "AUROC", "FPR95", "mIoU"):
            assert 0.0 <= row["metrics"][metric] <= 1.0
        assert row["frames"] > 0 and row["anomaly_pixels"] > 0
        assert row["metric_version"] and row["checkpoint_sha256"]
        assert row["config_hash"] and row["fit_seconds"] > 0
    # all post-hoc methods share one segmenter: identical class maps, hence one mIoU
    assert len({r["metrics"]["mIoU"] for r in found}) == 1
    assert len({r["checkpoint_sha256"] for r in found}) == 1
    assert (out / "leaderboard.md").read_text().count("| sml ") == 1
    assert "method" in (out / "leaderboard.csv").read_text().splitlines()[0]
    assert "synthstreets / test" in result.stdout


def test_rerun_reuses_rows_and_fits(first_run):
    tmp_path, out, cache, _ = first_run
    before = {r["method"]: r["timestamp"] for r in rows(out)}
    fits = sorted(p.name for p in (cache / "fits").iterdir())
    result = run(tmp_path, out, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {r["method"]: r["timestamp"] for r in rows(out)} == before
    assert sorted(p.name for p in (cache / "fits").iterdir()) == fits


def test_same_command_gives_identical_metrics(first_run):
    tmp_path, out, _, _ = first_run
    again = tmp_path / "again"
    result = run(tmp_path, again, tmp_path / "fresh-cache")
    assert result.returncode == 0, result.stderr[-3000:]
    first = {r["method"]: r["metrics"] for r in rows(out)}
    second = {r["method"]: r["metrics"] for r in rows(again)}
    assert first == second


def test_options_and_artifacts(first_run):
    tmp_path, _, cache, _ = first_run
    out = tmp_path / "options"
    extra = ("--components", "--aggregation", "per-image", "--fpr-rule", "nearest")
    result = run(tmp_path, out, cache, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    found = rows(out)
    assert len(found) == 5
    for row in found:
        assert (row["aggregation"], row["fpr_rule"]) == ("per-image", "nearest")
        assert row["component_threshold_rule"].startswith("best pixel F1")
        assert row["fit_cached"]  # same recipe as the first run: nothing refitted
        for metric in ("sIoU", "PPV", "mean_F1", "F1_25", "F1_50", "F1_75"):
            assert 0.0 <= row["metrics"][metric] <= 1.0
        maps = out / "scores" / "seed0" / "anomaly_p" / row["method"] / "synthstreets-test"
        assert len(list(maps.glob("test_*.hdf5"))) == row["frames"]
        artifacts = row["artifacts"]
        with np.load(out / artifacts["curve"]) as curve:
            assert AnomalyMetric.from_state_dict(dict(curve)).num_positives == row["anomaly_pixels"]
        with np.load(out / artifacts["samples"]) as samples:
            assert f"score:{row['method']}" in samples.files and samples["image"].shape[0] == 4
        log = json.loads((out / artifacts["training"][0]).read_text())
        assert len(log["train_loss"]) == 3
    # the options are part of the config: these rows do not collide with the default ones
    assert {r["config_hash"] for r in found}.isdisjoint(
        {r["config_hash"] for r in rows(first_run[1])}
    )


def test_workers_do_not_change_rows_and_precision_is_its_own_row(first_run):
    tmp_path, out, cache, _ = first_run
    serial, half = tmp_path / "serial", tmp_path / "bf16"
    result = run(tmp_path, serial, cache, "--workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {r["method"]: r["metrics"] for r in rows(serial)} == {
        r["method"]: r["metrics"] for r in rows(out)
    }
    result = run(tmp_path, half, cache, "--precision", "bf16", "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    found = rows(half)
    assert {r["precision"] for r in found} == {"bf16"} and {r["precision"] for r in rows(out)} == {
        "fp32"
    }
    assert {r["config_hash"] for r in found}.isdisjoint({r["config_hash"] for r in rows(out)})
    assert all(np.isfinite(r["metrics"]["AP"]) for r in found)
    assert "| msp [bf16] " in (half / "leaderboard.md").read_text()
    bad = run(tmp_path, tmp_path / "bad", cache, "--workers", "-1")
    assert bad.returncode == 2 and "-1" in bad.stderr
