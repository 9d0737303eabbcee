"""The learning-rate schedule shared by every fit."""

from __future__ import annotations

import math


def one_cycle_lr(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_fraction`` of the steps, then cosine to zero:
    ``peak (s + 1) / W`` for ``s < W = max(1, floor(total * warmup_fraction))``, else
    ``peak / 2 (1 + cos(pi (s - W) / max(1, total - W)))`` (Smith & Topin, "Super-Convergence",
    2017, with a linear warm-up instead of a cosine one)."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))
