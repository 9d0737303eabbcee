"""Loss pieces shared by several fits; void pixels (255) never contribute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from owsbench.datasets.base import VOID


def semantic_ce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy ``mean_{p: y_p != 255} -log softmax(z_p)_{y_p}`` (PyTorch's
    ``cross_entropy`` with ``ignore_index=255``); with class weights ``w``,
    ``sum_p w_{y_p} (-log softmax(z_p)_{y_p}) / sum_p w_{y_p}``. 0 (still differentiable) when
    the batch has no labelled pixel (or only zero-weight ones) instead of NaN."""
    labelled = target != VOID
    if weight is not None:
        weight = weight.to(logits)
        labelled = labelled & (weight[target.clamp_max(len(weight) - 1)] > 0)
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=VOID)


def masked_bce(logit: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Binary cross-entropy with logits averaged over pixels whose target is 0 or 1 (255 = void,
    left out whatever its logit, even an infinite one); anomalies weighted by ``pos_weight``:
    ``mean_{valid} -(w y log s(x) + (1 - y) log(1 - s(x)))``. 0 (differentiable) when no pixel is
    valid. ``logit`` is ``(B, 1, H, W)`` or ``(B, H, W)``, ``target`` ``(B, H, W)``."""
    logit = logit.reshape(target.shape)
    valid = target != VOID
    if not valid.any():
        return logit.sum() * 0.0
    weight = torch.tensor(pos_weight, dtype=logit.dtype, device=logit.device)
    return F.binary_cross_entropy_with_logits(
        logit[valid], target[valid].to(logit.dtype), pos_weight=weight
    )


def labels_at(labels: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Label maps ``(B, H, W)`` resized to ``size`` by nearest neighbour (for a model that runs
    at a scaled resolution); unchanged when they already have that size."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()
