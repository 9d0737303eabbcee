"""The "rows" step (plan -> fit -> infer -> measure -> rows -> tables): the result row schema.

One row per (method, dataset, split, seed), self-describing, in ``OUT/results.jsonl``. Its key
(``KEY_FIELDS``) is the method id, its config hash, dataset, dataset fingerprint, split and
seed; ``row_id`` is the first 12 hex digits of the sha256 of the key's canonical JSON. The fields,
in order (``ROW_FIELDS``):

- what ran: ``method``, ``method_name``, ``segmenter`` and ``segmenter_config`` (None for trained
  methods, which own their model), ``supervision`` (the regime the segmenter was trained with;
  ``full`` for trained methods, which train on dense labels) and its ``annotation_cost`` per
  image in each cost model (:mod:`owsbench.costs`: ``{"relative": ..., "seconds": ...}``),
  ``method_config`` (the merged config), ``config_hash``
  (:func:`owsbench.plan.config_hash`), ``dataset``, ``dataset_fingerprint``, ``trained_on``
  (the dataset whose train split was fitted on), ``split``, ``seed``, ``preset``;
- what was measured: ``metrics`` (:func:`owsbench.measure.row_metrics`), ``metric_version``,
  ``aggregation``, ``fpr_rule``, ``component_threshold_rule`` (None without component metrics),
  ``precision`` (the forward's autocast, :mod:`owsbench.precision`), ``frames``,
  ``anomaly_pixels``, ``inlier_pixels``;
- the fits: ``fit_seconds`` (sum over the row's fits, as first fitted), ``fit_cached`` (all came
  from the cache), ``fit_report`` (the fits' reports merged), ``checkpoint_sha256`` (of the first
  fit: the segmenter of a post-hoc method, else the trained method);
- timings and environment: ``infer_seconds`` (the split's wall time, shared by the group),
  ``score_seconds`` (this method's share), ``device``, ``owsbench_version``, ``git_commit``,
  ``torch_version``, ``python``, ``timestamp``;
- ``row_id`` and ``artifacts`` (paths relative to the run folder, written by the executor:
  ``curve``, ``samples``, ``training``; see :mod:`owsbench.artifacts`).

Importing this module loads no torch.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import owsbench
from owsbench.cache import content_hash
from owsbench.costs import annotation_costs, relative_costs
from owsbench.measure import row_metrics
from owsbench.metrics import METRIC_VERSION

if TYPE_CHECKING:
    from owsbench.evaluate import SplitResult
    from owsbench.fits import Fit
    from owsbench.plan import Job, MethodPlan

KEY_FIELDS = ("method", "config_hash", "dataset", "dataset_fingerprint", "split", "seed")

ROW_FIELDS = (
    "method",
    "method_name",
    "segmenter",
    "segmenter_config",
    "supervision",
    "annotation_cost",
    "method_config",
    "config_hash",
    "dataset",
    "dataset_fingerprint",
    "trained_on",
    "split",
    "seed",
    "preset",
    "metrics",
    "metric_version",
    "aggregation",
    "fpr_rule",
    "component_threshold_rule",
    "precision",
    "frames",
    "anomaly_pixels",
    "inlier_pixels",
    "fit_seconds",
    "fit_cached",
    "fit_report",
    "infer_seconds",
    "score_seconds",
    "checkpoint_sha256",
    "device",
    "owsbench_version",
    "git_commit",
    "torch_version",
    "python",
    "timestamp",
    "row_id",
    "artifacts",
)

ENVIRONMENT_FIELDS = ("device", "owsbench_version", "git_commit", "torch_version", "python")


def row_supervision(row: dict[str, Any]) -> str:
    """The row's supervision regime (``full`` for rows written before rows had one)."""
    return row.get("supervision") or "full"


def method_label_of(method_id: str, supervision: str) -> str:
    """``method_id``, with ``supervision`` in brackets unless it is ``full`` (``msp (points)``)."""
    return method_id if supervision == "full" else f"{method_id} ({supervision})"


def method_label(row: dict[str, Any]) -> str:
    """How tables and figures name the row's method (:func:`method_label_of` of its id and
    regime), with ``[reward R]`` when its segmenter (or the trained method itself) was
    reward-tuned on reward ``R`` and
    ``[bf16]`` / ``[fp16]`` when it was evaluated below fp32."""
    label = method_label_of(row["method"], row_supervision(row))
    tuning = (row.get("segmenter_config") or {}).get("reward_tuning")
    tuning = tuning or (row.get("method_config") or {}).get("reward_tuning")
    if tuning:
        label = f"{label} [reward {tuning.get('reward', 'miou')}]"
    precision = row.get("precision") or "fp32"
    return label if precision == "fp32" else f"{label} [{precision}]"


def row_key(row: dict[str, Any]) -> tuple:
    """The row's identity: its values of ``KEY_FIELDS``, in that order."""
    return tuple(row[k] for k in KEY_FIELDS)


def row_id(key: Sequence[Any]) -> str:
    """First 12 hex digits of the sha256 of the key's canonical JSON (names curve files)."""
    return content_hash(tuple(key), length=12)


@dataclass(frozen=True)
class Artifacts:
    """A row's files, relative to the run folder (None / empty when there is none)."""

    curve: str
    samples: str | None = None
    training: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "samples": self.samples, "training": list(self.training)}


def git_commit() -> str | None:
    """The git commit of the owsbench source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(owsbench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """The ``ENVIRONMENT_FIELDS`` of the rows made in this process on ``device``."""
    import torch

    return {
        "device": device,
        "owsbench_version": owsbench.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
    }


def what_ran(job: Job, method: MethodPlan) -> dict[str, Any]:
    """The row's fields from ``method`` to ``trained_on`` (see the module docstring)."""
    segmenter = job.segmenter
    return {
        "method": method.id,
        "method_name": method.name,
        "segmenter": segmenter.id if segmenter is not None else None,
        "segmenter_config": segmenter.config if segmenter is not None else None,
        "supervision": job.supervision,
        "annotation_cost": annotation_costs(
            job.supervision, job.settings.annotation_costs or relative_costs()
        ),
        "method_config": method.config,
        "config_hash": method.config_hash,
        "dataset": job.dataset.name,
        "dataset_fingerprint": job.dataset.fingerprint,
        "trained_on": job.train.id,
    }


def build_row(
    job: Job,
    method: MethodPlan,
    split: str,
    result: SplitResult,
    infer_seconds: float,
    fits: Sequence[Fit | None],
    components: dict[str, Any],
    class_names: Sequence[str],
    artifacts: Artifacts,
    env: dict[str, Any],
) -> dict[str, Any]:
    """The row of ``method`` (one of ``job.methods``) on ``split``: see the module docstring.

    ``fits``: the method's fits in order (segmenter first for a post-hoc method; None for a
    method without a fit); ``components``: the SMIYC component metrics, ``{}`` when not
    computed; ``env``: :func:`environment`.
    """
    from owsbench.score_eval import THRESHOLD_RULE

    settings = job.settings
    done = [f for f in fits if f is not None]
    row = {
        **what_ran(job, method),
        "split": split,
        "seed": job.seed,
        "preset": settings.preset,
        "metrics": row_metrics(result, class_names, settings.fpr_rule, components),
        "metric_version": METRIC_VERSION,
        "aggregation": settings.aggregation,
        "fpr_rule": settings.fpr_rule,
        "component_threshold_rule": THRESHOLD_RULE if settings.components else None,
        "precision": settings.precision,
        "frames": result.frames,
        "anomaly_pixels": result.anomaly.num_positives,
        "inlier_pixels": result.anomaly.num_negatives,
        "fit_seconds": sum(f.meta["fit_seconds"] for f in done),
        "fit_cached": all(f.cached for f in done),
        "fit_report": {k: v for f in done for k, v in f.meta.get("report", {}).items()},
        "infer_seconds": infer_seconds,
        "score_seconds": result.score_seconds,
        "checkpoint_sha256": done[0].meta["sha256"] if done else None,
        **{k: env[k] for k in ENVIRONMENT_FIELDS},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    row["row_id"] = row_id(row_key(row))
    row["artifacts"] = artifacts.to_dict()
    return row
