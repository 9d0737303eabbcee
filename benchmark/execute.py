"""The fit, infer and measure steps (plan -> fit -> infer -> measure -> rows -> tables).

An :class:`Executor` runs planned :class:`~owsbench.plan.Job`s and writes their rows;
:class:`LocalExecutor` does it in this process, one job after another, skipping a job whose row
keys are all in ``OUT/results.jsonl`` already. For one job it:

1. opens the job's datasets (``BadInput`` when a fingerprint differs from the planned one: the
   data changed, so the promised row keys would not be written);
2. fits the group (:func:`owsbench.fits.fit_or_load`, cached): for a post-hoc group the
   segmenter (seeded with the job's seed), then every post-hoc method that needs a fit on it
   (its recipe completed with the segmenter checkpoint's ``segmenter_sha256``); for a trained
   method (``shares_segmenter`` false) the method itself, seeded;
3. streams each eval split once through the group (:func:`owsbench.evaluate.evaluate_split`);
4. measures: SMIYC component metrics from the saved score maps when asked, then the row
   (:func:`owsbench.rows.build_row`, whose metrics are :func:`owsbench.measure.row_metrics`);
5. writes the artifacts (a training log per fit, a samples file per split, a curve per row;
   :mod:`owsbench.artifacts`) and adds each row as its split is measured: to this process's
   shard, merged into ``results.jsonl`` when the run ends, failed or not
   (:class:`owsbench.results.ResultsStore`; concurrent runs into one folder keep every row).

A method whose anomaly scores or semantic logits were not finite on some frame
(``SplitResult.nonfinite``) gets no row: one stderr line names the method, the dataset/split and
the frame, the message goes to ``LocalExecutor.dropped`` (the CLI then exits 1), and the other
methods' rows are written.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from owsbench.artifacts import save_curve, save_samples, save_training_logs
from owsbench.catalog import METHODS, SEGMENTERS
from owsbench.config import apply_overrides
from owsbench.datasets.base import Dataset
from owsbench.errors import BadInput
from owsbench.evaluate import (
    FrameObserver,
    ModelGroup,
    PosthocGroup,
    SampleCollector,
    ScoreMapSaver,
    SplitResult,
    TrainedGroup,
    evaluate_split,
)
from owsbench.fits import Fit, FitCache, fit_or_load
from owsbench.frame_loader import default_workers
from owsbench.methods.base import FitContext, Method
from owsbench.plan import (
    DatasetRef,
    Datasets,
    Job,
    MethodPlan,
    SegmenterPlan,
    fit_config,
    jsonable,
    row_key_of,
)
from owsbench.results import ResultsStore
from owsbench.rows import Artifacts, build_row, environment, method_label_of, row_id, row_key
from owsbench.score_eval import component_metrics
from owsbench.training.reward_tuning import tune_segmenter
from owsbench.training.segmenter import train_segmenter


class Executor(Protocol):
    """Runs jobs; returns the rows of those jobs (made now or found from an earlier run)."""

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``BadInput`` for cuda without a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def build_config(
    default: Any, overrides: dict[str, Any], planned: dict[str, Any], what: str
) -> Any:
    """``default`` with the job's ``overrides``; ``BadInput`` unless it is the planned config
    (the job was planned by code whose defaults differ)."""
    config = apply_overrides(default, overrides, what)
    if jsonable(dataclasses.asdict(config)) != planned:
        raise BadInput(f"the job's {what} config differs from this owsbench's; plan it again")
    return config


@dataclass
class JobContext:
    """What the steps of one job share."""

    job: Job
    dataset: Dataset
    train: Dataset
    device: torch.device
    cache: FitCache
    cache_dir: Path
    out: Path
    progress: bool
    fit_context: FitContext


def fit_context(
    job: Job, train: Dataset, device: torch.device, cache_dir: Path, progress: bool
) -> FitContext:
    """What a fit may use: the training dataset's outlier-exposure source and its labelled
    validation split (only when that split is not one the dataset itself is evaluated on)."""
    split = train.validation_split
    validation = None
    if split is not None and split not in train.eval_splits:
        validation = train.split(split)
    return FitContext(
        seed=job.seed,
        device=device,
        cache_dir=cache_dir,
        preset=job.settings.preset,
        progress=progress,
        max_stat_frames=job.settings.max_stat_frames,
        outlier_source=train.outlier_source(),
        validation=validation,
        train_fingerprint=job.train.fingerprint,
        label_traits=train.label_traits(),
        processes=job.settings.procs_per_job,
    )


# ------------------------------------------------------------------------------------ fit


def fit_segmenter(ctx: JobContext, plan: SegmenterPlan) -> tuple[torch.nn.Module, Fit]:
    """The group's segmenter, trained on the train split (seeded) or loaded from the cache.
    With ``reward_tuning`` it is its MLE fit (the same config without it, cached on its own)
    tuned on the reward; the tuned fit's recipe holds the MLE checkpoint's sha256."""
    cls = SEGMENTERS.get(plan.id)
    config = build_config(cls.Config(), plan.overrides, plan.config, "segmenter")
    recipe = dict(plan.fit.recipe)
    phase: Callable = train_segmenter
    if config.reward_tuning is not None:
        mle = dataclasses.replace(config, reward_tuning=None)
        mle_recipe = {**recipe, "config": jsonable(dataclasses.asdict(mle))}
        _, parent = fit_segmenter_config(ctx, plan.fit.kind, mle, mle_recipe, cls, phase)
        recipe["mle_sha256"] = parent.meta["sha256"]
        phase = partial(tune_from, parent)
    model, fit = fit_segmenter_config(ctx, plan.fit.kind, config, recipe, cls, phase)
    if config.reward_tuning is not None:
        fit = dataclasses.replace(fit, parent=parent)
    return model.to(ctx.device).eval(), fit


def tune_from(parent: Fit, model: torch.nn.Module, *args: Any) -> tuple[Any, dict[str, Any]]:
    """The reward-tuning phase (``tune_segmenter(model, train, config, context)``) on ``model``
    loaded with the MLE ``parent`` fit."""
    model.load_state_dict(parent.state)
    return tune_segmenter(model, *args)


def fit_segmenter_config(
    ctx: JobContext, kind: str, config: Any, recipe: dict[str, Any], cls: type, phase: Callable
) -> tuple[torch.nn.Module, Fit]:
    """The model of the cached fit of ``(kind, recipe)``, or of ``phase(model, train, config,
    context)`` on a model built from ``config`` (torch seeded with the job's seed)."""

    def train(model: torch.nn.Module) -> dict[str, Any]:
        log, report = phase(model, ctx.train.split("train"), config, ctx.fit_context)
        return {**log.meta(), **({"report": report} if report else {})}

    def build() -> torch.nn.Module:
        return cls(config, ctx.train.num_classes)

    return fit_or_load(ctx.cache, kind, recipe, build, train, ctx.job.seed)


def fit_method(
    ctx: JobContext,
    plan: MethodPlan,
    segmenter: torch.nn.Module | None = None,
    segmenter_fit: Fit | None = None,
) -> tuple[Method, Fit | None]:
    """The method, fitted (cached) when it has a fit. A post-hoc method (``shares_segmenter``)
    is built on ``segmenter`` and its recipe gets that checkpoint's ``segmenter_sha256``; a
    trained method owns its model and its fit is seeded with the job's seed."""
    cls = METHODS.get(plan.name)
    config = build_config(cls.Config(), plan.overrides, plan.config, plan.name)

    def build() -> Method:
        return cls(config, segmenter=segmenter) if cls.shares_segmenter else cls(config)

    if plan.fit is None:
        return build(), None
    recipe, seed = dict(plan.fit.recipe), ctx.job.seed
    if cls.shares_segmenter:
        recipe["segmenter_sha256"], seed = segmenter_fit.meta["sha256"], None
    if cls.tuning_stage and config.reward_tuning is not None:
        return fit_tuned_method(ctx, plan.fit.kind, cls, config, recipe, seed)

    def train(method: Method) -> dict[str, Any]:
        method.fit(ctx.train.split("train"), ctx.fit_context)
        return method.fit_meta()

    return fit_or_load(ctx.cache, plan.fit.kind, recipe, build, train, seed)


def fit_tuned_method(
    ctx: JobContext, kind: str, cls: type, config: Any, recipe: dict[str, Any], seed: int
) -> tuple[Method, Fit]:
    """A trained method with ``reward_tuning``: its fit without it (cached on its own, shared
    with runs that do not tune), then ``tune`` on that state; the tuned fit's recipe holds the
    MLE checkpoint's ``mle_sha256`` and the returned fit names it as its ``parent``."""
    train = ctx.train.split("train")
    mle = dataclasses.replace(config, reward_tuning=None)

    def fit(method: Method) -> dict[str, Any]:
        method.fit(train, ctx.fit_context)
        return method.fit_meta()

    mle_recipe = {**recipe, "config": jsonable(fit_config(cls, mle))}
    _, parent = fit_or_load(ctx.cache, kind, mle_recipe, partial(cls, mle), fit, seed)

    def tune(method: Method) -> dict[str, Any]:
        method.load_state_dict(parent.state)
        method.tune(train, ctx.fit_context)
        return method.fit_meta()

    recipe = {**recipe, "mle_sha256": parent.meta["sha256"]}
    method, tuned = fit_or_load(ctx.cache, kind, recipe, partial(cls, config), tune, seed)
    return method, dataclasses.replace(tuned, parent=parent)


def fit_group(ctx: JobContext) -> tuple[ModelGroup, dict[str, list[Fit | None]]]:
    """The job's model group and, per method id, its fits (segmenter first)."""
    job = ctx.job
    if job.segmenter is None:
        (plan,) = job.methods
        method, fit = fit_method(ctx, plan)
        return TrainedGroup(plan.id, method), {plan.id: [fit]}
    segmenter, segmenter_fit = fit_segmenter(ctx, job.segmenter)
    methods, fits = {}, {}
    for plan in tqdm(job.methods, desc="fit methods", disable=not ctx.progress, leave=False):
        methods[method_key(job, plan)], fit = fit_method(ctx, plan, segmenter, segmenter_fit)
        fits[plan.id] = [segmenter_fit, fit]
    return PosthocGroup(segmenter, methods), fits


def method_key(job: Job, plan: MethodPlan) -> str:
    """How a method of ``job`` is named in its model group, score maps and samples: its id,
    with the segmenter's regime when that is not ``full`` (``msp (points)``), so the same
    method on segmenters of different regimes never shares a file."""
    return method_label_of(plan.id, job.supervision)


def model_key(job: Job) -> str:
    """The name of the job's model in the samples files: the segmenter with its regime, or the
    trained method."""
    if job.segmenter is None:
        return job.methods[0].id
    return method_label_of(job.segmenter.id, job.supervision)


# ---------------------------------------------------------------------- infer and measure


def maps_root(ctx: JobContext) -> Path:
    return ctx.out / "scores" / f"seed{ctx.job.seed}"


def infer_split(
    ctx: JobContext, group: ModelGroup, split: str
) -> tuple[dict[str, SplitResult], float, str | None]:
    """Stream ``split`` once through ``group``: per-method metric states, the wall seconds and
    the samples artifact (score maps saved too with ``save_scores``)."""
    job, dataset = ctx.job, ctx.dataset
    collector = SampleCollector(model=model_key(job))
    observers: list[FrameObserver] = [collector]
    if job.settings.save_scores or job.settings.components:
        observers.append(ScoreMapSaver(maps_root(ctx), f"{dataset.name}-{split}"))
    per_image = job.settings.aggregation == "per-image"
    results, seconds = evaluate_split(
        group,
        dataset.split(split),
        dataset.num_classes,
        job.settings.eval_batch_size,
        ctx.device,
        ctx.progress,
        desc=f"evaluate {dataset.name}/{split} seed {job.seed}",
        per_image_fpr_rule=job.settings.fpr_rule if per_image else None,
        observers=tuple(observers),
        workers=default_workers() if job.settings.workers is None else job.settings.workers,
        precision=job.settings.precision,
    )
    samples = save_samples(ctx.out, dataset.name, split, job.seed, collector.arrays())
    return results, seconds, samples


def measure_components(ctx: JobContext, method_id: str, split: str) -> dict[str, Any]:
    """SMIYC component metrics of the method's saved maps (``{}`` unless asked for)."""
    if not ctx.job.settings.components:
        return {}
    maps = maps_root(ctx) / "anomaly_p" / method_id / f"{ctx.dataset.name}-{split}"
    return component_metrics(ctx.dataset.split(split), maps, ctx.dataset, ctx.progress)


# ------------------------------------------------------------------------------- executor


class LocalExecutor:
    """Runs jobs in this process into ``out`` (see the module docstring).

    ``device``, ``data_root`` and ``cache_dir`` replace the job's settings when given;
    ``datasets`` shares opened datasets with the planner. ``executed`` lists the ids of the jobs
    run so far. Torch uses every CPU core unless
    ``$OMP_NUM_THREADS`` is set.
    """

    def __init__(
        self,
        out: Path,
        progress: bool = True,
        device: str | None = None,
        data_root: Path | None = None,
        cache_dir: Path | None = None,
        datasets: Datasets | None = None,
    ) -> None:
        self.out = Path(out)
        self.progress = progress
        self.device, self.data_root, self.cache_dir = device, data_root, cache_dir
        self.datasets = datasets or Datasets(progress)
        self.store = ResultsStore(self.out)
        self.executed: list[str] = []
        self.dropped: list[str] = []  # one message per row not written (non-finite outputs)
        self._env: dict[str, dict[str, Any]] = {}
        if "OMP_NUM_THREADS" not in os.environ:  # else the user's choice, e.g. parallel runs
            torch.set_num_threads(max(1, os.cpu_count() or 1))

    def pending(self, job: Job) -> bool:
        """Whether some row of ``job`` is not in ``results.jsonl`` yet."""
        return not all(self.store.has(key) for key in job.rows)

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Execute every pending job in order; return the rows of all ``jobs`` (file order)."""
        try:
            for job in jobs:
                if self.pending(job):
                    self.execute(job)
        finally:  # the rows written so far reach results.jsonl, even when a job failed
            self.store.close()
        wanted = {key for job in jobs for key in job.rows}
        return [row for row in self.store.rows if row_key(row) in wanted]

    def open(self, job: Job, ref: DatasetRef) -> Dataset:
        """The dataset of ``ref``; ``BadInput`` when its data changed since planning."""
        root = self.data_root or job.settings.data_root
        dataset = self.datasets.open(ref.id, ref.options, root, job.settings.preset)
        if dataset.fingerprint() != ref.fingerprint:
            raise BadInput(
                f"{ref.id}: the data changed since the job was planned (fingerprint "
                f"{ref.fingerprint}, now {dataset.fingerprint()}); plan it again"
            )
        return dataset

    def context(self, job: Job) -> JobContext:
        device = resolve_device(self.device or job.settings.device)
        cache_dir = Path(self.cache_dir or job.settings.cache_dir)
        train = self.open(job, job.train)
        return JobContext(
            job=job,
            dataset=self.open(job, job.dataset),
            train=train,
            device=device,
            cache=FitCache(cache_dir),
            cache_dir=cache_dir,
            out=self.out,
            progress=self.progress,
            fit_context=fit_context(job, train, device, cache_dir, self.progress),
        )

    def environment(self, device: torch.device) -> dict[str, Any]:
        if str(device) not in self._env:
            self._env[str(device)] = environment(str(device))
        return self._env[str(device)]

    def drop_nonfinite(
        self, ctx: JobContext, plan: MethodPlan, split: str, result: SplitResult
    ) -> bool:
        """Whether the row is dropped for non-finite outputs (said on one stderr line)."""
        if result.nonfinite is None:
            return False
        what, frame_id = result.nonfinite
        message = (
            f"owsbench: method {plan.id} returned non-finite {what} on "
            f"{ctx.dataset.name}/{split} frame {frame_id}; its row is not written"
        )
        tqdm.write(message, file=sys.stderr)
        self.dropped.append(message)
        return True

    def fit(self, job: Job) -> None:
        """Fit (or find in the cache) every model of ``job``; evaluate nothing."""
        fit_group(self.context(job))

    def execute(self, job: Job) -> None:
        """Fit, infer, measure and write every row of ``job`` (rows present are replaced)."""
        ctx = self.context(job)
        group, fits = fit_group(ctx)
        logs = {id(f): save_training_logs(self.out, f) for done in fits.values() for f in done if f}
        training = {  # each fit's logs written once (a shared segmenter's too)
            method_id: [path for f in done if f for path in logs[id(f)]]
            for method_id, done in fits.items()
        }
        env = self.environment(ctx.device)
        for split in job.splits:
            results, seconds, samples = infer_split(ctx, group, split)
            for plan in job.methods:
                result = results[method_key(job, plan)]
                if self.drop_nonfinite(ctx, plan, split, result):
                    continue
                components = measure_components(ctx, method_key(job, plan), split)
                key = row_key_of(job.dataset, plan, split, job.seed)
                curve = save_curve(self.out, row_id(key), result.anomaly)
                artifacts = Artifacts(curve, samples, training[plan.id])
                row = build_row(
                    job,
                    plan,
                    split,
                    result,
                    seconds,
                    fits[plan.id],
                    components,
                    ctx.dataset.class_names,
                    artifacts,
                    env,
                )
                self.store.add(row)
        self.executed.append(job.id)
