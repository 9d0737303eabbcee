"""Experiment curves: the training logs of a run (or an MMEngine ``scalars.json``) as
(fit, step, name, value) rows, TensorBoard-style smoothing, a late-training trend, CSV export.

- :func:`ema`: exponential moving average with debiasing, as TensorBoard's scalar dashboard
  smooths (``resmoothDataset`` in tensorboard/components/vz_line_chart2/line-chart.ts, debiased
  since 2019): ``s_t = w s_(t-1) + (1 - w) x_t``, ``s_(-1) = 0``, shown ``s_t / (1 - w^(t+1))``.
- :func:`trend`: least-squares line ``value = slope * step + intercept`` over the last half of
  the steps (``numpy.polyfit``, degree 1).
- :func:`read_training_logs`: ``OUT/training/*.json`` (written by
  :func:`owsbench.artifacts.save_training_log`: ``train_loss``, ``lr`` per step, and where
  present ``scalars`` (name -> per-step values) and ``validation`` (``{"step": s, **metrics}``))
  -> one :class:`FitCurves` per file. Training step ``i`` (1-based) is the ``i``-th entry; a
  validation record's ``step`` is the number of steps done when it was taken. A log with a
  ``step_offset`` (a reward-tuned fit, which ``continues`` its MLE fit's log) has its steps
  shifted by it, so its curve follows the parent's on the same axis.
- :func:`import_mmengine_scalars`: MMEngine's ``vis_data/scalars.json`` (LocalVisBackend, one
  JSON object per line) -> a :class:`FitCurves`. Lines with ``mIoU``, ``aAcc`` or ``mAcc`` are
  validation lines; MMSegmentation's ``IoUMetric`` reports its metrics in percent, owsbench in
  fractions, so validation metrics are divided by 100; timing keys are left out of them.
- :func:`write_curves` / :func:`export_curves`: per fit ``<fit>/loss.csv`` (loss, lr and the
  other per-step scalars) and ``<fit>/metrics.csv`` (validation metrics), columns step, name,
  value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from owsbench.cache import atomic_write_text
from owsbench.errors import BadInput

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default smoothing weight
VALIDATION_KEYS = ("mIoU", "aAcc", "mAcc")  # keys that mark an MMSeg validation line
STEP_KEYS = ("step", "iter", "epoch")  # MMEngine bookkeeping, not curves
TIMING_KEYS = ("data_time", "time")  # timing of a validation line, not a metric
CSV_FIELDS = ("step", "name", "value")


@dataclass(frozen=True)
class Curve:
    """One point of a curve: ``name`` of fit ``fit`` is ``value`` at ``step``."""

    fit: str
    step: int
    name: str
    value: float


@dataclass
class FitCurves:
    """The curves of one fit: per-step training scalars (``loss``, ``lr``, loss terms) and
    validation metrics (``mIoU`` as a fraction, ...)."""

    fit: str
    train: list[Curve] = field(default_factory=list)
    validation: list[Curve] = field(default_factory=list)

    def series(self, name: str, validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``name`` in step order (empty arrays when absent)."""
        points = sorted(
            (c.step, c.value)
            for c in (self.validation if validation else self.train)
            if c.name == name
        )
        steps = np.array([p[0] for p in points], np.int64)
        return steps, np.array([p[1] for p in points], np.float64)


def check_smoothing(weight: float) -> float:
    """``weight`` when it is a smoothing weight (in [0, 1)); else ``BadInput``."""
    if not 0.0 <= weight < 1.0:
        raise BadInput(f"--smoothing must be in [0, 1), got {weight:g}")
    return weight


def ema(values: np.ndarray | list[float], weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average: over the finite entries
    ``x_0, x_1, ...``, ``s_t = w s_(t-1) + (1 - w) x_t`` with ``s_(-1) = 0``, reported as
    ``s_t / (1 - w^(t+1))`` (``w = 0``: the raw values). A NaN (non-finite) entry is skipped:
    it shows the previous smoothed value (NaN before the first finite one)."""
    check_smoothing(weight)
    values = np.asarray(values, np.float64).reshape(-1)
    smoothed = np.full(values.shape, np.nan)
    last, count, shown = 0.0, 0, math.nan
    for i, value in enumerate(values):
        if math.isfinite(value):
            last = weight * last + (1.0 - weight) * value
            count += 1
            shown = last / (1.0 - weight**count)
        smoothed[i] = shown
    return smoothed


def trend(steps: np.ndarray, values: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) of the least-squares line ``value = slope * step + intercept``
    through the finite points whose step is in the last half of the step range
    (``step >= (first + last) / 2``), by ``numpy.polyfit(deg=1)``; ``None`` when those points
    span fewer than two distinct steps."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    finite = np.isfinite(values) & np.isfinite(steps)
    steps, values = steps[finite], values[finite]
    if steps.size == 0:
        return None
    late = steps >= (steps.min() + steps.max()) / 2
    if np.unique(steps[late]).size < 2:
        return None
    slope, intercept = np.polyfit(steps[late], values[late], 1)
    return float(slope), float(intercept)


def _train_rows(fit: str, name: str, values: list[float], offset: int = 0) -> list[Curve]:
    """Per-step values (step ``offset + i`` = the ``i``-th entry, 1-based) as rows, NaNs left
    out."""
    return [
        Curve(fit, step, name, float(v))
        for step, v in enumerate(values, start=offset + 1)
        if v is not None and math.isfinite(float(v))
    ]


def load_training_log(path: Path) -> FitCurves:
    """One training-log JSON file of the artifacts layout as :func:`log_curves` named by the
    file's stem."""
    path = Path(path)
    return log_curves(path.stem, json.loads(path.read_text()))


def log_curves(name: str, log: dict) -> FitCurves:
    """The curves of a parsed training log of the artifacts layout (see the module doc);
    ``ValueError`` / ``KeyError`` / ``TypeError`` / ``AttributeError`` when malformed."""
    fit = FitCurves(name)
    per_step = {"loss": log["train_loss"], "lr": log.get("lr") or []}
    per_step.update(log.get("scalars") or {})
    offset = int(log.get("step_offset", 0))  # a fit continuing its parent's steps
    for name, values in per_step.items():
        fit.train += _train_rows(fit.fit, name, list(values), offset)
    for record in log.get("validation") or []:
        step = int(record["step"]) + offset
        fit.validation += [
            Curve(fit.fit, step, k, float(v)) for k, v in record.items() if k != "step"
        ]
    return fit


def read_training_logs(run_dir: Path) -> dict[str, FitCurves]:
    """Every fit's curves from ``run_dir/training/*.json``, by fit name (file stem); a missing
    folder or a malformed log is ``BadInput``."""
    folder = Path(run_dir) / "training"
    if not folder.is_dir():
        raise BadInput(f"{folder} not found (no training logs in {run_dir})")
    fits = {}
    for path in sorted(folder.glob("*.json")):
        try:
            fits[path.stem] = load_training_log(path)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise BadInput(f"{path}: not a training log ({type(err).__name__}: {err})") from None
    return fits


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mmengine_line(path: Path, number: int, text: str) -> tuple[int, dict[str, float]]:
    """(step, numeric scalars) of one ``scalars.json`` line; ``BadInput`` naming
    ``path:number`` when it is not a JSON object with an integer ``step`` or ``iter``."""
    try:
        record = json.loads(text)
    except ValueError as err:
        raise BadInput(f"{path}:{number}: not JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise BadInput(f"{path}:{number}: not a JSON object")
    step = record.get("step", record.get("iter"))
    if not _number(step) or step != int(step):
        raise BadInput(f"{path}:{number}: no integer step or iter")
    scalars = {k: float(v) for k, v in record.items() if k not in STEP_KEYS and _number(v)}
    return int(step), scalars


def import_mmengine_scalars(path: Path, fit: str | None = None) -> FitCurves:
    """The curves of an MMEngine ``vis_data/scalars.json`` (see the module doc), named ``fit``
    (default: the run folder holding ``vis_data``, else the file's stem). Training lines give
    every numeric scalar; validation lines their metrics divided by 100 (MMSeg percent)."""
    path = Path(path)
    if fit is None:
        folder = path.resolve().parent
        fit = folder.parent.name if folder.name == "vis_data" else path.stem
    curves = FitCurves(fit)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        step, scalars = _mmengine_line(path, number, text)
        if any(k in scalars for k in VALIDATION_KEYS):
            curves.validation += [
                Curve(fit, step, k, v / 100.0) for k, v in scalars.items() if k not in TIMING_KEYS
            ]
        else:
            curves.train += [Curve(fit, step, k, v) for k, v in scalars.items()]
    if not curves.train and not curves.validation:
        raise BadInput(f"{path}: no scalars")
    return curves


def _csv_text(rows: list[Curve]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    writer.writerows((c.step, c.name, repr(c.value)) for c in rows)
    return buffer.getvalue()


def write_curves(fits: dict[str, FitCurves], out_dir: Path) -> list[Path]:
    """Per fit ``out_dir/<fit>/loss.csv`` (training scalars) and ``out_dir/<fit>/metrics.csv``
    (validation metrics; written with its header even when there are none): the paths."""
    written = []
    for name, fit in fits.items():
        for file, rows in (("loss.csv", fit.train), ("metrics.csv", fit.validation)):
            target = Path(out_dir) / name / file
            atomic_write_text(target, _csv_text(rows))
            written.append(target)
    return written


def export_curves(run_dir: Path, out_dir: Path) -> list[Path]:
    """:func:`write_curves` of :func:`read_training_logs` of ``run_dir``."""
    return write_curves(read_training_logs(run_dir), out_dir)
