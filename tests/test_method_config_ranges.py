"""Every method config declares the ranges of its numeric fields (``owsbench.checks.Range``):
defaults and preset values pass, an out-of-range override is a one-line ``BadInput``."""

from __future__ import annotations

import dataclasses
import math
import random
import typing
from pathlib import Path

import pytest

from owsbench.catalog import METHODS
from owsbench.checks import check_ranges, declared_ranges
from owsbench.config import PRESETS, RunConfig, apply_overrides, matches, parse_method
from owsbench.errors import BadInput
from owsbench.methods.nn.crops import CropConfig
from owsbench.methods.nn.outlier_exposure import PasteConfig
from owsbench.methods.nn.region_pretraining import PretrainConfig
from owsbench.methods.nn.synco import SynCoConfig
from owsbench.plan import method_config

METHOD_IDS = list(METHODS.ids())
NESTED = {
    "crops": CropConfig,
    "paste": PasteConfig,
    "synco": SynCoConfig,
    "pretrain": PretrainConfig,
}


def run_config(tmp_path: Path, name: str, preset: str) -> RunConfig:
    return RunConfig(
        methods=[name], datasets=["synthstreets"], seeds=[0], preset=PRESETS[preset],
        device="cpu", data_root=tmp_path / "data", out=tmp_path / "out",
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip


def numeric(hint) -> bool:
    """Whether an (un-annotated) field type holds numbers: int, float, tuples of them, | None."""
    if hint in (int, float):
        return True
    return any(numeric(a) for a in typing.get_args(hint) if a is not Ellipsis)


@pytest.mark.parametrize("name", METHOD_IDS)
def test_every_numeric_field_of_a_method_config_declares_a_range(name):
    config = METHODS.get(name).Config
    hints = typing.get_type_hints(config)
    ranges = declared_ranges(config)  # resolves the Annotated hints (module imports)
    missing = [
        f.name
        for f in dataclasses.fields(config)
        if numeric(hints[f.name]) and f.name not in ranges
    ]
    assert missing == [] or name == "sml", missing  # sml's erosion_pad: another change


@pytest.mark.parametrize("name", METHOD_IDS)
def test_defaults_and_every_preset_pass_the_ranges(tmp_path, name):
    check_ranges(METHODS.get(name).Config(), name)
    spec = parse_method(name)
    for preset in PRESETS:
        merged = method_config(run_config(tmp_path, name, preset), spec)
        check_ranges(merged, name)


def test_nested_configs_and_the_ones_built_from_a_method_config_pass():
    for what, cls in NESTED.items():
        check_ranges(cls(), what)
    config = METHODS.get("contmav-infonce-synco").Config()
    check_ranges(config.crop_config(), "crops")
    check_ranges(config.paste_config(), "paste")
    pretrain = config.pretrain_config()
    check_ranges(pretrain, "pretrain")
    check_ranges(pretrain.synco, "synco")
    check_ranges(METHODS.get("dual-head").Config().paste_config(), "paste")


@pytest.mark.parametrize(
    ("name", "field", "bad"),
    [
        ("energy", "temperature", 0.0),  # posthoc.py
        ("fre", "variance", 1.0),  # fre.py
        ("fre", "max_pixels", 10**9),
        ("contmav", "decoder_channels", (256, 0, 64)),  # contmav.py
        ("contmav", "scale_range", (0.5, 100.0)),
        ("contmav", "context_bins", (1, 2, 1000)),
        ("contmav", "discovery_max_pixels", 10**6),
        ("contmav-focal", "focal_alpha", 1.5),
        ("contmav-focal-dice", "dice_weight", -1.0),
        ("contmav-trufor", "erosion", 4),  # contmav_trufor.py
        ("contmav-trufor", "dilation", 1001),
        ("contmav-trufor", "confidence_steps", -1),
        ("anomaly-head-stats", "dropout", 1.0),  # anomaly_head.py
        ("anomaly-head-hybrid", "feature_dim", 0),
        ("anomaly-head-stats", "hidden", (64, 10**6)),
        ("dual-head", "num_classes", 254),  # dual_head.py
        ("dual-head", "pos_weight", 0.0),
        ("dual-head", "paste_probability", 1.5),  # outlier_exposure.py (PasteFields)
        ("dual-head", "paste_size_range", (0.3, 1e6)),
        ("dual-head", "paste_max_objects", 10**6),
        ("contmav-infonce", "crop_size", 4096),  # contmav_infonce.py
        ("contmav-infonce", "queue_size", 10**8),
        ("contmav-infonce", "key_momentum", 1.0),
        ("contmav-infonce-synco", "synco_counts", (256, 256, -1, 64, 64, 64)),
        ("contmav-infonce-synco", "synco_beta_max", 0.5),
    ],
)
def test_an_out_of_range_override_is_a_one_line_bad_input(name, field, bad):
    with pytest.raises(BadInput) as err:
        apply_overrides(METHODS.get(name).Config(), {field: bad}, name)
    message = str(err.value)
    assert message.startswith(f"{name}.{field} must be ") and "\n" not in message
    assert message.endswith(f"(got {bad!r})")


@pytest.mark.parametrize(
    ("what", "field", "bad"),
    [
        ("crops", "attempts", 0),  # nn/crops.py
        ("crops", "size", 10**5),
        ("paste", "max_objects", 0),  # nn/outlier_exposure.py (PasteConfig)
        ("synco", "n_hard", 0),  # nn/synco.py
        ("synco", "gamma_max", 2.0),
        ("pretrain", "momentum", 1.0),  # nn/region_pretraining.py
        ("pretrain", "view_area", (0.0, 1.0)),
    ],
)
def test_nested_configs_declare_their_ranges_too(what, field, bad):
    with pytest.raises(BadInput, match=rf"^{what}\.{field} must be "):
        apply_overrides(NESTED[what](), {field: bad}, what)


def test_messages_read_as_the_range():
    config = METHODS.get("contmav-trufor").Config()
    with pytest.raises(BadInput) as err:
        apply_overrides(config, {"erosion": 4}, "contmav-trufor")
    assert str(err.value) == "contmav-trufor.erosion must be an odd integer in [1, 255] (got 4)"
    with pytest.raises(BadInput) as err:
        apply_overrides(config, {"validation_frames": 0}, "contmav-trufor")
    assert str(err.value) == (
        "contmav-trufor.validation_frames must be a positive integer or null (got 0)"
    )


def fuzz_values(bounds, integer: bool, rng: random.Random) -> list:
    """Out-of-range and non-finite candidates for one element of a field."""
    values: list = [float("nan"), float("inf"), float("-inf"), -1e9, 1e12]
    for edge, outside in (
        (bounds.ge, -1), (bounds.gt, 0), (bounds.le, 1), (bounds.lt, 0)
    ):  # fmt: skip
        if edge is not None:
            values.append(edge + outside * rng.uniform(0.0, 10.0) * (1 + abs(edge)))
    if integer:
        values += [int(v) for v in values if math.isfinite(v)]
        values += [rng.randrange(-(10**12), 10**12) for _ in range(3)]
        if bounds.odd:
            values.append(2 * rng.randrange(0, 200))
    return values


def field_lengths(config, name: str, hint) -> int | None:
    """The element count of a tuple field (its default's or annotation's); None: a scalar."""
    default = getattr(config, name)
    if isinstance(default, tuple):
        return len(default)
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is tuple:
            args = typing.get_args(arg)
            return 2 if Ellipsis in args else len(args)
    return None


@pytest.mark.parametrize("name", METHOD_IDS)
def test_fuzzed_overrides_are_bad_input_unless_in_range(name):
    rng = random.Random(f"ranges/{name}")
    config = METHODS.get(name).Config()
    hints = typing.get_type_hints(type(config))
    for field, (bounds, integer, _sequence, _nullable) in declared_ranges(type(config)).items():
        length = field_lengths(config, field, hints[field])
        for value in fuzz_values(bounds, integer, rng):
            if length is None:
                candidates = [value]
            else:
                default = getattr(config, field) or tuple(
                    rng.choice([8, 16]) for _ in range(length)
                )
                slot = rng.randrange(length)
                candidates = [
                    tuple(value if i == slot else v for i, v in enumerate(default)),
                    tuple([value] * length),
                ]
            for candidate in candidates:
                try:
                    result = apply_overrides(config, {field: candidate}, name)
                except BadInput as err:  # its range, its type or a rule across fields
                    assert str(err).startswith(f"{name}.") and "\n" not in str(err), str(err)
                    continue
                assert matches(candidate, hints[field]) and bounds.ok(candidate), (
                    f"{name}.{field} accepted {candidate!r}"
                )
                assert getattr(result, field) == candidate
