"""Resumable fits: a fit killed at any step (an exception in-process, or ``kill -9`` of its
process) resumes from its last loop checkpoint, and on CPU its final state is bit-identical to
a fit that was never interrupted; the log says where it resumed; the checkpoints go once the fit
is stored, and each fit (also one made inside another) keeps its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dataset_fixtures import TinySplit

from owsbench.fits import RESUME_DIR, FitCache, fit_or_load, fit_stem, next_loop_checkpoint
from owsbench.segmenters.erfnet import ERFNetConfig, ERFNetSegmenter
from owsbench.training.loop import Hook, Loop, Recipe, Streams
from owsbench.training.supervision import FullSupervision

CONFIG = ERFNetConfig(steps=7, batch_size=2, crop=(32, 48), color_jitter=0.2)
RECIPE = {"test": "resume"}


class Killed(Exception):
    pass


class KillAt(Hook):
    """Raises after the optimiser step of ``step`` (None: never); keeps no state."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step(self, loop: Loop, step: int, terms: dict) -> None:
        if step == self.step:
            raise Killed

    def resume_state(self) -> dict:
        return {}


def fit(cache: Path, kill_at: int | None = None, every: int = 3):
    """An ERFNet (batch norm, dropout: global torch RNG) fitted with the loop directly."""

    def train(model: ERFNetSegmenter) -> dict:
        loop = Loop(
            Recipe.of(CONFIG, checkpoint_every=every), torch.device("cpu"), Streams.seeded(0),
            augmentation=CONFIG, hooks=[KillAt(kill_at)], progress=False,
        )  # fmt: skip
        model.train()
        log = loop.run(model.parameters(), TinySplit(), FullSupervision(model, CONFIG))
        return log.meta()

    return fit_or_load(FitCache(cache), "seg", RECIPE, lambda: ERFNetSegmenter(CONFIG, 2), train, 0)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model, done = fit(tmp_path_factory.mktemp("reference"))
    return model.state_dict(), done.meta


@pytest.mark.parametrize("kill_at", [1, 4, 6])
def test_a_fit_killed_by_an_exception_resumes_bit_identically(reference, kill_at, tmp_path):
    with pytest.raises(Killed):
        fit(tmp_path, kill_at)
    folder = tmp_path / "fits" / RESUME_DIR / fit_stem("seg", RECIPE)
    last_checkpoint = (kill_at + 1) // 3 * 3  # the kill came after step kill_at's update
    assert (folder / "loop0.pt").is_file() == (last_checkpoint > 0)
    model, done = fit(tmp_path)
    assert_identical(model.state_dict(), reference[0])
    assert done.meta["train_loss"] == reference[1]["train_loss"]
    assert done.meta.get("resumed_from", []) == ([last_checkpoint] if last_checkpoint else [])
    assert "resumed_from" not in reference[1]
    assert not folder.exists()  # removed once the fit is stored


def test_killed_twice_resumes_twice(reference, tmp_path):
    for kill_at in (3, 6):  # after the checkpoints of steps 3 and 6
        with pytest.raises(Killed):
            fit(tmp_path, kill_at)
    model, done = fit(tmp_path)
    assert_identical(model.state_dict(), reference[0])
    assert done.meta["resumed_from"] == [3, 6]


def test_checkpointing_off_starts_again(reference, tmp_path):
    with pytest.raises(Killed):
        fit(tmp_path, 4, every=0)
    assert not (tmp_path / "fits" / RESUME_DIR).exists()
    model, done = fit(tmp_path, every=0)
    assert_identical(model.state_dict(), reference[0])  # checkpoints change no bit
    assert "resumed_from" not in done.meta


def test_each_fit_and_each_loop_has_its_own_checkpoint(tmp_path):
    cache, seen = FitCache(tmp_path), []

    def inner() -> tuple[dict, dict]:
        seen.append(next_loop_checkpoint())
        return {}, {}

    def outer() -> tuple[dict, dict]:
        seen.append(next_loop_checkpoint())
        cache.load_or_fit("inner", {"stage": 1}, inner)
        seen.append(next_loop_checkpoint())
        return {}, {}

    cache.load_or_fit("outer", {"stage": 2}, outer)
    outer_dir = tmp_path / "fits" / RESUME_DIR / fit_stem("outer", {"stage": 2})
    inner_dir = tmp_path / "fits" / RESUME_DIR / fit_stem("inner", {"stage": 1})
    paths = [path for path, _ in seen]
    assert paths == [outer_dir / "loop0.pt", inner_dir / "loop0.pt", outer_dir / "loop1.pt"]
    assert next_loop_checkpoint() is None  # outside a fit: no checkpoint


SEGMENTER_FIT = """
import sys, torch
from pathlib import Path
from dataset_fixtures import TinySplit
from owsbench.fits import FitCache, fit_or_load
from owsbench.methods.base import FitContext
from owsbench.segmenters.erfnet import ERFNetConfig, ERFNetSegmenter
from owsbench.training.segmenter import train_segmenter
cache = Path(sys.argv[1])
config = ERFNetConfig(steps=40, batch_size=2, crop=(32, 48), color_jitter=0.2)
context = FitContext(0, torch.device("cpu"), cache, progress=False)
def train(model):
    log, _ = train_segmenter(model, TinySplit(), config, context)
    return log.meta()
build = lambda: ERFNetSegmenter(config, 2)
model, fit = fit_or_load(FitCache(cache, 4), "segmenter", {"kill": 9}, build, train, 0)
torch.save(model.state_dict(), cache / "final.pt")
print(fit.meta.get("resumed_from", []))
"""


def run_fit(cache: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    argv = [sys.executable, "-c", SEGMENTER_FIT, str(cache)]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_kill_9_of_a_segmenter_fit_then_a_rerun_gives_the_uninterrupted_state(tmp_path):
    reference = run_fit(tmp_path / "reference")
    killed = run_fit(tmp_path / "killed")
    checkpoint = tmp_path / "killed" / "fits" / RESUME_DIR / fit_stem("segmenter", {"kill": 9})
    deadline = time.monotonic() + 120
    while not (checkpoint / "loop0.pt").exists() and time.monotonic() < deadline:
        assert killed.poll() is None, killed.stderr.read()[-2000:]
        time.sleep(0.05)
    time.sleep(0.5)  # somewhere after the first checkpoint (every 4 steps)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    rerun = run_fit(tmp_path / "killed")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    resumed = eval(out.strip().splitlines()[-1])  # the list of steps it resumed from
    assert len(resumed) == 1 and 4 <= resumed[0] < 40 and resumed[0] % 4 == 0
    a = torch.load(tmp_path / "reference" / "final.pt")
    b = torch.load(tmp_path / "killed" / "final.pt")
    assert_identical(a, b)
    assert not checkpoint.exists()
