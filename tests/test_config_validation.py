"""Config values are checked before any work: types where overrides are applied, ranges of the
segmenter recipe; one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from owsbench.config import apply_overrides
from owsbench.errors import BadInput
from owsbench.segmenters.base import SegmenterConfig


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": "fast"}, "segmenter.lr must be float (got 'fast')"),
        ({"steps": 2.5}, "segmenter.steps must be int (got 2.5)"),
        ({"hflip": 1}, "segmenter.hflip must be bool (got 1)"),
        ({"scale_range": [1, 2, 3]}, "segmenter.scale_range must be tuple[float, float]"),
        ({"steps": -5}, "segmenter.steps must be a positive integer (got -5)"),
        ({"lr": 0}, "segmenter.lr must be a number > 0 (got 0)"),
        (
            {"crop": [4, 64]},
            "segmenter.crop must be a list of integers in [8, 8192] or null (got (4, 64))",
        ),
        (
            {"validate_every": -1},
            "segmenter.validate_every must be an integer >= 0 or null (got -1)",
        ),
    ],
)
def test_bad_segmenter_values_are_one_line_bad_input(overrides, message):
    with pytest.raises(BadInput) as err:
        apply_overrides(SegmenterConfig(), overrides, "segmenter")
    assert str(err.value).startswith(message)


def test_good_values_pass_and_lists_become_tuples():
    config = apply_overrides(
        SegmenterConfig(), {"crop": [32, 64], "lr": 1, "grad_clip": None}, "segmenter"
    )
    assert config.crop == (32, 64) and config.lr == 1


def test_a_bad_config_file_value_exits_2_before_any_work(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("segmenter: {steps: -5}\n")
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", "msp", "--preset", "quick",
         "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress",
         "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "owsbench: error: segmenter.steps must be a positive integer (got -5)"
    ]
    assert not (tmp_path / "cache").exists()


def test_dataset_options_are_checked_against_the_constructor_annotations():
    from owsbench.plan import check_dataset_options

    with pytest.raises(BadInput, match=r"dataset_options.streethazards.other_as_void must be bool"):
        check_dataset_options("streethazards", {"other_as_void": "yes"})
    check_dataset_options("oxford-pet", {"classes": "breeds"})
