"""Report figures (matplotlib, Agg canvas, PNG) from the artifacts that result rows point to.

- ``curves-<dataset>-<split>.png``: ROC and PR curves, one line per method, from the streaming
  histograms saved as ``row["artifacts"]["curve"]`` (``AnomalyMetric.state_dict()`` in an
  ``.npz``); the seeds of a method are pooled into one curve by merging their histograms.
- ``samples-<dataset>-<split>.png``: image | ground truth | each method's anomaly map for up to
  four frames of ``row["artifacts"]["samples"]`` (one ``.npz`` per dataset, split and seed).
- ``training.png`` (:func:`fit_curves_figure`): for every distinct fit log named in
  ``row["artifacts"]["training"]`` (JSON with ``kind``, ``train_loss``, ``lr``, ``fit_seconds``,
  optionally ``validation``; :func:`owsbench.curves.log_curves`) the training loss against step
  (raw, thin, and TensorBoard-smoothed, :func:`owsbench.curves.ema`) and, for the fits with
  validation records, validation mIoU per validation step, its smoothing and the least-squares
  line over the last half of the validation steps (:func:`owsbench.curves.trend`).
- with rows of two or more supervision regimes, per (dataset, split):
  ``cost-<dataset>-<split>.png``, mIoU (left) and each post-hoc method's AP (right) against the
  regime's annotation cost (one point per regime, error bars = std over seeds, hybrids as
  diamonds), and ``regimes-<dataset>-<split>.png``: image | ground truth | each regime's
  semantic prediction (Cityscapes palette) from the samples files' ``semantic:<model>`` maps.

Artifact paths are used as given (:func:`owsbench.report.load_runs` makes them absolute). A
missing artifact never fails the report: the figure leaves out what it lacks and says so in its
notes, or is skipped (``path=None``) when nothing is left. The curves need no pixels, only the
histograms.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from owsbench.cache import atomic_write_bytes
from owsbench.costs import COST_MODELS
from owsbench.curves import DEFAULT_SMOOTHING, FitCurves, ema, log_curves, trend
from owsbench.datasets.labels import CITYSCAPES_PALETTE
from owsbench.metrics.pixel import AnomalyMetric
from owsbench.rows import method_label, row_supervision
from owsbench.supervision_study import regime_summary
from owsbench.tables import Table, slug

MAX_FRAMES = 4  # rows of the qualitative grid
CURVE_POINTS = 2000  # points per plotted curve (thinned evenly along TPR + FPR)
SCORE_CMAP = "inferno"  # perceptual colormap of the anomaly maps
DPI = 100

T = TypeVar("T")
Row = dict[str, Any]


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: the PNG written (``path``), or ``None`` when it was skipped;
    ``notes`` say what the figure leaves out, or why it was skipped."""

    title: str
    caption: str
    group: tuple[str, str] | None  # (dataset, split), or None for report-wide figures
    path: Path | None
    notes: tuple[str, ...] = ()


class MissingArtifact(Exception):
    """An artifact file is absent or unreadable, or lacks what a figure needs."""


def _who(row: Row) -> str:
    return f"{method_label(row)} seed {row['seed']}"


class _Notes:
    """What a figure leaves out: rows that record no artifact (one note for all of them) and
    artifact files that are missing or unreadable (one note each)."""

    def __init__(self, artifact: str) -> None:
        self.artifact = artifact
        self.unrecorded: list[str] = []
        self.problems: list[str] = []

    def paths(self, row: Row) -> list[Path] | None:
        """The paths of this artifact of ``row`` (one path or a list), or ``None`` (noted)."""
        value = (row.get("artifacts") or {}).get(self.artifact)
        if value is None:
            self.unrecorded.append(_who(row))
            return None
        return [Path(v) for v in ([value] if isinstance(value, str) else value)]

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def all(self) -> tuple[str, ...]:
        """The notes: the rows without the artifact first, then each problem."""
        head = f"no {self.artifact} artifact recorded for {', '.join(self.unrecorded)}"
        return ((head,) if self.unrecorded else ()) + tuple(self.problems)


def _read(path: Path, load: Callable[[Path], T]) -> T:
    """``load(path)``, a missing or unreadable file raised as ``MissingArtifact``."""
    try:
        return load(path)
    except FileNotFoundError:
        raise MissingArtifact(f"{path} not found") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise MissingArtifact(f"{path} unreadable ({type(err).__name__}: {err})") from None


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` on an Agg canvas and write it to ``path`` as PNG."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _pooled_metric(rows: list[Row], notes: _Notes) -> tuple[AnomalyMetric | None, int]:
    """The merged curve histograms of ``rows`` (one method's seeds) and how many were merged."""
    pooled, merged = None, 0
    for row in rows:
        paths = notes.paths(row)
        if paths is None:
            continue
        try:
            metric = _read(paths[0], lambda p: AnomalyMetric.from_state_dict(_npz(p)))
            pooled = metric if pooled is None else pooled.merge(metric)
            merged += 1
        except (MissingArtifact, ValueError) as err:
            notes.problem(f"{_who(row)}: {err}")
    return pooled, merged


def _thin(progress: np.ndarray, points: int = CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``points`` entries spread evenly along the non-decreasing
    ``progress``, the last always included."""
    picked = np.searchsorted(progress, np.linspace(0.0, progress[-1], points))
    return np.unique(np.append(picked.clip(0, progress.size - 1), progress.size - 1))


def curves_figure(rows: list[Row], methods: Sequence[str], path: Path) -> ReportFigure:
    """ROC and PR curves of ``methods`` (legend order) from ``rows`` of one (dataset, split)."""
    group = (rows[0]["dataset"], rows[0]["split"])
    title = f"{group[0]} / {group[1]}: ROC and precision-recall curves"
    caption = (
        "ROC (left) and precision-recall (right; precision axis fitted to the curves) from the "
        "pixel histograms, void excluded. "
        "Each method's seeds are pooled into one curve (their histograms merged), so the AP and "
        "AUROC in the legend are those of the pooled pixels and can differ from the table's "
        "mean over seeds."
    )
    notes = _Notes("curve")
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    roc, pr = fig.subplots(1, 2)
    prevalence = None
    for method in methods:
        seeds = sorted((r for r in rows if method_label(r) == method), key=lambda r: r["seed"])
        metric, used = _pooled_metric(seeds, notes)
        if metric is None:
            continue
        if not (metric.num_positives and metric.num_negatives):
            notes.problem(f"{method}: no anomaly or no inlier pixels in its histograms")
            continue
        curve, scores = metric.curve(), metric.compute()
        keep = _thin(curve.tpr + curve.fpr)
        label = (
            f"{method}: AP {100 * scores['AP']:.2f}, AUROC {100 * scores['AUROC']:.2f}"
            f" ({used} seed{'s' if used != 1 else ''})"
        )
        (line,) = roc.plot(np.append(0.0, curve.fpr[keep]), np.append(0.0, curve.tpr[keep]))
        pr.plot(curve.recall[keep], curve.precision[keep], color=line.get_color(), label=label)
        prevalence = metric.num_positives / (metric.num_positives + metric.num_negatives)
    if prevalence is None:
        return ReportFigure(title, caption, group, None, notes.all())
    roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    roc.axhline(0.95, ls=":", color="grey", lw=0.8)
    roc.set(xlabel="false-positive rate", ylabel="true-positive rate (0.95 dotted)")
    pr.axhline(prevalence, ls="--", color="grey", lw=0.8)
    pr.set(xlabel="recall", ylabel=f"precision (chance {100 * prevalence:.2f} % dashed)")
    roc.set(xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    pr.set(xlim=(0, 1), ylim=(0, min(1.01, pr.get_ylim()[1])), title="precision-recall")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(3, len(methods)), fontsize="small")
    return ReportFigure(title, caption, group, _save(fig, path), notes.all())


def _samples_at_seed(
    rows: list[Row], methods: Sequence[str], seed: int, notes: _Notes
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """The first readable samples file of ``seed`` and each method's score maps on its shown
    frames (a method without a score on the same frames is left out, noted)."""
    files: dict[Path, dict[str, np.ndarray]] = {}
    base: dict[str, np.ndarray] | None = None
    scores: dict[str, np.ndarray] = {}
    for method in methods:
        row = next((r for r in rows if method_label(r) == method and r["seed"] == seed), None)
        paths = None if row is None else notes.paths(row)
        if paths is None:
            continue
        try:
            if paths[0] not in files:
                files[paths[0]] = _read(paths[0], _npz)
            data = files[paths[0]]
            lacking = {"frame_ids", "image", "anomaly", f"score:{method}"} - data.keys()
            if lacking:
                raise MissingArtifact(f"{paths[0]} lacks {', '.join(sorted(lacking))}")
            base = data if base is None else base
            shown = list(base["frame_ids"][:MAX_FRAMES])
            if list(data["frame_ids"][: len(shown)]) != shown:
                raise MissingArtifact(f"{paths[0]} shows other frames")
            scores[method] = data[f"score:{method}"][: len(shown)].astype(np.float32)
        except MissingArtifact as err:
            notes.problem(f"{_who(row)}: {err}")
    return None if base is None else (base, scores)


def _ground_truth_rgb(anomaly: np.ndarray) -> np.ndarray:
    """Anomaly labels as RGB: anomaly (1) white, void (255) grey, inlier (0) black."""
    rgb = np.zeros((*anomaly.shape, 3), np.uint8)
    rgb[anomaly == 1] = 255
    rgb[anomaly == 255] = 128
    return rgb


def samples_figure(rows: list[Row], methods: Sequence[str], path: Path) -> ReportFigure:
    """Image | ground truth | anomaly map of each method, for up to ``MAX_FRAMES`` frames of the
    lowest seed that has a readable samples file."""
    group = (rows[0]["dataset"], rows[0]["split"])
    title = f"{group[0]} / {group[1]}: anomaly maps"
    notes = _Notes("samples")
    found, seed = None, None
    for seed in sorted({r["seed"] for r in rows}):
        found = _samples_at_seed(rows, methods, seed, notes)
        if found is not None:
            break
    if found is None or not found[1]:
        return ReportFigure(title, "", group, None, notes.all())
    base, scores = found
    frames = [str(f) for f in base["frame_ids"][:MAX_FRAMES]]
    caption = (
        f"Seed {seed}, frames {', '.join(frames)}. Ground truth: anomaly white, void grey, "
        f"inlier black. Anomaly maps in {SCORE_CMAP} (bright = more anomalous), each method "
        "min-max normalised over the frames shown."
    )
    columns = ["image", "ground truth", *scores]
    grid = []
    for i in range(len(frames)):
        panels = [base["image"][i], _ground_truth_rgb(base["anomaly"][i])]
        for maps in scores.values():
            low, high = float(maps.min()), float(maps.max())
            panels.append((maps[i] - low) / (high - low or 1.0))
        grid.append(panels)
    fig = _image_grid(grid, columns, frames, SCORE_CMAP)
    return ReportFigure(title, caption, group, _save(fig, path), notes.all())


def _image_grid(
    grid: list[list[np.ndarray]], columns: Sequence[str], frames: Sequence[str], cmap: str | None
) -> Figure:
    """One row per frame, one panel per column (titled on the first row, the frame id on the
    left); panels after the first two (image, ground truth) drawn with ``cmap`` on [0, 1]."""
    height, width = grid[0][0].shape[:2]
    panel = 2.4  # inches per panel width
    fig = Figure(
        figsize=(panel * len(columns), panel * height / width * len(frames) + 0.4),
        layout="constrained",
    )
    axes = fig.subplots(len(frames), len(columns), squeeze=False)
    for i, (frame, panels) in enumerate(zip(frames, grid, strict=True)):
        for j, (ax, image) in enumerate(zip(axes[i], panels, strict=True)):
            ax.imshow(image, cmap=cmap if j >= 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize="small")
        axes[i][0].set_ylabel(frame, fontsize="x-small")
    return fig


def _smoothed(
    ax: Any,
    steps: np.ndarray,
    values: np.ndarray,
    smoothing: float,
    label: str,
    colour: str,
    marker: str | None = None,
) -> None:
    """``values`` against ``steps``: raw (thin, faint, with ``marker``) and
    :func:`~owsbench.curves.ema` with weight ``smoothing`` (solid, labelled)."""
    ax.plot(steps, values, lw=0.8, alpha=0.3, color=colour, marker=marker, ms=3)
    ax.plot(steps, ema(values, smoothing), color=colour, label=label)


def _miou_lines(ax: Any, fit: FitCurves, label: str, smoothing: float, colour: str) -> None:
    """Validation mIoU (%) of ``fit``, smoothed, and its :func:`~owsbench.curves.trend` line
    (dashed) drawn over the last half of the validation steps, slope per 1000 steps labelled."""
    steps, miou = fit.series("mIoU", validation=True)
    _smoothed(ax, steps, 100 * miou, smoothing, label, colour, marker="o")
    line = trend(steps, 100 * miou)
    if line is not None:
        late = steps[steps >= (steps.min() + steps.max()) / 2]
        slope = f"trend {1000 * line[0]:+.3g} points / 1k steps"
        ax.plot(late, line[0] * late + line[1], ls="--", lw=1, color=colour, label=slope)


CROWDED_LEGEND = 6  # fits in a training figure beyond which the panels stack, legends aside


def fit_curves_figure(
    fits: Sequence[tuple[str, FitCurves]],
    path: Path,
    smoothing: float = DEFAULT_SMOOTHING,
    notes: Sequence[str] = (),
) -> ReportFigure:
    """Training loss against step (left) of every (label, curves) in ``fits`` and, when some
    have validation mIoU, mIoU against validation step (right); one colour per fit."""
    title = "Training curves"
    caption = (
        "Left: training loss per step of every distinct fit; right, for fits with validation "
        "records: validation mIoU per validation step. Faint: raw values; solid: exponential "
        f"moving average with weight {smoothing:g} (TensorBoard's debiased smoothing); dashed: "
        "least-squares line over the last half of the validation steps. Labels name the model "
        "kind, its training data, seed and fit time; a reward-tuned fit's curves continue its "
        "MLE fit's from the step that fit ended at (its loss is the REINFORCE objective "
        "-(R - b) mean log p, near 0 by construction)."
    )
    validated = any(fit.series("mIoU", validation=True)[0].size for _, fit in fits)
    panels = 2 if validated else 1
    crowded = len(fits) > CROWDED_LEGEND  # panels stacked, legends to their right
    if crowded:
        fig = Figure(figsize=(14, 0.5 + 4.5 * panels), layout="constrained")
        axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    else:
        fig = Figure(figsize=(12 if validated else 9, 4.5), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
    notes = list(notes)
    for i, (label, fit) in enumerate(fits):
        steps, loss = fit.series("loss")
        if steps.size:
            _smoothed(axes[0], steps, loss, smoothing, label, f"C{i}")
        else:
            notes.append(f"{label}: no training steps")
        if validated and fit.series("mIoU", validation=True)[0].size:
            _miou_lines(axes[1], fit, label, smoothing, f"C{i}")
    if not any(ax.lines for ax in axes):
        return ReportFigure(title, caption, None, None, tuple(notes))
    axes[0].set(ylabel="training loss", title="training loss")
    if validated:
        axes[1].set(ylabel="validation mIoU (%)", title="validation mIoU")
    for ax in axes:
        ax.set(xlabel="step")
        ax.grid(alpha=0.3)
        if crowded:
            columns = 1 if len(ax.get_legend_handles_labels()[0]) <= 16 else 2
            ax.legend(
                fontsize="x-small", ncol=columns, loc="center left", bbox_to_anchor=(1.01, 0.5)
            )
        else:
            ax.legend(fontsize="small")
    return ReportFigure(title, caption, None, _save(fig, path), tuple(notes))


def training_figure(
    rows: list[Row], path: Path, smoothing: float = DEFAULT_SMOOTHING
) -> ReportFigure:
    """:func:`fit_curves_figure` of every distinct fit log named by ``rows``."""
    notes = _Notes("training")
    logs: dict[Path, Row] = {}  # distinct fit log -> the first row naming it
    for row in rows:
        for log in notes.paths(row) or ():
            logs.setdefault(log, row)
    fits = []
    for log, row in logs.items():
        try:
            data = _read(log, lambda p: json.loads(p.read_text()))
            fit = log_curves(log.stem, data)
        except (MissingArtifact, KeyError, TypeError, ValueError, AttributeError) as err:
            notes.problem(f"{log}: {err}")
            continue
        label = f"{data.get('kind', log.stem)} on {row.get('trained_on', row['dataset'])}"
        tuning = (data.get("recipe") or {}).get("config", {}).get("reward_tuning")
        label += f" (reward-tuned: {tuning['reward']})" if tuning else ""
        label += f", seed {row['seed']}, {data.get('fit_seconds', float('nan')):.0f} s"
        fits.append((label, fit))
    return fit_curves_figure(fits, path, smoothing, notes.all())


def make_figures(
    rows: list[Row],
    tables: Sequence[Table],
    out_dir: Path,
    cost_model: str = "relative",
    smoothing: float = DEFAULT_SMOOTHING,
) -> list[ReportFigure]:
    """Curves and anomaly maps per (dataset, split) of ``tables`` (methods in table order), the
    supervision figures where the rows hold two or more regimes, then the training curves (EMA
    weight ``smoothing``); the PNGs go into ``out_dir``."""
    figures = []
    for table in tables:
        group = [r for r in rows if (r["dataset"], r["split"]) == (table.dataset, table.split)]
        name = slug(f"{table.dataset}-{table.split}")
        figures.append(curves_figure(group, table.methods, out_dir / f"curves-{name}.png"))
        figures.append(samples_figure(group, table.methods, out_dir / f"samples-{name}.png"))
        if len({row_supervision(r) for r in group if r.get("segmenter")}) > 1:
            figures.append(cost_figure(group, out_dir / f"cost-{name}.png", cost_model))
            figures.append(regimes_figure(group, out_dir / f"regimes-{name}.png"))
    figures.append(training_figure(rows, out_dir / "training.png", smoothing))
    return figures


def cost_figure(rows: list[Row], path: Path, cost_model: str = "relative") -> ReportFigure:
    """mIoU and each post-hoc method's AP against annotation cost, one point per regime."""
    if cost_model not in COST_MODELS:
        raise ValueError(f"cost model must be one of {COST_MODELS}")
    group = (rows[0]["dataset"], rows[0]["split"])
    title = f"{group[0]} / {group[1]}: accuracy against annotation cost"
    unit = "relative effort" if cost_model == "relative" else "seconds per image (log)"
    caption = (
        f"x: annotation cost per image ({unit}, owsbench.costs); left: mIoU of the segmenter "
        "trained under each regime, right: AP of each post-hoc method on it; mean over seeds, "
        "error bars one std; hybrids ('+') as diamonds."
    )
    summary = regime_summary(rows)
    x_col = f"cost_{cost_model}"
    summary = summary.dropna(subset=[x_col]).sort_values(x_col)
    if summary.empty:
        return ReportFigure(title, caption, group, None, ("no regime has a cost",))
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _cost_panel(left, summary, x_col, "mIoU")
    for column in [c for c in summary.columns if c.startswith("AP ") and c[-4:] != "_std"]:
        _cost_panel(right, summary, x_col, column)
    for ax, label in ((left, "mIoU (%)"), (right, "AP (%)")):
        ax.set(xlabel=f"annotation cost ({unit})", ylabel=label)
        if cost_model == "seconds":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    right.legend(fontsize="small")
    return ReportFigure(title, caption, group, _save(fig, path))


def _cost_panel(ax: Any, summary: Any, x_col: str, column: str) -> None:
    """One line of ``column`` against cost per segmenter; regimes annotated on the mIoU panel."""
    for segmenter, part in summary.groupby("segmenter", sort=False):
        x = part[x_col].to_numpy(float)
        y = 100 * part[column].to_numpy(float)
        err = 100 * part[f"{column}_std"].fillna(0).to_numpy(float)
        label = column if column == "mIoU" else f"{column[3:]} ({segmenter})"
        (line,) = ax.plot(x, y, lw=0.8, alpha=0.6, label=label)
        hybrid = part["supervision"].str.contains("+", regex=False).to_numpy()
        for mask, marker in ((~hybrid, "o"), (hybrid, "D")):
            ax.errorbar(
                x[mask], y[mask], yerr=err[mask], fmt=marker, color=line.get_color(), capsize=3
            )
        if column == "mIoU":
            for xi, yi, name in zip(x, y, part["supervision"], strict=True):
                ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Class ids as RGB in the Cityscapes palette (ids beyond it cycle); void (255) black."""
    palette = np.array(CITYSCAPES_PALETTE, np.uint8)
    rgb = palette[np.where(labels == 255, 0, labels) % len(palette)]
    rgb[labels == 255] = 0
    return rgb


def _semantic_samples(
    rows: list[Row], notes: _Notes
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """The first samples file of ``rows`` (one seed) with ground-truth semantic labels, and
    every model's semantic prediction found in their samples files (by model label)."""
    base, panels, read = None, {}, set()
    for row in rows:
        for sample in notes.paths(row) or ():
            if sample in read:
                continue
            read.add(sample)
            try:
                data = _read(sample, _npz)
            except MissingArtifact as err:
                notes.problem(str(err))
                continue
            if "semantic_gt" in data:
                base = base or data
                panels.update({k[9:]: v for k, v in data.items() if k.startswith("semantic:")})
    return None if base is None or not panels else (base, panels)


def regimes_figure(rows: list[Row], path: Path) -> ReportFigure:
    """Image | ground truth | each regime's semantic prediction, for up to ``MAX_FRAMES`` frames
    of the lowest seed whose samples files hold semantic predictions."""
    group = (rows[0]["dataset"], rows[0]["split"])
    title = f"{group[0]} / {group[1]}: predictions per supervision regime"
    notes = _Notes("samples")
    found = None
    for seed in sorted({r["seed"] for r in rows}):
        found = _semantic_samples([r for r in rows if r["seed"] == seed], notes)
        if found is not None:
            break
    if found is None:
        return ReportFigure(title, "", group, None, notes.all() or ("no semantic samples",))
    base, panels = found
    frames = [str(f) for f in base["frame_ids"][:MAX_FRAMES]]
    caption = (
        f"Seed {seed}, frames {', '.join(frames)}; classes in the Cityscapes palette, void "
        "black; one column per trained model (segmenter and regime)."
    )
    columns = ["image", "ground truth", *panels]
    grid = [
        [base["image"][i], colour_labels(base["semantic_gt"][i])]
        + [colour_labels(maps[i]) for maps in panels.values()]
        for i in range(len(frames))
    ]
    fig = _image_grid(grid, columns, frames, None)
    return ReportFigure(title, caption, group, _save(fig, path), notes.all())
