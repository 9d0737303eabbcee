"""Label-aware InfoNCE (positives/negatives by construction, temperature, masks) and the six
SynCo operators (formula on hand-made vectors, shape, normalisation, detachment, directions)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from owsbench.methods.nn.crops import UNKNOWN
from owsbench.methods.nn.infonce import EMPTY, LabelledQueue, infonce_loss, positive_mask
from owsbench.methods.nn.synco import (
    SynCoConfig,
    add_noise,
    adversarial,
    directional_negatives,
    extrapolate,
    hardest,
    interpolate,
    mixup,
    perturb,
    synthesize,
)

U = UNKNOWN


def unit(*values: float) -> torch.Tensor:
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


# -- InfoNCE -------------------------------------------------------------------------------------
def test_infonce_hand_checked_multi_positive():
    # anchor of class 0; queue: one class-0 entry (positive), one class-1, one unknown, one empty
    q = unit(1.0, 0.0)[None]
    k = unit(0.8, 0.6)[None]
    keys = torch.stack([unit(0.6, 0.8), unit(0.0, 1.0), unit(-1.0, 0.0), unit(1.0, 0.0)])
    labels = torch.tensor([0, 1, U, EMPTY])
    tau = 0.5
    got = infonce_loss(q, k, torch.tensor([0]), keys, labels, tau).item()
    logits = [0.8 / tau, 0.6 / tau, 0.0 / tau, -1.0 / tau]  # k+, class 0, class 1, unknown
    log_z = math.log(sum(math.exp(v) for v in logits))
    expected = -((logits[0] - log_z) + (logits[1] - log_z)) / 2
    assert got == pytest.approx(expected, rel=1e-6)


def test_unknown_crops_are_never_positives():
    labels = torch.tensor([0, U])
    queue_labels = torch.tensor([0, 1, U, U, EMPTY])
    mask = positive_mask(labels, queue_labels)
    assert mask.tolist() == [
        [True, False, False, False, False],  # known: only its class
        [False, False, False, False, False],  # unknown: no queue positive, not even unknowns
    ]
    # moving an unknown queue entry onto a known anchor raises its loss (a negative) ...
    q = unit(1.0, 0.0)[None]
    far, near = unit(-1.0, 0.0), unit(1.0, 0.0)
    known_anchor = torch.tensor([0])

    def loss(entry, label, anchor=known_anchor):
        return infonce_loss(q, q, anchor, entry[None], torch.tensor([label]), 0.1).item()

    assert loss(near, U) > loss(far, U)
    # ... while a same-class entry lowers it (a positive): averaged in, not in the denominator only
    assert loss(near, 0) < loss(far, 0)
    # and for an unknown anchor another unknown is a negative too
    assert loss(near, U, torch.tensor([U])) > loss(far, U, torch.tensor([U]))


def test_temperature_and_empty_slots():
    q, k = unit(1.0, 0.0)[None], unit(0.6, 0.8)[None]
    keys = torch.stack([unit(0.0, 1.0), unit(0.3, 0.9)])
    for tau in (0.07, 0.2, 1.0):
        got = infonce_loss(q, k, torch.tensor([0]), keys, torch.tensor([1, EMPTY]), tau).item()
        expected = -(0.6 / tau - math.log(math.exp(0.6 / tau) + math.exp(0.0)))
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 logsumexp
    # an all-empty queue leaves only the positive: loss 0
    empty = infonce_loss(q, k, torch.tensor([0]), keys, torch.tensor([EMPTY, EMPTY]), 0.2)
    assert empty.item() == pytest.approx(0.0, abs=1e-7)


def test_synthetic_negatives_and_their_mask():
    q, k = unit(1.0, 0.0)[None], unit(0.6, 0.8)[None]
    keys, labels = unit(0.0, 1.0)[None], torch.tensor([1])
    base = infonce_loss(q, k, torch.tensor([0]), keys, labels, 0.2)
    syn = torch.stack([unit(0.9, 0.1), unit(0.5, 0.5)])[None]  # (1, 2, 2)
    with_syn = infonce_loss(q, k, torch.tensor([0]), keys, labels, 0.2, syn)
    masked = infonce_loss(
        q, k, torch.tensor([0]), keys, labels, 0.2, syn, torch.zeros(1, 2, dtype=torch.bool)
    )
    assert with_syn.item() > base.item()  # extra (hard) negatives, never positives
    assert masked.item() == pytest.approx(base.item(), rel=1e-6)


def test_queued_views_of_the_anchors_own_crop_are_positives():
    # an unknown anchor (crop 7) and a queue holding an older view of crop 7 and another unknown
    q, k = unit(1.0, 0.0)[None], unit(0.8, 0.6)[None]
    keys = torch.stack([unit(0.6, 0.8), unit(0.0, 1.0)])
    labels, anchor = torch.tensor([U, U]), torch.tensor([U])
    ids, queue_ids = torch.tensor([7]), torch.tensor([7, 3])
    mask = positive_mask(anchor, labels, ids, queue_ids)
    assert mask.tolist() == [[True, False]]
    got = infonce_loss(q, k, anchor, keys, labels, 0.5, ids=ids, queue_ids=queue_ids).item()
    logits = [0.8 / 0.5, 0.6 / 0.5, 0.0]
    log_z = math.log(sum(math.exp(v) for v in logits))
    assert got == pytest.approx(-((logits[0] - log_z) + (logits[1] - log_z)) / 2, rel=1e-6)
    # an empty slot is never a positive, even with a matching id
    empty = positive_mask(anchor, torch.tensor([EMPTY, U]), ids, torch.tensor([7, 3]))
    assert empty.tolist() == [[False, False]]


def test_queue_is_fifo_and_wraps():
    queue = LabelledQueue(3, 2)
    assert not bool(queue.filled.any())
    queue.push(torch.ones(2, 2), torch.tensor([0, 1]), torch.tensor([10, 11]))
    queue.push(2 * torch.ones(2, 2), torch.tensor([2, U]), torch.tensor([12, 13]))
    assert queue.labels.tolist() == [U, 1, 2]  # the oldest (label 0) was replaced
    assert queue.ids.tolist() == [13, 11, 12]
    assert queue.keys[:, 0].tolist() == [2.0, 1.0, 2.0]
    assert queue.pointer == 1


# -- SynCo operators -------------------------------------------------------------------------------
def test_operators_on_hand_made_vectors():
    q = torch.tensor([[1.0, 0.0, 0.0]])
    n = torch.tensor([[[0.0, 1.0, 0.0]]])
    half = torch.full((1, 1, 1), 0.25)
    assert interpolate(q, n, half).tolist() == [[[0.25, 0.75, 0.0]]]
    assert extrapolate(q, n, torch.full((1, 1, 1), 1.5)).tolist() == [[[-0.5, 1.5, 0.0]]]
    n2 = torch.tensor([[[0.0, 0.0, 1.0]]])
    assert mixup(n, n2, half).tolist() == [[[0.0, 0.25, 0.75]]]
    noisy = add_noise(n, torch.full_like(n, 0.01))
    assert torch.allclose(noisy, torch.tensor([[[0.01, 1.01, 0.01]]]))
    assert perturb(q, n, 0.5).tolist() == [[[0.5, 1.0, 0.0]]]  # n + delta * q
    q_signs = torch.tensor([[-2.0, 0.5, 0.0]])
    pushed = adversarial(q_signs, n, 0.1)  # n + eta * sign(q)
    assert torch.allclose(pushed, torch.tensor([[[-0.1, 1.1, 0.0]]]))


def test_synthesize_shape_norm_detach_and_hard_pool():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_(True)
    pool = F.normalize(torch.randn(50, 8), dim=1)
    config = SynCoConfig(n_hard=1, n1=3, n2=2, n3=2, n4=5, n5=1, n6=1)
    out = synthesize(q, pool, config, torch.Generator().manual_seed(1))
    assert out.shape == (4, config.total, 8)
    assert not out.requires_grad
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, config.total), atol=1e-6)
    # with a pool of the single hardest entry, mixup and noise-injected negatives sit on it
    top = hardest(q, pool, 1)[:, 0]
    start = config.n1 + config.n2
    near = out[:, start : start + config.n3 + config.n4]
    cos = torch.einsum("bmd,bd->bm", near, pool[top])
    assert bool((cos > 0.99).all())
    # interpolations lie between q and that entry (alpha < 0.5: closer to the entry)
    inter = out[:, : config.n1]
    to_entry = torch.einsum("bmd,bd->bm", inter, pool[top])
    to_q = torch.einsum("bmd,bd->bm", inter, q.detach())
    assert bool((to_entry >= to_q - 1e-6).all())


def test_official_defaults():
    config = SynCoConfig()
    assert (config.n_hard, config.n1, config.n2, config.n3) == (1024, 256, 256, 256)
    assert (config.n4, config.n5, config.n6) == (64, 64, 64)
    assert (config.alpha_max, config.beta_max, config.gamma_max) == (0.5, 1.5, 1.0)
    assert config.sigma == config.delta == config.eta == 0.01


@pytest.mark.parametrize("direction", ["known-anchors", "unknown-anchors", "both"])
def test_directions_draw_from_the_other_side(direction):
    # known queue entries lie along +x, unknown ones along +y; anchors: two known, one unknown
    keys = torch.cat([unit(1.0, 0.05, 0.0).repeat(4, 1), unit(0.05, 1.0, 0.0).repeat(4, 1)])
    labels = torch.tensor([0, 0, 1, 1, U, U, U, U])
    q = torch.stack([unit(1.0, 0.0, 0.1), unit(0.9, 0.0, 0.2), unit(0.0, 1.0, 0.1)])
    known = torch.tensor([True, True, False])
    config = SynCoConfig(n_hard=4, n1=0, n2=0, n3=0, n4=6, n5=0, n6=0, sigma=1e-3)
    syn, valid = directional_negatives(
        q, known, keys, labels, direction, config, torch.Generator().manual_seed(0)
    )
    assert syn.shape == (3, 6, 3) and valid.shape == (3, 6)
    gets_known = direction in ("known-anchors", "both")
    gets_unknown = direction in ("unknown-anchors", "both")
    assert bool(valid[:2].all()) == bool(valid[:2].any()) == gets_known
    assert bool(valid[2].all()) == bool(valid[2].any()) == gets_unknown
    if gets_known:  # known anchors' negatives come from the unknown entries (+y)
        assert bool((syn[:2, :, 1] > 0.9).all())
    if gets_unknown:  # the unknown anchor's from the known ones (+x)
        assert bool((syn[2, :, 0] > 0.9).all())
    # an empty pool gives nothing: a queue of known entries only
    syn, valid = directional_negatives(
        q, known, keys[:4], labels[:4], direction, config, torch.Generator().manual_seed(0)
    )
    assert bool(valid[:2].any()) is False


def test_bad_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        directional_negatives(
            unit(1.0, 0.0)[None], torch.tensor([True]), unit(1.0, 0.0)[None],
            torch.tensor([U]), "sideways", SynCoConfig(), None,
        )  # fmt: skip
