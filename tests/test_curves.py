"""Experiment curves: TensorBoard EMA, the late-training trend, training-log CSV export, the
MMEngine scalars.json import, the curves figure and the ``owsbench curves`` commands."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from owsbench.cli import main
from owsbench.curves import (
    ema,
    export_curves,
    import_mmengine_scalars,
    read_training_logs,
    trend,
    write_curves,
)
from owsbench.errors import BadInput
from owsbench.figures import training_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _read_csv(path: Path) -> list[tuple[int, str, float]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["step", "name", "value"]
        return [(int(step), name, float(value)) for step, name, value in reader]


def _training_log(run_dir: Path, name: str = "deeplabv3plus-0123456789abcdef") -> Path:
    """A training log in the artifacts layout (``OUT/training/<fit>.json``) with a loss term
    and validation records."""
    steps = np.arange(1, 41)
    log = {
        "kind": "deeplabv3plus",
        "train_loss": (2.0 * np.exp(-steps / 10) + 0.1).tolist(),
        "lr": np.linspace(1e-3, 0.0, 40).tolist(),
        "scalars": {"ce": [0.5] * 39 + [math.nan]},
        "validation": [{"step": s, "mIoU": 0.3 + s / 100} for s in (10, 20, 30, 40)],
        "fit_seconds": 3.0,
        "recipe": {},
    }
    path = run_dir / "training" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log))
    return path


MMENGINE_LINES = [
    {
        "lr": 0.01,
        "data_time": 0.01,
        "loss": 1.2,
        "decode.loss_ce": 1.1,
        "time": 0.5,
        "iter": 50,
        "memory": 3000,
        "step": 50,
    },
    {
        "lr": 0.009,
        "data_time": 0.01,
        "loss": 1.0,
        "decode.loss_ce": 0.9,
        "time": 0.5,
        "iter": 100,
        "memory": 3000,
        "step": 100,
    },
    {"aAcc": 90.1, "mIoU": 60.2, "mAcc": 70.3, "data_time": 0.01, "time": 0.1, "step": 100},
]


def _scalars_json(tmp_path: Path, lines: list[str] | None = None) -> Path:
    path = tmp_path / "work_dirs" / "20240101_000000" / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True)
    text = lines if lines is not None else [json.dumps(line) for line in MMENGINE_LINES]
    path.write_text("\n".join(text) + "\n")
    return path


def test_ema_matches_hand_computed_debiased_series():
    # s = 0.5, 1.25, 2.125; debiased by 1 - 0.5^(t+1) = 0.5, 0.75, 0.875
    assert ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert ema([4.0, 1.0], 0.0) == pytest.approx([4.0, 1.0])  # weight 0: no smoothing
    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])  # no bias towards 0


def test_ema_skips_nan_keeping_the_previous_value():
    smoothed = ema([math.nan, 1.0, math.nan, 2.0], 0.5)
    assert math.isnan(smoothed[0])
    assert smoothed[1:] == pytest.approx([1.0, 1.0, 1.25 / 0.75])


def test_ema_weight_outside_unit_interval_is_bad_input():
    for weight in (1.0, -0.1):
        with pytest.raises(BadInput, match=r"\[0, 1\)"):
            ema([1.0], weight)


def test_trend_is_exact_on_a_linear_series_and_uses_the_last_half():
    steps = np.arange(0, 101, 10)
    assert trend(steps, 0.25 * steps + 3.0) == pytest.approx((0.25, 3.0))
    bent = np.where(steps < 50, 100.0, 2.0 * steps - 1.0)  # only the last half is linear
    assert trend(steps, bent) == pytest.approx((2.0, -1.0))
    assert trend(np.array([5]), np.array([1.0])) is None


def test_export_writes_loss_and_metrics_csv_per_fit(tmp_path):
    _training_log(tmp_path)
    fits = read_training_logs(tmp_path)
    assert list(fits) == ["deeplabv3plus-0123456789abcdef"]
    written = export_curves(tmp_path, tmp_path / "csv")
    fit_dir = tmp_path / "csv" / "deeplabv3plus-0123456789abcdef"
    assert written == [fit_dir / "loss.csv", fit_dir / "metrics.csv"]
    loss = _read_csv(fit_dir / "loss.csv")
    assert {name for _, name, _ in loss} == {"loss", "lr", "ce"}
    assert [s for s, name, _ in loss if name == "loss"] == list(range(1, 41))
    assert len([r for r in loss if r[1] == "ce"]) == 39  # the NaN step is left out
    assert loss[0] == (1, "loss", pytest.approx(2.0 * math.exp(-0.1) + 0.1))
    assert _read_csv(fit_dir / "metrics.csv") == [
        (s, "mIoU", pytest.approx(0.3 + s / 100)) for s in (10, 20, 30, 40)
    ]


def test_mmengine_scalars_round_trip(tmp_path):
    fit = import_mmengine_scalars(_scalars_json(tmp_path))
    assert fit.fit == "20240101_000000"
    assert sorted({c.name for c in fit.train}) == sorted(
        ["lr", "data_time", "loss", "decode.loss_ce", "time", "memory"]
    )
    assert fit.series("loss")[0].tolist() == [50, 100]
    assert fit.series("loss")[1].tolist() == [1.2, 1.0]
    assert {c.name: c.value for c in fit.validation} == pytest.approx(
        {"aAcc": 0.901, "mIoU": 0.602, "mAcc": 0.703}
    )
    write_curves({fit.fit: fit}, tmp_path / "out")
    loss = _read_csv(tmp_path / "out" / fit.fit / "loss.csv")
    assert (100, "decode.loss_ce", 0.9) in loss and len(loss) == 12
    metrics = _read_csv(tmp_path / "out" / fit.fit / "metrics.csv")
    assert sorted(metrics) == [
        (100, "aAcc", pytest.approx(0.901)),
        (100, "mAcc", pytest.approx(0.703)),
        (100, "mIoU", pytest.approx(0.602)),
    ]


def test_curves_import_cli_writes_csv_and_png(tmp_path, capsys):
    path = _scalars_json(tmp_path)
    main(["curves", "import", str(path), "--out", str(tmp_path / "out"), "--smoothing", "0.3"])
    fit_dir = tmp_path / "out" / "20240101_000000"
    assert (fit_dir / "curves.png").read_bytes().startswith(PNG)
    assert f"wrote {fit_dir / 'metrics.csv'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "why"),
    [("{not json", "not JSON"), ("[1, 2]", "not a JSON object"), ('{"loss": 1.0}', "no integer")],
)
def test_malformed_scalars_line_exits_2_naming_file_and_line(tmp_path, capsys, line, why):
    path = _scalars_json(tmp_path, [json.dumps(MMENGINE_LINES[0]), line])
    with pytest.raises(SystemExit) as end:
        main(["curves", "import", str(path)])
    assert end.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{path}:2: {why}" in err


def test_curves_export_cli_and_bad_smoothing(tmp_path, capsys):
    _training_log(tmp_path)
    main(["curves", "export", str(tmp_path)])
    assert "1 fit(s) exported" in capsys.readouterr().out
    assert (tmp_path / "curves_csv" / "deeplabv3plus-0123456789abcdef" / "loss.csv").exists()
    with pytest.raises(SystemExit) as end:
        main(["report", str(tmp_path), "--smoothing", "1"])
    assert end.value.code == 2
    assert "--smoothing must be in [0, 1), got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as end:
        main(["curves", "export", str(tmp_path / "nowhere")])
    assert end.value.code == 2


def test_training_figure_is_written_for_a_log_with_validation(tmp_path):
    log = _training_log(tmp_path)
    row = {"dataset": "synthstreets", "seed": 0, "artifacts": {"training": [str(log)]}}
    figure = training_figure([row], tmp_path / "training.png", smoothing=0.6)
    assert figure.path == tmp_path / "training.png" and figure.notes == ()
    assert figure.path.read_bytes().startswith(PNG)
    assert "weight 0.6" in figure.caption and "last half" in figure.caption
