"""Inference precision: the autocast of the evaluation forward pass (``--precision``).

``fp32`` (the default) runs the model as it is; ``bf16`` and ``fp16`` run its forward under
``torch.autocast`` with that dtype on the model's device (matrix products and convolutions in half
precision, reductions in float32; see the PyTorch AMP documentation,
https://pytorch.org/docs/stable/amp.html). Scores are computed from the logits upcast to float32
(``owsbench.segmenters.base.as_float32``) and every metric counts float32 values, so for a
post-hoc method only the segmenter's arithmetic changes; a trained method's whole ``predict``
(its network and its score, which are one model) runs under the autocast. Rows evaluated below
fp32 carry ``precision`` in their config hash and are labelled ``[bf16]`` / ``[fp16]`` in tables.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def inference_autocast(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (a no-op for ``fp32``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
