"""The training loop every fit runs: ``Loop(recipe, ...).run(params, source, supervision)``.

Per step ``s`` of ``recipe.steps``: the next indices of the data order (``FrameOrder``: a seeded
permutation per epoch; or any sampler with its signature), the supervision's batch of those
items (``Supervision.batch``), the shared augmentation when the loop has an ``augmentation``
config, the batch on the device, the learning rate ``one_cycle_lr(s)`` (per parameter group:
:func:`group_lr`, scaled and delayed as the group declares), the hooks' ``before_step``, the
supervision's loss terms (``Supervision.losses``; ``"total"`` is minimised), ``zero_grad``,
``backward``, optional gradient-norm clipping, ``optimizer.step()``, then the log (total loss,
the recipe's lr, every other term as a named scalar), the hooks' ``on_step`` and, every
``validate_every`` steps, the validation callback. Hooks also run ``before`` the first step and
``after`` the last.

Inside a fit being made (:meth:`owsbench.fits.FitCache.load_or_fit`) the loop checkpoints every
``recipe.checkpoint_every`` steps and resumes from its last checkpoint when the fit was killed
(:class:`LoopCheckpoint`, :mod:`owsbench.training.resume`; the log's ``resumed_from`` says
where).

Every random draw comes from the loop's ``Streams`` (data order, batch contents such as
outlier-exposure pastes, augmentation), so a seed fixes the whole fit; the global torch seed
(weight init, dropout) is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from owsbench.errors import BadInput
from owsbench.fits import next_loop_checkpoint
from owsbench.training.batches import AugmentConfig, Batch, FrameOrder, augment
from owsbench.training.distributed import Group, leads, start_group
from owsbench.training.log import TrainLog
from owsbench.training.resume import (
    Resumable,
    load_checkpoint,
    restore_streams,
    save_checkpoint,
    streams_state,
)
from owsbench.training.schedule import one_cycle_lr

if TYPE_CHECKING:
    from owsbench.training.supervision import Supervision

OPTIMIZERS = ("adamw", "sgd")
MIN_CHECKPOINT_STEPS = 100  # default checkpoint spacing: a tenth of the steps, at least this
Sampler = Callable[[int, int, int, np.random.Generator], Iterator[list[int]]]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one training phase.

    ``optimizer``: ``"adamw"`` (``torch.optim.AdamW``) or ``"sgd"`` (with ``momentum``); ``lr`` is
    the peak of the one-cycle schedule; ``grad_clip``: max L2 norm of all gradients (None: off);
    ``checkpoint_every``: steps between the checkpoints a loop inside a fit writes (0: none;
    None: the fit cache's setting, else a tenth of ``steps`` but at least
    ``MIN_CHECKPOINT_STEPS``, so that short fits, which lose little when killed, write none).
    It changes no result, so it is no part of a fit's cache key (the key is made from the
    method's or segmenter's config, not from this recipe).
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_fraction: float = 0.1
    optimizer: str = "adamw"
    momentum: float = 0.9
    grad_clip: float | None = None
    checkpoint_every: int | None = None  # steps between loop checkpoints (see the docstring)

    @classmethod
    def of(cls, config: Any, **overrides: Any) -> Recipe:
        """The recipe read from the same-named fields of ``config`` (any dataclass config),
        then ``overrides``; fields the config lacks keep their defaults."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**{**values, **overrides})

    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        """The optimiser of ``params``: parameters, or parameter groups (dicts with
        ``params``; extra keys such as ``lr_scale`` ride along in the optimiser's groups)."""
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        raise BadInput(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


@dataclass
class Streams:
    """The random streams of a fit: data ``order``, ``batch`` contents (e.g. pastes) and
    ``augment`` (a torch generator). ``order`` and ``batch`` may be one generator."""

    order: np.random.Generator
    batch: np.random.Generator
    augment: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Streams:
        """One numpy generator ``default_rng(seed)`` for order and batches, a torch generator
        seeded with ``seed``."""
        rng = np.random.default_rng(seed)
        return cls(order=rng, batch=rng, augment=torch.Generator().manual_seed(seed))

    @classmethod
    def derived(cls, rng: np.random.Generator) -> Streams:
        """``rng`` for order and batches, a torch generator seeded from ``rng``'s first draw."""
        return cls(rng, rng, torch.Generator().manual_seed(int(rng.integers(2**62))))


class Hook:
    """Code that runs around a loop: ``before`` the first step, ``before_step`` before each
    step's batch is scored, ``on_step`` after every optimiser step (``terms`` are that step's
    loss terms), ``after`` the last step."""

    def before(self, loop: Loop) -> None:
        """Runs once before the first step."""

    def before_step(self, loop: Loop, step: int) -> None:
        """Runs before the losses of ``step`` (0-based) are computed."""

    def on_step(self, loop: Loop, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Runs after the optimiser step of ``step`` (0-based)."""

    def after(self, loop: Loop) -> None:
        """Runs once after the last step."""

    def resume_state(self) -> dict[str, Any] | None:
        """What changes during the loop besides the trained parameters, for the loop's
        checkpoints (:mod:`owsbench.training.resume`); None (the default): not known, so a loop
        with this hook writes no checkpoint and a killed fit starts again."""
        return None

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Put back what ``resume_state`` returned."""


def group_lr(group: dict[str, Any], step: int, steps: int, recipe: Recipe) -> float:
    """The learning rate of an optimiser group at ``step``: ``lr_scale`` (default 1) times the
    one-cycle schedule of the group's own steps, which start at ``start_step`` (default 0; 0
    before it) and warm up over ``warmup_fraction`` (default the recipe's) of the rest. Groups
    without those keys follow the recipe's schedule."""
    scale = float(group.get("lr_scale", 1.0))
    if "start_step" not in group and "warmup_fraction" not in group:
        return scale * one_cycle_lr(step, steps, recipe.lr, recipe.warmup_fraction)
    start = int(group.get("start_step", 0))
    if step < start:
        return 0.0
    warmup = group.get("warmup_fraction", recipe.warmup_fraction)
    return scale * one_cycle_lr(step - start, steps - start, recipe.lr, warmup)


class Loop:
    """One training phase (see the module docstring)."""

    def __init__(
        self,
        recipe: Recipe,
        device: torch.device,
        streams: Streams,
        *,
        augmentation: AugmentConfig | None = None,
        hooks: Iterable[Hook] = (),
        validate: Callable[[], dict[str, float]] | None = None,
        validate_every: int | None = None,
        sampler: Sampler = FrameOrder,
        desc: str = "fit",
        progress: bool = True,
        processes: int = 1,
    ) -> None:
        if recipe.steps < 0 or recipe.batch_size < 1:
            raise BadInput(f"{desc}: steps must be >= 0 and batch_size >= 1")
        if processes < 1 or recipe.batch_size % processes:
            raise BadInput(
                f"{desc}: batch_size {recipe.batch_size} does not split over {processes} processes"
            )
        self.recipe = recipe
        self.device = device
        self.streams = streams
        self.augmentation = augmentation
        self.hooks = list(hooks)
        self.validate = validate
        self.validate_every = validate_every
        self.sampler = sampler
        self.desc = desc
        self.progress = progress
        self.processes = processes
        self.log = TrainLog()

    def batches(
        self, source: Sequence, supervision: Supervision, order: Iterator[list[int]]
    ) -> Iterator[Batch]:
        """The loop's batches of ``order``, built lazily (so draws of order and batch streams
        interleave)."""
        for indices in order:
            batch = supervision.batch([source[i] for i in indices], self.streams.batch)
            if self.augmentation is not None and batch.labels is not None:
                batch.images, batch.labels = augment(
                    batch.images, batch.labels, self.augmentation, self.streams.augment
                )
            yield batch.to(self.device)

    def run(
        self, params: Iterable[torch.nn.Parameter], source: Sequence, supervision: Supervision
    ) -> TrainLog:
        """Train ``params`` (parameters, or parameter groups: see :func:`group_lr`) on
        ``source`` (a split or any sequence the supervision batches); return the ``TrainLog``.
        Inside a fit being made it resumes from, and writes, its checkpoints
        (:class:`LoopCheckpoint`); with ``processes`` > 1 it trains data-parallel
        (:mod:`owsbench.training.distributed`; only this process returns)."""
        group = start_group(self.processes, self.device) if self.processes > 1 else None
        failed = True
        try:
            log = self.train(list(params), source, supervision, group)
            failed = False
        finally:
            if group is not None:
                group.finish(failed)
        return log

    def train(
        self,
        params: list,
        source: Sequence,
        supervision: Supervision,
        group: Group | None,
    ) -> TrainLog:
        """The steps of ``run`` in this process (rank ``group.rank`` of a process group)."""
        optimizer = self.recipe.build_optimizer(params)
        every = [p for param_group in optimizer.param_groups for p in param_group["params"]]
        self.log = TrainLog()
        for hook in self.hooks:
            hook.before(self)
        steps, lead = self.recipe.steps, leads(group)
        order = self.sampler(len(source), steps, self.recipe.batch_size, self.streams.order)
        checkpoint = LoopCheckpoint.of(self, every, optimizer, order, [supervision, *self.hooks])
        start = checkpoint.resume() if checkpoint is not None else 0
        bar = tqdm(
            zip(range(start, steps), self.batches(source, supervision, order), strict=False),
            total=steps, initial=start, desc=self.desc, disable=not (self.progress and lead),
            leave=False,
        )  # fmt: skip
        for step, batch in bar:
            terms = self.step(every, optimizer, (step, steps), supervision, batch, group)
            logged = group.average_terms(terms) if group is not None else terms
            self.log.record(optimizer.param_groups[0]["lr"], logged)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in logged.items()})
            for hook in self.hooks:
                hook.on_step(self, step, terms)
            if self.validate is not None and self.validate_every and lead:
                if (step + 1) % self.validate_every == 0 or step + 1 == steps:
                    self.log.validation.append({"step": step + 1, **self.validate()})
            if checkpoint is not None and checkpoint.due(step + 1) and lead:
                checkpoint.save(step + 1)
        for hook in self.hooks:
            hook.after(self)
        return self.log

    def step(
        self,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        position: tuple[int, int],
        supervision: Supervision,
        batch: Batch,
        group: Group | None,
    ) -> dict[str, torch.Tensor]:
        """One optimiser step at ``position`` = (step, steps): each optimiser group at its
        :func:`group_lr`, the hooks' ``before_step``, the loss on this rank's slice of
        ``batch`` and the gradients averaged over the ranks; the step's loss terms."""
        step, steps = position
        for param_group in optimizer.param_groups:
            param_group["lr"] = group_lr(param_group, step, steps, self.recipe)
        for hook in self.hooks:
            hook.before_step(self, step)
        terms = supervision.losses(group.slice(batch) if group is not None else batch)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if group is not None:
            group.average_gradients(params)
        if self.recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.recipe.grad_clip)
        optimizer.step()
        return terms


class LoopCheckpoint:
    """The checkpoint of one loop run (:mod:`owsbench.training.resume`): ``resume`` restores
    it (returns the step to go on from), ``save`` writes it."""

    def __init__(
        self,
        loop: Loop,
        path: Path,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        order: Iterator[list[int]],
        parts: list[Resumable],
        every: int,
    ) -> None:
        self.loop, self.path, self.params, self.optimizer = loop, path, params, optimizer
        self.order, self.parts, self.every = order, parts, every

    @classmethod
    def of(
        cls,
        loop: Loop,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        order: Iterator[list[int]],
        parts: list[Any],
    ) -> LoopCheckpoint | None:
        """The checkpoint of this loop when it runs inside a fit being made, checkpointing is
        on (``checkpoint_every`` not 0) and every part is :class:`Resumable` with a state."""
        slot = next_loop_checkpoint()  # taken first: a fit's n-th loop keeps its number
        if slot is None:
            return None
        path, every = slot
        steps, own = loop.recipe.steps, loop.recipe.checkpoint_every
        every = own if own is not None else every
        if every is None:
            every = max(math.ceil(steps / 10), MIN_CHECKPOINT_STEPS)
        unique = list({id(p): p for p in parts}.values())
        if every == 0 or not all(
            isinstance(p, Resumable) and p.resume_state() is not None for p in unique
        ):
            return None
        return cls(loop, path, params, optimizer, order, unique, every)

    def due(self, done: int) -> bool:
        """Whether to save after ``done`` steps (not after the last: the fit is stored next)."""
        return done % self.every == 0 and done < self.loop.recipe.steps

    def save(self, done: int) -> None:
        save_checkpoint(
            self.path,
            {
                "step": done,
                "params": [p.detach().cpu() for p in self.params],
                "optimizer": self.optimizer.state_dict(),
                "streams": streams_state(self.loop.streams),
                "order": self.order.state_dict() if hasattr(self.order, "state_dict") else None,
                "parts": [p.resume_state() for p in self.parts],
                "log": self.loop.log,
            },
        )

    def resume(self) -> int:
        """Restore the saved state (nothing when there is none); the step to go on from."""
        state = load_checkpoint(self.path)
        if state is None or len(state["params"]) != len(self.params):
            return 0
        with torch.no_grad():
            for param, saved in zip(self.params, state["params"], strict=True):
                param.copy_(saved)
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_resume_state(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        if state["order"] is not None:
            self.order.load_state_dict(state["order"])
        restore_streams(self.loop.streams, state["streams"])
        self.loop.log = state["log"]
        self.loop.log.resumed_from.append(state["step"])
        return state["step"]
