"""The training loop every fit runs: ``Loop(recipe, ...).run(params, source, supervision)``.

Per step ``s`` of ``recipe.steps``: the next indices of the data order (``frame_order``: a seeded
permutation per epoch; or any sampler with its signature), the supervision's batch of those
items (``Supervision.batch``), the shared augmentation when the loop has an ``augmentation``
config, the batch on the device, the learning rate ``one_cycle_lr(s)`` (per parameter group:
:func:`group_lr`, scaled and delayed as the group declares), the hooks' ``before_step``, the
supervision's loss terms (``Supervision.losses``; ``"total"`` is minimised), ``zero_grad``,
``backward``, optional gradient-norm clipping, ``optimizer.step()``, then the log (total loss,
the recipe's lr, every other term as a named scalar), the hooks' ``on_step`` and, every
``validate_every`` steps, the validation callback. Hooks also run ``before`` the first step and
``after`` the last.

Every random draw comes from the loop's ``Streams`` (data order, batch contents such as
outlier-exposure pastes, augmentation), so a seed fixes the whole fit; the global torch seed
(weight init, dropout) is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from owsbench.errors import BadInput
from owsbench.training.batches import AugmentConfig, Batch, augment, frame_order
from owsbench.training.log import TrainLog
from owsbench.training.schedule import one_cycle_lr

if TYPE_CHECKING:
    from owsbench.training.supervision import Supervision

OPTIMIZERS = ("adamw", "sgd")
Sampler = Callable[[int, int, int, np.random.Generator], Iterator[list[int]]]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one training phase.

    ``optimizer``: ``"adamw"`` (``torch.optim.AdamW``) or ``"sgd"`` (with ``momentum``); ``lr`` is
    the peak of the one-cycle schedule; ``grad_clip``: max L2 norm of all gradients (None: off).
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_fraction: float = 0.1
    optimizer: str = "adamw"
    momentum: float = 0.9
    grad_clip: float | None = None

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


def group_lr(group: dict[str, Any], step: int, steps: int, recipe: Recipe) -> float:
    """The learning rate of an optimiser group at ``step``: ``lr_scale`` (default 1) times the
    one-cycle schedule of the group's own steps, which start at ``start_step`` (default 0; 0
    before it) and warm up over ``warmup_fraction`` (default the recipe's) of the rest. Groups
    without those keys follow the recipe's schedule."""
    start = int(group.get("start_step", 0))
    if step < start:
        return 0.0
    warmup = group.get("warmup_fraction", recipe.warmup_fraction)
    lr = one_cycle_lr(step - start, steps - start, recipe.lr, warmup)
    return float(group.get("lr_scale", 1.0)) * lr


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
        sampler: Sampler = frame_order,
        desc: str = "fit",
        progress: bool = True,
    ) -> None:
        if recipe.steps < 0 or recipe.batch_size < 1:
            raise BadInput(f"{desc}: steps must be >= 0 and batch_size >= 1")
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
        self.log = TrainLog()

    def batches(self, source: Sequence, supervision: Supervision) -> Iterator[Batch]:
        """The loop's batches, built lazily (so draws of order and batch streams interleave)."""
        order = self.sampler(
            len(source), self.recipe.steps, self.recipe.batch_size, self.streams.order
        )
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
        ``source`` (a split or any sequence the supervision batches); return the ``TrainLog``."""
        params = list(params)
        optimizer = self.recipe.build_optimizer(params)
        every = [p for group in optimizer.param_groups for p in group["params"]]
        self.log = TrainLog()
        for hook in self.hooks:
            hook.before(self)
        steps = self.recipe.steps
        bar = tqdm(
            self.batches(source, supervision), total=steps, desc=self.desc,
            disable=not self.progress, leave=False,
        )  # fmt: skip
        for step, batch in enumerate(bar):
            lr = one_cycle_lr(step, steps, self.recipe.lr, self.recipe.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = group_lr(group, step, steps, self.recipe)
            for hook in self.hooks:
                hook.before_step(self, step)
            terms = supervision.losses(batch)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if self.recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(every, self.recipe.grad_clip)
            optimizer.step()
            self.log.record(lr, terms)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in terms.items()})
            for hook in self.hooks:
                hook.on_step(self, step, terms)
            if self.validate is not None and self.validate_every:
                if (step + 1) % self.validate_every == 0 or step + 1 == steps:
                    self.log.validation.append({"step": step + 1, **self.validate()})
        for hook in self.hooks:
            hook.after(self)
        return self.log
