"""Label-aware InfoNCE over a MoCo queue: known crops attract their class, unknown crops only
their own second view.

MoCo (He et al., CVPR 2020) scores a query ``q`` against its key ``k+`` (another view of the same
crop, from the momentum encoder) and a FIFO queue of earlier keys, all L2-normalised:
``L = -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_n exp(q.n/tau))`` (SynCo's ``builder.py``: CE on
``[l_pos, l_neg] / T`` with label 0). Here each queue entry also carries its crop's label, and
the loss has several positives (the supervised-contrastive form of Khosla et al., NeurIPS 2020,
over a queue):

    A(q) = {k+} u {queue entries} u {synthetic negatives S(q)}       (all logits, / tau)
    P(q) = {k+} u {queue entries n of the same crop as q}
                u {queue entries n with label(n) = label(q)}   (the last set only if q is known)
    L(q) = -1/|P(q)| sum_{p in P(q)} [ q.p/tau - log sum_{a in A(q)} exp(q.a/tau) ]

so a known anchor is pulled towards its own views and towards every queued crop of its class and
pushed from the other classes and from every unknown crop; an unknown anchor is pulled only towards
views of its own crop and pushed from everything else. **An unknown crop is never a positive of a
known one** (nor of another unknown crop): a naive batch loss that scores known_i against
unknown_j with diagonal targets would pull them together. Synthetic negatives (SynCo,
:mod:`.synco`) are never positives. The queue keeps each key's crop id because a crop bank is
small next to MoCo's ImageNet: the queue soon holds earlier keys of the anchor's own crop, which
are views of it (positives), not negatives. ``LabelledQueue`` starts empty (MoCo starts from random
vectors; empty slots are left out of ``A`` instead, which changes nothing once the queue is full).
"""

from __future__ import annotations

import torch

from owsbench.methods.nn.crops import UNKNOWN

EMPTY = -2  # label of a queue slot that holds no key yet


class LabelledQueue:
    """A FIFO queue of ``size`` L2-normalised keys ``(size, dim)`` with their crop labels and
    crop ids (the crop's index in its bank)."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ValueError("queue size must be >= 1")
        self.keys = torch.zeros(size, dim, device=device)
        self.labels = torch.full((size,), EMPTY, dtype=torch.long, device=device)
        self.ids = torch.full((size,), -1, dtype=torch.long, device=device)
        self.pointer = 0

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        """Enqueue a batch (oldest entries replaced first; wraps around)."""
        size = len(self.keys)
        keys, labels, ids = keys.detach()[-size:], labels[-size:], ids[-size:]
        index = (self.pointer + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[index] = keys.to(self.keys)
        self.labels[index] = labels.to(self.labels)
        self.ids[index] = ids.to(self.ids)
        self.pointer = int((self.pointer + len(keys)) % size)

    @property
    def filled(self) -> torch.Tensor:
        return self.labels != EMPTY


def positive_mask(
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, Q)``: queue entry ``n`` is a positive of anchor ``b`` iff both are the same known
    class, or (when ids are given) ``n`` is a view of ``b``'s own crop; an unknown entry is
    never a positive of another crop, and empty slots never are."""
    known = labels != UNKNOWN
    mask = (labels[:, None] == queue_labels[None, :]) & known[:, None] & (queue_labels >= 0)
    if ids is not None and queue_ids is not None:
        mask |= (ids[:, None] == queue_ids[None, :]) & (queue_labels != EMPTY)[None, :]
    return mask


def infonce_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    tau: float,
    synthetic: torch.Tensor | None = None,
    synthetic_valid: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of ``L(q)`` over the batch (see the module docstring).

    ``q``, ``k``: ``(B, D)`` normalised queries and their keys; ``labels``: ``(B,)`` class ids
    or ``UNKNOWN``; ``queue_keys`` ``(Q, D)`` / ``queue_labels`` ``(Q,)`` (``EMPTY`` slots are
    ignored); ``synthetic``: ``(B, M, D)`` negatives per anchor, ``synthetic_valid`` ``(B, M)``
    which of them an anchor uses (default all); ``ids`` ``(B,)`` / ``queue_ids`` ``(Q,)``: crop
    ids, so queued views of an anchor's own crop are positives (without them, only ``k+`` is).
    """
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue_keys.T  # (B, Q)
    logits = [pos, neg]
    valid = [torch.ones_like(pos, dtype=torch.bool), (queue_labels != EMPTY)[None].expand_as(neg)]
    positive = [valid[0], positive_mask(labels, queue_labels, ids, queue_ids)]
    if synthetic is not None and synthetic.shape[1] > 0:
        syn = torch.einsum("bd,bmd->bm", q, synthetic)
        logits.append(syn)
        if synthetic_valid is None:
            synthetic_valid = torch.ones_like(syn, dtype=torch.bool)
        valid.append(synthetic_valid)
        positive.append(torch.zeros_like(syn, dtype=torch.bool))
    logits_t = torch.cat(logits, dim=1) / tau
    valid_t, positive_t = torch.cat(valid, dim=1), torch.cat(positive, dim=1)
    log_z = torch.logsumexp(logits_t.masked_fill(~valid_t, float("-inf")), dim=1, keepdim=True)
    log_prob = logits_t - log_z
    per_anchor = -(log_prob * positive_t).sum(dim=1) / positive_t.sum(dim=1)
    return per_anchor.mean()
