"""What one SLURM task runs (:mod:`owsbench.slurm` submits it through submitit): one planned job,
executed in the task's process by :class:`owsbench.execute.LocalExecutor`; submitted as a
:class:`RequeuedTask`, so a preempted or timed-out task is requeued and resumes.

A ``fit`` task fits (or finds in the fit cache) the job's models and evaluates nothing; an
``eval`` task fits what is not cached, evaluates and appends the job's rows to its own shard of
``OUT`` (:class:`owsbench.results.ResultsStore`), merged into ``OUT/results.jsonl`` under the
shards' file lock when the task ends and by every reader, so concurrent tasks never rewrite one
file. The artifacts (curves, samples, training logs) go to
``OUT`` as in a local run. Torch uses ``threads`` threads (``$OMP_NUM_THREADS`` too).

A job of ``--procs-per-job N`` runs as N ``srun`` tasks (``tasks_per_node``): they join one
process group (:func:`owsbench.training.distributed.join_tasks`; task ``r`` on its node's GPU
``local_rank`` when the job runs on CUDA), task 0 runs the job as above and the others its fits
only, training each data-parallel loop with it; only task 0 writes (rows, artifacts, cache).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

if TYPE_CHECKING:
    from owsbench.training.distributed import Group

PORTS = (20000, 40000)  # the range of the task groups' rendezvous ports


def run_task(job_json: str, out: str, fit_only: bool, threads: int) -> int:
    """Run the job of ``job_json`` into ``out`` (fits only when ``fit_only``); the number of
    rows written. Raises ``RuntimeError`` listing the rows dropped for non-finite outputs, so
    that the task counts as failed."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from owsbench.execute import LocalExecutor
    from owsbench.fits import fit_with_tasks
    from owsbench.plan import Job
    from owsbench.training.distributed import leave_tasks

    torch.set_num_threads(threads)
    job = Job.from_json(job_json)
    tasks = join_job_tasks(job.settings.device)
    fit_with_tasks(tasks)
    try:
        executor = LocalExecutor(Path(out), progress=False)
        if fit_only or (tasks is not None and tasks.is_worker):
            executor.fit(job)
            return 0
        rows = executor.run([job])
    finally:
        fit_with_tasks(None)
        leave_tasks()
    if executor.dropped:
        raise RuntimeError("rows not written: " + "; ".join(executor.dropped))
    return len(rows)


def join_job_tasks(device_name: str) -> Group | None:
    """The process group of this SLURM job's tasks (``owsbench.training.distributed.Group``),
    None when the job has one task (or none: a call outside submitit). Rendezvous on the job's
    first node, at a port derived from the job id (the same for all its tasks, and for a
    requeued attempt)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (a direct call): one task
        return None
    if env.num_tasks <= 1:
        return None
    import torch

    from owsbench.execute import resolve_device
    from owsbench.training.distributed import join_tasks

    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    port = PORTS[0] + zlib.crc32(str(env.job_id).encode()) % (PORTS[1] - PORTS[0])
    return join_tasks(env.global_rank, env.num_tasks, f"{env.hostnames[0]}:{port}", device)


class RequeuedTask(submitit.helpers.Checkpointable):
    """:func:`run_task` as a submitit checkpointable: when SLURM signals a task before its time
    limit or on preemption, submitit calls ``checkpoint``, which requeues the same call; the
    requeued task finds the rows already written and the fits' loop checkpoints in the cache
    (``owsbench.training.resume``), so it goes on from there instead of from step 0."""

    def __call__(self, job_json: str, out: str, fit_only: bool, threads: int) -> int:
        return run_task(job_json, out, fit_only, threads)
