"""Run configuration: presets, id and seed lists, YAML config files, config overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from owsbench.catalog import DEFAULT_SEGMENTER, METHODS, SEGMENTERS
from owsbench.checks import check_ranges
from owsbench.errors import BadInput
from owsbench.registry import Registry


@dataclass(frozen=True)
class Preset:
    """Sizes of a run: dataset size (passed to the dataset), segmenter training, evaluation.

    ``segmenter`` sizes also apply to every trained method's config fields of the same name
    (steps, batch_size, crop). Values a preset sets for one method class live on the class
    (``Method.preset_values[preset name]``, inherited by subclasses).
    """

    name: str
    segmenter: dict[str, Any]
    eval_batch_size: int
    max_stat_frames: int | None


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        {"steps": 60, "batch_size": 8, "crop": (96, 96)},
        eval_batch_size=8,
        max_stat_frames=32,
    ),
    "default": Preset(
        "default",
        {"steps": 500, "batch_size": 8, "crop": (128, 128)},
        eval_batch_size=8,
        max_stat_frames=None,
    ),
    "paper": Preset(
        "paper",
        {"steps": 60000, "batch_size": 8, "crop": (512, 1024)},
        eval_batch_size=2,
        max_stat_frames=None,
    ),
}

# the keys a YAML run config may hold, each with the type its value must have
CONFIG_FILE_KEYS: dict[str, Any] = {
    "methods": str | list[str],
    "datasets": str | list[str],
    "seeds": int | str | list[int],
    "splits": str | list[str] | None,
    "preset": str,
    "segmenter": dict[str, Any] | None,
    "method_configs": dict[str, dict[str, Any]] | None,
    "dataset_options": dict[str, dict[str, Any]] | None,
    "supervisions": str | list[str] | None,
    "annotation_costs": dict[str, float] | None,
    "precision": Literal["fp32", "bf16", "fp16"],
    "workers": int,
    "slurm": dict[str, Any] | None,  # owsbench.slurm.SlurmOptions fields
}


@dataclass
class RunConfig:
    """Everything ``owsbench run`` needs, after CLI options and the config file are merged."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    preset: Preset
    device: str
    data_root: Path
    out: Path
    cache_dir: Path
    progress: bool = True
    splits: list[str] | None = None  # evaluate these instead of each dataset's eval_splits
    aggregation: str = "pooled"  # or "per-image" (Hendrycks CAOS)
    fpr_rule: str = "first"  # or "nearest" (Hendrycks CAOS)
    save_scores: bool = False  # keep per-frame float16 maps (SMIYC layout) under OUT/scores
    components: bool = False  # SMIYC component metrics (needs the maps; implies save_scores)
    segmenter_overrides: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # constructor kwargs
    # train each post-hoc group's segmenter once per regime (``--supervision``); None: the
    # segmenter config's own ``supervision``
    supervisions: list[str] | None = None
    annotation_costs: dict[str, float] = field(default_factory=dict)  # over owsbench.costs
    precision: str = "fp32"  # the evaluation forward's autocast: fp32, bf16 or fp16
    workers: int | None = None  # frame-decoding processes; None: from the CPU count
    procs_per_job: int = 1  # processes a segmenter fit trains on (owsbench.training.distributed)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise BadInput(Registry.suggest("preset", name, list(PRESETS)))
    return PRESETS[name]


def split_ids(text: str | list[str], what: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (duplicates dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    ids = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    if not ids:
        raise BadInput(f"no {what} given")
    return ids


def parse_seeds(text: str | int | list[int]) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; seeds are non-negative integers."""
    items = [text] if isinstance(text, int) else split_ids(text, "seeds")
    seeds = []
    for item in items:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            raise BadInput(f"bad seed {item!r} in --seeds: expected integers like 0,1,2") from None
        if seed < 0:
            raise BadInput(f"bad seed {seed} in --seeds: seeds must be >= 0")
        seeds.append(seed)
    return list(dict.fromkeys(seeds))


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML run config; unknown top-level keys are refused."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise BadInput(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise BadInput(
            f"config file {path} is not valid YAML: {str(err).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise BadInput(f"config file {path} must hold a mapping at the top level")
    unknown = sorted(set(map(str, data)) - set(CONFIG_FILE_KEYS))
    if unknown:
        raise BadInput(
            f"unknown key {unknown[0]!r} in {path}; valid: {', '.join(sorted(CONFIG_FILE_KEYS))}"
        )
    for key, value in data.items():
        if not matches(value, CONFIG_FILE_KEYS[key]):
            hint = type_text(CONFIG_FILE_KEYS[key]).replace("dict", "mapping")
            raise BadInput(f"{key} in {path} must be {hint} (got {value!r})")
    return data


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (``int``, ``float`` (ints too),
    ``bool``, ``str``, ``None``, unions, ``tuple[...]``, ``dict[K, V]``, ``list[T]`` (their
    elements checked too), ``Literal``); other annotations (``Any``) accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint in (int, float):
        kinds = (int,) if hint is int else (int, float)
        return isinstance(value, kinds) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(matches, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            matches(k, args[0]) and matches(v, args[1]) for k, v in value.items()
        )
    if origin is list:
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value)
    return True


def type_text(hint: Any) -> str:
    """``hint`` as a user reads it (``int``, ``float | None``, ``tuple[int, int]``)."""
    name = getattr(hint, "__name__", None)
    if typing.get_origin(hint) is None and name is not None:
        return "null" if hint is type(None) else name
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def apply_overrides(config: Any, overrides: dict[str, Any], what: str) -> Any:
    """``dataclasses.replace`` with one-line ``BadInput`` for unknown fields, for values not
    of the field's annotated type (``segmenter.lr must be float (got 'fast')``) and for values
    outside the field's declared range (``owsbench.checks.check_ranges``); YAML lists become
    tuples."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    for key in overrides:
        if key not in fields:
            raise BadInput(Registry.suggest(f"{what} option", key, list(fields)))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    for key, value in values.items():
        if not matches(value, hints.get(key, Any)):
            raise BadInput(f"{what}.{key} must be {type_text(hints[key])} (got {value!r})")
    result = dataclasses.replace(config, **values)
    check_ranges(result, what)
    return result


@dataclass(frozen=True)
class MethodSpec:
    """A method id as written on the command line: ``name`` or ``name@segmenter``."""

    id: str
    name: str
    segmenter: str


def parse_method(text: str) -> MethodSpec:
    """Validate ``NAME[@SEGMENTER]`` against the registries (no imports)."""
    name, _, segmenter = text.partition("@")
    METHODS.entry(name)
    segmenter = segmenter or DEFAULT_SEGMENTER
    SEGMENTERS.entry(segmenter)
    return MethodSpec(id=text if "@" in text else name, name=name, segmenter=segmenter)
