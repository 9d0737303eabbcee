"""Trained methods resume their fits too: a fit killed in any of its loops (ContMAV+InfoNCE+SynCo:
the MoCo pre-training loop, then ContMAV's; dual-head: its one loop) and run again ends in the
state of a fit that was never interrupted, bit for bit, and its log says where it resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dataset_fixtures import ListSplit, scene

import owsbench.training.loop as loop_module
from owsbench.datasets.base import Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.fits import FitCache, fit_or_load
from owsbench.methods.base import FitContext
from owsbench.methods.contmav_infonce import ContMAVInfoNCEConfig, ContMAVInfoNCESynCo
from owsbench.methods.dual_head import DualHead, DualHeadConfig

CONTMAV = dict(
    encoder="resnet18", decoder_channels=(32, 16, 16), decoder_blocks=1, steps=4, batch_size=2,
    crop=(64, 64), pretrain_steps=3, pretrain_batch_size=8, queue_size=32, projection_dim=16,
)  # fmt: skip
DUAL = dict(encoder="resnet18", steps=5, batch_size=2, crop=(64, 64))
METHODS = {
    "contmav-infonce-synco": lambda: ContMAVInfoNCESynCo(ContMAVInfoNCEConfig(**CONTMAV)),
    "dual-head": lambda: DualHead(DualHeadConfig(**DUAL)),
}


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def split() -> ListSplit:
    return ListSplit([Frame(f"f{s}", *scene(s)) for s in range(6)])


def fit(name: str, split: ListSplit, cache: Path):
    ctx = FitContext(
        seed=0, device=torch.device("cpu"), cache_dir=cache, progress=False,
        outlier_source=outlier_exposure_source(),
    )  # fmt: skip

    def train(method):
        method.fit(split, ctx)
        return {"log": method.train_log.meta()}

    cache_with_checkpoints = FitCache(cache, checkpoint_every=1)
    return fit_or_load(cache_with_checkpoints, name, {"m": name}, METHODS[name], train, 0)


def killed_at_step(monkeypatch, call: int) -> None:
    """Every loop step asks for its learning rate once: raise at the ``call``-th ask."""
    asked, lr = [0], loop_module.one_cycle_lr

    def counting(*args):
        asked[0] += 1
        if asked[0] == call:
            raise Killed
        return lr(*args)

    monkeypatch.setattr(loop_module, "one_cycle_lr", counting)


@pytest.mark.parametrize(
    "name, call, resumed",
    [
        ("contmav-infonce-synco", 3, None),  # in the pre-training loop (its 3rd step)
        ("contmav-infonce-synco", 6, [2]),  # in ContMAV's loop, after its 2nd step
        ("dual-head", 4, [3]),
    ],
)
def test_a_killed_method_fit_resumes_bit_identically(
    name, call, resumed, split, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    reference, _ = fit(name, split, tmp_path / "reference")
    with monkeypatch.context() as patch:
        killed_at_step(patch, call)
        with pytest.raises(Killed):
            fit(name, split, tmp_path / "killed")
    method, done = fit(name, split, tmp_path / "killed")
    a, b = reference.state_dict(), method.state_dict()
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
    assert all(torch.equal(a[k], b[k]) for k in tensors)
    for key in (k for k, v in a.items() if isinstance(v, dict)):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert done.meta["log"].get("resumed_from") == resumed
