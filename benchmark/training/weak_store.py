"""Weak labels derived once from a training split's dense labels, cached on disk.

``<cache_dir>/weak/<regime>-<hash>/`` holds one PNG label map per training frame
(``<frame_id>.png``: class ids, 255 = unlabelled) and ``manifest.json``, written last, so a
folder counts only once every map is in it. ``<hash>`` is the content hash of the recipe
``{regime, options, train fingerprint, seed, version}``: the same annotations are drawn for
every training seed and every run, and a change of data or options derives them again. A split
without a fingerprint (in-memory test data) is labelled in memory and never cached. Frame ``i``
draws from ``numpy.random.default_rng([seed, i])``, so a frame's weak label does not depend on
the others. Weak labels are only ever derived from the split a segmenter is fitted on (its
``train`` split), never from an evaluation split.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from owsbench.cache import atomic_write_bytes, atomic_write_text, content_hash
from owsbench.datasets.base import VOID, Frame, Split
from owsbench.errors import BadInput

WEAK_VERSION = 1  # bump when a generator changes so cached weak labels are derived again
MakeLabels = Callable[[Frame, np.random.Generator], np.ndarray]


@dataclass
class WeakLabels:
    """The weak label maps of one training split, by frame id: on disk under ``folder`` or, for
    uncached splits, in ``maps``; ``manifest`` says how they were made."""

    manifest: dict[str, Any]
    folder: Path | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, frame_id: str) -> np.ndarray:
        """The ``(H, W)`` uint8 weak label of ``frame_id``."""
        if self.folder is None:
            return self.maps[frame_id]
        return np.asarray(Image.open(self.folder / f"{frame_id}.png"))


def png_bytes(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def derive(
    train: Split, make: MakeLabels, seed: int, write: Callable[[str, np.ndarray], None], desc: str,
    progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Run ``make`` on every frame (frame ``i`` with ``default_rng([seed, i])``), hand each map
    to ``write``; return the statistics that go into the manifest."""
    labelled, seen = [], set()
    for index in tqdm(range(len(train)), desc=desc, disable=not progress, leave=False):
        frame = train[index]
        if frame.semantic is None:
            raise BadInput(f"{desc}: frame {frame.frame_id} has no semantic label")
        if frame.frame_id in seen:
            raise BadInput(f"{desc}: frame id {frame.frame_id} occurs twice in the split")
        seen.add(frame.frame_id)
        labels = make(frame, np.random.default_rng([seed, index]))
        labelled.append(float(np.mean(labels != VOID)))
        write(frame.frame_id, labels)
    return {"frames": len(labelled), "labelled_fraction": float(np.mean(labelled or [0.0]))}


def weak_labels(
    train: Split,
    make: MakeLabels,
    recipe: dict[str, Any],
    cache_dir: Path,
    fingerprint: str | None,
    progress: bool = True,
) -> WeakLabels:
    """The weak labels ``make`` derives from ``train`` for ``recipe`` (``regime``, ``options``,
    ``seed``), cached under ``cache_dir`` when the split has a ``fingerprint`` (module
    docstring)."""
    full = {**recipe, "train": fingerprint, "version": WEAK_VERSION}
    desc = f"derive {recipe['regime']} labels"
    if fingerprint is None:
        maps: dict[str, np.ndarray] = {}
        stats = derive(train, make, recipe["seed"], maps.__setitem__, desc, progress)
        return WeakLabels({**full, **stats}, maps=maps)
    folder = Path(cache_dir) / "weak" / f"{recipe['regime']}-{content_hash(full)}"
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return WeakLabels(json.loads(manifest_path.read_text()), folder=folder)

    def write(frame_id: str, labels: np.ndarray) -> None:
        atomic_write_bytes(folder / f"{frame_id}.png", png_bytes(labels))

    stats = derive(train, make, recipe["seed"], write, desc, progress)
    manifest = {**full, **stats, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return WeakLabels(manifest, folder=folder)
