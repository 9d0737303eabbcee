"""The runner: plan jobs, fit (cached), evaluate in one pass per model, write rows.

For each eval dataset and seed, post-hoc methods are grouped by the segmenter they sit on
(``NAME@SEGMENTER``; default ``deeplabv3plus``). Each group's segmenter is trained once per
(recipe, train dataset, seed) and cached; methods that gather statistics (SML) are fitted once
and cached too; then every eval split is streamed once through the segmenter and all the group's
scores. A row is written as soon as its split is measured; rows already in ``results.jsonl``
are skipped, so a rerun only does what is missing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import owsbench
from owsbench.artifacts import save_curve, save_samples, save_training_log
from owsbench.cache import content_hash
from owsbench.catalog import DATASETS, METHODS, SEGMENTERS
from owsbench.config import MethodSpec, RunConfig, apply_overrides, parse_method
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
from owsbench.fits import Fit, FitCache
from owsbench.methods.base import FitContext, Method, PosthocMethod
from owsbench.training.segmenter import train_segmenter
from owsbench.metrics import METRIC_VERSION
from owsbench.results import ResultsStore, row_key
from owsbench.score_eval import THRESHOLD_RULE, component_metrics


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def nan_to_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


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


def fit_extras(method: Method) -> dict[str, Any]:
    """What a fit leaves besides its state: the training curve (``train_log``, a ``TrainLog``)
    and a ``fit_report`` dict of choices made during the fit (both optional attributes)."""
    extra: dict[str, Any] = {}
    log = getattr(method, "train_log", None)
    if log is not None:
        extra.update(train_loss=log.loss, lr=log.lr)
    report = getattr(method, "fit_report", None)
    if report:
        extra["report"] = report
    return extra


class Runner:
    """Runs one ``RunConfig``; see the module docstring."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.specs = [parse_method(m) for m in config.methods]
        for spec in self.specs:
            if "@" in spec.id and self.is_trained(spec):
                raise BadInput(f"{spec.name} is a trained method with its own model; drop '@...'")
        for dataset_id in config.datasets:
            DATASETS.entry(dataset_id)
            for split in config.splits or ():
                if split not in DATASETS.get(dataset_id).splits:
                    valid = ", ".join(DATASETS.get(dataset_id).splits)
                    raise BadInput(f"{dataset_id} has no split {split!r}; valid: {valid}")
        self.device = resolve_device(config.device)
        self.fits = FitCache(config.cache_dir)
        self.store = ResultsStore(config.out)
        self._datasets: dict[str, Dataset] = {}
        self.commit = git_commit()
        if "OMP_NUM_THREADS" not in os.environ:  # else the user's choice, e.g. parallel runs
            torch.set_num_threads(max(1, os.cpu_count() or 1))

    # -- datasets ---------------------------------------------------------------------------
    def dataset(self, dataset_id: str) -> Dataset:
        """The adapter (built once per run), with the config file's ``dataset_options``."""
        if dataset_id in self._datasets:
            return self._datasets[dataset_id]
        options = self.config.dataset_options.get(dataset_id, {})
        try:
            dataset = DATASETS.get(dataset_id)(
                self.config.data_root, preset=self.config.preset.name, **options
            )
        except TypeError as err:
            raise BadInput(f"bad dataset_options for {dataset_id}: {err}") from None
        dataset.prepare(progress=self.config.progress)
        self._datasets[dataset_id] = dataset
        return dataset

    def eval_splits(self, dataset: Dataset) -> tuple[str, ...]:
        """``--splits`` when given, else the dataset's default evaluation splits."""
        return tuple(self.config.splits or dataset.eval_splits)

    # -- fitting ----------------------------------------------------------------------------
    def segmenter_config(self, segmenter_id: str) -> Any:
        cls = SEGMENTERS.get(segmenter_id)
        config = apply_overrides(cls.Config(), self.config.preset.segmenter, "segmenter")
        return apply_overrides(config, self.config.segmenter_overrides, "segmenter")

    def is_trained(self, spec: MethodSpec) -> bool:
        return METHODS.get(spec.name).kind != "posthoc"

    def method_config(self, spec: MethodSpec) -> Any:
        """Defaults, then (trained methods) the preset's training sizes, then the preset's values
        for this method, then the config file."""
        config = METHODS.get(spec.name).Config()
        preset = self.config.preset
        if self.is_trained(spec):
            fields = {f.name for f in dataclasses.fields(config)}
            sizes = {k: v for k, v in preset.segmenter.items() if k in fields}
            config = apply_overrides(config, sizes, spec.name)
        config = apply_overrides(config, preset.methods.get(spec.name, {}), spec.name)
        return apply_overrides(config, self.config.method_overrides.get(spec.name, {}), spec.name)

    def fit_segmenter(self, segmenter_id: str, train: Dataset, seed: int) -> tuple[Any, Fit]:
        cls = SEGMENTERS.get(segmenter_id)
        config = self.segmenter_config(segmenter_id)
        recipe = {
            "segmenter": segmenter_id,
            "config": dataclasses.asdict(config),
            "num_classes": train.num_classes,
            "train": train.fingerprint(),
            "seed": seed,
        }

        def fit() -> tuple[dict, dict]:
            torch.manual_seed(seed)
            model = cls(config, train.num_classes)
            log = train_segmenter(
                model, train.split("train"), config, seed, self.device, self.config.progress
            )
            return model.state_dict(), {"train_loss": log.loss, "lr": log.lr}

        result = self.fits.load_or_fit(f"segmenter-{segmenter_id}", recipe, fit)
        model = cls(config, train.num_classes)
        model.load_state_dict(result.state)
        return model.to(self.device).eval(), result

    def fit_context(self, seed: int, train: Dataset) -> FitContext:
        """What a fit may use: the training dataset's outlier-exposure source and its labelled
        validation split (only when that split is not one the dataset itself is evaluated on)."""
        source = getattr(train, "outlier_source", None)
        validation = None
        if "val" in train.splits and "val" not in train.eval_splits:
            validation = train.split("val")
        return FitContext(
            seed=seed,
            device=self.device,
            cache_dir=self.config.cache_dir,
            preset=self.config.preset.name,
            progress=self.config.progress,
            max_stat_frames=self.config.preset.max_stat_frames,
            outlier_source=source() if callable(source) else None,
            validation=validation,
            train_fingerprint=train.fingerprint(),
        )

    @staticmethod
    def fit_config(cls: type[Method], config: Any) -> dict[str, Any]:
        """The config fields that shape a fit (``Method.inference_fields`` left out)."""
        values = dataclasses.asdict(config)
        return {k: v for k, v in values.items() if k not in cls.inference_fields}

    def fit_method(
        self, spec: MethodSpec, segmenter: Any, segmenter_fit: Fit, train: Dataset, seed: int
    ) -> tuple[PosthocMethod, Fit | None]:
        config = self.method_config(spec)
        method = METHODS.get(spec.name)(config, segmenter=segmenter)
        if not method.needs_fit:
            return method, None
        recipe = {
            "method": spec.name,
            "config": self.fit_config(type(method), config),
            "segmenter_sha256": segmenter_fit.meta["sha256"],
            "train": train.fingerprint(),
            "max_stat_frames": self.config.preset.max_stat_frames,
        }
        ctx = self.fit_context(seed, train)

        def fit() -> tuple[dict, dict]:
            method.fit(train.split("train"), ctx)
            return method.state_dict(), fit_extras(method)

        result = self.fits.load_or_fit(f"method-{spec.name}", recipe, fit)
        method.load_state_dict(result.state)
        return method, result

    def fit_trained(self, spec: MethodSpec, train: Dataset, seed: int) -> tuple[Method, Fit]:
        """Fit a trained method on its train split (cached), and load it for prediction."""
        cls = METHODS.get(spec.name)
        config = self.method_config(spec)
        recipe = {
            "method": spec.name,
            "config": self.fit_config(cls, config),
            "num_classes": train.num_classes,
            "train": train.fingerprint(),
            "seed": seed,
        }
        ctx = self.fit_context(seed, train)

        def fit() -> tuple[dict, dict]:
            torch.manual_seed(seed)
            method = cls(config)
            method.fit(train.split("train"), ctx)
            return method.state_dict(), fit_extras(method)

        result = self.fits.load_or_fit(f"method-{spec.name}", recipe, fit)
        method = cls(config)
        method.load_state_dict(result.state)
        return method, result

    # -- rows -------------------------------------------------------------------------------
    def segmenter_fields(self, spec: MethodSpec) -> dict[str, Any]:
        """The segmenter a post-hoc method sits on (trained methods have none)."""
        if self.is_trained(spec):
            return {}
        config = dataclasses.asdict(self.segmenter_config(spec.segmenter))
        return {"segmenter": spec.segmenter, "segmenter_config": config}

    def config_hash(self, spec: MethodSpec) -> str:
        return content_hash(
            {
                "method": spec.name,
                "config": dataclasses.asdict(self.method_config(spec)),
                **self.segmenter_fields(spec),
                "preset": self.config.preset.name,
                "aggregation": self.config.aggregation,
                "fpr_rule": self.config.fpr_rule,
                "components": self.config.components,
            }
        )

    def row(
        self,
        spec: MethodSpec,
        dataset: Dataset,
        split: str,
        seed: int,
        result: SplitResult,
        infer_seconds: float,
        fits: list[Fit | None],
        components: dict[str, Any],
        samples: str | None,
    ) -> dict[str, Any]:
        metrics: dict[str, Any] = {"AP": None, "AUROC": None, "FPR95": None, "mIoU": None}
        if result.per_image is not None:
            metrics.update(result.per_image.compute())
        elif result.anomaly.num_positives + result.anomaly.num_negatives > 0:
            metrics.update(result.anomaly.compute(fpr_rule=self.config.fpr_rule))
        metrics.update(components)
        if result.discovery is not None:  # novel-class discovery (owsbench.metrics.discovery)
            metrics.update(result.discovery.compute())
        if result.semantic is not None:
            semantic = result.semantic.compute()
            metrics["mIoU"] = semantic["mIoU"]
            metrics["per_class_iou"] = dict(
                zip(dataset.class_names, map(nan_to_none, semantic["per_class_iou"]), strict=True)
            )
        done = [f for f in fits if f is not None]
        row = {
            "method": spec.id,
            "method_name": spec.name,
            "segmenter": None,
            "segmenter_config": None,
            **self.segmenter_fields(spec),
            "method_config": dataclasses.asdict(self.method_config(spec)),
            "config_hash": self.config_hash(spec),
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint(),
            "trained_on": dataset.train_on,
            "split": split,
            "seed": seed,
            "preset": self.config.preset.name,
            "metrics": {k: nan_to_none(v) for k, v in metrics.items()},
            "metric_version": METRIC_VERSION,
            "aggregation": self.config.aggregation,
            "fpr_rule": self.config.fpr_rule,
            "component_threshold_rule": THRESHOLD_RULE if self.config.components else None,
            "frames": result.frames,
            "anomaly_pixels": result.anomaly.num_positives,
            "inlier_pixels": result.anomaly.num_negatives,
            "fit_seconds": sum(f.meta["fit_seconds"] for f in done),
            "fit_cached": all(f.cached for f in done),
            "fit_report": {k: v for f in done for k, v in f.meta.get("report", {}).items()},
            "infer_seconds": infer_seconds,
            "score_seconds": result.score_seconds,
            "checkpoint_sha256": done[0].meta["sha256"] if done else None,
            "device": str(self.device),
            "owsbench_version": owsbench.__version__,
            "git_commit": self.commit,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        row["row_id"] = content_hash(row_key(row), length=12)
        training = [save_training_log(self.config.out, f) for f in done]
        row["artifacts"] = {
            "curve": save_curve(self.config.out, row["row_id"], result.anomaly),
            "samples": samples,
            "training": [t for t in training if t],
        }
        return row

    def pending_key(self, spec: MethodSpec, dataset: Dataset, split: str, seed: int) -> tuple:
        probe = {
            "method": spec.id,
            "config_hash": self.config_hash(spec),
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint(),
            "split": split,
            "seed": seed,
        }
        return row_key(probe)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Do every missing (method, dataset, split, seed) job; return all rows of the run."""
        wanted = []
        for dataset_id in self.config.datasets:
            dataset = self.dataset(dataset_id)
            train = dataset if dataset.train_on == dataset.name else self.dataset(dataset.train_on)
            for seed in self.config.seeds:
                groups: dict[str | None, list[MethodSpec]] = {}
                for spec in self.specs:
                    if self.is_trained(spec):
                        groups[f"trained:{spec.id}"] = [spec]
                    else:
                        groups.setdefault(spec.segmenter, []).append(spec)
                for specs in groups.values():
                    keys = [
                        self.pending_key(spec, dataset, split, seed)
                        for spec in specs
                        for split in self.eval_splits(dataset)
                    ]
                    wanted.extend(keys)
                    if all(self.store.has(k) for k in keys):
                        continue
                    if self.is_trained(specs[0]):
                        self.run_trained(specs[0], dataset, train, seed)
                    else:
                        self.run_group(specs[0].segmenter, specs, dataset, train, seed)
        wanted_keys = set(wanted)
        return [r for r in self.store.rows if row_key(r) in wanted_keys]

    def run_group(
        self,
        segmenter_id: str,
        specs: list[MethodSpec],
        dataset: Dataset,
        train: Dataset,
        seed: int,
    ) -> None:
        segmenter, segmenter_fit = self.fit_segmenter(segmenter_id, train, seed)
        methods, method_fits = {}, {}
        for spec in tqdm(specs, desc="fit methods", disable=not self.config.progress, leave=False):
            methods[spec.id], method_fits[spec.id] = self.fit_method(
                spec, segmenter, segmenter_fit, train, seed
            )
        fits = {spec.id: [segmenter_fit, method_fits[spec.id]] for spec in specs}
        self.evaluate_group(PosthocGroup(segmenter, methods), specs, dataset, seed, fits)

    def run_trained(self, spec: MethodSpec, dataset: Dataset, train: Dataset, seed: int) -> None:
        method, fit = self.fit_trained(spec, train, seed)
        self.evaluate_group(TrainedGroup(spec.id, method), [spec], dataset, seed, {spec.id: [fit]})

    def evaluate_group(
        self,
        group: ModelGroup,
        specs: list[MethodSpec],
        dataset: Dataset,
        seed: int,
        fits: dict[str, list[Fit | None]],
    ) -> None:
        """Stream every eval split through ``group``; write one row per method and split."""
        for split in self.eval_splits(dataset):
            frames = dataset.split(split)
            collector = SampleCollector()
            maps_root = self.config.out / "scores" / f"seed{seed}"
            dset = f"{dataset.name}-{split}"
            observers: list[FrameObserver] = [collector]
            if self.config.save_scores or self.config.components:
                observers.append(ScoreMapSaver(maps_root, dset))
            results, seconds = evaluate_split(
                group,
                frames,
                dataset.num_classes,
                self.config.preset.eval_batch_size,
                self.device,
                self.config.progress,
                desc=f"evaluate {dataset.name}/{split} seed {seed}",
                per_image_fpr_rule=(
                    self.config.fpr_rule if self.config.aggregation == "per-image" else None
                ),
                observers=tuple(observers),
            )
            samples = save_samples(self.config.out, dataset.name, split, seed, collector.arrays())
            for spec in specs:
                components = (
                    component_metrics(
                        frames,
                        maps_root / "anomaly_p" / spec.id / dset,
                        dataset,
                        self.config.progress,
                    )
                    if self.config.components
                    else {}
                )
                row = self.row(
                    spec,
                    dataset,
                    split,
                    seed,
                    results[spec.id],
                    seconds,
                    fits[spec.id],
                    components,
                    samples,
                )
                self.store.add(row)
