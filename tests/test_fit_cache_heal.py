"""The self-healing fit cache and `owsbench cache verify|clean`.

A cached checkpoint that fails its sha256, that torch.load cannot read, or whose metadata is
unreadable is reported on one line, moved aside into fits/corrupt/ and refitted once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from owsbench.cli import cli, main
from owsbench.fits import FitCache, list_entries, list_partial, next_loop_checkpoint

RECIPE = {"what": "toy", "size": 4}


class CountingFit:
    """A fit that returns a small state and counts how often it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> tuple[dict, dict]:
        self.calls += 1
        return {"weight": torch.arange(4.0)}, {"note": "toy"}


def make_fit(cache_dir: Path, kind: str = "segmenter", recipe: dict = RECIPE) -> Path:
    """Fit once into ``cache_dir``; return the checkpoint path."""
    FitCache(cache_dir).load_or_fit(kind, recipe, CountingFit())
    return FitCache(cache_dir).paths(kind, recipe)[0]


def sha_mismatch(pt: Path, meta: Path) -> str:
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte flipped
    pt.write_bytes(bytes(data))
    return "sha256 mismatch"


def truncated(pt: Path, meta: Path) -> str:
    pt.write_bytes(pt.read_bytes()[:100])  # an interrupted copy
    return "sha256 mismatch"


def truncated_consistent(pt: Path, meta: Path) -> str:
    """Truncated, with metadata that matches the truncated bytes: torch.load must fail."""
    pt.write_bytes(pt.read_bytes()[:100])
    values = json.loads(meta.read_text())
    values["sha256"] = hashlib.sha256(pt.read_bytes()).hexdigest()
    meta.write_text(json.dumps(values))
    return "torch.load failed"


def bad_json(pt: Path, meta: Path) -> str:
    meta.write_text('{"kind": "segmenter", "sha256": ')
    return "unreadable metadata"


def no_sha(pt: Path, meta: Path) -> str:
    meta.write_text(json.dumps({"kind": "segmenter"}))
    return "has no sha256"


@pytest.mark.parametrize(
    "damage", [sha_mismatch, truncated, truncated_consistent, bad_json, no_sha]
)
def test_a_corrupt_fit_is_reported_moved_aside_and_refitted_once(tmp_path, capsys, damage):
    cache = FitCache(tmp_path)
    pt, meta = cache.paths("segmenter", RECIPE)
    cache.load_or_fit("segmenter", RECIPE, CountingFit())
    original = pt.read_bytes()
    reason = damage(pt, meta)
    capsys.readouterr()

    fit = CountingFit()
    result = cache.load_or_fit("segmenter", RECIPE, fit)
    assert fit.calls == 1 and not result.cached
    assert torch.equal(result.state["weight"], torch.arange(4.0))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"owsbench: cached fit {pt} is corrupt (") and reason in lines[0]
    assert "moved aside to" in lines[0] and lines[0].endswith(", refitting")
    moved = sorted(p.name for p in (tmp_path / "fits" / "corrupt").iterdir())
    assert [Path(name).suffix for name in moved] == [".json", ".pt"]
    assert all(name.startswith(f"{pt.stem}.corrupt-") for name in moved)
    assert pt.read_bytes() == original  # refitted: the same deterministic state

    again = CountingFit()
    assert cache.load_or_fit("segmenter", RECIPE, again).cached and again.calls == 0
    assert capsys.readouterr().err == ""


def test_an_intact_fit_loads_without_refitting_or_a_message(tmp_path, capsys):
    make_fit(tmp_path)
    fit = CountingFit()
    assert FitCache(tmp_path).load_or_fit("segmenter", RECIPE, fit).cached
    assert fit.calls == 0 and capsys.readouterr().err == ""
    assert not (tmp_path / "fits" / "corrupt").exists()


# --------------------------------------------------------------------------- the cache command


def three_entries(cache_dir: Path) -> dict[str, Path]:
    """An ok fit, a corrupt one (sha mismatch) and an orphan (.pt without .json)."""
    ok = make_fit(cache_dir, "segmenter", {"n": 1})
    corrupt = make_fit(cache_dir, "stats-msp", {"n": 2})
    sha_mismatch(corrupt, corrupt.with_suffix(".json"))
    orphan = make_fit(cache_dir, "contmav-ce", {"n": 3})
    orphan.with_suffix(".json").unlink()
    return {"ok": ok, "corrupt": corrupt, "orphan": orphan}


def invoke(*args: str):
    return CliRunner().invoke(cli, ["cache", *args], catch_exceptions=False)


def test_verify_lists_every_entry_and_exits_1_on_a_corrupt_one(tmp_path):
    paths = three_entries(tmp_path)
    result = invoke("verify", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "kind", "hash", "size", "created", "state"
    ]  # fmt: skip
    body = {line.split("|")[1].strip(): line for line in lines[2:5]}
    assert set(body) == {"segmenter", "stats-msp", "contmav-ce"}
    assert "| ok" in body["segmenter"] and paths["ok"].stem.split("-")[-1] in body["segmenter"]
    assert "corrupt (sha256 mismatch)" in body["stats-msp"]
    assert "orphan (no .json)" in body["contmav-ce"]
    assert "3 fits in" in result.output and "1 ok, 1 corrupt, 1 orphan" in result.output


def test_verify_exits_0_when_nothing_is_corrupt(tmp_path):
    make_fit(tmp_path)
    result = invoke("verify", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0 and "1 ok, 0 corrupt, 0 orphan" in result.output


def test_verify_uses_the_cache_folder_run_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("OWSBENCH_CACHE", str(tmp_path))
    make_fit(tmp_path)
    result = invoke("verify")
    assert result.exit_code == 0 and f"1 fits in {tmp_path / 'fits'}" in result.output


def test_clean_corrupt_dry_run_then_for_real(tmp_path, capsys):
    paths = three_entries(tmp_path)
    FitCache(tmp_path).load_or_fit("stats-msp", {"n": 2}, CountingFit())  # moves it aside
    capsys.readouterr()
    sha_mismatch(paths["corrupt"], paths["corrupt"].with_suffix(".json"))  # corrupt again
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())

    dry = invoke("clean", "--corrupt", "--dry-run", "--cache-dir", str(tmp_path))
    assert dry.exit_code == 0, dry.output
    assert f"would remove {paths['corrupt'].stem} (.pt, .json;" in dry.output
    assert f"would remove {paths['orphan'].stem} (.pt;" in dry.output
    assert paths["ok"].stem not in dry.output
    assert "fits/corrupt/ (2 files moved aside)" in dry.output
    assert "would remove 2 fits and 2 moved-aside files" in dry.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == before

    real = invoke("clean", "--corrupt", "--cache-dir", str(tmp_path))
    assert real.exit_code == 0 and "removed 2 fits and 2 moved-aside files" in real.output
    assert [e.stem for e in list_entries(tmp_path)] == [paths["ok"].stem]
    assert not (tmp_path / "fits" / "corrupt").exists()


def test_clean_older_than_removes_only_old_entries(tmp_path):
    old = make_fit(tmp_path, "segmenter", {"n": 1})
    new = make_fit(tmp_path, "segmenter", {"n": 2})
    ten_days_ago = time.time() - 10 * 86400
    for path in (old, old.with_suffix(".json")):
        os.utime(path, (ten_days_ago, ten_days_ago))

    dry = invoke("clean", "--older-than", "7", "--dry-run", "--cache-dir", str(tmp_path))
    assert dry.exit_code == 0 and f"would remove {old.stem}" in dry.output
    assert new.stem not in dry.output and old.exists()

    real = invoke("clean", "--older-than", "7", "--cache-dir", str(tmp_path))
    assert real.exit_code == 0 and f"removed {old.stem}" in real.output
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert new.exists() and new.with_suffix(".json").exists()
    assert (
        "removed 0 fits"
        in invoke("clean", "--older-than", "7", "--cache-dir", str(tmp_path)).output
    )
    assert invoke("clean", "--all", "--cache-dir", str(tmp_path)).exit_code == 0
    assert list_entries(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["clean", "--older-than", "-1"], "--older-than must be a number of days >= 0 (got -1)"),
        (["clean"], "nothing to clean: give --older-than DAYS, --corrupt, --partial or --all"),
        (["verify", "--cache-dir", "{tmp}/missing"], "cache folder {tmp}/missing not found"),
        (
            ["clean", "--all", "--cache-dir", "{tmp}/missing"],
            "cache folder {tmp}/missing not found",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"owsbench: error: {expected.replace('{tmp}', str(tmp_path))}"]


class Interrupted(Exception):
    """A fit killed after its loop wrote a checkpoint."""


def interrupted_fit(cache_dir: Path, recipe: dict) -> str:
    """Start a fit that writes one loop checkpoint and dies; return its stem."""

    def fit() -> tuple[dict, dict]:
        path, _ = next_loop_checkpoint()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"step": 3}, path)
        raise Interrupted

    with pytest.raises(Interrupted):
        FitCache(cache_dir).load_or_fit("segmenter", recipe, fit)
    return FitCache(cache_dir).paths("segmenter", recipe)[0].stem


def test_partial_fits_are_listed_and_cleaned_unless_running(tmp_path):
    from filelock import FileLock

    stored = make_fit(tmp_path, "segmenter", {"n": 1})  # leaves its lock file
    idle = interrupted_fit(tmp_path, {"n": 2})
    busy = interrupted_fit(tmp_path, {"n": 3})
    fits = tmp_path / "fits"
    assert [(e.stem, e.checkpoints) for e in list_partial(tmp_path)] == sorted(
        [(stored.stem, 0), (idle, 1), (busy, 1)]
    )
    with FileLock(fits / f"{busy}.lock"):  # another process making that fit now
        listed = invoke("verify", "--cache-dir", str(tmp_path))
        assert listed.exit_code == 0, listed.output
        assert f"partial {idle}: 1 resume checkpoints" in listed.output
        assert "interrupted (a rerun resumes it)" in listed.output
        assert f"partial {busy}: 1 resume checkpoints" in listed.output
        assert "2 partial fits in" in listed.output and stored.stem not in listed.output

        dry = invoke("clean", "--partial", "--dry-run", "--cache-dir", str(tmp_path))
        assert f"would remove partial {idle} (1 resume checkpoints" in dry.output
        assert (fits / "resume" / idle / "loop0.pt").exists()

        real = invoke("clean", "--partial", "--cache-dir", str(tmp_path))
        assert real.exit_code == 0, real.output
        assert f"kept partial {busy} (its fit is running)" in real.output
        assert "removed 2 partial fits" in real.output and "kept 1" in real.output
        assert not (fits / "resume" / idle).exists() and not (fits / f"{idle}.lock").exists()
        assert not (fits / f"{stored.stem}.lock").exists() and stored.exists()
        assert (fits / "resume" / busy / "loop0.pt").exists()
    assert [e.stem for e in list_entries(tmp_path)] == [stored.stem]  # stored fits stay


def test_older_than_cleans_only_old_partial_fits(tmp_path):
    old, new = interrupted_fit(tmp_path, {"n": 1}), interrupted_fit(tmp_path, {"n": 2})
    ten_days_ago = time.time() - 10 * 86400
    for path in (tmp_path / "fits").rglob(f"{old}*"):
        for file in [path, *path.rglob("*")]:
            os.utime(file, (ten_days_ago, ten_days_ago))
    result = invoke("clean", "--older-than", "7", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0 and f"removed partial {old}" in result.output
    assert [e.stem for e in list_partial(tmp_path)] == [new]
