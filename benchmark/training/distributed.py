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

    def finish(self, failed: bool) -> None:
        """A worker leaves the process (status 1 when it ``failed``); rank 0 ends the workers
        when it failed itself (they would wait for it), else waits for them and raises when one
        failed."""
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


def start_group(processes: int, device: torch.device) -> Group:
    """Fork ``processes - 1`` workers and join all in a gloo group; return this process's
    place (rank 0 in the caller, rank ``r`` in worker ``r``)."""
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
