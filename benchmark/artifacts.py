"""Files a run writes beside ``results.jsonl`` for reports and figures (paths are relative).

- ``curves/<row id>.npz``: the row's streaming anomaly histogram (``AnomalyMetric.state_dict``),
  from which PR and ROC curves are drawn without raw pixels;
- ``samples/<dataset>__<split>__seed<seed>.npz``: the first frames of a split with every
  method's score map (float16), for the qualitative figure; methods evaluated in separate
  groups add their maps to the same file (under a file lock, ``<file>.lock``, so that groups
  evaluated at once by SLURM tasks keep each other's maps);
- ``training/<fit>.json``: a fit's training curve (loss and learning rate per step); a
  reward-tuned fit's names its MLE fit's (``continues``) and starts at its ``step_offset``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from filelock import FileLock

from owsbench.cache import atomic_write_bytes, atomic_write_text
from owsbench.fits import Fit
from owsbench.metrics import AnomalyMetric


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def save_curve(out: Path, row_id: str, metric: AnomalyMetric) -> str:
    relative = f"curves/{row_id}.npz"
    _write_npz(Path(out) / relative, metric.state_dict())
    return relative


def save_samples(out: Path, dataset: str, split: str, seed: int, arrays: dict) -> str | None:
    """Write (or extend with more methods' maps) the samples file; None when there is nothing."""
    if not arrays:
        return None
    relative = f"samples/{dataset}__{split}__seed{seed}.npz"
    path = Path(out) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            with np.load(path) as existing:
                if np.array_equal(existing["frame_ids"], arrays["frame_ids"]):
                    arrays = {**{k: existing[k] for k in existing.files}, **arrays}
        _write_npz(path, arrays)
    return relative


def training_log_name(fit: Fit) -> str:
    """Where a fit's training log goes in a run folder: ``training/<kind>-<sha256[:16]>.json``."""
    return f"training/{fit.meta['kind']}-{fit.meta['sha256'][:16]}.json"


def save_training_logs(out: Path, fit: Fit) -> list[str]:
    """The training curves of ``fit`` and of the fits it continued from (:attr:`Fit.parent`),
    earliest first, each written once (:func:`save_training_log`)."""
    chain = [fit]
    while chain[-1].parent is not None:
        chain.append(chain[-1].parent)
    paths = [save_training_log(out, f) for f in reversed(chain)]
    return [p for p in paths if p is not None]


def save_training_log(out: Path, fit: Fit) -> str | None:
    """The fit's training curve, when it has one (statistics-only fits have none): loss and lr
    per step, the named loss terms (``scalars``) and validation records when the fit has them.
    A fit that continued another (``parent``) names the parent's log (``continues``) and the
    parent's step count (``step_offset``), so its curve is drawn after the parent's."""
    if "train_loss" not in fit.meta:
        return None
    relative = training_log_name(fit)
    log = {k: fit.meta[k] for k in ("kind", "train_loss", "lr", "fit_seconds", "recipe")}
    log.update({k: fit.meta[k] for k in ("scalars", "validation") if k in fit.meta})
    parent = fit.parent
    if parent is not None and "train_loss" in parent.meta:
        log["continues"] = training_log_name(parent)
        log["step_offset"] = len(parent.meta["train_loss"])
    atomic_write_text(Path(out) / relative, json.dumps(log))
    return relative
