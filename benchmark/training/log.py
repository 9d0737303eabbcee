"""The training curve of a fit: per-step loss, learning rate, named loss terms, validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainLog:
    """The training curve: per step the total loss, the lr and every other loss term (NaN at
    steps where a term was absent); ``validation``: ``{"step": s, **metrics}`` records;
    ``resumed_from``: the steps from which the fit went on after being killed (loop
    checkpoints, :mod:`owsbench.training.resume`), empty for a fit run in one go."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    scalars: dict[str, list[float]] = field(default_factory=dict)
    validation: list[dict[str, float]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)  # steps a killed fit resumed at

    def record(self, lr: float, terms: dict[str, torch.Tensor]) -> None:
        step = len(self.loss)
        self.loss.append(terms["total"].item())
        self.lr.append(lr)
        for name, value in terms.items():
            if name != "total":
                self.scalars.setdefault(name, [math.nan] * step).append(value.item())
        for values in self.scalars.values():
            values.extend([math.nan] * (step + 1 - len(values)))

    def meta(self) -> dict[str, Any]:
        """What the fit cache stores of the curve (``train_loss``, ``lr``, the named loss terms
        ``scalars`` (NaN as null) and ``validation``)."""
        extra: dict[str, Any] = {"train_loss": self.loss, "lr": self.lr}
        if self.scalars:
            extra["scalars"] = {
                name: [None if math.isnan(v) else v for v in values]
                for name, values in self.scalars.items()
            }
        if self.validation:
            extra["validation"] = self.validation
        if self.resumed_from:
            extra["resumed_from"] = self.resumed_from
        return extra
