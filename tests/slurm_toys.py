"""Toy jobs and a toy SLURM task for the launcher's tests: the task logs what it ran and writes
a job's rows (or fails while ``OUT/fail-<seed>`` exists), without fitting anything. Pickled by
value, so that the tasks' processes need not import this module."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle

from owsbench.plan import DatasetRef, FitPlan, Job, MethodPlan, SegmenterPlan, Settings
from owsbench.results import ResultsStore

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def toy_job(seed: int, cache: Path, train: str = "synthstreets", dataset: str = "a") -> Job:
    """A job of one post-hoc method on a segmenter fitted on ``train`` with ``seed``."""
    ref = DatasetRef(dataset, dataset, {}, f"fp-{dataset}")
    settings = Settings(
        "quick", 8, None, "pooled", "first", False, False, "cpu", str(cache), str(cache)
    )
    recipe = {"segmenter": "deeplabv3plus", "train": train, "seed": seed}
    segmenter = SegmenterPlan(
        "deeplabv3plus", {}, {"supervision": "full"}, FitPlan("segmenter", recipe, None)
    )
    method = MethodPlan("msp", "msp", {}, {}, "hash", None)
    key = ("msp", "hash", dataset, f"fp-{dataset}", "test", seed)
    return Job(ref, DatasetRef(train, train, {}, "fp"), seed, ("test",), segmenter,
               (method,), settings, (key,))  # fmt: skip


def toy_task(job_json: str, out: str, fit_only: bool, threads: int) -> int:
    """Logs what it did to OUT/log.txt; writes the job's rows; fails while OUT/fail-<seed>
    exists."""
    from owsbench.plan import Job

    job = Job.from_json(job_json)
    with open(Path(out) / "log.txt", "a") as log:
        log.write(f"{'fit' if fit_only else 'eval'} {job.dataset.id} {job.seed} {threads}\n")
    if fit_only:
        return 0
    if (Path(out) / f"fail-{job.seed}").exists():
        raise ValueError(f"toy failure of seed {job.seed}")
    from owsbench.rows import KEY_FIELDS

    store = ResultsStore(Path(out))
    for key in job.rows:
        store.add(dict(zip(KEY_FIELDS, key, strict=True), metrics={"AP": 0.5}))
    store.close()
    return len(job.rows)
