"""On-disk cache of fitted state (checkpoints, statistics) under a content hash of its recipe.

``<cache_dir>/fits/<kind>-<hash>.pt`` holds the state (``torch.save``), ``.json`` beside it the
recipe, fit seconds, the training curve and the checkpoint's sha256; ``<hash>`` is the first 16
hex digits of the sha256 of the canonical JSON of ``{"recipe": recipe, "fit_version":
FIT_VERSION}`` (:func:`fit_stem`). Both files are written atomically; the ``.json`` is written
last, so a checkpoint counts only once its metadata is there.

:func:`fit_or_load` is the one fit function: segmenters, post-hoc statistics and trained methods
all go through it. Importing this module loads no torch (planning computes cache keys with it).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from owsbench.cache import atomic_write_bytes, atomic_write_text, content_hash

FIT_VERSION = 2  # bump when a training loop changes so cached fits are not reused (2: one Loop)


def fit_stem(kind: str, recipe: dict[str, Any]) -> str:
    """The cache file name (without suffix) of the fit of ``recipe``: ``<kind>-<hash>``."""
    return f"{kind}-{content_hash({'recipe': recipe, 'fit_version': FIT_VERSION})}"


@dataclass
class Fit:
    """A fitted state and what is known about how it was made."""

    state: dict[str, Any]
    meta: dict[str, Any]
    cached: bool


class FitCache:
    """The fits under ``<cache_dir>/fits`` (see the module docstring)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / "fits"

    def paths(self, kind: str, recipe: dict[str, Any]) -> tuple[Path, Path]:
        stem = fit_stem(kind, recipe)
        return self.root / f"{stem}.pt", self.root / f"{stem}.json"

    def has(self, kind: str, recipe: dict[str, Any]) -> bool:
        return all(path.exists() for path in self.paths(kind, recipe))

    def load_or_fit(
        self,
        kind: str,
        recipe: dict[str, Any],
        fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Fit:
        """The cached fit of ``recipe``, else run ``fit() -> (state, extra meta)`` and store it."""
        import torch

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


class Fittable(Protocol):
    """A model whose fitted state round-trips through ``state_dict`` / ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


M = TypeVar("M", bound=Fittable)


def fit_or_load(
    cache: FitCache,
    kind: str,
    recipe: dict[str, Any],
    build: Callable[[], M],
    train: Callable[[M], dict[str, Any]],
    seed: int | None = None,
) -> tuple[M, Fit]:
    """A model built by ``build()`` and loaded with the fit of ``recipe``, and that ``Fit``.

    When the cache has no fit of ``(kind, recipe)``: torch's global generator is seeded with
    ``seed`` (when given; models that own their weights are initialised from it), then
    ``model = build()``, ``meta = train(model)`` (the extra metadata stored with the state, e.g.
    ``TrainLog.meta()``), and ``model.state_dict()`` is stored. Either way the returned model is
    a fresh ``build()`` loaded with the stored state, so a cached and a new fit give the same
    model.
    """

    def fit() -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        model = build()
        meta = train(model)
        return model.state_dict(), meta

    result = cache.load_or_fit(kind, recipe, fit)
    model = build()
    model.load_state_dict(result.state)
    return model, result
