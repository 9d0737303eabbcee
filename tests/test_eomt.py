"""The EoMT segmenter: shapes, the semantic-logit formula, the Hungarian matcher, masked-attention
annealing, sliding windows, parameter groups, official checkpoint keys and a tiny fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_fixtures import ListSplit

from owsbench.datasets.base import Frame
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.segmenters.eomt import (
    EoMTConfig,
    EoMTSegmenter,
    anneal_probability,
    semantic_logits,
)
from owsbench.segmenters.mask_loss import MaskLossWeights, hungarian_match, semantic_targets
from owsbench.segmenters.windows import stitch, window_offsets
from owsbench.training.loop import Recipe, group_lr
from owsbench.training.segmenter import train_segmenter

TINY = {
    "embed_dim": 32, "depth": 3, "num_heads": 2, "num_queries": 6, "num_blocks": 2,
    "num_points": 256,
}  # fmt: skip


def tiny(**values) -> EoMTConfig:
    return EoMTConfig(**{**TINY, **values})


def test_shapes_in_training_and_inference():
    model = EoMTSegmenter(tiny(crop=(64, 64)), num_classes=5).train()
    out = model(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 5, 64, 64)
    assert out.queries.class_logits.shape == (2, 6, 6)
    assert out.queries.mask_logits.shape == (2, 6, 16, 16)
    assert len(out.queries.auxiliary) == 2  # one per query block (deep supervision)
    assert out.features["tokens"].shape == (2, 32, 4, 4)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 50, 60))  # padded to 64 x 64: one window
    assert out.logits.shape == (1, 5, 50, 60) and out.queries.auxiliary == []
    # each query adds its class probability times its sigmoid mask: 0 <= sum_k l_k <= Q
    assert (out.logits >= 0).all() and (out.logits.sum(1) <= 6).all()


def test_semantic_logits_follow_the_formula_on_hand_made_queries():
    class_logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]]])  # Q=2, K=2 + no-object
    mask_logits = torch.tensor([[[[4.0, -4.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2)
    out = semantic_logits(class_logits, mask_logits, (1, 2))
    probs = class_logits.softmax(-1)[0, :, :2]
    masks = mask_logits.sigmoid()[0, :, 0]
    for k in range(2):
        for p in range(2):
            expected = sum(probs[q, k] * masks[q, p] for q in range(2))
            assert out[0, k, 0, p] == pytest.approx(float(expected), abs=1e-6)


def test_matcher_finds_the_known_optimal_assignment():
    labels = torch.full((1, 8, 8), 255)
    labels[0, :, :4], labels[0, :, 4:] = 1, 3  # targets: class 1 (left), class 3 (right)
    ((classes, masks),) = semantic_targets(labels)
    assert classes.tolist() == [1, 3]
    class_logits = torch.full((3, 5), -5.0)
    class_logits[0, 3] = class_logits[2, 1] = 5.0  # query 0 says 3, query 2 says 1
    class_logits[1, 4] = 5.0  # query 1: no object
    mask_logits = torch.full((3, 8, 8), -6.0)
    mask_logits[0, :, 4:] = 6.0
    mask_logits[2, :, :4] = 6.0
    rows, cols = hungarian_match(class_logits, mask_logits, classes, masks, MaskLossWeights(512))
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 2: 0}


def test_masked_attention_anneals_to_zero_by_the_end_of_the_fit():
    model = EoMTSegmenter(tiny(num_blocks=3, depth=4), num_classes=2)
    model.set_training_progress(0, 120)
    assert model.attn_mask_probs.tolist() == [1.0, 1.0, 1.0]
    model.set_training_progress(119, 120)
    assert model.attn_mask_probs.tolist() == [0.0, 0.0, 0.0]
    probs = [anneal_probability(s, 100, 0, 2) for s in range(100)]
    assert probs[0] == 1.0 and probs[-1] == 0.0
    assert all(a >= b for a, b in zip(probs, probs[1:], strict=False))
    assert 0 < anneal_probability(30, 100, 0, 2) < 1  # block 0 anneals over [25, 50)


def test_attention_mask_restricts_queries_to_their_predicted_mask():
    model = EoMTSegmenter(tiny(), num_classes=2)
    mask_logits = torch.full((1, 6, 8, 8), -1.0)
    mask_logits[0, 0, :4, :4] = 1.0  # query 0: the top-left patch of a 2 x 2 grid
    mask = model._attention_mask(mask_logits, (2, 2), prob=1.0, tokens=6 + 1 + 4)
    assert mask[0, 0, 0, 7:].tolist() == [True, False, False, False]
    assert mask[0, 0, 0, :7].all() and mask[0, 0, 7:].all()  # queries, prefix; patch rows free
    assert model._attention_mask(mask_logits, (2, 2), prob=0.0, tokens=11).all()


def test_sliding_windows_cover_the_frame_and_average_overlaps():
    assert window_offsets(96, 64, 16) == [0, 32]
    assert window_offsets(64, 64, 16) == [0]
    image = torch.rand(1, 2, 64, 112)
    out = stitch(image, (64, 64), 16, lambda w: {"same": w, "coarse": w[..., ::16, ::16]})
    assert torch.allclose(out["same"], image)
    assert out["coarse"].shape == (1, 2, 4, 7)
    model = EoMTSegmenter(tiny(crop=(32, 32)), num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 40, 70))  # padded to 48 x 80: 2 x 3 windows
    assert out.logits.shape == (1, 3, 40, 70) and out.queries is None
    assert out.features["tokens"].shape == (1, 32, 3, 5)


def test_layer_decay_and_two_stage_warmup_groups():
    config = tiny(layer_decay=0.5, steps=100, backbone_delay_fraction=0.2)
    groups = EoMTSegmenter(config, num_classes=2).parameter_groups()
    scales = sorted(g.get("lr_scale", 1.0) for g in groups)
    assert scales == [0.125, 0.25, 0.5, 1.0, 1.0]  # embeddings, blocks 0..2, heads
    recipe = Recipe(steps=100, batch_size=1, lr=1.0, weight_decay=0.0, warmup_fraction=0.1)
    backbone = next(g for g in groups if g.get("lr_scale") == 0.5)
    assert group_lr(backbone, 19, 100, recipe) == 0.0
    assert group_lr(backbone, 20, 100, recipe) > 0.0
    assert group_lr(groups[0], 9, 100, recipe) == pytest.approx(1.0)


def test_configs_it_cannot_train_are_refused():
    for values in ({"supervision": "points"}, {"class_weighting": "log"}, {"num_blocks": 9}):
        with pytest.raises(BadInput):
            EoMTConfig(**{**TINY, **values})


def official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in the official checkpoint layout (``network.`` + EoMT's module names)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            key = "encoder.backbone." + key.removeprefix("backbone.")
        out["network." + key] = value
    out["network.attn_mask_probs"] = torch.zeros(2)
    out["network.encoder.pixel_mean"] = torch.zeros(1, 3, 1, 1)
    out["criterion.empty_weight"] = torch.ones(3)
    return out


def test_official_checkpoint_keys_load(tmp_path):
    source = EoMTSegmenter(tiny(crop=(64, 64)), num_classes=2)
    path = tmp_path / "eomt.ckpt"
    torch.save({"state_dict": official_names(source.state_dict())}, path)
    model = EoMTSegmenter(tiny(crop=(32, 48), weights_path=str(path)), num_classes=2)
    assert torch.equal(model.class_head.weight, source.class_head.weight)
    assert torch.equal(model.q.weight, source.q.weight)
    assert torch.equal(model.upscale[1].conv2.weight, source.upscale[1].conv2.weight)
    block = "blocks.2.attn.qkv.weight"
    assert torch.equal(model.backbone.state_dict()[block], source.backbone.state_dict()[block])
    assert model.backbone.pos_embed.shape == (1, 1 + 2 * 3, 32)  # resampled from 4 x 4


def stripes(index: int) -> Frame:
    """A frame whose left half is class 0 (dark) and right half class 1 (bright)."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
    image[:, 16:] += 180
    semantic = np.zeros((32, 32), np.uint8)
    semantic[:, 16:] = 1
    return Frame(f"s{index}", image, semantic)


def test_a_tiny_fit_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    config = tiny(steps=40, batch_size=4, crop=(32, 32), lr=3e-3, hflip=False, color_jitter=0.0)
    model = EoMTSegmenter(config, num_classes=2)
    context = FitContext(seed=0, device=torch.device("cpu"), cache_dir=tmp_path, progress=False)
    log, _ = train_segmenter(model, ListSplit([stripes(i) for i in range(8)]), config, context)
    assert np.mean(log.loss[-5:]) < 0.7 * np.mean(log.loss[:5])
    assert model.attn_mask_probs.sum() == 0  # annealed off by the end
    assert not model.training


def test_presets_size_the_segmenter_and_weak_regimes_are_refused(tmp_path):
    from owsbench.config import PRESETS, RunConfig
    from owsbench.plan import segmenter_config

    def run(preset: str) -> RunConfig:
        return RunConfig(
            methods=["msp@eomt"], datasets=["synthstreets"], seeds=[0], preset=PRESETS[preset],
            device="cpu", data_root=tmp_path, out=tmp_path, cache_dir=tmp_path, progress=False,
        )  # fmt: skip

    paper = segmenter_config(run("paper"), "eomt")
    assert (paper.embed_dim, paper.depth, paper.num_queries, paper.crop) == (
        1024,
        24,
        100,
        (1024, 1024),
    )
    assert (paper.lr, paper.layer_decay, paper.backbone_delay_fraction > 0) == (1e-4, 0.8, True)
    quick = segmenter_config(run("quick"), "eomt")
    assert (quick.embed_dim, quick.steps, quick.crop) == (192, 60, (96, 96))
    with pytest.raises(BadInput, match="dense labels only"):
        segmenter_config(run("quick"), "eomt", "points")
