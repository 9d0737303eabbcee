"""SynCo hard negatives (Giakoumoglou & Stathaki, arXiv 2410.02401), for a label-aware queue.

Source: ``giakoumoglou/synco`` ``synco/builder.py`` (``find_hard_negatives``,
``hard_negatives_{interpolation,extrapolation,mixup,noise_inject,grad,adversarial}``).
For each query ``q`` the ``n_hard`` queue entries most similar to it (``topk(q . n)``) are its
hard-negative pool; indices are drawn from the pool uniformly **with replacement**, and six
operators make synthetic negatives (official defaults):

    1 interpolated    s = a q + (1 - a) n         a ~ U(0, alpha_max = 0.5)   n1 = 256
    2 extrapolated    s = q + b (n - q)           b ~ U(1, beta_max = 1.5)    n2 = 256
    3 mixup           s = g n_i + (1 - g) n_j     g ~ U(0, gamma_max = 1)     n3 = 256
    4 noise-injected  s = n + e,  e ~ N(0, sigma^2 I), sigma = 0.01            n4 = 64
    5 perturbed       s = n + delta grad_n(q . n) = n + delta q, delta = 0.01  n5 = 64
    6 adversarial     s = n + eta sign(grad_n(q . n)) = n + eta sign(q), 0.01  n6 = 64

Every synthetic vector is L2-normalised and detached (no gradient flows into it, as in the
official code's ``.detach()``); they are appended to the logits only, never enqueued.

Owsbench's use (the **direction**): the pool is restricted to one kind of queue entry, so the
synthetic negatives sit between known and unknown regions. ``"known-anchors"``: known anchors get
negatives synthesised from *unknown* queue crops; ``"unknown-anchors"``: unknown anchors get
negatives synthesised from *known* crops; ``"both"``: each side from the other. Anchors of the
other side get none (``valid`` marks who has them). Same-class crops are positives
(:mod:`.infonce`) and never enter a pool, so a positive is never turned into a negative.

Types 5 and 6 use the gradient ``grad_n(q . n) = q`` in closed form; the official code at HEAD
(``hard_negatives_autograd_1`` / ``_2``) takes the same gradient with ``torch.autograd.grad``,
so ``n + delta q`` and ``n + eta sign(q)`` are what it computes (no deviation). Deviations: the
official ``use_type4``/``use_type5`` flags are swapped (harmless when both counts
are > 0, as by default; here each count switches its own type). The warm-up (official: 10 of 200
epochs without synthetic negatives) is a fraction of the pre-training steps, applied by the
caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from owsbench.checks import Range
from owsbench.methods.nn.crops import UNKNOWN

DIRECTIONS = ("known-anchors", "unknown-anchors", "both")


@dataclass(frozen=True)
class SynCoConfig:
    """Pool size, per-type counts and operator parameters (official defaults)."""

    n_hard: Annotated[int, Range(ge=1, le=262_144)] = 1024
    n1: Annotated[int, Range(ge=0, le=4096)] = 256
    n2: Annotated[int, Range(ge=0, le=4096)] = 256
    n3: Annotated[int, Range(ge=0, le=4096)] = 256
    n4: Annotated[int, Range(ge=0, le=4096)] = 64
    n5: Annotated[int, Range(ge=0, le=4096)] = 64
    n6: Annotated[int, Range(ge=0, le=4096)] = 64
    alpha_max: Annotated[float, Range(ge=0, le=1)] = 0.5
    beta_max: Annotated[float, Range(ge=1)] = 1.5
    gamma_max: Annotated[float, Range(ge=0, le=1)] = 1.0
    sigma: Annotated[float, Range(ge=0)] = 0.01
    delta: Annotated[float, Range(ge=0)] = 0.01
    eta: Annotated[float, Range(ge=0)] = 0.01

    @property
    def total(self) -> int:
        return self.n1 + self.n2 + self.n3 + self.n4 + self.n5 + self.n6


def _uniform(shape: tuple[int, ...], lo: float, hi: float, like: torch.Tensor, generator):
    u = torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)
    return lo + (hi - lo) * u


def interpolate(q: torch.Tensor, n: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Type 1: ``alpha q + (1 - alpha) n``; ``q`` ``(B, D)``, ``n`` ``(B, M, D)``,
    ``alpha`` ``(B, M, 1)``."""
    return alpha * q[:, None] + (1 - alpha) * n


def extrapolate(q: torch.Tensor, n: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Type 2: ``q + beta (n - q)``."""
    return q[:, None] + beta * (n - q[:, None])


def mixup(n_i: torch.Tensor, n_j: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Type 3: ``gamma n_i + (1 - gamma) n_j``."""
    return gamma * n_i + (1 - gamma) * n_j


def add_noise(n: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Type 4: ``n + noise`` (``noise ~ N(0, sigma^2)``)."""
    return n + noise


def perturb(q: torch.Tensor, n: torch.Tensor, delta: float) -> torch.Tensor:
    """Type 5: ``n + delta * grad_n(q . n) = n + delta q``."""
    return n + delta * q[:, None]


def adversarial(q: torch.Tensor, n: torch.Tensor, eta: float) -> torch.Tensor:
    """Type 6: ``n + eta * sign(grad_n(q . n)) = n + eta sign(q)``."""
    return n + eta * torch.sign(q)[:, None]


def hardest(q: torch.Tensor, pool: torch.Tensor, n_hard: int) -> torch.Tensor:
    """Indices ``(B, min(n_hard, P))`` into ``pool`` ``(P, D)`` of each query's most similar
    entries (official: ``topk(q . queue)``)."""
    k = min(n_hard, len(pool))
    return torch.topk((q @ pool.T).detach(), k=k, dim=1, sorted=False).indices


def synthesize(
    q: torch.Tensor, pool: torch.Tensor, config: SynCoConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Synthetic negatives ``(B, config.total, D)`` for queries ``q`` ``(B, D)`` from the
    hard-negative pool of each query in ``pool`` ``(P >= 1, D)``; normalised, detached."""
    q = q.detach()
    top = hardest(q, pool, config.n_hard)  # (B, k)
    batch = len(q)

    def draw(count: int) -> torch.Tensor:
        pick = torch.randint(0, top.shape[1], (batch, count), generator=generator)
        return pool[torch.gather(top, 1, pick.to(top.device))]  # (B, count, D)

    parts = []
    if config.n1:
        alpha = _uniform((batch, config.n1, 1), 0.0, config.alpha_max, q, generator)
        parts.append(interpolate(q, draw(config.n1), alpha))
    if config.n2:
        beta = _uniform((batch, config.n2, 1), 1.0, config.beta_max, q, generator)
        parts.append(extrapolate(q, draw(config.n2), beta))
    if config.n3:
        gamma = _uniform((batch, config.n3, 1), 0.0, config.gamma_max, q, generator)
        parts.append(mixup(draw(config.n3), draw(config.n3), gamma))
    if config.n4:
        n = draw(config.n4)
        noise = torch.randn(n.shape, generator=generator, dtype=n.dtype).to(n.device)
        parts.append(add_noise(n, config.sigma * noise))
    if config.n5:
        parts.append(perturb(q, draw(config.n5), config.delta))
    if config.n6:
        parts.append(adversarial(q, draw(config.n6), config.eta))
    if not parts:
        return q.new_zeros(batch, 0, q.shape[1])
    return F.normalize(torch.cat(parts, dim=1), dim=-1).detach()


def directional_negatives(
    q: torch.Tensor,
    known: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    direction: str,
    config: SynCoConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(synthetic (B, M, D), valid (B, M))`` for a batch whose anchors are ``known`` (bool
    ``(B,)``) or unknown: each side draws from the pool of the other kind of queue entry when
    ``direction`` says so (see the module docstring); ``EMPTY`` slots are never drawn."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    batch, dim = q.shape
    synthetic = q.new_zeros(batch, config.total, dim)
    valid = torch.zeros(batch, config.total, dtype=torch.bool, device=q.device)
    sides = []
    if direction in ("known-anchors", "both"):
        sides.append((known, queue_labels == UNKNOWN))
    if direction in ("unknown-anchors", "both"):
        sides.append((~known, queue_labels >= 0))
    for anchors, pool_mask in sides:
        if not bool(anchors.any()) or not bool(pool_mask.any()):
            continue
        synthetic[anchors] = synthesize(q[anchors], queue_keys[pool_mask], config, generator)
        valid[anchors] = True
    return synthetic, valid
