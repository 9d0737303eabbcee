"""What one SLURM task runs (:mod:`owsbench.slurm` submits it through submitit): one planned job,
executed in the task's process by :class:`owsbench.execute.LocalExecutor`.

A ``fit`` task fits (or finds in the fit cache) the job's models and evaluates nothing; an
``eval`` task fits what is not cached, evaluates and writes the job's rows into its own rows
folder (:func:`rows_dir`), from which the coordinator merges them into ``OUT/results.jsonl``, so
concurrent tasks never rewrite one file. The artifacts (curves, samples, training logs) go to
``OUT`` as in a local run. Torch uses ``threads`` threads (``$OMP_NUM_THREADS`` too).
"""

from __future__ import annotations

import os
from pathlib import Path


def rows_dir(out: Path, job_id: str) -> Path:
    """The folder whose ``results.jsonl`` holds the rows a SLURM task wrote for ``job_id``."""
    return Path(out) / "slurm" / "rows" / job_id


def run_task(job_json: str, out: str, fit_only: bool, threads: int) -> int:
    """Run the job of ``job_json`` into ``out`` (fits only when ``fit_only``); the number of
    rows written. Raises ``RuntimeError`` listing the rows dropped for non-finite outputs, so
    that the task counts as failed."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from owsbench.execute import LocalExecutor
    from owsbench.plan import Job
    from owsbench.results import ResultsStore

    torch.set_num_threads(threads)
    job = Job.from_json(job_json)
    store = ResultsStore(rows_dir(Path(out), job.id))
    executor = LocalExecutor(Path(out), progress=False, store=store)
    if fit_only:
        executor.fit(job)
        return 0
    rows = executor.run([job])
    if executor.dropped:
        raise RuntimeError("rows not written: " + "; ".join(executor.dropped))
    return len(rows)
