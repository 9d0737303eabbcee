"""ContMAV variants: focal / focal+dice semantic losses (smp), the per-dimension Gaussian, epochs,
and the paper preset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from owsbench.config import PRESETS, RunConfig, parse_method
from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.synthstreets import SIZES, generate_frame
from owsbench.methods.base import FitContext
from owsbench.methods.contmav import ContMAV, ContMAVConfig, ContMAVFocal, ContMAVFocalDice
from owsbench.methods.nn.contmav_losses import ClassStats, SemanticLoss, unknown_score
from owsbench.runner import Runner

SMALL = dict(decoder_channels=(32, 16, 16), decoder_blocks=1, encoder="resnet18")
# three pixels, two classes: logits (2, 0) label 0, (0, 1) label 1, (3, 3) void
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]]).T[None, :, None, :]
LABELS = torch.tensor([[[0, 1, VOID]]])


def _sigmoid_focal(z: float, target: int, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-z))
    pt = p if target else 1 - p
    return -((1 - pt) ** gamma) * math.log(pt)


def test_focal_is_smp_one_vs_rest_sigmoid_focal_mean_over_classes():
    # class 0: pixel 0 is positive (z=2), pixel 1 negative (z=0); class 1: pixel 0 negative
    # (z=0), pixel 1 positive (z=1); the void pixel is ignored
    class0 = (_sigmoid_focal(2.0, 1) + _sigmoid_focal(0.0, 0)) / 2
    class1 = (_sigmoid_focal(0.0, 0) + _sigmoid_focal(1.0, 1)) / 2
    focal = SemanticLoss("focal")(LOGITS, LABELS)
    assert focal.item() == pytest.approx((class0 + class1) / 2, rel=1e-5)


def test_focal_dice_adds_weighted_softmax_dice():
    p = torch.softmax(LOGITS[0, :, 0, :2], dim=0)  # (K, pixels) of the known pixels
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    dice = 1 - ((2 * (p * g).sum(1)) / (p.sum(1) + g.sum(1))).mean()
    focal = SemanticLoss("focal")(LOGITS, LABELS)
    both = SemanticLoss("focal-dice", dice_weight=0.5)(LOGITS, LABELS)
    assert both.item() == pytest.approx(focal.item() + 0.5 * dice.item(), rel=1e-5)
    # an all-void batch gives a differentiable zero, as the CE does
    zero = SemanticLoss("focal-dice")(
        LOGITS.clone().requires_grad_(), torch.full_like(LABELS, VOID)
    )
    assert zero.item() == 0.0
    zero.backward()


def test_variants_use_their_loss_and_refuse_unknown_names():
    assert ContMAVFocal.Config().semantic_loss == "focal"
    assert ContMAVFocalDice.Config().semantic_loss == "focal-dice"
    emb = torch.zeros(1, 2, 1, 3)
    sem = ContMAVFocal(ContMAVFocal.Config(num_classes=2, **SMALL)).losses(
        LOGITS, emb, LABELS, None
    )["sem"]
    assert sem.item() == pytest.approx(0.9 * SemanticLoss("focal")(LOGITS, LABELS).item())
    with pytest.raises(Exception, match="semantic_loss must be one of ce, focal, focal-dice"):
        ContMAV(ContMAVConfig(semantic_loss="lovasz", **SMALL))


def test_per_dimension_gaussian_does_not_saturate():
    torch.manual_seed(0)
    dims = 19
    means = torch.zeros(1, dims)
    stats = ClassStats(means, torch.ones(1, dims), torch.ones(1))
    # pixels drawn from the class's own Gaussian: E[sum_d (z - mu)^2 / var] = D = 19
    z = torch.randn(1, dims, 1, 2000)
    emb = torch.zeros(1, dims, 1, 2000)
    official = unknown_score(z, emb, stats).semantic.flatten()
    rooted = unknown_score(z, emb, stats, per_dimension=True).semantic.flatten()
    assert (official > 0.99).float().mean() > 0.95  # ~exp(-9.5): s_sem ~ 1 for own-class pixels
    assert rooted.median() < 0.6 and rooted.unique().numel() > 1900  # ranks, no ties
    # the same ordering (official ties broken): g^(1/D) is monotone in g
    assert (official[torch.argsort(rooted)].diff() >= 0).all()
    assert (official == 1.0).sum() > 10  # float32 ties of the official score


class Frames(list):
    """A list of frames used as a training split."""

    name = "train"


@pytest.fixture(scope="module")
def frames() -> Frames:
    return Frames(Frame(f"f{i}", *generate_frame("train", i, SIZES["quick"])[:2]) for i in range(4))


def test_epochs_set_the_number_of_steps(frames):
    method = ContMAV(ContMAVConfig(epochs=2, steps=99, batch_size=2, crop=(32, 32), **SMALL))
    ctx = FitContext(seed=0, device=torch.device("cpu"), cache_dir=Path("."), progress=False)
    method.fit(frames, ctx)
    assert len(method.train_log.loss) == 4  # 2 epochs x ceil(4 frames / batch 2)


def test_paper_preset_sets_the_official_contmav_recipe(tmp_path):
    run = RunConfig(
        methods=["contmav-focal", "msp"], datasets=["cityscapes"], seeds=[0],
        preset=PRESETS["paper"], device="cpu", data_root=tmp_path, out=tmp_path / "o",
        cache_dir=tmp_path / "c",
    )  # fmt: skip
    runner = Runner(run)
    config = runner.method_config(parse_method("contmav-focal"))
    assert config.epochs == 500 and config.lr == 1e-4 and config.batch_size == 8
    assert config.crop == (512, 1024) and config.scale_range == (0.5, 2.0)
    assert config.decoder_channels == (512, 256, 128) and config.decoder_blocks == 3
    assert config.semantic_loss == "focal"
    assert runner.segmenter_config("deeplabv3plus").crop == (512, 1024)


@pytest.mark.parametrize("cls", [ContMAV, ContMAVFocal, ContMAVFocalDice])
def test_a_few_steps_reduce_each_loss_term(cls, frames):
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in frames]) / 255.0
    labels = torch.stack([torch.from_numpy(f.semantic).long() for f in frames])
    config = cls.Config(steps=12, epoch_steps=4, batch_size=2, lr=2e-3, crop=(64, 128), **SMALL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        fresh = cls(config)
        trained = cls(config)
        trained.fit(frames, FitContext(0, torch.device("cpu"), Path("."), progress=False))
    finally:
        torch.set_num_threads(threads)

    def terms(method: ContMAV) -> dict[str, float]:
        method.model.train()
        with torch.no_grad():
            logits, emb = method.model(images)
            return {
                k: v.item() for k, v in method.losses(logits, emb, labels, trained.stats).items()
            }

    before, after = terms(fresh), terms(trained)
    assert set(before) == {"sem", "obj", "feat", "con", "total"}
    for name in ("sem", "obj", "feat", "con", "total"):
        assert after[name] < before[name], (name, before, after)


def test_method_gaussian_option_selects_the_term():
    assert ContMAVConfig().gaussian == "per-dim"  # chosen on synthstreets val (docstring)
    z = torch.tensor([[2.0, 0.5]]).T[None, :, None, :]  # one pixel, D = 2
    emb = torch.zeros(1, 2, 1, 1)
    stats = ClassStats(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.25]]), torch.ones(1))
    # sum_d (z - mu)^2 / var = 1 + 1 = 2 -> official g = exp(-1), per-dim g = exp(-1/2)
    for gaussian, expected in (("official", math.exp(-1.0)), ("per-dim", math.exp(-0.5))):
        method = ContMAV(ContMAVConfig(num_classes=1, gaussian=gaussian, var_floor=0.0, **SMALL))
        method.stats = stats
        assert method.scores(z, emb).similarity.item() == pytest.approx(expected, rel=1e-6)
