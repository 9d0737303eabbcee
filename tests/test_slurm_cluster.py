"""`--launcher slurm` on a real single-node SLURM cluster (`scripts/slurm-local.sh start`, which
installs slurm-wlm and munge with apt when missing): the rows equal a local run's, `owsbench
status` lists the tasks, `--procs-per-job 2` runs each job as two srun tasks that train
together, and a failing job (a test method told to fail) leaves the other rows, after which a
rerun submits only that job. Skipped, with the failing command and its output,
where the machine cannot run the cluster. About a minute on two cores (5-step segmenter fits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle
import pytest
import torch
from slurm_toys import toy_job, toy_task

from owsbench.catalog import METHODS
from owsbench.config import PRESETS, RunConfig
from owsbench.methods.base import Method, Prediction
from owsbench.runner import Runner
from owsbench.slurm import SlurmExecutor, SlurmOptions
from owsbench.worker import run_task

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
STATE = Path(os.environ.get("OWSBENCH_SLURM_DIR", "/tmp/owsbench-slurm"))

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Flaky reaches the SLURM tasks


def script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def cluster():
    """The local cluster, started here (and stopped after) unless it was running already."""
    was_up = script("status").returncode == 0
    started = script("start")
    if started.returncode != 0:
        output = (started.stdout + started.stderr).strip()[-1500:]
        pytest.skip(f"`{SCRIPT} start` exited {started.returncode}:\n{output}")
    patch = pytest.MonkeyPatch()
    patch.setenv("SLURM_CONF", str(STATE / "slurm.conf"))
    yield
    patch.undo()
    if not was_up:
        script("stop")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("slurm")
    (base / "tiny.yaml").write_text("segmenter: {steps: 5}\nslurm: {mem_per_job: 1}\n")
    return {"base": base, "data": base / "data", "cache": base / "cache"}


def owsbench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "owsbench", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def metrics(out: Path) -> dict[tuple, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["method"], r["split"], r["seed"]): r["metrics"] for r in rows}


def test_slurm_rows_equal_local_rows_and_status_lists_the_tasks(cluster, roots):
    base = roots["base"]
    common = ["--preset", "quick", "--methods", "msp", "--datasets", "synthstreets",
              "--config", str(base / "tiny.yaml"), "--data-root", str(roots["data"]),
              "--no-progress"]  # fmt: skip
    local = owsbench("run", *common, "--out", str(base / "local"), "--cache-dir",
                     str(base / "cache-local"))  # fmt: skip
    assert local.returncode == 0, local.stderr[-2000:]
    slurm = owsbench("run", *common, "--out", str(base / "slurm"), "--cache-dir",
                     str(roots["cache"]), "--launcher", "slurm")  # fmt: skip
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert "submitted 1 SLURM tasks (0 fit, 1 eval)" in slurm.stderr
    assert metrics(base / "slurm") == metrics(base / "local") != {}
    status = owsbench("status", str(base / "slurm"))
    assert status.returncode == 0 and "0 failed" in status.stdout and "done" in status.stdout
    assert "msp on synthstreets seed 0" in status.stdout


def test_procs_per_job_runs_as_srun_tasks_with_the_rows_of_forked_processes(cluster, tmp_path):
    """Two srun tasks of one job train the segmenter together (task 0 writes): the rows equal
    those of a local run whose fit forks its second process."""
    (tmp_path / "tiny.yaml").write_text("segmenter: {steps: 4, batch_size: 4}\n"
                                        "slurm: {mem_per_job: 1}\n")  # fmt: skip
    common = ["--preset", "quick", "--methods", "msp", "--datasets", "synthstreets",
              "--config", str(tmp_path / "tiny.yaml"), "--data-root", str(tmp_path / "data"),
              "--no-progress", "--procs-per-job", "2"]  # fmt: skip
    local = owsbench("run", *common, "--out", str(tmp_path / "local"), "--cache-dir",
                     str(tmp_path / "cache-local"))  # fmt: skip
    assert local.returncode == 0, local.stderr[-2000:]
    slurm = owsbench("run", *common, "--out", str(tmp_path / "slurm"), "--launcher", "slurm",
                     "--cache-dir", str(tmp_path / "cache"), "--cpus-per-job", "2")  # fmt: skip
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert metrics(tmp_path / "slurm") == metrics(tmp_path / "local") != {}
    (submitted,) = (tmp_path / "slurm" / "slurm" / "logs").rglob("*_submission.sh")
    logs = submitted.parent
    assert sorted(p.name.split("_")[1] for p in logs.glob("*_result.pkl")) == ["0", "1"]
    script_text = submitted.read_text()
    assert "--ntasks-per-node=2" in script_text and "--cpus-per-task=1" in script_text
    assert len(list((tmp_path / "cache" / "fits").glob("*.pt"))) == 1  # task 0 stored it


def test_evaluations_start_after_the_shared_fit_by_dependency(cluster, tmp_path):
    jobs = [toy_job(0, tmp_path, dataset="a"), toy_job(0, tmp_path, dataset="b")]
    options = SlurmOptions(mem_per_job=1)
    executor = SlurmExecutor(tmp_path, options, progress=False, task=toy_task, poll_s=0.5)
    assert len(executor.run(jobs)) == 2 and not executor.failed
    fit, *evals = executor.submitted
    assert fit.stage == "fit" and [r.stage for r in evals] == ["eval", "eval"]
    depends = Path(evals[0].stdout).parent.parent / evals[0].slurm_id.split("_")[0]
    script_text = next(depends.glob("*_submission.sh")).read_text()
    assert f"--dependency=afterany:{fit.slurm_id.split('_')[0]}" in script_text
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0] == "fit a 0 1" and sorted(lines[1:]) == ["eval a 0 1", "eval b 0 1"]


class Flaky(Method):
    """Test-only trained method: fails its fit when told to; else a constant prediction."""

    name: ClassVar[str] = "flaky"
    summary: ClassVar[str] = "fails when told to (test only)"

    @dataclass(frozen=True)
    class Config:
        fail: bool = False

    def fit(self, train, ctx) -> None:
        if self.config.fail:
            raise RuntimeError("flaky was told to fail")

    def predict(self, images: torch.Tensor) -> Prediction:
        semantic = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)
        return Prediction(semantic=semantic, anomaly=images.mean(1))

    def state_dict(self) -> dict[str, Any]:
        return {}


def flaky_task(*args: Any) -> int:
    """:func:`owsbench.worker.run_task` with Flaky registered in the task's process (the
    registry imported there: a global would travel as a copy)."""
    from owsbench.catalog import METHODS as registry

    if "flaky" not in registry:
        registry.register_object("flaky", Flaky, Flaky.summary)
    return run_task(*args)


@pytest.fixture
def flaky():
    METHODS.register_object("flaky", Flaky, Flaky.summary)
    yield
    METHODS.unregister("flaky")


def run_flaky(roots: dict[str, Path], fail: bool) -> SlurmExecutor:
    out = roots["base"] / "flaky"
    config = RunConfig(
        methods=["msp", "flaky"], datasets=["synthstreets"], seeds=[0], preset=PRESETS["quick"],
        device="cpu", data_root=roots["data"], out=out, cache_dir=roots["cache"],
        progress=False, segmenter_overrides={"steps": 5},
        method_overrides={"flaky": {"fail": fail}},
    )  # fmt: skip
    options = SlurmOptions(mem_per_job=1)
    executor = SlurmExecutor(out, options, progress=False, task=flaky_task, poll_s=1)
    Runner(config, executor).run()
    return executor


def test_a_failed_job_keeps_the_other_rows_and_a_rerun_runs_only_it(cluster, roots, flaky):
    failing = run_flaky(roots, fail=True)
    assert [t.what for t in failing.failed] == ["flaky on synthstreets seed 0"]
    out = roots["base"] / "flaky"
    assert {key[0] for key in metrics(out)} == {"msp"}
    stderr = Path(failing.failed[0].stderr).read_text()
    assert "flaky was told to fail" in stderr
    fixed = run_flaky(roots, fail=False)
    assert [t.what for t in fixed.submitted] == ["flaky on synthstreets seed 0"]
    assert not fixed.failed
    assert {key[0] for key in metrics(out)} == {"msp", "flaky"}
