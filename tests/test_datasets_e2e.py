"""`owsbench run` end to end on fixture trees of every dataset id, in one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dataset_fixtures import make_cityscapes_tree
from fixtures_every import make_every_tree
from fixtures_streethazards_smiyc import make_road_anomaly_tree

from owsbench.catalog import DATASETS

SEMANTIC_ONLY = {"cityscapes", "oxford-pet"}
ANOMALY_ONLY = {
    "fishyscapes-laf",
    "fishyscapes-static",
    "smiyc-ra21",
    "smiyc-ro21",
    "lostandfound",
    "road-anomaly",
}


def test_every_dataset_runs_end_to_end(tmp_path: Path):
    root = make_every_tree(tmp_path / "data", tmp_path)
    real = [d for d in DATASETS.ids() if d != "synthstreets"]
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "msp,sml",
         "--datasets", ",".join(real), "--preset", "quick", "--config", str(config),
         "--data-root", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in rows} == set(real)
    for row in rows:
        metrics = row["metrics"]
        if row["dataset"] in SEMANTIC_ONLY:
            assert metrics["AP"] is None and 0 <= metrics["mIoU"] <= 1
        else:
            assert 0 <= metrics["AP"] <= 1 and row["anomaly_pixels"] > 0, row["dataset"]
        if row["dataset"] in ANOMALY_ONLY:
            assert metrics["mIoU"] is None and row["trained_on"] == "cityscapes"
    trained_on = {r["dataset"]: r["trained_on"] for r in rows}
    assert trained_on["streethazards"] == "streethazards"
    assert trained_on["bdd-anomaly"] == "bdd-anomaly"
    assert trained_on["oxford-pet"] == "oxford-pet"
    assert trained_on["cityscapes-cocopaste"] == "cityscapes"


def test_a_corrupt_file_mid_run_stops_with_one_line_and_keeps_finished_rows(tmp_path: Path):
    root = tmp_path / "data"
    make_cityscapes_tree(root)
    make_road_anomaly_tree(root)
    victim = sorted((root / "road-anomaly").rglob("*.jpg"))[1]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    config = tmp_path / "tiny.yaml"
    config.write_text("segmenter: {steps: 2, batch_size: 2}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "msp",
         "--datasets", "cityscapes,road-anomaly", "--preset", "quick", "--config", str(config),
         "--data-root", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(victim) in lines[0] and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["dataset"] for r in rows] == ["cityscapes"]
