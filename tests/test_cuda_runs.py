"""End-to-end runs on CUDA (skipped without a GPU): quick runs on the device of a
reward-tuned and a weakly supervised segmenter, EoMT with its scores, RbA+OE and a head, and the
trained methods contmav-trufor, dual-head, fre and anomaly-head-stats. The first GPU run found
a reward-tuned segmenter validated on the host while its inputs were on the GPU; these runs
keep such device mix-ups from coming back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

RUNS = {
    "reward-tuned segmenter": (
        ["--methods", "msp,sml"],
        "segmenter: {steps: 3, reward_tuning: {steps: 2, samples: 2, kl_weight: 0.5}}\n",
    ),
    "weak supervision": (["--methods", "msp", "--supervision", "tags,points+boxes"], None),
    "mask transformer": (
        ["--methods", "msp@eomt,rba@eomt,sml@eomt,rba-oe@eomt,anomaly-head-hybrid@eomt"],
        None,
    ),
    "trained methods": (["--methods", "contmav-trufor,dual-head,fre,anomaly-head-stats"], None),
}


@pytest.mark.parametrize("name", RUNS)
def test_a_quick_run_on_cuda(tmp_path, name):
    options, config = RUNS[name]
    args = [
        sys.executable, "-m", "owsbench", "run", "--preset", "quick", "--device", "cuda",
        "--datasets", "synthstreets", *options, "--out", str(tmp_path / "out"), "--no-progress",
        "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    if config:
        (tmp_path / "run.yaml").write_text(config)
        args += ["--config", str(tmp_path / "run.yaml")]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert rows and all(row["device"] == "cuda" for row in rows)
