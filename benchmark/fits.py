"""On-disk cache of fitted state (checkpoints, statistics) under a content hash of its recipe.

``<cache_dir>/fits/<kind>-<hash>.pt`` holds the state (``torch.save``), ``.json`` beside it the
recipe, fit seconds, the training curve and the checkpoint's sha256. Both are written atomically;
the ``.json`` is written last, so a checkpoint counts only once its metadata is there.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from owsbench.cache import atomic_write_bytes, atomic_write_text, content_hash

FIT_VERSION = 1  # bump when a training loop changes so cached fits are not reused


@dataclass
class Fit:
    """A fitted state and what is known about how it was made."""

    state: dict[str, Any]
    meta: dict[str, Any]
    cached: bool


class FitCache:
    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / "fits"

    def paths(self, kind: str, recipe: dict[str, Any]) -> tuple[Path, Path]:
        stem = f"{kind}-{content_hash({'recipe': recipe, 'fit_version': FIT_VERSION})}"
        return self.root / f"{stem}.pt", self.root / f"{stem}.json"

    def load_or_fit(
        self,
        kind: str,
        recipe: dict[str, Any],
        fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Fit:
        """The cached fit of ``recipe``, else run ``fit() -> (state, extra meta)`` and store it."""
        state_path, meta_path = self.paths(kind, recipe)
        if state_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            return Fit(state=state, meta=meta, cached=True)
        start = time.perf_counter()
        state, extra = fit()
        seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        atomic_write_bytes(state_path, payload)

        meta = {
            "kind": kind,
            "recipe": recipe,
            "fit_seconds": seconds,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
        return Fit(state=state, meta=meta, cached=False)
