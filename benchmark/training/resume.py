"""Checkpoints of a training loop, so that a fit killed at any step resumes where it was.

A loop that runs inside a fit being made (:meth:`owsbench.fits.FitCache.load_or_fit`) saves,
every ``checkpoint_every`` steps (:class:`owsbench.training.loop.Recipe`), everything its next
steps depend on: the step reached, the trained parameters, the optimiser's state (the schedule is a
function of the step), every random stream (the loop's ``Streams``; torch's global, CUDA,
numpy's global and Python's ``random`` generators), the data order's position (a sampler with
``state_dict``, e.g. :class:`~owsbench.training.batches.FrameOrder`; a sampler without one only
draws from the order stream), the state of the supervision and the hooks
(:class:`Resumable`: e.g. batch-norm statistics, running baselines) and the log so far.
Restoring it and running the remaining steps gives, on CPU, the same bits as a run that was
never interrupted. Files are written atomically (:func:`owsbench.cache.atomic_write_bytes`); an
unreadable one is ignored (the loop starts from step 0).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from owsbench.cache import atomic_write_bytes


@runtime_checkable
class Resumable(Protocol):
    """A supervision or hook whose state changes during the loop in ways the trained
    parameters do not hold; ``resume_state`` is None when it cannot say (the loop then writes
    no checkpoint)."""

    def resume_state(self) -> dict[str, Any] | None: ...

    def load_resume_state(self, state: dict[str, Any]) -> None: ...


def buffers_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of ``module`` by name (batch-norm statistics: what a module's training
    changes besides its parameters, which the loop saves itself)."""
    return {name: buffer.detach().cpu() for name, buffer in module.named_buffers()}


def load_buffers(module: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    own = dict(module.named_buffers())
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def streams_state(streams: Any) -> dict[str, Any]:
    """The states of the loop's streams and of the global generators."""
    state = {
        "order": streams.order.bit_generator.state,
        "batch": streams.batch.bit_generator.state,
        "augment": streams.augment.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_streams(streams: Any, state: dict[str, Any]) -> None:
    """Put every generator back to ``state`` (``order`` and ``batch`` may be one generator:
    it gets the same state twice)."""
    streams.order.bit_generator.state = state["order"]
    streams.batch.bit_generator.state = state["batch"]
    streams.augment.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint in ``path``; None when there is none or it cannot be read. Our own file
    (it holds Python RNG tuples and numpy generator states), so it is unpickled in full."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: start again from step 0
        return None
