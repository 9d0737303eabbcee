"""The SLURM jobs index of an output folder, ``OUT/slurm/jobs.json``: one record per submitted
task (the owsbench job id, its stage, SLURM id, last known state and log paths), the states
queried now, and the merge of the tasks' row shards into ``OUT/results.jsonl``.

A task's state is, in order: ``done`` or ``failed`` from the result file submitit writes when
the task's function returned or raised; else SLURM's state from ``squeue`` (``pending``,
``running``, or ``failed`` for CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...); else, for a
SLURM task neither queued nor finished, ``failed`` (lost). ``squeue`` needs no accounting
database (``sacct`` does, and a small cluster often has none).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from owsbench.cache import atomic_write_text
from owsbench.errors import BadInput
from owsbench.results import merge_shards

STATES = ("pending", "running", "done", "failed")
FINISHED = ("done", "failed")
SLURM_STATES = {  # squeue's long state names -> ours; any other one is a failure
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "SUSPENDED": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "COMPLETED": "running",  # until the result file is seen
}


@dataclass
class TaskRecord:
    """One submitted task: ``job`` (owsbench job id), ``stage`` (``fit`` or ``eval``),
    ``slurm_id`` (``ARRAY_TASK``), ``what`` it runs, the log and result paths, ``cluster``
    (submitit's executor name) and the last known ``state``."""

    job: str
    stage: str
    slurm_id: str
    what: str
    stdout: str
    stderr: str
    result: str
    cluster: str = "slurm"
    state: str = "pending"


class JobIndex:
    """The records of ``OUT/slurm/jobs.json`` (oldest first)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / "slurm" / "jobs.json"
        self.records: list[TaskRecord] = []
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.records = [TaskRecord(**item) for item in data["tasks"]]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise BadInput(f"{self.path} is not a jobs index: {err}") from None

    def save(self) -> None:
        tasks = [dataclasses.asdict(r) for r in self.records]
        atomic_write_text(self.path, json.dumps({"tasks": tasks}, indent=1) + "\n")

    def latest(self) -> list[TaskRecord]:
        """The last record of each (job, stage): what a rerun's status is about."""
        last = {(r.job, r.stage): r for r in self.records}
        return list(last.values())

    def active_jobs(self) -> set[str]:
        """Jobs with a task not finished (as last queried)."""
        return {r.job for r in self.latest() if r.state not in FINISHED}

    def refresh(self) -> list[TaskRecord]:
        """Query the state of every unfinished task, merge the tasks' row shards into
        ``OUT/results.jsonl`` (``merge_shards``), save; the latest records."""
        records = [r for r in self.records if r.state not in FINISHED]
        queue = squeue_states(r.slurm_id for r in records if r.cluster == "slurm")
        for record in records:
            record.state = task_state(record, queue)
        merge_shards(self.out)
        self.save()
        return self.latest()


def outcome(record: TaskRecord) -> str | None:
    """``done`` / ``failed`` from submitit's result file; None while there is none."""
    path = Path(record.result)
    if not path.exists():
        return None
    try:
        with path.open("rb") as file:
            status = pickle.load(file)[0]
    except (OSError, EOFError, pickle.UnpicklingError, IndexError, TypeError):
        return None  # being written
    return "done" if status == "success" else "failed"


def task_state(record: TaskRecord, queue: dict[str, str] | None) -> str:
    """The task's state now (see the module docstring); ``queue``: :func:`squeue_states`."""
    if (done := outcome(record)) is not None:
        return done
    if queue is not None and record.slurm_id in queue:
        return SLURM_STATES.get(queue[record.slurm_id], "failed")
    if record.cluster == "slurm" and queue is not None:
        return "failed"  # neither queued nor finished: cancelled, or the node went away
    return "running"


def squeue_states(ids: Iterable[str]) -> dict[str, str] | None:
    """``{ARRAY_TASK id: SLURM state}`` from ``squeue`` (finished tasks stay listed for the
    cluster's MinJobAge; ids SLURM forgot are left out); None when ``squeue`` cannot answer."""
    arrays = sorted({i.split("_")[0] for i in ids})
    if not arrays or shutil.which("squeue") is None:
        return {} if not arrays else None
    command = ["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(arrays)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return {} if "Invalid job id" in done.stderr else None
    pairs = (line.split() for line in done.stdout.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def counts(records: Sequence[TaskRecord]) -> dict[str, int]:
    """Tasks per state, every state listed."""
    found = Counter(r.state for r in records)
    return {state: found.get(state, 0) for state in STATES}


def log_tail(record: TaskRecord, lines: int = 8) -> list[str]:
    """The last ``lines`` lines of the task's stderr log (its stdout when that is empty)."""
    for name in (record.stderr, record.stdout):
        path = Path(name)
        if path.exists() and (text := path.read_text(errors="replace").strip()):
            return text.splitlines()[-lines:]
    return [f"(no log yet at {record.stderr})"]
