"""The SLURM launcher's logic without a cluster: the fit stage, task states, the jobs index and
its row merge, and `SlurmExecutor` end to end on submitit's local executor (tasks run as
processes of this machine) with a toy task that writes a job's rows, or fails."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from slurm_toys import toy_job, toy_task

from owsbench.cli import _exit_if_failed, _slurm_submitted, main
from owsbench.job_index import JobIndex, TaskRecord, counts, task_state
from owsbench.results import ResultsStore, read_rows
from owsbench.rows import KEY_FIELDS
from owsbench.slurm import SlurmExecutor, SlurmOptions, fit_stage


def owsbench(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Exit status and output (stdout + stderr) of the command line ``args``."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out + out.err


def local_executor(out: Path, **kwargs) -> SlurmExecutor:
    return SlurmExecutor(out, SlurmOptions(cpus_per_job=2), progress=False, cluster="local",
                         task=toy_task, poll_s=0.2, **kwargs)  # fmt: skip


def test_a_fit_is_staged_when_two_jobs_need_it_and_the_cache_lacks_it(tmp_path):
    shared = [toy_job(0, tmp_path, dataset="a"), toy_job(0, tmp_path, dataset="b")]
    alone = toy_job(1, tmp_path, dataset="a")
    assert fit_stage([*shared, alone]) == [shared[0]]
    fit = shared[0].segmenter.fit
    from owsbench.fits import FitCache

    for path in FitCache(tmp_path).paths(fit.kind, fit.recipe):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("cached")
    assert fit_stage([*shared, alone]) == []


def record(tmp_path: Path, cluster: str = "slurm") -> TaskRecord:
    return TaskRecord("job", "eval", "7_0", "msp", str(tmp_path / "err"), str(tmp_path / "err"),
                      str(tmp_path / "result.pkl"), cluster)  # fmt: skip


def test_task_state_reads_the_result_file_then_squeue(tmp_path):
    task = record(tmp_path)
    assert task_state(task, {"7_0": "PENDING"}) == "pending"
    assert task_state(task, {"7_0": "RUNNING"}) == "running"
    assert task_state(task, {"7_0": "TIMEOUT"}) == "failed"
    assert task_state(task, {}) == "failed"  # neither queued nor finished
    assert task_state(task, None) == "running"  # squeue could not say
    Path(task.result).write_bytes(pickle.dumps(("error", "Traceback ...")))
    assert task_state(task, {"7_0": "RUNNING"}) == "failed"
    Path(task.result).write_bytes(pickle.dumps(("success", 1)))
    assert task_state(task, {}) == "done"


def test_tasks_rows_reach_results_through_their_shards_once(tmp_path):
    job = toy_job(0, tmp_path)
    store = ResultsStore(tmp_path)
    store.add({**dict(zip(KEY_FIELDS, job.rows[0], strict=True)), "metrics": {"AP": 0.5}})
    assert not (tmp_path / "results.jsonl").exists()  # in the shard, not merged yet
    index = JobIndex(tmp_path)
    index.records.append(
        TaskRecord(job.id, "eval", "1_0", "msp", "e", "e", str(tmp_path / "r"), "local", "done")
    )
    index.refresh()
    index.refresh()
    assert len(read_rows(tmp_path / "results.jsonl")) == 1


def test_a_failed_task_leaves_the_other_rows_and_a_rerun_submits_only_it(tmp_path, capsys):
    jobs = [toy_job(seed, tmp_path) for seed in range(3)]
    (tmp_path / "fail-1").write_text("")
    executor = local_executor(tmp_path)
    rows = executor.run(jobs)
    assert sorted(row["seed"] for row in rows) == [0, 2]
    assert [r.job for r in executor.failed] == [jobs[1].id]
    assert _slurm_submitted(executor, tmp_path) is False
    with pytest.raises(SystemExit) as exit_:
        _exit_if_failed(executor)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "1 SLURM task(s) failed" in err and "toy failure of seed 1" in err
    assert executor.failed[0].slurm_id in err and "failed" in err

    (tmp_path / "fail-1").unlink()
    again = local_executor(tmp_path)
    rows = again.run(jobs)
    assert [r.job for r in again.submitted] == [jobs[1].id] and not again.failed
    assert sorted(row["seed"] for row in rows) == [0, 1, 2]
    assert counts(JobIndex(tmp_path).latest()) == {
        "pending": 0, "running": 0, "done": 3, "failed": 0
    }  # fmt: skip


def test_shared_fits_run_first_then_every_evaluation(tmp_path):
    jobs = [toy_job(0, tmp_path, dataset="a"), toy_job(0, tmp_path, dataset="b")]
    executor = local_executor(tmp_path)
    executor.run(jobs)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0] == "fit a 0 2"  # the fit task, with --cpus-per-job threads
    assert sorted(lines[1:]) == ["eval a 0 2", "eval b 0 2"]
    assert [r.stage for r in executor.submitted] == ["fit", "eval", "eval"]


def test_no_wait_returns_after_submitting(tmp_path):
    executor = local_executor(tmp_path, wait=False)
    executor.run([toy_job(0, tmp_path)])
    assert len(executor.submitted) == 1
    assert _slurm_submitted(executor, tmp_path) is True


def test_status_lists_the_tasks(tmp_path, capsys):
    job = toy_job(0, tmp_path)
    local_executor(tmp_path).run([job])
    code, output = owsbench(capsys, "status", str(tmp_path))
    assert code == 0 and "msp on a seed 0" in output and "1 done" in output, output
    code, output = owsbench(capsys, "status", str(tmp_path / "nothing"))
    assert code == 2 and "no SLURM jobs index" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-job", "2"], "--cpus-per-job applies to --launcher slurm only"),
        (["--no-wait"], "--no-wait applies to --launcher slurm only"),
        (["--launcher", "slurm", "--cpus-per-job", "0"], "slurm.cpus_per_job must be"),
    ],
)
def test_launcher_options_are_checked(tmp_path, capsys, args, message):
    code, output = owsbench(capsys, "run", "--methods", "msp", "--out", str(tmp_path), *args)
    assert code == 2 and message in output, output


def test_the_config_files_slurm_section_is_typed(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("methods: msp\nslurm: {time: soon}\n")
    code, output = owsbench(capsys, "run", "--config", str(config), "--launcher", "slurm")
    assert code == 2 and "slurm.time must be int" in output, output


def test_slurm_tasks_requeue_the_same_call_on_preemption():
    from owsbench.worker import RequeuedTask

    task = RequeuedTask()
    again = task.checkpoint("{job}", "out", False, 2)  # what submitit calls on SIGUSR2
    assert again.function is task and again.args == ("{job}", "out", False, 2)
    assert isinstance(SlurmExecutor(Path("o"), SlurmOptions(), cluster="local").task, RequeuedTask)
