"""kill -9 at 6 seeded random points of a small quick run (generation, fit, evaluation, report),
each followed by a rerun: the rows equal an uninterrupted run's, every file parses, and no
temporary file is left behind.

The run is the quick preset with a 5-step segmenter fit, so one uninterrupted run takes seconds;
two cases run at a time, each with one thread. Bounded: about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

KILLS = 6
STABLE_FIELDS = (
    "row_id", "config_hash", "checkpoint_sha256", "method", "dataset", "split", "seed",
    "frames", "anomaly_pixels", "inlier_pixels", "dataset_fingerprint", "metrics",
)  # fmt: skip


def command(root: Path) -> list[str]:
    """A quick run and its report, as one shell command (one process group to kill)."""
    owsbench = f"{sys.executable} -m owsbench"
    run = (
        f"{owsbench} run --preset quick --methods msp --datasets synthstreets "
        f"--config {root.parent / 'tiny.yaml'} --out {root / 'out'} --data-root {root / 'data'} "
        f"--cache-dir {root / 'cache'} --no-progress"
    )
    return ["sh", "-c", f"{run} && {owsbench} report {root / 'out'} --figures"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_to_end(root: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        command(root), env=environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return time.perf_counter() - start


def run_and_kill(root: Path, delay: float) -> bool:
    """Start the run, kill -9 its whole process group after ``delay`` s; whether it was killed
    (False: it had already finished)."""
    process = subprocess.Popen(
        command(root), env=environment(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        wait_for_group_exit(process.pid)
        return True


def wait_for_group_exit(group: int, timeout: float = 10.0) -> None:
    """Wait until no process of ``group`` is left (a killed child may take a moment; zombies
    that nobody reaps count as gone after ``timeout``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stable_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sorted(({k: r[k] for k in STABLE_FIELDS} for r in rows), key=lambda r: r["row_id"])


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders anywhere under ``root`` (our writers' ``.<name>.<host>-<pid>.``
    siblings, ``.tmp`` files)."""
    return [
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.name.endswith(".tmp") or (p.name.startswith(".") and "-" in p.name)
    ]  # fmt: skip


def check_files_parse(out: Path) -> None:
    """Every artifact a row names loads; the leaderboard exists."""
    for row in (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()):
        for kind, value in row["artifacts"].items():
            for name in [value] if isinstance(value, str) else value:
                path = out / name
                if path.suffix == ".npz":
                    with np.load(path) as archive:
                        assert archive.files, f"{kind} {name} is empty"
                else:
                    json.loads(path.read_text())
    assert (out / "leaderboard.md").read_text().strip()


def case(root: Path, delay: float, reference: list[dict]) -> bool:
    killed = run_and_kill(root, delay)
    run_to_end(root)
    assert stable_rows(root / "out") == reference, f"rows differ after a kill at {delay:.2f} s"
    check_files_parse(root / "out")
    assert leftovers(root) == [], f"left after a kill at {delay:.2f} s: {leftovers(root)}"
    return killed


def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_rows(tmp_path):
    (tmp_path / "tiny.yaml").write_text("segmenter: {steps: 5}\n")
    reference_root = tmp_path / "reference"
    duration = run_to_end(reference_root)
    reference = stable_rows(reference_root / "out")
    assert reference and leftovers(reference_root) == []
    delays = np.random.default_rng(0).uniform(0.3, duration, KILLS)
    roots = [tmp_path / f"kill{i:02d}" for i in range(KILLS)]
    with ThreadPoolExecutor(2) as pool:
        killed = list(
            pool.map(lambda args: case(*args, reference), zip(roots, delays, strict=True))
        )
    assert sum(killed) >= KILLS // 2, f"only {sum(killed)} of {KILLS} runs were killed"
