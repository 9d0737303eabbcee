"""EoMT: the encoder-only mask transformer, on a plain timm ViT.

Source: T. Kerssies et al., "Your ViT is Secretly an Image Segmentation Model", CVPR 2025;
official code ``tue-mps/eomt`` (``models/eomt.py``, ``models/scale_block.py``, ``models/vit.py``,
``training/lightning_module.py``). Written anew here on ``timm``'s ``VisionTransformer``
(random init, never downloaded; ``dynamic_img_size``, so any input size works):

- ``num_queries`` learnable queries are concatenated in front of the tokens before the last
  ``num_blocks`` ViT blocks;
- the prediction module runs on ``norm(x)`` before each of those blocks (training only: deep
  supervision and the attention masks) and after the last block: class head
  ``Linear(D, K + 1)`` on the queries (the last class = no object), a 3-layer MLP mask head
  (GELU), patch tokens upscaled to 1/4 resolution by ``log2(patch) - 2`` scale blocks
  (ConvTranspose 2x2 stride 2, GELU, depthwise 3x3 conv, LayerNorm2d); mask logits
  ``m_q = <mask_head(q), upscaled pixel>``;
- masked attention in training: in those blocks a query attends only to the patches of its
  predicted mask (``m_q > 0`` at the patch grid), and each query's mask is dropped with
  probability ``1 - p_j``; ``p_j`` of query block ``j`` (of ``n``) is annealed by the poly
  schedule ``(1 - progress)^0.9`` from ``(j + 1) / (n + 2)`` to ``(j + 2) / (n + 2)`` of the fit's
  steps (EoMT's Cityscapes schedule, starts 3317..13268 and ends 6634..16585 of ~19900 steps,
  expressed as fractions), so it is 0 at the end; inference runs plain attention;
- semantic logits (``SegmenterOutput.logits``, for everything downstream):
  ``l_k(p) = sum_q softmax(c_q)_k sigmoid(m_q(p))``, the no-object column dropped, with the mask
  logits bilinearly resized to the input first (``to_per_pixel_logits_semantic``);
- loss: :mod:`owsbench.segmenters.mask_loss` (Hungarian matching, CE + BCE + Dice, 2/5/5), over
  every prediction layer;
- frames larger than the window (default: the training crop) are run in sliding windows and the
  windows' ``l`` (and feature maps) averaged (:mod:`owsbench.segmenters.windows`); such frames
  have no ``queries`` in the output.

Deviations: random init instead of DINOv2 weights (a from-scratch EoMT is a structural replica;
the paper's claim needs large pre-trained ViTs); the CPU default is ViT-Tiny width (D 192, 12
blocks, 3 heads) with 50 queries and 2048 matching / loss points instead of 12544; the learning
rate follows the shared one-cycle schedule (with EoMT's layer-wise decay and two-stage warm-up as
options, used by the paper preset) instead of poly 0.9; the layer-wise decay gives block ``i``
of ``L`` the factor ``decay^(L - 1 - i)`` and the embeddings ``decay^L`` (heads, queries and the
final norm: 1).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from owsbench.checks import Range
from owsbench.errors import BadInput
from owsbench.segmenters.base import QueryOutputs, Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.segmenters.eomt_weights import official_to_local
from owsbench.segmenters.inputs import prepare_input, register_imagenet_stats
from owsbench.segmenters.mask_loss import VOID, MaskLossWeights, mask_classification_loss
from owsbench.segmenters.weights import load_matching_weights, read_weights_file
from owsbench.segmenters.windows import stitch

ANNEAL_POWER = 0.9  # poly power of the masked-attention annealing (EoMT)


@dataclass(frozen=True)
class EoMTConfig(SegmenterConfig):
    """EoMT architecture, loss and schedule options plus the shared recipe of ``SegmenterConfig``.

    ViT: ``embed_dim``, ``depth``, ``num_heads``, ``patch_size``, ``reg_tokens`` (register
    tokens), ``layer_scale_init`` (LayerScale init, None: none), ``pos_embed_prefix`` (the
    position table covers the prefix tokens; False for DINOv2); its table is sized for ``crop``
    ((256, 256) when None). ``num_queries``, ``num_blocks`` (query blocks), ``num_points``
    (matching and loss points), ``masked_attention``; ``window``: sliding-window size at
    inference (None: ``crop``); ``layer_decay`` (layer-wise lr decay, 1: off);
    ``backbone_delay_fraction`` / ``backbone_warmup_fraction``: the second warm-up stage (the
    ViT's parameters start learning after that share of the steps and warm up over the second
    share of the rest; None: ``warmup_fraction``). Only ``full`` supervision (the mask loss
    needs dense labels), no class weighting and no reward tuning.
    """

    arch: str = "eomt"
    encoder: str = "vit"
    lr: Annotated[float, Range(gt=0)] = 5e-4
    weight_decay: Annotated[float, Range(ge=0)] = 0.05
    embed_dim: Annotated[int, Range(ge=8, le=4096)] = 192
    depth: Annotated[int, Range(ge=1, le=64)] = 12
    num_heads: Annotated[int, Range(ge=1, le=64)] = 3
    patch_size: Annotated[int, Range(ge=4, le=64)] = 16
    reg_tokens: Annotated[int, Range(ge=0, le=64)] = 0
    layer_scale_init: Annotated[float | None, Range(gt=0)] = None
    pos_embed_prefix: bool = True
    num_queries: Annotated[int, Range(ge=1, le=2000)] = 50
    num_blocks: Annotated[int, Range(ge=1, le=64)] = 4
    num_points: Annotated[int, Range(ge=16, le=1_000_000)] = 2048
    masked_attention: bool = True
    window: Annotated[tuple[int, int] | None, Range(ge=16, le=8192)] = None
    layer_decay: Annotated[float, Range(gt=0, le=1)] = 1.0
    backbone_delay_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0
    backbone_warmup_fraction: Annotated[float | None, Range(ge=0, lt=1)] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_blocks > self.depth:
            raise BadInput(f"eomt num_blocks ({self.num_blocks}) exceeds depth ({self.depth})")
        if self.embed_dim % self.num_heads:
            raise BadInput(f"eomt embed_dim {self.embed_dim} is not a multiple of num_heads")
        if self.patch_size & (self.patch_size - 1):
            raise BadInput(f"eomt patch_size must be a power of two (got {self.patch_size})")
        refused = [
            (self.supervision != "full", f"supervision {self.supervision!r}"),
            (self.class_weighting != "none", f"class_weighting {self.class_weighting!r}"),
            (self.reward_tuning is not None, "reward_tuning"),
        ]
        for bad, what in refused:
            if bad:
                raise BadInput(f"eomt trains with its mask loss on dense labels only; drop {what}")


class ScaleBlock(nn.Module):
    """2x upsampling: ConvTranspose 2x2 stride 2, GELU, depthwise 3x3 conv, LayerNorm2d."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))


def semantic_logits(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``l_k(p) = sum_q softmax(c_q)_k sigmoid(m_q(p))`` ``(B, K, *size)`` from class logits
    ``(B, Q, K + 1)`` and mask logits ``(B, Q, h, w)`` (bilinearly resized to ``size``)."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqhw,bqk->bkhw", masks.sigmoid(), probs)


def fits_window(size: tuple[int, int], window: tuple[int, int]) -> bool:
    """Whether a (padded) input of ``size`` fits one window."""
    return size[0] <= window[0] and size[1] <= window[1]


def query_predictions(
    class_head: nn.Module, mask_head: nn.Module, queries: torch.Tensor, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits ``class_head(q)`` ``(B, Q, K + 1)`` and mask logits
    ``m_q(p) = <mask_head(q), pixels(p)>`` ``(B, Q, h, w)`` of query tokens ``(B, Q, D)`` and
    pixel features ``(B, D, h, w)``."""
    masks = torch.einsum("bqc,bchw->bqhw", mask_head(queries), pixels)
    return class_head(queries), masks


class QueryHeads(nn.Module):
    """A class head and a mask head over final query tokens: ``forward(queries (B, Q, D),
    pixels (B, D, h, w), size)`` -> the class scores ``l`` at ``size`` (EoMT's own heads, or a
    copy fine-tuned by a method and attached with ``EoMTSegmenter.attach_heads``)."""

    def __init__(self, class_head: nn.Module, mask_head: nn.Module) -> None:
        super().__init__()
        self.class_head = class_head
        self.mask_head = mask_head

    def predict(
        self, queries: torch.Tensor, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``(B, Q, K + 1)`` and mask logits ``(B, Q, h, w)``."""
        return query_predictions(self.class_head, self.mask_head, queries, pixels)

    def forward(
        self, queries: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        return semantic_logits(*self.predict(queries, pixels), size)


def anneal_probability(step: int, total: int, block: int, blocks: int) -> float:
    """Masked-attention probability of query block ``block`` (of ``blocks``) at ``step`` of
    ``total``: 1 before ``(block + 1) / (blocks + 2)`` of the steps, 0 from
    ``(block + 2) / (blocks + 2)`` on, ``(1 - progress)^0.9`` in between."""
    start = total * (block + 1) / (blocks + 2)
    end = total * (block + 2) / (blocks + 2)
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return (1.0 - (step - start) / (end - start)) ** ANNEAL_POWER


class EoMTSegmenter(Segmenter):
    """EoMT on a timm ViT (see the module docstring).

    Features: ``"tokens"`` (the last layer's normalised patch tokens, ``(B, D, H/16, W/16)``) and
    ``"pixels"`` (those tokens upscaled to 1/4, what the masks are dot products with); both keep
    the padded extent.
    """

    Config: ClassVar[type] = EoMTConfig
    feature_names: ClassVar[tuple[str, ...]] = ("tokens", "pixels")
    mask_classification: ClassVar[bool] = True
    head_feature: ClassVar[str] = "tokens"
    preset_values: ClassVar[dict[str, dict[str, Any]]] = {
        # EoMT-L at 1024 (configs/dinov2/cityscapes/semantic/eomt_large_1024.yaml): ViT-L/16
        # with DINOv2's layout (4 registers, LayerScale, no position entry for prefix tokens),
        # 100 queries, 4 blocks, 12544 points, AdamW lr 1e-4, wd 0.05, layer decay 0.8, batch
        # 16, ~19900 steps (107 epochs), warm-up: heads 500 steps, then the ViT 1000 steps
        "paper": {
            "embed_dim": 1024, "depth": 24, "num_heads": 16, "patch_size": 16,
            "reg_tokens": 4, "layer_scale_init": 1e-5, "pos_embed_prefix": False,
            "num_queries": 100, "num_blocks": 4, "num_points": 12544, "crop": (1024, 1024),
            "lr": 1e-4, "weight_decay": 0.05, "layer_decay": 0.8, "batch_size": 16,
            "steps": 19900, "warmup_fraction": 500 / 19900,
            "backbone_delay_fraction": 500 / 19900, "backbone_warmup_fraction": 1000 / 19400,
        },
    }  # fmt: skip

    def __init__(self, config: EoMTConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.output_stride = config.patch_size
        self.backbone = VisionTransformer(
            img_size=tuple(config.crop or (256, 256)), patch_size=config.patch_size,
            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
            num_classes=0, reg_tokens=config.reg_tokens, init_values=config.layer_scale_init,
            no_embed_class=not config.pos_embed_prefix, dynamic_img_size=True,
        )  # fmt: skip
        dim = config.embed_dim
        self.q = nn.Embedding(config.num_queries, dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        upscales = max(1, int(math.log2(config.patch_size)) - 2)
        self.upscale = nn.Sequential(*[ScaleBlock(dim) for _ in range(upscales)])
        self.mask_stride = config.patch_size // 2**upscales
        self.register_buffer("attn_mask_probs", torch.ones(config.num_blocks), persistent=False)
        self.loss_weights = MaskLossWeights(num_points=config.num_points)
        # head sets attached by methods (a plain dict: not part of this model's state_dict)
        self.extra_heads: dict[str, QueryHeads] = {}
        if config.weights_path:
            self._load_local_weights(Path(config.weights_path))
        register_imagenet_stats(self)

    # -- weights ---------------------------------------------------------------------------
    def _load_local_weights(self, path: Path) -> None:
        """This model's state_dict or an official EoMT checkpoint (keys mapped by
        :func:`owsbench.segmenters.eomt_weights.official_to_local`); the position table is
        resampled to this model's grid."""
        state = official_to_local(read_weights_file(path))
        key, own = "backbone.pos_embed", self.backbone.pos_embed
        if key in state and state[key].shape != own.shape:
            prefix = 0 if self.backbone.no_embed_class else self.backbone.num_prefix_tokens
            side = int(math.isqrt(state[key].shape[1] - prefix))
            state[key] = resample_abs_pos_embed(
                state[key], new_size=self.backbone.patch_embed.grid_size,
                old_size=(side, side), num_prefix_tokens=prefix,
            )  # fmt: skip
        load_matching_weights(self, state, f"{path} (EoMT)")

    # -- training hooks --------------------------------------------------------------------
    def set_training_progress(self, step: int, total: int) -> None:
        """Anneal each query block's masked-attention probability (:func:`anneal_probability`)."""
        blocks = self.config.num_blocks
        for block in range(blocks):
            self.attn_mask_probs[block] = anneal_probability(step, total, block, blocks)

    def dense_losses(
        self, output: SegmenterOutput, labels: torch.Tensor
    ) -> dict[str, torch.Tensor] | None:
        """The mask-classification loss over every prediction layer; ``labels`` are resized
        (nearest) to the scaled input and padded with void to the network's padded extent."""
        if output.queries is None:
            raise RuntimeError("eomt: no query outputs (training runs on single windows)")
        queries = output.queries
        height, width = output.logits.shape[-2:]
        if tuple(labels.shape[-2:]) != (height, width):
            labels = F.interpolate(labels[:, None].float(), size=(height, width), mode="nearest")
            labels = labels[:, 0].long()
        padded = [s * self.mask_stride for s in queries.mask_logits.shape[-2:]]
        labels = F.pad(labels, (0, padded[1] - width, 0, padded[0] - height), value=VOID)
        layers = [*queries.auxiliary, (queries.class_logits, queries.mask_logits)]
        return mask_classification_loss(layers, labels, self.loss_weights)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Heads, queries and the final norm at full lr; ViT block ``i`` of ``L`` at
        ``layer_decay^(L - 1 - i)``, the embeddings at ``layer_decay^L``; the ViT's groups start
        after ``backbone_delay_fraction`` of the steps (two-stage warm-up)."""
        cfg = self.config
        start = int(cfg.backbone_delay_fraction * cfg.steps)
        warmup = cfg.backbone_warmup_fraction
        scales: dict[float, list[nn.Parameter]] = {}
        heads: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not name.startswith("backbone.") or name.startswith("backbone.norm."):
                heads.append(param)
                continue
            parts = name.split(".")
            depth = int(parts[2]) if parts[1] == "blocks" else -1
            scales.setdefault(cfg.layer_decay ** (cfg.depth - 1 - depth), []).append(param)
        groups: list[dict[str, Any]] = [{"params": heads}]
        for scale, params in scales.items():
            group = {"params": params, "lr_scale": scale, "start_step": start}
            groups.append(group if warmup is None else {**group, "warmup_fraction": warmup})
        return groups

    # -- extra query heads -----------------------------------------------------------------
    def copy_heads(self) -> QueryHeads:
        """A trainable copy of this model's class and mask heads."""
        return QueryHeads(copy.deepcopy(self.class_head), copy.deepcopy(self.mask_head))

    def attach_heads(self, name: str, heads: QueryHeads) -> None:
        """Score ``heads`` in every forward pass too: ``SegmenterOutput.extra_logits[name]``
        (windowed like the logits). Not saved with this model."""
        self.extra_heads[name] = heads

    def final_queries(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Final normalised query tokens ``(B, Q, D)``, pixel features ``(B, D, h, w)`` and the
        (scaled) input size of ``images`` run as one window, for training heads over them."""
        x, height, width = prepare_input(
            images, self.mean, self.std, self.config.input_scale, self.output_stride
        )
        layers, tokens = self._run(x)
        return tokens[:, : self.config.num_queries], layers[-1][2], (x.shape[-2:], height, width)

    # -- forward ---------------------------------------------------------------------------
    def _predict(
        self, x: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits ``(B, Q, K + 1)``, mask logits ``(B, Q, h, w)`` and the upscaled pixel
        features of normalised tokens ``x`` (queries first)."""
        queries = x[:, : self.config.num_queries]
        patches = x[:, self.config.num_queries + self.backbone.num_prefix_tokens :]
        patches = patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        pixels = self.upscale(patches)
        return (*query_predictions(self.class_head, self.mask_head, queries, pixels), pixels)

    def _attention_mask(
        self, mask_logits: torch.Tensor, grid: tuple[int, int], prob: float, tokens: int
    ) -> torch.Tensor:
        """Boolean ``(B, 1, N, N)`` mask (True = may attend): each query sees the other queries,
        the prefix tokens and the patches where its mask logit (at the patch grid) is > 0; each
        query's restriction is dropped with probability ``1 - prob``."""
        batch, num_q = mask_logits.shape[:2]
        first_patch = num_q + self.backbone.num_prefix_tokens
        mask = torch.ones(batch, tokens, tokens, dtype=torch.bool, device=mask_logits.device)
        coarse = F.interpolate(mask_logits.detach(), size=grid, mode="bilinear")
        allowed = coarse.flatten(2) > 0
        free = torch.rand(batch, num_q, device=mask_logits.device) > prob
        mask[:, :num_q, first_patch:] = allowed | free[..., None]
        return mask[:, None]

    def _run(self, x: torch.Tensor) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
        """Every prediction layer ``(class, mask, pixels)`` (training: one per query block and
        the final one; inference: the final one) and the final normalised tokens (queries
        first)."""
        vit, cfg = self.backbone, self.config
        tokens = vit.patch_embed(x)
        grid = tuple(tokens.shape[1:3])
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))
        first = cfg.depth - cfg.num_blocks
        layers = []
        for i, block in enumerate(vit.blocks):
            if i == first:
                queries = self.q.weight[None].expand(x.shape[0], -1, -1)
                tokens = torch.cat([queries, tokens], dim=1)
            mask = None
            if i >= first and self.training:
                layers.append(self._predict(vit.norm(tokens), grid))
                prob = float(self.attn_mask_probs[i - first])
                if cfg.masked_attention and prob > 0:
                    mask = self._attention_mask(layers[-1][1], grid, prob, tokens.shape[1])
            tokens = block(tokens, attn_mask=mask)
        tokens = vit.norm(tokens)
        layers.append(self._predict(tokens, grid))
        return layers, tokens

    def window_size(self) -> tuple[int, int] | None:
        """The sliding window (``window``, else ``crop``; None: whole frames), rounded down to
        multiples of the patch size."""
        window = self.config.window or self.config.crop
        if window is None:
            return None
        step = self.output_stride
        return (max(step, window[0] // step * step), max(step, window[1] // step * step))

    def _maps(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list]:
        """The maps of one window (``logits``, ``tokens``, ``pixels``, ``extra:<name>`` per
        attached head set) and its prediction layers."""
        layers, tokens = self._run(x)
        class_logits, mask_logits, pixels = layers[-1]
        size = tuple(x.shape[-2:])
        queries = tokens[:, : self.config.num_queries]
        patches = tokens[:, self.config.num_queries + self.backbone.num_prefix_tokens :]
        grid = (size[0] // self.output_stride, size[1] // self.output_stride)
        maps = {
            "logits": semantic_logits(class_logits, mask_logits, size),
            "tokens": patches.transpose(1, 2).reshape(x.shape[0], -1, *grid),
            "pixels": pixels,
        }
        for name, heads in self.extra_heads.items():
            maps[f"extra:{name}"] = heads(queries, pixels, size)
        return maps, layers

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        """Semantic logits ``l`` at the (scaled) input size; in eval mode, inputs larger than
        the window are run in sliding windows (no ``queries`` then)."""
        cfg = self.config
        x, height, width = prepare_input(
            images, self.mean, self.std, cfg.input_scale, self.output_stride
        )
        window = self.window_size()
        layers = None
        if self.training or window is None or fits_window(tuple(x.shape[-2:]), window):
            maps, layers = self._maps(x)
        else:
            maps = stitch(x, window, self.output_stride, lambda w: self._maps(w)[0])
        queries = None
        if layers is not None:
            aux = [(c, m) for c, m, _ in layers[:-1]]
            queries = QueryOutputs(layers[-1][0], layers[-1][1], aux)
        extra = {k.removeprefix("extra:"): v[..., :height, :width]
                 for k, v in maps.items() if k.startswith("extra:")}  # fmt: skip
        features = {"tokens": maps["tokens"], "pixels": maps["pixels"]}
        return SegmenterOutput(maps["logits"][..., :height, :width], features, queries, extra)
