"""Official EoMT checkpoints' key layout -> this package's ``EoMTSegmenter`` keys.

The official training code (``tue-mps/eomt``, a Lightning module whose network is ``EoMT``
around ``ViT``) saves ``state_dict`` keys ``network.<EoMT key>``; the ViT's timm model sits at
``network.encoder.backbone.`` and the EoMT parts at ``network.q.weight`` (the query embedding),
``network.class_head.*``, ``network.mask_head.{0,2,4}.*`` and
``network.upscale.<i>.{conv1,conv2,norm}.*``. The module names were checked against the
official ``models/eomt.py`` and ``models/scale_block.py`` (as copied in a public fork; ``q`` is
an ``nn.Embedding``, the ViT is ``encoder.backbone``); the ``network.`` prefix of the Lightning
checkpoint is recalled, not checked against a released checkpoint file. Non-weights are
dropped: the criterion's buffers (``criterion.*``), the annealing state (``attn_mask_probs``)
and the ViT wrapper's normalisation buffers (``encoder.pixel_mean`` / ``encoder.pixel_std``,
ImageNet's, which this model has built in).
"""

from __future__ import annotations

import torch

DROPPED_PREFIXES = ("criterion.", "encoder.pixel_mean", "encoder.pixel_std", "attn_mask_probs")


def official_to_local(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with official EoMT keys renamed to this model's (``module.`` and ``network.``
    prefixes stripped, ``encoder.backbone.`` -> ``backbone.``, non-weights dropped); keys
    already in this model's layout pass through unchanged."""
    local = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("network.")
        if key.startswith(DROPPED_PREFIXES):
            continue
        if key.startswith("encoder.backbone."):
            key = "backbone." + key.removeprefix("encoder.backbone.")
        local[key] = value
    return local
