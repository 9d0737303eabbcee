"""The "plan" step (plan -> fit -> infer -> measure -> rows -> tables): a ``RunConfig`` -> ``Job``s.

A :class:`Job` is one model group x one eval dataset x one seed: a segmenter and every post-hoc
method of the run on it (``NAME@SEGMENTER``; default ``deeplabv3plus``), or one trained method
(``Method.shares_segmenter`` false: it owns its model). With ``--supervision A,B``
(``RunConfig.supervisions``) a post-hoc group is planned once per regime, its segmenter trained
under it (the regime is a field of the segmenter config, hence of its fit key and of the rows'
config hash); trained methods train on their own (dense) objective and are planned once. Jobs
come in the order datasets (as listed) -> seeds -> groups (by the first method of each group in
the methods list) -> regimes; within a group, methods keep the list's order. Each training
dataset is checked against every regime first (instance ids where a regime needs them, weights
naming only its parts, options in range).

A job holds everything needed to run it without the ``RunConfig``: the datasets (id, constructor
options, fingerprint), the merged configs and the override values they came from, each fit's
cache kind and recipe (the fit cache key is :func:`owsbench.fits.fit_stem` of them), the eval
splits, the run-wide settings and the row keys it will write. It round-trips through JSON
(:meth:`Job.to_json` / :meth:`Job.from_json`), which is what ``owsbench run-job`` executes.

Configs are merged as: the class defaults, then (segmenters, trained methods) the preset's
segmenter sizes for the fields of the same name, then the class's ``preset_values[preset name]``,
then the config file (``segmenter:`` / ``method_configs:``). Fit recipes:

- segmenter: ``{segmenter, config, num_classes, train, seed}``;
- post-hoc method with a fit (``needs_fit``): ``{method, config, train, max_stat_frames}`` plus
  ``segmenter_sha256``, the checksum of the segmenter checkpoint, added when it is fitted (so its
  cache key is only known then; ``FitPlan.key`` is None);
- trained method: ``{method, config, num_classes, train, seed}``;

where ``config`` leaves out ``Method.inference_fields`` and ``train`` is the training dataset's
fingerprint. Planning validates ids, merges configs and opens (constructs and prepares) the
datasets for their fingerprints; it fits nothing. This module loads no torch at import; planning
imports the method and segmenter classes for their configs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owsbench.cache import content_hash
from owsbench.catalog import DATASETS, METHODS, SEGMENTERS, SUPERVISIONS
from owsbench.config import (
    MethodSpec,
    RunConfig,
    apply_overrides,
    matches,
    parse_method,
    type_text,
)
from owsbench.costs import relative_costs
from owsbench.datasets.base import Dataset
from owsbench.errors import BadInput
from owsbench.fits import fit_stem

JOB_VERSION = 1  # bump when the job's fields change meaning


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples -> lists; other types -> ``str``)."""
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as a job opens it: registry ``id``, ``name`` (rows' ``dataset``), constructor
    ``options`` (the config file's ``dataset_options``) and the ``fingerprint`` at planning."""

    id: str
    name: str
    options: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class FitPlan:
    """One cached fit: ``kind`` (cache file prefix) and ``recipe`` (hashed into the key);
    ``key``: the cache file stem, None when the recipe is completed at fit time."""

    kind: str
    recipe: dict[str, Any]
    key: str | None


@dataclass(frozen=True)
class SegmenterPlan:
    """The segmenter of a post-hoc group: registry ``id``, the ``overrides`` applied over its
    default config, the resulting ``config`` (as JSON) and its ``fit``."""

    id: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    fit: FitPlan


@dataclass(frozen=True)
class MethodPlan:
    """A method of a job: ``id`` as written (``NAME[@SEGMENTER]``), registry ``name``, the
    ``overrides`` over its default config, the resulting ``config`` (as JSON), the rows'
    ``config_hash`` and its ``fit`` (None for a post-hoc method without one)."""

    id: str
    name: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    fit: FitPlan | None


@dataclass(frozen=True)
class Settings:
    """Run-wide values a job needs: the preset's name and sizes, the measurement options, and
    the device / data root / cache folder to use unless the executor is told otherwise."""

    preset: str
    eval_batch_size: int
    max_stat_frames: int | None
    aggregation: str
    fpr_rule: str
    components: bool
    save_scores: bool
    device: str
    data_root: str
    cache_dir: str
    # the relative annotation cost per regime (``owsbench.costs``; the config file's over them)
    annotation_costs: dict[str, float] = dataclasses.field(default_factory=dict)
    precision: str = "fp32"  # the forward's autocast (owsbench.precision)
    workers: int | None = None  # frame-decoding processes; None: frame_loader.default_workers()
    procs_per_job: int = 1  # processes a segmenter fit trains on, data-parallel

    @classmethod
    def of(cls, config: RunConfig) -> Settings:
        return cls(
            preset=config.preset.name,
            eval_batch_size=config.preset.eval_batch_size,
            max_stat_frames=config.preset.max_stat_frames,
            aggregation=config.aggregation,
            fpr_rule=config.fpr_rule,
            components=config.components,
            save_scores=config.save_scores or config.components,
            device=config.device,
            data_root=str(Path(config.data_root).absolute()),
            cache_dir=str(Path(config.cache_dir).absolute()),
            annotation_costs=relative_costs(config.annotation_costs),
            precision=config.precision,
            workers=config.workers,
            procs_per_job=config.procs_per_job,
        )


@dataclass(frozen=True)
class Job:
    """One model group x eval dataset x seed (see the module docstring).

    ``segmenter`` is None for a trained method's job (then ``methods`` has that one method);
    ``rows`` are the row keys (``owsbench.rows.KEY_FIELDS``) it writes, split-major.
    """

    dataset: DatasetRef
    train: DatasetRef
    seed: int
    splits: tuple[str, ...]
    segmenter: SegmenterPlan | None
    methods: tuple[MethodPlan, ...]
    settings: Settings
    rows: tuple[tuple, ...]
    version: int = JOB_VERSION

    @property
    def supervision(self) -> str:
        """The regime the job's segmenter trains with; ``full`` for a trained method (its own
        dense objective)."""
        return self.segmenter.config["supervision"] if self.segmenter is not None else "full"

    @property
    def id(self) -> str:
        """16 hex digits of the sha256 of the job's canonical JSON."""
        return content_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """The job of ``to_dict()`` (or of its JSON); ``BadInput`` when it is not one."""
        if not isinstance(data, dict) or data.get("version") != JOB_VERSION:
            raise BadInput(f"not an owsbench job of version {JOB_VERSION}")
        try:
            segmenter = data["segmenter"]
            return cls(
                dataset=DatasetRef(**data["dataset"]),
                train=DatasetRef(**data["train"]),
                seed=int(data["seed"]),
                splits=tuple(data["splits"]),
                segmenter=None if segmenter is None else _segmenter_plan(segmenter),
                methods=tuple(_method_plan(m) for m in data["methods"]),
                settings=Settings(**data["settings"]),
                rows=tuple(tuple(key) for key in data["rows"]),
                version=data["version"],
            )
        except (KeyError, TypeError) as err:
            raise BadInput(f"malformed owsbench job: {err!r}") from None

    @classmethod
    def from_json(cls, text: str) -> Job:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadInput(f"job is not JSON: {err.msg} (line {err.lineno})") from None
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: Path) -> Job:
        """The job in the JSON file ``path``."""
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise BadInput(f"cannot read job file {path}: {err.strerror}") from None
        return cls.from_json(text)


def _fit_plan(data: dict[str, Any] | None) -> FitPlan | None:
    return None if data is None else FitPlan(**data)


def _segmenter_plan(data: dict[str, Any]) -> SegmenterPlan:
    return SegmenterPlan(**{**data, "fit": _fit_plan(data["fit"])})


def _method_plan(data: dict[str, Any]) -> MethodPlan:
    return MethodPlan(**{**data, "fit": _fit_plan(data["fit"])})


# ------------------------------------------------------------------------------ datasets


class Datasets:
    """Dataset adapters, each constructed and prepared once per (data root, preset, id,
    options); shared by the planner and an executor in the same process."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self._open: dict[str, Dataset] = {}

    def open(
        self, dataset_id: str, options: dict[str, Any], data_root: Path | str, preset: str
    ) -> Dataset:
        """The adapter ``DATASETS[dataset_id](data_root, preset=preset, **options)``, prepared;
        ``BadInput`` for options the adapter does not take."""
        root = str(Path(data_root).absolute())
        key = json.dumps([root, preset, dataset_id, options], sort_keys=True, default=str)
        if key not in self._open:
            check_dataset_options(dataset_id, options)
            try:
                dataset = DATASETS.get(dataset_id)(Path(data_root), preset=preset, **options)
            except TypeError as err:
                raise BadInput(f"bad dataset_options for {dataset_id}: {err}") from None
            dataset.prepare(progress=self.progress)
            self._open[key] = dataset
        return self._open[key]


def check_dataset_options(dataset_id: str, options: dict[str, Any]) -> None:
    """``BadInput`` for a ``dataset_options`` value not of the type the adapter's constructor
    annotates (its ranges and enumerations are the adapter's own checks)."""
    hints = typing.get_type_hints(DATASETS.get(dataset_id).__init__)
    for key, value in options.items():
        if key in hints and not matches(value, hints[key]):
            raise BadInput(
                f"dataset_options.{dataset_id}.{key} must be {type_text(hints[key])} "
                f"(got {value!r})"
            )


def dataset_ref(dataset_id: str, options: dict[str, Any], dataset: Dataset) -> DatasetRef:
    return DatasetRef(dataset_id, dataset.name, jsonable(options), dataset.fingerprint())


# ------------------------------------------------------------------------------- configs


def shares_segmenter(spec: MethodSpec) -> bool:
    """Whether the method is post-hoc: scored from a shared segmenter's forward pass."""
    return bool(METHODS.get(spec.name).shares_segmenter)


def validate(config: RunConfig) -> list[MethodSpec]:
    """The method specs of ``config``; ``BadInput`` for unknown ids (methods, segmenters,
    datasets, supervision regimes, keys of ``method_configs`` and ``dataset_options``), a
    segmenter named for a trained method, a post-hoc method its segmenter cannot serve
    (``PosthocMethod.check_segmenter``), ``--supervision`` without a post-hoc method, or a
    ``--splits`` split a dataset does not have."""
    specs = [parse_method(m) for m in config.methods]
    for spec in specs:
        if "@" in spec.id and not shares_segmenter(spec):
            raise BadInput(f"{spec.name} is a trained method with its own model; drop '@...'")
        if shares_segmenter(spec):
            segmenter_cls = SEGMENTERS.get(spec.segmenter)
            METHODS.get(spec.name).check_segmenter(segmenter_cls, method_config(config, spec))
    for regime in config.supervisions or ():
        for part in regime.split("+"):
            SUPERVISIONS.entry(part)
    if config.supervisions and not any(shares_segmenter(s) for s in specs):
        raise BadInput(
            "--supervision trains the segmenter of post-hoc methods; the methods given are "
            "trained methods with their own objective"
        )
    for name in config.method_overrides:  # methods not in this run are fine; typos are not
        METHODS.entry(name)
    for name in config.dataset_options:
        DATASETS.entry(name)
    for dataset_id in config.datasets:
        cls = DATASETS.get(dataset_id)
        for split in config.splits or ():
            if split not in cls.splits:
                raise BadInput(
                    f"{dataset_id} has no split {split!r}; valid: {', '.join(cls.splits)}"
                )
    return specs


def segmenter_overrides(
    config: RunConfig, segmenter_id: str, supervision: str | None = None
) -> tuple[dict[str, Any], Any]:
    """The values over ``segmenter_id``'s default config (preset sizes, the segmenter class's
    ``preset_values`` of the preset, then the config file, then ``supervision``: one regime of
    ``--supervision``) and the resulting config."""
    cls = SEGMENTERS.get(segmenter_id)
    own = cls.preset_values.get(config.preset.name, {})
    layers = [config.preset.segmenter, own, config.segmenter_overrides]
    if supervision is not None:
        layers.append({"supervision": supervision})
    merged = cls.Config()
    for layer in layers:
        merged = apply_overrides(merged, layer, "segmenter")
    overrides = {k: v for layer in layers for k, v in layer.items()}
    if merged.reward_tuning is not None:  # stored whole, so its defaults are in the fit key
        overrides["reward_tuning"] = reward_tuning(merged.reward_tuning, segmenter_id)
        merged = dataclasses.replace(merged, reward_tuning=overrides["reward_tuning"])
    return overrides, merged


def reward_tuning(values: dict[str, Any], segmenter_id: str) -> dict[str, Any]:
    """Every field of the ``segmenter.reward_tuning`` stage (``values`` over the defaults of
    ``RewardConfig``); ``BadInput`` for a value out of its type or range, or a reward a
    segmenter cannot be tuned on (``anomaly-ap``: segmenters have no anomaly map)."""
    from owsbench.training.reward import RewardConfig

    tuning = apply_overrides(RewardConfig(), values, "segmenter.reward_tuning")
    if tuning.reward == "anomaly-ap":
        raise BadInput(
            f"segmenter.reward_tuning.reward anomaly-ap needs a model with an anomaly output; "
            f"segmenter {segmenter_id} has none (use miou, pixel-accuracy or class-weighted-miou)"
        )
    return dataclasses.asdict(tuning)


def segmenter_config(config: RunConfig, segmenter_id: str, supervision: str | None = None) -> Any:
    """``segmenter_id``'s config in this run (under ``supervision`` when given)."""
    return segmenter_overrides(config, segmenter_id, supervision)[1]


def check_supervisions(config: RunConfig, specs: Sequence[MethodSpec], train: Dataset) -> None:
    """``BadInput`` unless every segmenter of the run can be trained on ``train`` under every
    regime of the run (:func:`owsbench.training.regimes.check_supervision`)."""
    from owsbench.training.regimes import check_supervision

    segmenters = dict.fromkeys(s.segmenter for s in specs if shares_segmenter(s))
    for segmenter_id in segmenters:
        for regime in config.supervisions or [None]:
            merged = segmenter_config(config, segmenter_id, regime)
            check_supervision(merged, train.label_traits(), train.name)


def method_overrides(config: RunConfig, spec: MethodSpec) -> tuple[dict[str, Any], Any]:
    """The values over the method's default config and the resulting config: defaults, then
    (trained methods) the preset's segmenter sizes for fields of the same name, then the class's
    ``preset_values[preset name]``, then the config file's ``method_configs[name]``."""
    cls = METHODS.get(spec.name)
    merged = cls.Config()
    layers = []
    if not cls.shares_segmenter:
        fields = {f.name for f in dataclasses.fields(merged)}
        layers.append({k: v for k, v in config.preset.segmenter.items() if k in fields})
    layers.append(cls.preset_values.get(config.preset.name, {}))
    layers.append(config.method_overrides.get(spec.name, {}))
    for layer in layers:
        merged = apply_overrides(merged, layer, spec.name)
    return {k: v for layer in layers for k, v in layer.items()}, merged


def method_config(config: RunConfig, spec: MethodSpec) -> Any:
    """The method's config in this run (see :func:`method_overrides`)."""
    return method_overrides(config, spec)[1]


def fit_config(cls: type, config: Any) -> dict[str, Any]:
    """The config fields that shape a fit (``Method.inference_fields`` left out)."""
    values = dataclasses.asdict(config)
    return {k: v for k, v in values.items() if k not in cls.inference_fields}


def config_hash(
    config: RunConfig, name: str, method: dict[str, Any], segmenter: SegmenterPlan | None
) -> str:
    """The rows' ``config_hash``: hash of the method name and config, its segmenter's id and
    config (post-hoc methods), the preset name and the measurement options; the precision only
    below fp32 (so fp32 rows keep the hashes they had before rows had a precision)."""
    fields: dict[str, Any] = {}
    if segmenter is not None:
        fields = {"segmenter": segmenter.id, "segmenter_config": segmenter.config}
    if config.precision != "fp32":
        fields["precision"] = config.precision
    return content_hash(
        {
            "method": name,
            "config": method,
            **fields,
            "preset": config.preset.name,
            "aggregation": config.aggregation,
            "fpr_rule": config.fpr_rule,
            "components": config.components,
        }
    )


# ------------------------------------------------------------------------------ planning


def plan_segmenter(
    config: RunConfig,
    segmenter_id: str,
    train: DatasetRef,
    num_classes: int,
    seed: int,
    supervision: str | None = None,
) -> SegmenterPlan:
    overrides, merged = segmenter_overrides(config, segmenter_id, supervision)
    recipe = {
        "segmenter": segmenter_id,
        "config": dataclasses.asdict(merged),
        "num_classes": num_classes,
        "train": train.fingerprint,
        "seed": seed,
    }
    kind = f"segmenter-{segmenter_id}"
    fit = FitPlan(kind, jsonable(recipe), fit_stem(kind, recipe))
    return SegmenterPlan(
        segmenter_id, jsonable(overrides), jsonable(dataclasses.asdict(merged)), fit
    )


def plan_method(
    config: RunConfig,
    spec: MethodSpec,
    segmenter: SegmenterPlan | None,
    train: DatasetRef,
    num_classes: int,
    seed: int,
) -> MethodPlan:
    cls = METHODS.get(spec.name)
    overrides, merged = method_overrides(config, spec)
    recipe: dict[str, Any] | None = {"method": spec.name, "config": fit_config(cls, merged)}
    if cls.shares_segmenter and not cls.needs_fit:
        recipe = None
    elif cls.shares_segmenter:  # + "segmenter_sha256" once the segmenter is fitted
        recipe.update(train=train.fingerprint, max_stat_frames=config.preset.max_stat_frames)
    else:
        recipe.update(num_classes=num_classes, train=train.fingerprint, seed=seed)
    kind = f"method-{spec.name}"
    fit = None
    if recipe is not None:
        fit = FitPlan(
            kind, jsonable(recipe), None if cls.shares_segmenter else fit_stem(kind, recipe)
        )
    values = jsonable(dataclasses.asdict(merged))
    digest = config_hash(config, spec.name, values, segmenter)
    return MethodPlan(spec.id, spec.name, jsonable(overrides), values, digest, fit)


def model_groups(specs: Sequence[MethodSpec]) -> list[list[MethodSpec]]:
    """Post-hoc methods grouped by segmenter, each trained method alone; in first-seen order."""
    groups: dict[str, list[MethodSpec]] = {}
    for spec in specs:
        if shares_segmenter(spec):
            groups.setdefault(f"segmenter:{spec.segmenter}", []).append(spec)
        else:
            groups[f"trained:{spec.id}"] = [spec]
    return list(groups.values())


def plan(config: RunConfig, datasets: Datasets | None = None) -> list[Job]:
    """Every job of ``config``, in execution order (see the module docstring); fits nothing."""
    specs = validate(config)
    datasets = datasets or Datasets(config.progress)
    settings = Settings.of(config)
    groups = model_groups(specs)
    jobs = []
    for dataset_id in config.datasets:
        options = config.dataset_options.get(dataset_id, {})
        dataset = datasets.open(dataset_id, options, config.data_root, settings.preset)
        train_id = dataset.train_on
        train_options = config.dataset_options.get(train_id, {})
        train = (
            dataset
            if train_id == dataset.name
            else datasets.open(train_id, train_options, config.data_root, settings.preset)
        )
        refs = (
            dataset_ref(dataset_id, options, dataset),
            dataset_ref(train_id, train_options, train),
        )
        check_supervisions(config, specs, train)
        splits = tuple(config.splits or dataset.eval_splits)
        for seed in config.seeds:
            for group in groups:
                regimes = config.supervisions if shares_segmenter(group[0]) else None
                for regime in regimes or [None]:
                    jobs.append(
                        plan_job(
                            config, group, refs, train.num_classes, seed, splits, settings, regime
                        )
                    )
    return jobs


def row_key_of(dataset: DatasetRef, method: MethodPlan, split: str, seed: int) -> tuple:
    """The key (``owsbench.rows.KEY_FIELDS``, in order) of the row of ``method`` on ``split``."""
    return (method.id, method.config_hash, dataset.name, dataset.fingerprint, split, seed)


def plan_job(
    config: RunConfig,
    group: Sequence[MethodSpec],
    refs: tuple[DatasetRef, DatasetRef],
    num_classes: int,
    seed: int,
    splits: tuple[str, ...],
    settings: Settings,
    supervision: str | None = None,
) -> Job:
    """The job of one model group on ``refs = (eval dataset, train dataset)`` and ``seed``
    (a post-hoc group's segmenter trained under ``supervision`` when given)."""
    dataset, train = refs
    segmenter = None
    if shares_segmenter(group[0]):
        segmenter = plan_segmenter(
            config, group[0].segmenter, train, num_classes, seed, supervision
        )
    methods = tuple(plan_method(config, s, segmenter, train, num_classes, seed) for s in group)
    rows = tuple(row_key_of(dataset, m, split, seed) for split in splits for m in methods)
    return Job(dataset, train, seed, splits, segmenter, methods, settings, rows)
