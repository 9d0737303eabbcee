"""Disk full while `owsbench run` writes results and artifacts: exit 1 with one line naming the
file, rows written before the fault intact, no temporary file left beside them."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from owsbench.cache import atomic_write_bytes
from owsbench.cli import main
from owsbench.results import SHARDS

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")

ENOSPC = "No space left on device"


class FullDisk:
    """``os.fdopen`` whose files fail with ENOSPC on the ``fail_at``-th write to a file whose
    (temporary) name contains ``target``; other files are written normally."""

    def __init__(self, target: str, fail_at: int) -> None:
        self.target, self.fail_at, self.writes = target, fail_at, 0
        self._fdopen = os.fdopen

    def __call__(self, fd, *args, **kwargs):
        name = os.readlink(f"/proc/self/fd/{fd}") if isinstance(fd, int) else ""
        file = self._fdopen(fd, *args, **kwargs)
        if self.target not in Path(name).name and self.target not in name:
            return file
        disk, write = self, file.write

        def failing_write(data):
            disk.writes += 1
            if disk.writes == disk.fail_at:
                raise OSError(errno.ENOSPC, ENOSPC)
            return write(data)

        file.write = failing_write
        return file


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Data root and fit cache shared by the runs (the 3-step segmenter is fitted once)."""
    base = tmp_path_factory.mktemp("faults")
    (base / "tiny.yaml").write_text("segmenter: {steps: 3, batch_size: 4}\n")
    return base


def owsbench_run(shared: Path, out: Path, methods: str, capsys) -> tuple[int, str]:
    argv = [
        "run", "--methods", methods, "--datasets", "synthstreets", "--preset", "quick",
        "--config", str(shared / "tiny.yaml"), "--seeds", "0", "--device", "cpu",
        "--no-progress", "--data-root", str(shared / "data"), "--cache-dir",
        str(shared / "cache"), "--out", str(out),
    ]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr().err


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def stray_temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def assert_one_line(code: int, err: str, path: Path) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines == [f"owsbench: error: {path}: {ENOSPC}"], err
    assert "Traceback" not in err


def test_disk_full_on_second_row_keeps_the_first(shared, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    disk = FullDisk(f"/{SHARDS}/", fail_at=2)  # rows are appended to the run's shard
    monkeypatch.setattr(os, "fdopen", disk)
    code, err = owsbench_run(shared, out, "msp,maxlogit", capsys)
    assert disk.writes == 2
    (shard,) = {Path(p) for p in err.split() if f"/{SHARDS}/" in p}
    assert_one_line(code, err, Path(str(shard).rstrip(":")))
    (first,) = rows(out)  # merged into results.jsonl when the run failed
    assert not list((out / SHARDS).glob("*.jsonl"))
    assert first["method"] in ("msp", "maxlogit") and 0 <= first["metrics"]["AP"] <= 1
    assert stray_temporaries(out) == []

    monkeypatch.setattr(os, "fdopen", disk._fdopen)  # disk freed: the rerun completes the file
    code, err = owsbench_run(shared, out, "msp,maxlogit", capsys)
    assert code == 0, err
    again = rows(out)
    assert sorted(r["method"] for r in again) == ["maxlogit", "msp"]
    (redone,) = [r for r in again if r["row_id"] == first["row_id"]]  # same row, same metrics
    assert redone["metrics"] == first["metrics"]


def test_disk_full_leaves_an_existing_file_byte_identical(shared, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, err = owsbench_run(shared, out, "msp", capsys)
    assert code == 0, err
    before = (out / "results.jsonl").read_bytes()
    monkeypatch.setattr(os, "fdopen", FullDisk("results.jsonl", fail_at=1))
    code, err = owsbench_run(shared, out, "msp,entropy", capsys)  # msp skipped, entropy fails
    assert_one_line(code, err, out / "results.jsonl")
    assert (out / "results.jsonl").read_bytes() == before
    assert [r["method"] for r in rows(out)] == ["msp"]
    assert stray_temporaries(out) == []


def test_disk_full_on_a_curve_artifact(shared, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fdopen", FullDisk(".npz", fail_at=1))
    code, err = owsbench_run(shared, out, "msp", capsys)
    (line,) = err.strip().splitlines()
    curve = line.removeprefix("owsbench: error: ").removesuffix(f": {ENOSPC}")
    assert Path(curve).parent.name in ("curves", "samples")
    assert_one_line(code, err, Path(curve))
    assert not (out / "results.jsonl").exists()  # no row points at a missing artifact
    assert stray_temporaries(out) == []


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_atomic_write_failing_late_keeps_old_content(call, tmp_path, monkeypatch):
    """ENOSPC can also come from fsync (delayed allocation); a failed rename likewise."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"old": 1}\n')

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(path, b'{"new": 2}\n' * 1000)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == b'{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
