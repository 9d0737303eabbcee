"""ContMAV's staged recipe, first stage: a cross-entropy-only fit of the ContMAV network.

The official code starts a run from earlier weights with ``--finetune`` / ``--load_weights``
(``PRBonn/ContMAV`` ``src/build_model.py``, ``src/args.py``); the staged recipe uses that to
start ContMAV from a network whose semantic decoder already segments: ``ContMAVNet`` trained
with ``L = CE(z, y)`` alone (void ignored), on the same split, crops, augmentation and schedule
as the main training (its own random streams), for ``ce_steps`` steps. The fit depends only on
the architecture, the training recipe, the training data and the seed, not on the loss variant,
so every ContMAV variant with the same architecture shares one cached copy
(``<cache>/fits/contmav-ce-<hash>``; not cached for in-memory splits without a fingerprint).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from owsbench.datasets.base import Frame, Split
from owsbench.fits import FitCache
from owsbench.methods.base import FitContext, image_batch
from owsbench.methods.nn.contmav_model import ContMAVNet
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.loop import Loop, Recipe, Streams
from owsbench.training.losses import semantic_ce
from owsbench.training.resume import buffers_of, load_buffers
from owsbench.training.supervision import Supervision

ARCHITECTURE = ("num_classes", "encoder", "decoder_channels", "decoder_blocks", "context_bins")
RECIPE = (
    "batch_size", "lr", "weight_decay", "warmup_fraction", "crop", "scale_range", "hflip",
    "color_jitter",
)  # fmt: skip


class CrossEntropyOnly(Supervision):
    """Dense labels of the training split; the semantic decoder's cross-entropy."""

    def __init__(self, model: ContMAVNet) -> None:
        self.model = model

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        labels = torch.from_numpy(np.stack([f.semantic for f in items])).long()
        check_label_range(labels, self.model.num_classes, "contmav (cross-entropy stage)")
        return Batch(images=image_batch([f.image for f in items]), labels=labels)

    def resume_state(self) -> dict[str, Any] | None:
        return {"buffers": buffers_of(self.model)}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        load_buffers(self.model, state["buffers"])

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"total": semantic_ce(self.model(batch.images)[0], batch.labels)}


def ce_only_state(
    config: Any, steps: int, train: Split, ctx: FitContext
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The cross-entropy-only ``ContMAVNet`` state for ``config``'s architecture and recipe
    (``steps`` steps), cached, and a report ``{ce_steps, ce_loss_end, ce_fit_cached}``."""
    values = dataclasses.asdict(config)
    recipe = {
        "architecture": {k: values[k] for k in ARCHITECTURE},
        "training": {k: values[k] for k in RECIPE},
        "steps": steps,
        "train": ctx.train_fingerprint,
        "seed": ctx.seed,
    }

    def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        torch.manual_seed(ctx.seed)
        model = ContMAVNet.from_config(config).to(ctx.device).train()
        loop = Loop(
            Recipe.of(config, steps=steps),
            ctx.device,
            Streams.derived(np.random.default_rng([ctx.seed, 5])),  # apart from ContMAV's
            augmentation=config,
            desc="fit contmav (cross-entropy stage)",
            progress=ctx.progress,
        )
        log = loop.run(model.parameters(), train, CrossEntropyOnly(model))
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state, log.meta()

    if ctx.train_fingerprint is None:
        state, meta = fit()
        cached = False
    else:
        result = FitCache(ctx.cache_dir).load_or_fit("contmav-ce", recipe, fit)
        state, meta, cached = result.state, result.meta, result.cached
    losses = meta.get("train_loss") or [float("nan")]
    k = max(1, len(losses) // 10)
    return state, {
        "ce_steps": steps,
        "ce_loss_end": float(np.mean(losses[-k:])),
        "ce_fit_cached": cached,
    }
