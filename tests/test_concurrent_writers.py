"""Concurrent writers into one output folder and one fit cache: every row of every process
reaches ``results.jsonl`` (shards merged under a file lock), a writer killed with ``kill -9``
loses only the rows it had not written, and two processes that need one fit fit it once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from owsbench.fits import FitCache
from owsbench.results import SHARDS, ResultsStore, read_rows

REPETITIONS = 10
ROWS = 25

WRITER = """
import sys, time
from owsbench.results import ResultsStore
out, tag, rows, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
store = ResultsStore(out)
for i in range(rows):
    store.add({"method": tag, "config_hash": "h", "dataset": "d", "dataset_fingerprint": "f",
               "split": "test", "seed": i, "value": i})
    if i % 5 == 4:
        ResultsStore(out)  # a reader merging while both writers write
    time.sleep(pause)
store.close()
"""


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def writer(out: Path, tag: str, rows: int = ROWS, pause: float = 0.0) -> subprocess.Popen:
    argv = [sys.executable, "-c", WRITER, str(out), tag, str(rows), str(pause)]
    return subprocess.Popen(argv, env=environment(), stderr=subprocess.PIPE, text=True)


def keys(out: Path) -> set[tuple[str, int]]:
    return {(r["method"], r["seed"]) for r in read_rows(out / "results.jsonl")}


def test_two_concurrent_writers_keep_every_row(tmp_path):
    for repetition in range(REPETITIONS):
        out = tmp_path / f"out{repetition}"
        first, second = writer(out, "a", pause=0.01), writer(out, "b", pause=0.01)
        for process in (first, second):
            assert process.wait(timeout=60) == 0, process.stderr.read()
        expected = {(tag, i) for tag in "ab" for i in range(ROWS)}
        assert keys(out) == expected, f"repetition {repetition}: rows lost"
        assert list((out / SHARDS).glob("*.jsonl")) == []  # both closed: shards merged, removed


def test_a_killed_writer_loses_only_its_unwritten_rows(tmp_path):
    out = tmp_path / "out"
    process = writer(out, "killed", rows=1000, pause=0.02)
    deadline = time.monotonic() + 30
    while not list((out / SHARDS).glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (shard,) = (out / SHARDS).glob("*.jsonl")
    written = [json.loads(line) for line in shard.read_text().splitlines()]
    assert 0 < len(written) < 1000
    store = ResultsStore(out)  # a reader merges the dead writer's shard and removes it
    assert {r["seed"] for r in store.rows} == {r["seed"] for r in written}
    assert not shard.exists()


def test_a_partial_last_line_is_left_for_later(tmp_path):
    out = tmp_path / "out"
    row = {"method": "m", "config_hash": "h", "dataset": "d", "dataset_fingerprint": "f"}
    line = json.dumps({**row, "split": "test", "seed": 0})
    (out / SHARDS).mkdir(parents=True)
    (out / SHARDS / "otherhost-1-x.jsonl").write_text(line + "\n" + line[:10])
    assert [r["seed"] for r in ResultsStore(out).rows] == [0]
    with open(out / SHARDS / "otherhost-1-x.jsonl", "a") as f:  # the writer completes it
        f.write(line[10:].replace('"seed": 0', '"seed": 1') + "\n")
    assert sorted(r["seed"] for r in ResultsStore(out).rows) == [0, 1]
    assert len(read_rows(out / "results.jsonl")) == 2  # each line merged once


def test_one_fit_for_two_threads_that_need_it(tmp_path):
    calls = []

    def fit():
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return {"w": [1.0, 2.0]}, {"note": "fitted"}

    results = {}

    def need(name):
        results[name] = FitCache(tmp_path).load_or_fit("kind", {"recipe": 1}, fit)

    threads = [threading.Thread(target=need, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.cached for r in results.values()) == [False, True]
    assert results["a"].meta["sha256"] == results["b"].meta["sha256"]


def test_two_owsbench_runs_into_one_out_keep_both_rows_and_fit_once(tmp_path):
    (tmp_path / "tiny.yaml").write_text("segmenter: {steps: 4, batch_size: 2}\n")
    out = tmp_path / "out"

    def run(methods: str) -> subprocess.Popen:
        argv = [
            sys.executable, "-m", "owsbench", "run", "--preset", "quick", "--methods", methods,
            "--datasets", "synthstreets", "--config", str(tmp_path / "tiny.yaml"),
            "--out", str(out), "--data-root", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu",
        ]  # fmt: skip
        return subprocess.Popen(argv, env=environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    subprocess.run(  # generate the data once, so both runs start from the same tree
        [sys.executable, "-m", "owsbench", "data", "check", "synthstreets", "--preset", "quick",
         "--data-root", str(tmp_path / "data"), "--no-progress"], env=environment(), check=True,
        capture_output=True,
    )  # fmt: skip
    processes = [run("msp"), run("maxlogit")]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    rows = read_rows(out / "results.jsonl")
    assert sorted(r["method"] for r in rows) == ["maxlogit", "msp"]
    assert sorted(r["fit_cached"] for r in rows) == [False, True]  # one fitted, one waited
    assert len({r["checkpoint_sha256"] for r in rows}) == 1
