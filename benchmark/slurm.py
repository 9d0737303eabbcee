"""The SLURM launcher (``owsbench run --launcher slurm``): the planner's jobs as SLURM job
arrays, submitted through submitit (https://github.com/facebookincubator/submitit).

Stages. A fit that two or more pending jobs need (the same segmenter recipe, e.g. one
Cityscapes-trained segmenter under several eval datasets) and that the fit cache lacks is a task
of the ``fit`` array (:func:`owsbench.worker.run_task` with ``fit_only``, on the first job that
needs it). Every pending job is a task of the ``eval`` array, submitted with
``--dependency=afterany:<fit array>``: it starts once every fit task ended and loads the fits
from the cache; a fit that failed is retried by the evaluations that need it, which then fail
with the fit's error in their own logs (``afterok`` would leave them pending forever). A fit
only one job needs is done by that job.

Each task appends its rows to its own shard of ``OUT`` (:class:`owsbench.results.ResultsStore`),
merged into ``OUT/results.jsonl`` under the shards' file lock by the task, the coordinator and
``owsbench status``. The jobs index ``OUT/slurm/jobs.json`` (:mod:`owsbench.job_index`) records
every task; submitit's logs are under ``OUT/slurm/logs/<ARRAY_TASK>/``. A rerun submits only
the jobs with a row missing from ``OUT/results.jsonl`` and no task pending or running.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from owsbench.checks import Range
from owsbench.errors import BadInput
from owsbench.fits import FitCache, fit_stem
from owsbench.job_index import FINISHED, JobIndex, TaskRecord, counts
from owsbench.plan import FitPlan, Job
from owsbench.results import ResultsStore
from owsbench.rows import row_key
from owsbench.worker import RequeuedTask


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each task (the ``slurm:`` section of a run config, or the ``--slurm-*`` /
    ``--*-per-job`` / ``--max-parallel`` options): ``partition`` (None: the cluster's default),
    ``time`` (minutes), CPUs (also the task's torch threads), GPUs, memory in GB, and how many
    tasks of an array run at once (None: submitit's default, 256)."""

    partition: str | None = None
    time: Annotated[int, Range(ge=1)] = 120
    cpus_per_job: Annotated[int, Range(ge=1)] = 1
    gpus_per_job: Annotated[int, Range(ge=0)] = 0
    mem_per_job: Annotated[float, Range(gt=0)] = 8.0
    max_parallel: Annotated[int | None, Range(ge=1)] = None


def job_fit(job: Job) -> FitPlan | None:
    """The fit the job's models sit on: its segmenter's, or its trained method's."""
    return job.segmenter.fit if job.segmenter is not None else job.methods[0].fit


def fit_stage(jobs: Sequence[Job]) -> list[Job]:
    """One job per fit that two or more of ``jobs`` need and the fit cache lacks (first come)."""
    users: dict[str, list[Job]] = {}
    for job in jobs:
        if (fit := job_fit(job)) is not None:
            users.setdefault(fit_stem(fit.kind, fit.recipe), []).append(job)
    stage = []
    for same in users.values():
        fit, cache = job_fit(same[0]), FitCache(Path(same[0].settings.cache_dir))
        if len(same) > 1 and not cache.has(fit.kind, fit.recipe):
            stage.append(same[0])
    return stage


def describe(job: Job) -> str:
    """``msp,sml on synthstreets seed 0`` (with the regime when not ``full``)."""
    regime = f" ({job.supervision})" if job.supervision != "full" else ""
    return f"{','.join(m.id for m in job.methods)}{regime} on {job.dataset.name} seed {job.seed}"


class SlurmExecutor:
    """Runs jobs as SLURM arrays (see the module docstring); ``run(jobs) -> rows``.

    ``wait``: follow the tasks with a progress bar until all ended (else return after
    submitting). ``cluster``: submitit's executor (``slurm``; ``local`` runs the tasks as
    processes of this machine, for tests); ``task``: the function each task runs
    (default :class:`owsbench.worker.RequeuedTask`: :func:`owsbench.worker.run_task`, requeued on
    preemption or time-out). After ``run``: ``submitted`` (the new tasks), ``failed``
    (the last tasks of the jobs with a row still missing, where they failed), ``dropped``
    (empty: a task with dropped rows fails).
    """

    def __init__(
        self,
        out: Path,
        options: SlurmOptions,
        wait: bool = True,
        progress: bool = True,
        cluster: str = "slurm",
        task: Callable[..., int] | None = None,
        poll_s: float = 5.0,
    ) -> None:
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise BadInput("--launcher slurm needs sbatch on PATH (scripts/slurm-local.sh start)")
        self.out, self.options, self.wait, self.progress = Path(out), options, wait, progress
        self.cluster, self.task, self.poll_s = cluster, task or RequeuedTask(), poll_s
        self.submitted: list[TaskRecord] = []
        self.failed: list[TaskRecord] = []
        self.dropped: list[str] = []

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Submit the jobs that have a row missing (and no task under way); with ``wait``,
        follow every task of ``jobs`` to its end; the rows of ``jobs`` found then."""
        index = JobIndex(self.out)
        index.refresh()
        store, active = ResultsStore(self.out), index.active_jobs()
        todo = [j for j in jobs if j.id not in active and not all(map(store.has, j.rows))]
        self.submitted = self.submit(index, todo) if todo else []
        if self.wait:
            self.follow(index, {job.id for job in jobs})
        store = ResultsStore(self.out)
        short = {job.id for job in jobs if not all(map(store.has, job.rows))}
        self.failed = [r for r in index.latest() if r.job in short and r.state == "failed"]
        wanted = {key for job in jobs for key in job.rows}
        return [row for row in store.rows if row_key(row) in wanted]

    def submit(self, index: JobIndex, jobs: Sequence[Job]) -> list[TaskRecord]:
        """The fit array (when some fit is shared), then the eval array after it; recorded."""
        fits = self.submit_array(index, fit_stage(jobs), "fit", None)
        after = None
        if fits and self.cluster == "slurm":
            after = f"afterany:{fits[0].slurm_id.split('_')[0]}"
        elif fits:  # no dependencies outside SLURM: wait for the fits here
            self.follow(index, {r.job for r in fits}, stage="fit")
        return fits + self.submit_array(index, jobs, "eval", after)

    def submit_array(
        self, index: JobIndex, jobs: Sequence[Job], stage: str, after: str | None
    ) -> list[TaskRecord]:
        """One array of tasks, one per job, recorded in (and saved with) ``index``."""
        if not jobs:
            return []
        procs = jobs[0].settings.procs_per_job  # a run's setting: the same for all its jobs
        executor = self.executor(stage, after, procs)
        count = len(jobs)
        try:
            tasks = executor.map_array(
                self.task,
                [job.to_json() for job in jobs],
                [str(self.out.absolute())] * count,
                [stage == "fit"] * count,
                [task_cpus(self.options, procs)] * count,
            )
        except (OSError, RuntimeError) as err:  # sbatch refused: no config, bad partition, ...
            message = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            hint = "" if "SLURM_CONF" in os.environ else " (is $SLURM_CONF set?)"
            raise BadInput(f"cannot submit the {stage} array to SLURM: {message}{hint}") from None
        pairs = zip(jobs, tasks, strict=True)
        records = [record(job, task, stage, self.cluster) for job, task in pairs]
        index.records.extend(records)
        index.save()
        return records

    def executor(self, stage: str, after: str | None, procs: int = 1) -> Any:
        """A submitit executor with the jobs' resources (``procs`` srun tasks per job, the
        job's CPUs shared among them); logs in ``OUT/slurm/logs/<id>/``."""
        import submitit

        folder = self.out.absolute() / "slurm" / "logs" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        options, cpus = self.options, task_cpus(self.options, procs)
        parameters: dict[str, Any] = {
            "name": f"owsbench-{stage}",
            "timeout_min": options.time,
            "tasks_per_node": procs,
            "cpus_per_task": cpus,
            "mem_gb": options.mem_per_job,
            "slurm_setup": [f"export OMP_NUM_THREADS={cpus}"],
        }
        if options.gpus_per_job:
            parameters["gpus_per_node"] = options.gpus_per_job
        if options.partition:
            parameters["slurm_partition"] = options.partition
        if options.max_parallel:
            parameters["slurm_array_parallelism"] = options.max_parallel
        if after:
            parameters["slurm_additional_parameters"] = {"dependency": after}
        executor.update_parameters(**parameters)
        return executor

    def follow(self, index: JobIndex, ids: set[str], stage: str | None = None) -> None:
        """Poll the tasks of the jobs ``ids`` (of one ``stage`` or both) until all ended, with
        a progress bar of tasks (pending / running / done / failed on its right)."""

        def mine() -> list[TaskRecord]:
            latest = index.refresh()
            return [r for r in latest if r.job in ids and stage in (None, r.stage)]

        records = mine()
        desc = f"SLURM {stage or 'jobs'}"
        with tqdm(total=len(records), desc=desc, unit="task", disable=not self.progress) as bar:
            while True:
                found = counts(records)
                bar.n = found["done"] + found["failed"]
                bar.set_postfix(found, refresh=True)
                if all(r.state in FINISHED for r in records):
                    return
                time.sleep(self.poll_s)
                records = mine()


def task_cpus(options: SlurmOptions, procs: int) -> int:
    """CPUs (and torch threads) of each of a job's ``procs`` tasks: its share of the job's."""
    return max(1, options.cpus_per_job // procs)


def record(job: Job, task: Any, stage: str, cluster: str) -> TaskRecord:
    """The index record of submitit's ``task`` running ``job``."""
    paths = task.paths
    what = describe(job) + (" (fit)" if stage == "fit" else "")
    return TaskRecord(
        job=job.id,
        stage=stage,
        slurm_id=str(task.job_id),
        what=what,
        stdout=str(paths.stdout),
        stderr=str(paths.stderr),
        result=str(paths.result_pickle),
        cluster=cluster,
    )
