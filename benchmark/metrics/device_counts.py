"""The metrics' counting kernels in torch, for maps that live on an accelerator.

A score map on a GPU is counted where it is: the order-preserving float32 key
(:func:`owsbench.metrics.pixel.float_to_key`), each pixel's histogram cell and the histogram
itself (``torch.bincount``) are computed on the device, and only the counts (at most the
histogram's size, 512 KiB per (sign, exponent) block the scores reach, whatever the pixel count)
are added to the metric's host state; the same for the confusion matrix. The counts are
integers, so they equal those of the numpy path exactly; the states, ``merge`` and ``compute``
are unchanged. torch is imported on first use (the metrics package itself imports numpy only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KEY_NEG_INF = 0x007FFFFF  # key(-inf); smaller keys are negative NaNs
KEY_POS_INF = 0xFF800000  # key(+inf); larger keys are positive NaNs
_BLOCK_SHIFT = 23  # key >> 23: the 9 sign and exponent bits that select a block of bins


def is_device_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor on a device other than the CPU (duck-typed)."""
    device = getattr(x, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu"


def float_keys(scores: Any) -> Any:
    """``float_to_key`` of a float tensor, as int64 in ``[0, 2**32)`` on the scores' device."""
    import torch

    bits = (scores.to(torch.float32) + 0.0).view(torch.int32)  # + 0.0: -0.0 -> +0.0
    flip = (bits >> 31) | torch.iinfo(torch.int32).min  # negative: all ones; else the sign bit
    return (bits ^ flip).to(torch.int64) & 0xFFFFFFFF


def check_anomaly_labels(labels: Any) -> Any:
    """The void mask of 0 / 1 / 255 labels; ``ValueError`` for any other value."""
    void = labels == 255
    if bool(((labels != 0) & (labels != 1) & ~void).any()):
        raise ValueError("labels must be 0 (inlier), 1 (anomaly) or 255 (void)")
    return void


def anomaly_blocks(keys: Any, void: Any) -> np.ndarray:
    """The (sign, exponent) blocks that the non-void keys reach; ``ValueError`` on a NaN score
    (void pixels included, as the numpy path)."""
    if bool(((keys < KEY_NEG_INF) | (keys > KEY_POS_INF)).any()):
        raise ValueError("scores contain NaN")
    return (keys[~void] >> _BLOCK_SHIFT).unique().cpu().numpy()


def anomaly_counts(
    keys: Any, labels: Any, void: Any, offsets: np.ndarray, shift: int, block_size: int
) -> np.ndarray:
    """Counts per cell of the metric's flat histogram: cell ``offsets[block] + 2 * bin + label``
    (void pixels in cell 0), as a host int64 array of ``max cell + 1`` entries."""
    import torch

    table = torch.from_numpy(offsets.astype(np.int64)).to(keys.device)
    cells = table[keys >> _BLOCK_SHIFT] + 2 * ((keys >> shift) & (block_size - 1))
    cells = (cells + labels.to(torch.int64)).masked_fill_(void, 0)
    return torch.bincount(cells.reshape(-1)).cpu().numpy()


def confusion_counts(pred: Any, labels: Any, num_classes: int, ignore_index: int) -> np.ndarray:
    """``bincount`` of ``(K + 1) * label + pred`` (predictions outside ``0..K-1`` in column ``K``,
    void in a last trash cell) over ``K * (K + 1) + 1`` cells, as a host int64 array;
    ``ValueError`` for labels outside ``0..K-1`` other than ``ignore_index``."""
    import torch

    k = num_classes
    g, p = labels.to(torch.int64).reshape(-1), pred.to(torch.int64).reshape(-1)
    void = g == ignore_index
    if bool(((g < 0) | (g >= k))[~void].any()):
        raise ValueError(f"labels must be 0..{k - 1} or {ignore_index} (void)")
    p = torch.where((p < 0) | (p >= k), k, p)
    cells = (g * (k + 1) + p).masked_fill_(void, k * (k + 1))
    return torch.bincount(cells, minlength=k * (k + 1) + 1).cpu().numpy()
