"""Data-parallel training of one loop over N processes of one machine (``torch.distributed``).

``Loop(..., processes=N)`` forks N - 1 worker processes when its ``run`` starts (ranks 1..N-1;
the calling process is rank 0) and joins them in a gloo process group (rendezvous through a file
in a fresh temporary folder). Every rank draws the same data order and builds and augments the
same global batch, so the random draws are those of a one-process fit, then trains on its
``1/N`` slice of it (the recipe's ``batch_size`` stays the global batch, so a recipe and its
cache key mean the same for any N). After ``backward`` the gradients are averaged over the ranks
(one ``all_reduce`` of all of them, divided by N: what ``DistributedDataParallel`` does), so
every rank takes the same optimiser step, that of the global batch when the loss is a mean of
per-sample terms of equal weight; batch-norm layers normalise each slice with its own
statistics, and the model kept is rank 0's (its running statistics are those of its slices, as
with DDP's default of broadcasting rank 0's buffers). Rank 0 logs (each loss term averaged over
the ranks), validates, checkpoints and keeps the trained model; a worker leaves with
``os._exit`` after the last step, and rank 0 raises when one failed.

A forked worker runs its torch ops on one thread (``torch.utils.data.DataLoader`` workers do the
same): the parent's OpenMP thread pool does not survive ``fork``, and a worker that enters a
parallel region with it hangs. Multi-process training runs on CPU (gloo). Forking a process that
has initialised CUDA is not safe, so on a GPU it is refused (``BadInput``) rather than run
wrongly.

Under SLURM (``--launcher slurm --procs-per-job N``) the ranks are the job's N ``srun`` tasks
instead, each a fresh process (so CUDA is safe: task ``r`` uses its node's GPU ``local_rank``
and the group is NCCL; gloo on CPU): :func:`join_tasks` joins them once per job (rendezvous at
``tcp://<first node>:<port>``), every loop with ``processes`` = N then runs on that group
(:func:`start_group` returns it instead of forking) and it outlives the loops. Task 0 runs the
job; the others run its fits only (``owsbench.worker``), and the fit cache lets task 0 decide
and store each fit (:meth:`owsbench.fits.FitCache.load_or_fit`, :meth:`Group.broadcast`).

Source: PyTorch, "Getting started with distributed data parallel" and
``torch.nn.parallel.DistributedDataParallel`` (gradient averaging over ranks).
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import tempfile
import traceback
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from owsbench.errors import BadInput
from owsbench.training.batches import Batch

TIMEOUT = datetime.timedelta(minutes=10)  # a collective waiting longer than this fails


@dataclass
class Group:
    """This process's place in the loop's process group."""

    rank: int
    size: int
    workers: tuple[int, ...] = ()  # rank 0: the worker processes' pids
    folder: Path | None = None  # rank 0: the rendezvous folder
    tasks: bool = False  # the group of a job's srun tasks (join_tasks): it outlives the loop

    @property
    def is_worker(self) -> bool:
        return self.rank > 0

    def slice(self, batch: Batch) -> Batch:
        """This rank's share of ``batch``: rows ``rank * B/N`` to ``(rank + 1) * B/N`` of every
        tensor whose first dimension is the batch size."""
        size = batch.images.shape[0]
        per = size // self.size
        lo, hi = self.rank * per, (self.rank + 1) * per

        def part(value: object) -> object:
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
                return value[lo:hi]
            return value

        extras = {k: part(v) for k, v in batch.extras.items()}
        return replace(batch, images=part(batch.images), labels=part(batch.labels), extras=extras)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient replaced by its mean over the ranks (a missing gradient
        counts as zeros, so every rank sends the same tensors)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        for param, grad in zip(params, flat.split([g.numel() for g in grads]), strict=True):
            param.grad = grad.view_as(param).clone()

    def average_terms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss terms averaged over the ranks (detached: for the log)."""
        names = sorted(terms)
        values = torch.stack([terms[n].detach().float().reshape(()) for n in names])
        dist.all_reduce(values)
        return dict(zip(names, values / self.size, strict=True))

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value``, on every rank (picklable; the others pass anything)."""
        values = [value]
        dist.broadcast_object_list(values, src=0)
        return values[0]

    def finish(self, failed: bool) -> None:
        """A worker leaves the process (status 1 when it ``failed``); rank 0 ends the workers
        when it failed itself (they would wait for it), else waits for them and raises when one
        failed. A task group (``tasks``) stays for the job's next loop."""
        if self.tasks:
            return
        if self.is_worker:
            os._exit(1 if failed else 0)
        dist.destroy_process_group()
        for pid in self.workers if failed else ():
            os.kill(pid, signal.SIGKILL)
        statuses = [os.waitpid(pid, 0)[1] for pid in self.workers]
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if not failed and any(statuses):
            raise RuntimeError(f"{sum(1 for s in statuses if s)} training worker(s) failed")


_TASKS: ContextVar[Group | None] = ContextVar("owsbench_tasks", default=None)


def join_tasks(rank: int, size: int, address: str, device: torch.device) -> Group:
    """Join this process, task ``rank`` of a job's ``size`` tasks, to their process group
    (NCCL on CUDA, else gloo; rendezvous at ``tcp://<address>``, ``host:port``); the loops of
    this process then train on it (:func:`start_group`) until :func:`leave_tasks`."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"tcp://{address}", rank=rank, world_size=size, timeout=TIMEOUT
    )
    group = Group(rank, size, tasks=True)
    _TASKS.set(group)
    return group


def task_group() -> Group | None:
    """The group :func:`join_tasks` joined, None outside one."""
    return _TASKS.get()


def leads(group: Group | None) -> bool:
    """Whether this process logs, validates and checkpoints a loop run on ``group`` (None: on
    this process alone): rank 0 of the loop's group and of the job's tasks."""
    tasks = task_group()
    return (group is None or not group.is_worker) and (tasks is None or not tasks.is_worker)


def leave_tasks() -> None:
    """Leave the task group (if any)."""
    if _TASKS.get() is not None:
        dist.destroy_process_group()
        _TASKS.set(None)


def start_group(processes: int, device: torch.device) -> Group:
    """The group of the job's tasks when this process joined one (``BadInput`` unless it has
    ``processes`` ranks); else fork ``processes - 1`` workers and join all in a gloo group.
    Returns this process's place (rank 0 in the caller, rank ``r`` in worker ``r``)."""
    if (tasks := task_group()) is not None:
        if tasks.size != processes:
            raise BadInput(f"a loop on {processes} processes in a job of {tasks.size} tasks")
        return tasks
    if device.type != "cpu":
        raise BadInput(f"multi-process training runs on CPU only (got {device})")
    if dist.is_initialized():
        raise BadInput("multi-process training inside another process group")
    folder = Path(tempfile.mkdtemp(prefix="owsbench-ddp-"))
    workers = []
    for rank in range(1, processes):
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)  # see the module docstring
            return join(Group(rank, processes), folder)
        workers.append(pid)
    return join(Group(0, processes, tuple(workers), folder), folder)


def join(group: Group, folder: Path) -> Group:
    """Join the process group (a worker that cannot leaves the process with status 1)."""
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{folder / 'rendezvous'}", rank=group.rank,
            world_size=group.size, timeout=TIMEOUT,
        )  # fmt: skip
    except Exception:
        if group.is_worker:
            traceback.print_exc()
            os._exit(1)
        raise
    return group
