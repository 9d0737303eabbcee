"""The planner (RunConfig -> serialisable jobs) and `owsbench run-job` (one job from its JSON)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from owsbench.cache import default_data_root
from owsbench.cli import main
from owsbench.config import PRESETS, RunConfig
from owsbench.fits import fit_stem
from owsbench.plan import Job, plan
from owsbench.results import read_rows
from owsbench.rows import row_key
from owsbench.runner import Runner


def config(tmp_path: Path, methods: list[str], seeds: list[int] | None = None) -> RunConfig:
    preset = dataclasses.replace(PRESETS["quick"], segmenter={"steps": 2, "batch_size": 2})
    return RunConfig(
        methods=methods, datasets=["synthstreets"], seeds=seeds or [0], preset=preset,
        device="cpu", data_root=default_data_root(), out=tmp_path / "out",
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip


def test_planner_imports_no_torch():
    code = (
        "import sys, owsbench.plan, owsbench.rows, owsbench.fits; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_plan_is_deterministic_grouped_and_round_trips(tmp_path):
    run = config(tmp_path, ["msp", "sml", "msp@erfnet", "dual-head"], seeds=[0, 1])
    jobs = plan(run)
    assert plan(run) == jobs and [j.id for j in plan(run)] == [j.id for j in jobs]
    # datasets -> seeds -> groups in first-seen order: deeplabv3plus, erfnet, the trained method
    groups = [(j.seed, j.segmenter.id if j.segmenter else None) for j in jobs]
    assert groups == [(s, g) for s in (0, 1) for g in ("deeplabv3plus", "erfnet", None)]
    first = jobs[0]
    assert [m.id for m in first.methods] == ["msp", "sml"]
    assert first.splits == ("test",) and first.dataset.fingerprint.startswith("synthstreets/")
    assert first.rows == tuple(
        (m.id, m.config_hash, "synthstreets", first.dataset.fingerprint, "test", 0)
        for m in first.methods
    )
    segmenter = first.segmenter.fit
    assert segmenter.key == fit_stem(segmenter.kind, segmenter.recipe)
    assert segmenter.recipe["seed"] == 0 and segmenter.recipe["config"]["steps"] == 2
    msp, sml = first.methods
    assert msp.fit is None
    assert sml.fit.key is None and "segmenter_sha256" not in sml.fit.recipe  # known once fitted
    (trained,) = jobs[2].methods
    assert trained.fit.key and trained.config["steps"] == 2  # the preset's sizes
    assert jobs[2].rows[0][0] == "dual-head" and jobs[2].train.id == "synthstreets"
    for job in jobs:
        text = job.to_json()
        assert Job.from_json(text) == job and Job.from_json(text).id == job.id
        assert json.loads(text)["rows"] == [list(key) for key in job.rows]
    assert not (tmp_path / "cache").exists()  # planning fits nothing


def test_preset_values_come_from_the_method_class(tmp_path):
    run = config(tmp_path, ["anomaly-head-stats"])
    method = plan(run)[0].methods[0]
    assert method.overrides == {"steps": 60, "crop": [96, 96]}  # AnomalyHead.preset_values
    run.method_overrides = {"anomaly-head-stats": {"steps": 2}}
    assert plan(run)[0].methods[0].config["steps"] == 2  # the config file comes last


def test_run_job_writes_the_planned_rows_and_a_rerun_does_nothing(tmp_path, capsys):
    run = config(tmp_path, ["msp", "sml"])
    (job,) = plan(run)
    path = tmp_path / "job.json"
    path.write_text(job.to_json())
    out = tmp_path / "worker"
    main(["run-job", str(path), "--out", str(out), "--no-progress"])
    assert f"job {job.id}: executed; 2 rows" in capsys.readouterr().out
    rows = read_rows(out / "results.jsonl")
    assert [row_key(r) for r in rows] == list(job.rows)
    assert all(0 <= r["metrics"]["AP"] <= 1 and r["artifacts"]["curve"] for r in rows)
    assert rows[0]["checkpoint_sha256"] == rows[1]["checkpoint_sha256"]  # one segmenter

    main(["run-job", str(path), "--out", str(out), "--no-progress"])
    assert "nothing to do" in capsys.readouterr().out
    assert read_rows(out / "results.jsonl") == rows
    # the runner plans the same keys: nothing left to do in that folder either
    run.out = out
    runner = Runner(run)
    assert [row_key(r) for r in runner.run()] == list(job.rows)
    assert runner.executor.executed == []
    assert len(runner.datasets._open) == 1  # planner and executor share the opened dataset


def test_run_job_refuses_bad_files_and_changed_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run-job", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("owsbench: error: cannot read job file")
    (job,) = plan(config(tmp_path, ["msp"]))
    data = job.to_dict()
    data["dataset"]["fingerprint"] = data["train"]["fingerprint"] = "synthstreets/quick/0"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exit_info:
        main(["run-job", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data changed since the job was planned" in err[0]
