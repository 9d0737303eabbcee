"""What one SLURM task runs (:mod:`owsbench.slurm` submits it through submitit): one planned job,
executed in the task's process by :class:`owsbench.execute.LocalExecutor`; submitted as a
:class:`RequeuedTask`, so a preempted or timed-out task is requeued and resumes.

A ``fit`` task fits (or finds in the fit cache) the job's models and evaluates nothing; an
``eval`` task fits what is not cached, evaluates and appends the job's rows to its own shard of
``OUT`` (:class:`owsbench.results.ResultsStore`), merged into ``OUT/results.jsonl`` under the
shards' file lock when the task ends and by every reader, so concurrent tasks never rewrite one
file. The artifacts (curves, samples, training logs) go to
``OUT`` as in a local run. Torch uses ``threads`` threads (``$OMP_NUM_THREADS`` too).
"""

from __future__ import annotations

import os
from pathlib import Path

import submitit


def run_task(job_json: str, out: str, fit_only: bool, threads: int) -> int:
    """Run the job of ``job_json`` into ``out`` (fits only when ``fit_only``); the number of
    rows written. Raises ``RuntimeError`` listing the rows dropped for non-finite outputs, so
    that the task counts as failed."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from owsbench.execute import LocalExecutor
    from owsbench.plan import Job

    torch.set_num_threads(threads)
    job = Job.from_json(job_json)
    executor = LocalExecutor(Path(out), progress=False)
    if fit_only:
        executor.fit(job)
        return 0
    rows = executor.run([job])
    if executor.dropped:
        raise RuntimeError("rows not written: " + "; ".join(executor.dropped))
    return len(rows)


class RequeuedTask(submitit.helpers.Checkpointable):
    """:func:`run_task` as a submitit checkpointable: when SLURM signals a task before its time
    limit or on preemption, submitit calls ``checkpoint``, which requeues the same call; the
    requeued task finds the rows already written and the fits' loop checkpoints in the cache
    (``owsbench.training.resume``), so it goes on from there instead of from step 0."""

    def __call__(self, job_json: str, out: str, fit_only: bool, threads: int) -> int:
        return run_task(job_json, out, fit_only, threads)
