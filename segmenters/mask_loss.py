"""Mask-classification training loss: Hungarian matching, point sampling, CE + BCE + Dice.

Source: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation"
(Mask2Former, CVPR 2022; ``facebookresearch/Mask2Former`` ``mask2former/modeling/matcher.py``,
``criterion.py``), with the weights EoMT uses (Kerssies et al., CVPR 2025, ``tue-mps/eomt``
``training/mask_classification_loss.py``). Written here with ``scipy`` and torch only.

For one image with ``Q`` predictions (class logits ``c_q`` over ``K + 1`` classes, the last one
"no object"; mask logits ``m_q``) and ``n`` targets (class ``y_j``, binary mask ``t_j``):

- matching: ``P`` points drawn uniformly (the same for predictions and targets); cost
  ``C_qj = w_ce (-softmax(c_q)_{y_j}) + w_bce BCE_P(m_q, t_j) + w_dice Dice_P(m_q, t_j)``,
  minimised with ``scipy.optimize.linear_sum_assignment``;
- class loss: cross-entropy of every query against its matched class, ``K`` (no object) for the
  unmatched ones, the no-object class weighted by ``no_object_weight`` (0.1);
- mask losses on the matched pairs, on ``P`` importance-sampled points (``3 P`` random points,
  the ``0.75 P`` most uncertain of them, i.e. smallest ``|m_q|``, plus ``0.25 P`` random ones):
  sigmoid BCE averaged over points and ``Dice = 1 - (2 sum s t + 1) / (sum s + sum t + 1)``,
  both summed over pairs and divided by the number of targets in the batch (at least 1);
- total ``w_ce CE + w_bce BCE + w_dice Dice`` (2, 5, 5), summed over every prediction layer
  (deep supervision).

Dense semantic labels become targets per image: one mask per class present (void pixels, 255,
belong to no mask, as in EoMT's semantic datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

VOID = 255


@dataclass(frozen=True)
class MaskLossWeights:
    """Loss weights and point counts (EoMT's values; ``num_points`` 12544 there)."""

    ce: float = 2.0
    bce: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1
    num_points: int = 12544
    oversample: float = 3.0
    importance: float = 0.75


def semantic_targets(labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image of ``labels`` ``(B, H, W)``: ``(classes (n,), masks (n, H, W) float)``, one per
    class present (void left out)."""
    targets = []
    for label in labels:
        classes = torch.unique(label)
        classes = classes[classes != VOID]
        masks = (label[None] == classes[:, None, None]).to(torch.float32)
        targets.append((classes, masks))
    return targets


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` ``(N, h, w)`` at ``points`` ``(N, P, 2)`` in ``[0, 1]^2``
    (x, y) -> ``(N, P)`` (``grid_sample``, ``align_corners=False``, as Mask2Former)."""
    grid = 2.0 * points[:, :, None, :] - 1.0
    return F.grid_sample(maps[:, None], grid, align_corners=False)[:, 0, :, 0]


def uncertain_points(
    logits: torch.Tensor, weights: MaskLossWeights, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Importance-sampled points ``(N, P, 2)`` for mask logits ``(N, h, w)``: of
    ``oversample * P`` uniform points, the ``importance * P`` with the smallest ``|logit|``, then
    ``P - that`` uniform points."""
    n, p = logits.shape[0], weights.num_points
    drawn = int(weights.oversample * p)
    kw = {"device": logits.device, "generator": generator}
    candidates = torch.rand(n, drawn, 2, **kw)
    uncertainty = -point_sample(logits, candidates).abs()
    keep = int(weights.importance * p)
    index = uncertainty.topk(keep, dim=1).indices
    chosen = torch.gather(candidates, 1, index[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(n, p - keep, 2, **kw)], dim=1)


def pairwise_bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(Q, P)`` logits x ``(n, P)`` targets -> ``(Q, n)`` mean sigmoid BCE over points."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ target.T + neg @ (1 - target).T) / pred.shape[1]


def pairwise_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(Q, P)`` logits x ``(n, P)`` targets -> ``(Q, n)`` Dice loss of ``sigmoid(pred)``."""
    prob = pred.sigmoid()
    numerator = 2 * prob @ target.T
    denominator = prob.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    classes: torch.Tensor,
    masks: torch.Tensor,
    weights: MaskLossWeights,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimal (query indices, target indices) of one image (see the module docstring);
    ``class_logits`` ``(Q, K + 1)``, ``mask_logits`` ``(Q, h, w)``, ``masks`` ``(n, H, W)``."""
    if len(classes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    points = torch.rand(1, weights.num_points, 2, device=mask_logits.device, generator=generator)
    pred = point_sample(mask_logits.float(), points.expand(len(mask_logits), -1, -1))
    target = point_sample(masks, points.expand(len(masks), -1, -1))
    cost_class = -class_logits.float().softmax(-1)[:, classes]
    cost = (
        weights.ce * cost_class
        + weights.bce * pairwise_bce(pred, target)
        + weights.dice * pairwise_dice(pred, target)
    )
    cost = torch.nan_to_num(cost.cpu(), nan=1e8, posinf=1e8, neginf=-1e8)
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def layer_losses(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    targets: list[tuple[torch.Tensor, torch.Tensor]],
    weights: MaskLossWeights,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Unweighted ``ce``, ``bce``, ``dice`` of one prediction layer (``(B, Q, K + 1)``,
    ``(B, Q, h, w)``) against the batch's ``targets``."""
    num_classes = class_logits.shape[-1] - 1
    target_classes = torch.full(class_logits.shape[:2], num_classes, device=class_logits.device)
    preds, gts = [], []
    for b, (classes, masks) in enumerate(targets):
        rows, cols = hungarian_match(
            class_logits[b], mask_logits[b], classes, masks, weights, generator
        )
        target_classes[b, rows.to(class_logits.device)] = classes[cols.to(classes.device)]
        preds.append(mask_logits[b, rows.to(mask_logits.device)])
        gts.append(masks[cols.to(masks.device)])
    class_weight = torch.ones(num_classes + 1, device=class_logits.device)
    class_weight[-1] = weights.no_object
    ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, class_weight)
    pred, gt = torch.cat(preds), torch.cat(gts)
    count = max(sum(len(c) for c, _ in targets), 1)
    if len(pred) == 0:
        zero = mask_logits.sum() * 0.0
        return {"ce": ce, "bce": zero, "dice": zero}
    with torch.no_grad():
        points = uncertain_points(pred.detach().float(), weights, generator)
        gt_points = point_sample(gt, points)
    pred_points = point_sample(pred.float(), points)
    bce = F.binary_cross_entropy_with_logits(pred_points, gt_points, reduction="none").mean(1)
    prob = pred_points.sigmoid()
    dice = 1 - (2 * (prob * gt_points).sum(1) + 1) / (prob.sum(1) + gt_points.sum(1) + 1)
    return {"ce": ce, "bce": bce.sum() / count, "dice": dice.sum() / count}


def mask_classification_loss(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    weights: MaskLossWeights,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``total`` = sum over ``layers`` (``(class_logits, mask_logits)`` pairs, deep supervision)
    of ``w_ce ce + w_bce bce + w_dice dice``; also the final layer's ``ce``, ``bce``, ``dice``."""
    targets = [(c.to(labels.device), m) for c, m in semantic_targets(labels)]
    total = None
    terms: dict[str, torch.Tensor] = {}
    for class_logits, mask_logits in layers:
        terms = layer_losses(class_logits, mask_logits, targets, weights, generator)
        weighted = weights.ce * terms["ce"] + weights.bce * terms["bce"]
        weighted = weighted + weights.dice * terms["dice"]
        total = weighted if total is None else total + weighted
    return {"total": total, **{k: v.detach() for k, v in terms.items()}}
