"""Contrastive pre-training of a segmentation encoder on region crops (MoCo + label-aware
InfoNCE, optionally SynCo hard negatives): the first phase of ``contmav-infonce``.

Sources: MoCo v2 / SynCo (``giakoumoglou/synco`` ``synco/builder.py``, ``main_synco.py``;
Chen et al., arXiv 2003.04297): a query encoder ``f_q`` (the segmentation encoder, global
average pooling of its deepest stage, and an MLP head ``Linear(C, C) - ReLU - Linear(C, dim)``),
a momentum key encoder ``f_k`` (a copy, ``theta_k <- m theta_k + (1 - m) theta_q`` before each
step's keys), L2-normalised outputs, a FIFO queue of keys, SGD with momentum and a cosine
schedule. Per step, ``batch_size`` crops are drawn from the crop bank (:mod:`.crops`) with
replacement, each is augmented twice (``two_views``: random resized crop of area 0.4-1 and aspect
3/4-4/3 resized back to the crop size, horizontal flip, brightness/contrast jitter), the queries
``q = f_q(view 1)`` and keys ``k = f_k(view 2)`` go into :func:`.infonce.infonce_loss` with the
queue as it was before the step (plus SynCo negatives after the warm-up when enabled), and the
keys are enqueued with their labels and crop ids afterwards (queued views of an anchor's own
crop are positives, see :mod:`.infonce`).

Deviations from MoCo/SynCo: lighter views (resized crop, flip, brightness/contrast; MoCo v2's
``aug-plus`` also jitters saturation and hue and adds random grayscale and Gaussian blur); the
encoder is the segmentation model's own (a ResNet-34 layout on 32x32 crops), not a ResNet-50 on
224x224 images; no shuffle-BN (one device; the positive pairs still come from two
encoders and two forward passes); the queue starts empty; ``key_momentum`` 0.99 and the queue
4096 long by default (official 0.999 and 65536, sized for 200 epochs of ImageNet); the warm-up
is a fraction of the steps (official 10 of 200 epochs = 0.05, the default); a short linear
learning-rate warm-up (the shared ``one_cycle_lr``) before the cosine decay.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from owsbench.checks import Range
from owsbench.methods.nn.crops import UNKNOWN, CropBank
from owsbench.methods.nn.infonce import LabelledQueue, infonce_loss
from owsbench.methods.nn.synco import SynCoConfig, directional_negatives
from owsbench.segmenters.inputs import register_imagenet_stats
from owsbench.training.batches import Batch, jitter_brightness_contrast, sample_with_replacement
from owsbench.training.loop import Hook, Loop, Recipe, Streams
from owsbench.training.resume import buffers_of, load_buffers
from owsbench.training.supervision import Supervision


@dataclass(frozen=True)
class PretrainConfig:
    """The contrastive phase's recipe (official MoCo v2 / SynCo values in comments)."""

    steps: Annotated[int, Range(ge=1)] = 500
    batch_size: Annotated[int, Range(ge=1)] = 32  # official 256
    lr: Annotated[float, Range(gt=0)] = 0.03  # official SGD 0.03, momentum 0.9, wd 1e-4, cosine
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Range(ge=0)] = 1e-4
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.05
    key_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.99  # official 0.999
    queue_size: Annotated[int, Range(ge=1, le=262_144)] = 4096  # official 65536
    # official 0.07 (MoCo v1) / 0.2 (the SynCo README run)
    temperature: Annotated[float, Range(gt=0)] = 0.2
    projection_dim: Annotated[int, Range(ge=1, le=1024)] = 128
    view_area: Annotated[tuple[float, float], Range(gt=0, le=1)] = (0.4, 1.0)
    color_jitter: Annotated[float, Range(ge=0, lt=1)] = 0.4
    synco: SynCoConfig | None = None  # None: plain InfoNCE
    synco_direction: str = "both"
    synco_warmup_fraction: Annotated[float, Range(ge=0, le=1)] = 0.05  # official 10 of 200 epochs


class CropEmbedder(nn.Module):
    """``encoder`` (an smp encoder: a list of stage outputs) -> global average pool of the
    deepest stage -> MLP head -> L2-normalised ``(B, dim)``; images in ``[0, 1]``."""

    def __init__(self, encoder: nn.Module, channels: int, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, dim)
        )
        register_imagenet_stats(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        deepest = self.encoder((images - self.mean) / self.std)[-1]
        return F.normalize(self.head(deepest.mean(dim=(2, 3))), dim=1)


def two_views(
    crops: torch.Tensor, area: tuple[float, float], jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """One random view of each crop ``(B, 3, S, S)`` in ``[0, 1]`` (same size out)."""
    batch, _, size, _ = crops.shape
    rand = torch.rand(batch, 6, generator=generator)
    scale = area[0] + (area[1] - area[0]) * rand[:, 0]
    log_ratio = (2 * rand[:, 1] - 1) * np.log(4 / 3)
    ratio = torch.exp(log_ratio)
    w = (size * torch.sqrt(scale * ratio)).clamp(max=size)
    h = (size * torch.sqrt(scale / ratio)).clamp(max=size)
    x0 = rand[:, 2] * (size - w)
    y0 = rand[:, 3] * (size - h)
    boxes = torch.stack([torch.arange(batch, dtype=torch.float32), x0, y0, x0 + w, y0 + h], 1)
    views = roi_align(crops, boxes.to(crops), output_size=size, aligned=True)
    flip = rand[:, 4] < 0.5
    views[flip] = views[flip].flip(-1)
    if jitter > 0:
        views = jitter_brightness_contrast(views, jitter, generator)
    return views.clamp(0.0, 1.0).contiguous()


@dataclass
class PretrainResult:
    """The per-step loss and learning rate, and a summary for the fit report."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    synthetic_from_step: int | None = None
    similarity: dict[str, float | None] = field(default_factory=dict)

    def report(self) -> dict[str, object]:
        k = max(1, len(self.loss) // 10)
        return {
            "pretrain_steps": len(self.loss),
            "pretrain_loss_start": float(np.mean(self.loss[:k])) if self.loss else None,
            "pretrain_loss_end": float(np.mean(self.loss[-k:])) if self.loss else None,
            "pretrain_synthetic_from_step": self.synthetic_from_step,
            "pretrain_similarity": dict(self.similarity),
        }


@torch.no_grad()
def embedding_similarity(
    embedder: nn.Module, bank: CropBank, batch_size: int = 256
) -> dict[str, float | None]:
    """Mean cosine similarity of the bank's crop embeddings (eval mode, no augmentation) over
    pairs of distinct crops: ``same_class`` (two crops of one known class), ``other_class`` (two
    known classes) and ``known_unknown``; None where a kind of pair does not occur."""
    embedder.eval()
    device = next(embedder.parameters()).device
    crops = torch.from_numpy(bank.images).permute(0, 3, 1, 2)
    z = torch.cat(
        [embedder(crops[i : i + batch_size].float().div(255).to(device)) for i in
         range(0, len(crops), batch_size)]
    ).cpu()  # fmt: skip
    labels = torch.from_numpy(bank.labels)
    sim = z @ z.T
    known = labels != UNKNOWN
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(len(labels), dtype=torch.bool)
    kinds = {
        "same_class": same & known[:, None] & distinct,
        "other_class": ~same & known[:, None] & known[None, :],
        "known_unknown": known[:, None] & ~known[None, :],
    }
    return {k: float(sim[m].mean()) if bool(m.any()) else None for k, m in kinds.items()}


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, m: float) -> None:
    """``theta_k <- m theta_k + (1 - m) theta_q`` for every parameter."""
    for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
        pk.mul_(m).add_(pq.detach(), alpha=1 - m)


class ContrastiveObjective(Supervision, Hook):
    """One MoCo step for the shared loop: the batch holds two views of the drawn crops (the
    loop's items are crop indices), the loss is label-aware InfoNCE of the query encoder's first
    view against the momentum encoder's second (plus SynCo negatives after the warm-up), and the
    keys are enqueued after the optimiser step (a hook)."""

    def __init__(
        self,
        query: CropEmbedder,
        bank: CropBank,
        config: PretrainConfig,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.query = query
        self.key = copy.deepcopy(query)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.queue = LabelledQueue(config.queue_size, config.projection_dim, device)
        self.crops = torch.from_numpy(bank.images).permute(0, 3, 1, 2)  # uint8 (N, 3, S, S)
        self.labels = torch.from_numpy(bank.labels)
        self.config = config
        self.generator = generator
        self.warmup = int(config.steps * config.synco_warmup_fraction)
        self.step = 0
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def batch(self, items: list[int], rng: np.random.Generator) -> Batch:
        cfg = self.config
        index = torch.tensor(items, dtype=torch.int64)
        crops = self.crops[index].float().div_(255.0)
        v1 = two_views(crops, cfg.view_area, cfg.color_jitter, self.generator)
        v2 = two_views(crops, cfg.view_area, cfg.color_jitter, self.generator)
        return Batch(
            images=v1, extras={"keys_view": v2, "labels": self.labels[index], "index": index}
        )

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, queue = self.config, self.queue
        labels, index = batch.extras["labels"], batch.extras["index"]
        q = self.query(batch.images)
        with torch.no_grad():
            momentum_update(self.key, self.query, cfg.key_momentum)
            k = self.key(batch.extras["keys_view"])
        synthetic = valid = None
        if cfg.synco is not None and self.step >= self.warmup:
            synthetic, valid = directional_negatives(
                q, labels != UNKNOWN, queue.keys, queue.labels, cfg.synco_direction, cfg.synco,
                self.generator,
            )  # fmt: skip
        loss = infonce_loss(
            q, k, labels, queue.keys, queue.labels, cfg.temperature, synthetic, valid, index,
            queue.ids,
        )  # fmt: skip
        self.pending = (k, labels, index)
        return {"total": loss}

    def resume_state(self) -> dict[str, Any] | None:
        """The momentum encoder, the query encoder's buffers, the queue and the step."""
        queue = self.queue
        return {
            "key": self.key.state_dict(),
            "buffers": buffers_of(self.query),
            "queue": (queue.keys, queue.labels, queue.ids, queue.pointer),
            "step": self.step,
        }

    def load_resume_state(self, state: dict[str, Any]) -> None:
        self.key.load_state_dict(state["key"])
        load_buffers(self.query, state["buffers"])
        keys, labels, ids, self.queue.pointer = state["queue"]
        for mine, saved in zip(
            (self.queue.keys, self.queue.labels, self.queue.ids), (keys, labels, ids), strict=True
        ):
            mine.copy_(saved)
        self.step = state["step"]

    def on_step(self, loop: Loop, step: int, terms: dict[str, torch.Tensor]) -> None:
        self.queue.push(*self.pending)
        self.step = step + 1


def pretrain_encoder(
    encoder: nn.Module,
    channels: int,
    bank: CropBank,
    config: PretrainConfig,
    seed: int,
    device: torch.device,
    progress: bool = True,
    desc: str = "pretrain encoder",
) -> PretrainResult:
    """Train ``encoder`` in place (its deepest stage has ``channels`` channels) on ``bank``
    (SGD with momentum, the one-cycle schedule, crops drawn with replacement); it is left in
    eval mode."""
    streams = Streams.derived(np.random.default_rng([seed, 4]))
    query = CropEmbedder(encoder, channels, config.projection_dim).to(device).train()
    objective = ContrastiveObjective(query, bank, config, streams.augment, device)
    loop = Loop(
        Recipe.of(config, optimizer="sgd"),
        device,
        streams,
        hooks=[objective],
        sampler=sample_with_replacement,
        desc=desc,
        progress=progress,
    )
    log = loop.run(query.parameters(), range(len(bank)), objective)
    result = PretrainResult(
        loss=log.loss,
        lr=log.lr,
        synthetic_from_step=objective.warmup if config.synco is not None else None,
    )
    result.similarity = embedding_similarity(query, bank)
    return result
