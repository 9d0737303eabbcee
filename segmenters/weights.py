"""Local weights files (never downloaded): read one, load the tensors that fit a module."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from owsbench.errors import BadInput


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A local weights file the user named: its state_dict.

    Accepts a bare state_dict or a checkpoint holding one under ``"state_dict"``; ``BadInput``
    when the file is missing.
    """
    if not path.is_file():
        raise BadInput(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def load_matching_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> int:
    """Load every tensor of ``state`` whose key (a ``module.`` prefix of DataParallel
    checkpoints stripped) and shape match ``module``'s; the rest keep their init. Returns how
    many were loaded; ``BadInput`` naming ``what`` when none match."""
    own = module.state_dict()
    usable = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in own and own[key].shape == value.shape:
            usable[key] = value
    if not usable:
        raise BadInput(f"no parameter of {what} matches the model")
    module.load_state_dict(usable, strict=False)
    return len(usable)
