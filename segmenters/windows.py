"""Sliding-window inference: run a model on overlapping windows, average the overlaps.

As EoMT's semantic evaluation (``tue-mps/eomt`` ``training/lightning_module.py``:
``window_imgs_semantic`` / ``revert_window_logits_semantic``) a frame larger than the training
crop is covered by windows of the crop's size, evenly spaced with overlap, and the per-window
maps are averaged where windows overlap. Here offsets are multiples of ``align`` (the patch
size) so that token maps of the windows stitch onto the frame's token grid exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def window_offsets(size: int, window: int, align: int) -> list[int]:
    """Start offsets of windows of length ``window`` covering ``size`` (``size`` and ``window``
    multiples of ``align``): ``ceil(size / window)`` windows, evenly spaced, the first at 0 and
    the last at ``size - window``, each rounded to a multiple of ``align``."""
    if window >= size:
        return [0]
    count = math.ceil(size / window)
    last = size - window
    return sorted({round(last * i / (count - 1) / align) * align for i in range(count)})


def stitch(
    images: torch.Tensor,
    window: tuple[int, int],
    align: int,
    run: Callable[[torch.Tensor], dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Average of ``run``'s maps over windows of ``images`` ``(B, C, H, W)``.

    ``run`` maps a window ``(B, C, h, w)`` to named maps ``(B, D, h / s, w / s)`` (each with its
    own stride ``s`` dividing ``align``); the result holds each map over the whole frame,
    ``(B, D, H / s, W / s)``, averaged where windows overlap.
    """
    height, width = images.shape[-2:]
    wh, ww = min(window[0], height), min(window[1], width)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for top in window_offsets(height, wh, align):
        for left in window_offsets(width, ww, align):
            maps = run(images[..., top : top + wh, left : left + ww])
            for name, value in maps.items():
                stride = wh // value.shape[-2]
                if name not in sums:
                    shape = (*value.shape[:2], height // stride, width // stride)
                    sums[name] = value.new_zeros(shape)
                    counts[name] = value.new_zeros((1, 1, *shape[-2:]))
                rows = slice(top // stride, (top + wh) // stride)
                cols = slice(left // stride, (left + ww) // stride)
                sums[name][..., rows, cols] += value
                counts[name][..., rows, cols] += 1
    return {name: sums[name] / counts[name] for name in sums}
