"""The command line: no torch for help/list, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from owsbench.config import apply_overrides, load_config_file, parse_method, parse_seeds, split_ids
from owsbench.errors import BadInput
from owsbench.segmenters.base import SegmenterConfig


def owsbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "owsbench", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize("args", [["--help"], ["list", "methods"], ["list", "datasets"]])
def test_help_and_list_do_not_import_torch(args):
    code = (
        "import sys\n"
        "from owsbench.cli import cli\n"
        f"try:\n    cli.main(args={args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'segmentation_models_pytorch', 'torchmetrics')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_list_metrics_names_the_pixel_metrics():
    result = owsbench("list", "metrics")
    assert result.returncode == 0
    assert {"AP", "AUROC", "FPR95", "mIoU"} <= {
        line.split()[0] for line in result.stdout.splitlines()
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--methods", "mps"], "unknown method 'mps'; did you mean msp?"),
        (["run", "--methods", "msp@unet"], "unknown segmenter 'unet'"),
        (["run", "--methods", "msp", "--datasets", "synthstreet"], "did you mean synthstreets"),
        (
            ["run", "--methods", "msp", "--preset", "quik"],
            "unknown preset 'quik'; did you mean quick?",
        ),
        (["run", "--methods", "msp", "--seeds", "0,x"], "bad seed 'x'"),
        (["run", "--methods", "msp", "--seeds", "-1"], "seeds must be >= 0"),
        (["run", "--datasets", "synthstreets"], "no methods given"),
        (["data", "info", "cityscape"], "unknown dataset 'cityscape'"),
        (["report", "does-not-exist"], "no results.jsonl in does-not-exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, expected, tmp_path):
    result = owsbench(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"owsbench: error: {expected}"] or (
        len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_bad_data_root_exits_2(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = owsbench("run", "--methods", "msp", "--data-root", str(not_a_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"owsbench: error: data root {not_a_dir} is not a directory"


def test_bad_config_file_exits_2(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("methods: [msp]\nsegmentr: {steps: 3}\n")
    result = owsbench("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'segmentr'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_parsers():
    assert split_ids("msp, sml,msp", "methods") == ["msp", "sml"]
    assert parse_seeds("2,0,2") == [2, 0]
    assert parse_seeds(3) == [3]
    spec = parse_method("maxlogit@deeplabv3plus")
    assert (spec.id, spec.name, spec.segmenter) == (
        "maxlogit@deeplabv3plus",
        "maxlogit",
        "deeplabv3plus",
    )
    assert parse_method("sml").id == "sml"
    with pytest.raises(BadInput):
        split_ids(" , ", "methods")


def test_config_overrides(tmp_path):
    config = apply_overrides(SegmenterConfig(), {"steps": 3, "crop": [32, 64]}, "segmenter")
    assert config.steps == 3 and config.crop == (32, 64)
    with pytest.raises(BadInput, match="unknown segmenter option 'step'; did you mean steps"):
        apply_overrides(SegmenterConfig(), {"step": 3}, "segmenter")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [msp\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_config_file(bad)


def test_bad_dataset_options_exit_2(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("methods: [msp]\ndataset_options: {synthstreets: {bogus: 1}}\n")
    result = owsbench("run", "--config", str(config), "--data-root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("owsbench: error: bad dataset_options for synthstreets")
    assert len(result.stderr.strip().splitlines()) == 1
