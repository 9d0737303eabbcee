"""`owsbench check`: the regression gate against a baseline results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from owsbench.check import compare, parse_tolerances
from owsbench.errors import BadInput


def row(method: str, seed: int = 0, **metrics: float) -> dict:
    values = {"AP": 0.5, "AUROC": 0.9, "FPR95": 0.3, "mIoU": 0.6, **metrics}
    return {
        "method": method, "config_hash": "h", "dataset": "synthstreets",
        "dataset_fingerprint": "f", "split": "test", "seed": seed, "preset": "quick",
        "metrics": values,
    }  # fmt: skip


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "owsbench", "check", *args], capture_output=True, text=True
    )


def test_direction_aware_regressions():
    base = [row("msp"), row("sml")]
    now = [row("msp", AP=0.48, FPR95=0.305), row("sml", AP=0.6, FPR95=0.35)]
    regressed = {
        (c.key[0], c.metric) for c in compare(now, base, parse_tolerances(None)) if c.regressed
    }
    # msp: AP -0.02 > 0.01 regresses, FPR95 +0.005 within; sml: AP up is fine, FPR95 +0.05 regresses
    assert regressed == {("msp", "AP"), ("sml", "FPR95")}
    loose = parse_tolerances("AP=0.05,FPR95=0.1")
    assert not any(c.regressed for c in compare(now, base, loose))


def test_a_metric_that_disappears_regresses():
    comparisons = compare([row("msp", mIoU=None)], [row("msp")], parse_tolerances(None))
    assert [c.metric for c in comparisons if c.regressed] == ["mIoU"]


@pytest.mark.parametrize("text", ["AP", "AP=x", "APP=0.1", "AP=-1"])
def test_bad_tolerances(text):
    with pytest.raises(BadInput, match="bad tolerance"):
        parse_tolerances(text)


def test_mismatched_rows_are_bad_input():
    with pytest.raises(BadInput, match="1 missing, 0 extra"):
        compare([row("msp")], [row("msp"), row("sml")], parse_tolerances(None))
    with pytest.raises(BadInput, match="0 missing, 1 extra"):
        compare([row("msp"), row("msp", seed=1)], [row("msp")], parse_tolerances(None))


def test_cli_exit_codes(tmp_path):
    baseline = write(tmp_path / "baseline.jsonl", [row("msp"), row("sml")])
    same = write(tmp_path / "same" / "results.jsonl", [row("msp"), row("sml")])
    worse = write(tmp_path / "worse" / "results.jsonl", [row("msp", AUROC=0.8), row("sml")])
    ok = check(str(same.parent), "--baseline", str(baseline))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 8 metrics of 2 rows")
    bad = check(str(worse.parent), "--baseline", str(baseline))
    assert bad.returncode == 1
    assert "| msp " in bad.stdout and "AUROC" in bad.stdout and "90.00" in bad.stdout
    assert "regressed: 1 of 8 metrics" in bad.stdout
    assert (
        check(str(worse.parent), "--baseline", str(baseline), "--tolerance", "AUROC=0.2").returncode
        == 0
    )
    for args in (
        [str(same.parent), "--baseline", str(tmp_path / "nope.jsonl")],
        [str(tmp_path / "empty"), "--baseline", str(baseline)],
        [str(same.parent), "--baseline", str(write(tmp_path / "one.jsonl", [row("msp")]))],
    ):
        result = check(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_committed_quick_baseline_is_a_valid_results_file():
    path = Path(__file__).parents[1] / "results" / "baselines" / "synthstreets-quick.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["method"] for r in rows} == {"msp", "maxlogit", "entropy", "energy", "sml"}
    assert {r["preset"] for r in rows} == {"quick"}
