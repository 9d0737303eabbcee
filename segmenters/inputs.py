"""Shared by the closed-set segmenters: input scaling, normalisation, padding.

Every segmenter takes ``[0, 1]`` RGB images of any size. They are resized by the config's
``input_scale``, normalised with the ImageNet mean and std, and replicate-padded at the bottom
and right to a multiple of the network's output stride; the logits are cropped back to the
(scaled) image size by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_imagenet_stats(module: nn.Module) -> None:
    """Add non-persistent ``mean`` and ``std`` buffers (``(1, 3, 1, 1)``) to ``module``."""
    module.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    module.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)


def prepare_input(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    input_scale: float,
    multiple: int,
) -> tuple[torch.Tensor, int, int]:
    """Scale, normalise and pad ``images``; return the network input and the scaled size.

    ``images`` is ``(B, 3, H, W)`` in ``[0, 1]``. The result is ``(x, height, width)``: ``x`` is
    the normalised image, replicate-padded to a multiple of ``multiple``, and ``height, width``
    is the size before padding (crop the logits to ``[..., :height, :width]``).
    """
    if input_scale != 1.0:
        images = F.interpolate(
            images, scale_factor=input_scale, mode="bilinear", align_corners=False
        )
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    x = (images - mean) / std
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, height, width
