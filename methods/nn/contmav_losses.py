"""ContMAV's losses, class-mean (MAV) bookkeeping and unknown score, as pure functions.

Source: ``PRBonn/ContMAV`` ``src/utils.py`` (``CrossEntropyLoss2d``, ``OWLoss``,
``ObjectosphereLoss``, ``ContrastiveLoss``) and ``train.py`` (``train_one_epoch``,
``contrastive_inference``, ``semantic_inference``); paper: Sodano et al., CVPR 2024.

Notation: ``z`` semantic logits ``(B, K, H, W)``, ``f`` contrastive embedding ``(B, D, H, W)``
(``D = K``), ``y`` labels ``(B, H, W)`` with ``0..K-1`` known and ``255`` void. ``mu`` ``(K, D)``
and ``var`` ``(K, D)`` are the class means / per-dimension variances of ``z`` over true-positive
pixels of the previous epoch; ``valid`` ``(K,)`` marks classes that have them.

- ``semantic_ce``: ``mean_{p known} CE(z_p, y_p)`` (class weights off, the official default);
  ``SemanticLoss`` swaps it for focal or focal + dice (the ``contmav-focal*`` variants).
- ``objectosphere_loss``: ``w_u mean_{p void} ||f_p||^2 + mean_{p known} relu(xi - ||f_p||^2)``,
  ``w_u = 10``, ``xi = 1``.
- ``feature_loss``:
  ``sum_{c in y, valid} mean_{p: y_p = c} mean_d |z_pd - mu_cd| / (var_cd + eps)``.
- ``contrastive_loss``: per image, ``fbar_c = mean_{p: y_p = c} f_p/||f_p||`` for every present
  valid class, logits ``s_ck = fbar_c . mu_k/||mu_k|| / tau`` (``tau = 0.1``),
  ``mean_images mean_c CE(s_c, c)``.
- ``MAVAccumulator``: running sums of ``z`` and ``z^2`` over true positives
  ``{p : y_p = c and argmax z_p = c}``; ``finalize`` gives ``mu = S1/n``,
  ``var = (S2 - S1^2/n)/n`` (population, diagonal).
- ``unknown_score``: ``s_cont = relu(1 - ||f||/r)``,
  ``g_c = exp(-1/2 sum_d (z_d - mu_cd)^2 / (var_cd + eps))``, ``s_sem = 1 - max_c g_c``,
  ``s_unk = (s_cont + s_sem)/2``; most similar known class ``argmax_c g_c``. With
  ``per_dimension=True`` (a deviation, see ``unknown_score``) ``g_c`` is replaced by
  ``g_c^(1/D)``.

Fixed bugs of the official code: ``OWLoss.forward`` iterates ``gt_labels[:-1]``, dropping a real
class whenever the batch has no void pixel (here: void is removed explicitly); the contrastive
loss is averaged over images with at least one known pixel (officially over the whole batch,
so all-void images dilute it); classes without a class mean are left out of both MAV losses
rather than compared with a zero mean / zero variance (``valid``); ``ContrastiveLoss`` turns the
per-class mean embeddings, a ``(D, classes present)`` tensor, into rows with
``.view(-1, n_classes)`` instead of a transpose, which mixes embedding dimensions across classes
(here: each class's mean embedding is one row, the intended loss). ``eps`` is the official
``1e-8``; a ``var_floor`` (a deviation, default applied by the caller) keeps a class seen on a
handful of pixels from producing ``|d| / 1e-8``-sized losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

from owsbench.datasets.base import VOID
from owsbench.training.losses import semantic_ce

EPS = 1e-8  # the official constant added to the variances


def _zero(ref: torch.Tensor) -> torch.Tensor:
    """A zero that keeps ``ref`` in the autograd graph (so ``backward`` always works)."""
    return ref.sum() * 0.0


SEMANTIC_LOSSES = ("ce", "focal", "focal-dice")


class SemanticLoss:
    """The semantic-decoder loss: ``ce`` (the paper), ``focal`` or ``focal + w_dice dice``.

    Focal and Dice are segmentation-models-pytorch's classes (``>= 0.6``), used as installed:
    ``FocalLoss("multiclass")`` is the one-vs-rest *sigmoid* focal loss
    ``mean_c mean_p -a_t (1 - p_t)^gamma log p_t`` with ``p = sigmoid(z_c)`` and target
    ``[y = c]`` (averaged over classes since smp 0.6; 0.5 summed them), and
    ``DiceLoss("multiclass")`` the softmax soft Dice ``1 - mean_c (2 sum p g) / (sum p + sum g)``
    over the whole batch, classes absent from the batch counting 0. Void (255) is ignored by all
    three; a batch without known pixels gives 0.
    """

    def __init__(
        self,
        kind: str = "ce",
        gamma: float = 2.0,
        alpha: float | None = None,
        dice_weight: float = 1.0,
    ) -> None:
        if kind not in SEMANTIC_LOSSES:
            raise ValueError(f"semantic loss must be one of {SEMANTIC_LOSSES}, got {kind!r}")
        self.kind = kind
        self.dice_weight = dice_weight
        self.focal = FocalLoss("multiclass", alpha=alpha, gamma=gamma, ignore_index=VOID)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=VOID)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "ce" or not (labels != VOID).any():
            return semantic_ce(logits, labels)
        loss = self.focal(logits, labels)
        if self.kind == "focal-dice":
            loss = loss + self.dice_weight * self.dice(logits, labels)
        return loss


def objectosphere_loss(
    emb: torch.Tensor, labels: torch.Tensor, xi: float = 1.0, unknown_weight: float = 10.0
) -> torch.Tensor:
    """``w_u mean_void ||f||^2 + mean_known relu(xi - ||f||^2)`` (empty sets contribute 0)."""
    sq_norm = emb.pow(2).sum(dim=1)  # (B, H, W)
    unknown = labels == VOID
    loss = _zero(emb)
    if unknown.any():
        loss = loss + unknown_weight * sq_norm[unknown].mean()
    if (~unknown).any():
        loss = loss + F.relu(xi - sq_norm[~unknown]).mean()
    return loss


def feature_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    valid: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """Variance-normalised L1 distance of each labelled pixel's logits to its class mean.

    Summed over the (valid) classes present in ``labels``; per class the mean over its pixels
    and the logit dimensions. ``means``, ``variances``: ``(K, K)``; ``valid``: ``(K,)`` bool.
    """
    z = logits.permute(0, 2, 3, 1)  # (B, H, W, K)
    loss = _zero(logits)
    for c in labels.unique().tolist():
        if c == VOID or not bool(valid[c]):
            continue
        diff = (z[labels == c] - means[c]).abs() / (variances[c] + eps)
        loss = loss + diff.mean()
    return loss


def contrastive_loss(
    emb: torch.Tensor,
    labels: torch.Tensor,
    means: torch.Tensor,
    valid: torch.Tensor,
    tau: float = 0.1,
) -> torch.Tensor:
    """Pull each class's mean normalised embedding towards its class mean (InfoNCE over means).

    ``means`` ``(K, D)`` are normalised; classes without a mean have a zero row (cosine 0, as
    the official code gets from normalising a zero vector) and are not used as targets.
    """
    mu_hat = F.normalize(means, dim=-1) * valid[:, None].to(means)
    f_hat = F.normalize(emb, dim=1)
    total, images = _zero(emb), 0
    for b in range(emb.shape[0]):
        present = [c for c in labels[b].unique().tolist() if c != VOID and bool(valid[c])]
        if not present:
            continue
        fb = f_hat[b].permute(1, 2, 0)  # (H, W, D)
        fbar = torch.stack([fb[labels[b] == c].mean(dim=0) for c in present])  # not re-normalised
        logits = fbar @ mu_hat.T / tau
        target = torch.tensor(present, device=emb.device)
        total = total + F.cross_entropy(logits, target)
        images += 1
    return total / max(images, 1)


@dataclass
class ClassStats:
    """Per-class means and diagonal variances of the semantic logits (``(K, D)`` each) and the
    number of true-positive pixels behind them (``(K,)``)."""

    means: torch.Tensor
    variances: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def empty(cls, num_classes: int, dim: int | None = None) -> ClassStats:
        dim = num_classes if dim is None else dim
        return cls(
            torch.zeros(num_classes, dim), torch.zeros(num_classes, dim), torch.zeros(num_classes)
        )

    @property
    def valid(self) -> torch.Tensor:
        return self.counts > 0


class MAVAccumulator:
    """Running sums of the logits of true-positive pixels per ground-truth class (float64, CPU).

    ``update`` every training step, ``finalize`` at the end of each epoch (``OWLoss.cumulate`` /
    ``OWLoss.update``).
    """

    def __init__(self, num_classes: int, dim: int | None = None) -> None:
        self.num_classes = num_classes
        self.dim = num_classes if dim is None else dim
        self.reset()

    def reset(self) -> None:
        self.count = torch.zeros(self.num_classes, dtype=torch.float64)
        self.sum = torch.zeros(self.num_classes, self.dim, dtype=torch.float64)
        self.sum_sq = torch.zeros(self.num_classes, self.dim, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the pixels with ``labels == argmax(logits) != void``."""
        z = logits.detach().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        y = labels.reshape(-1)
        tp = (y != VOID) & (logits.detach().argmax(dim=1).reshape(-1) == y)
        z, y = z[tp].double().cpu(), y[tp].cpu()
        self.count.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        self.sum.index_add_(0, y, z)
        self.sum_sq.index_add_(0, y, z * z)

    def finalize(self, previous: ClassStats | None = None) -> ClassStats:
        """``mu = S1/n``, ``var = (S2 - S1^2/n)/n``; then reset the sums.

        Classes without a true positive this epoch keep ``previous``'s statistics when given
        (officially they would get a zero mean and variance).
        """
        n = self.count.clamp(min=1.0)[:, None]
        means = self.sum / n
        variances = ((self.sum_sq - self.sum**2 / n) / n).clamp(min=0.0)
        stats = ClassStats(means.float(), variances.float(), self.count.float())
        if previous is not None:
            keep = ~stats.valid
            stats.means[keep] = previous.means[keep].to(stats.means)
            stats.variances[keep] = previous.variances[keep].to(stats.variances)
            stats.counts[keep] = previous.counts[keep].to(stats.counts)
        self.reset()
        return stats


def contrastive_score(emb: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """``relu(1 - ||f||/r)``: 1 at the origin (unknown), 0 outside the radius."""
    return F.relu(1.0 - torch.linalg.vector_norm(emb, dim=1) / radius)


def gaussian_log_similarity(
    logits: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    valid: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """``log g_c = -1/2 sum_d (z_d - mu_cd)^2 / (var_cd + eps)``, ``(B, K, H, W)``;
    ``-inf`` for classes without statistics."""
    inv = 1.0 / (variances.to(logits) + eps)  # (K, D)
    mu = means.to(logits)
    # sum_d (z_d - mu_cd)^2 inv_cd = sum_d z_d^2 inv_cd - 2 z_d mu_cd inv_cd + mu_cd^2 inv_cd,
    # expanded to avoid a (B, K, D, H, W) tensor; computed in float64 for the cancellation.
    z = logits.double()
    inv64, mu64 = inv.double(), mu.double()
    quad = torch.einsum("bdhw,cd->bchw", z * z, inv64)
    quad = quad - 2 * torch.einsum("bdhw,cd->bchw", z, mu64 * inv64)
    quad = quad + (mu64 * mu64 * inv64).sum(dim=1)[None, :, None, None]
    log_g = (-0.5 * quad.clamp(min=0.0)).to(logits.dtype)
    return log_g.masked_fill(~valid.to(logits.device)[None, :, None, None], float("-inf"))


@dataclass
class UnknownScore:
    """The unknown score and its parts, all ``(B, H, W)``."""

    unknown: torch.Tensor  # (s_cont + s_sem) / 2, higher = unknown
    contrastive: torch.Tensor  # s_cont
    semantic: torch.Tensor  # s_sem = 1 - max_c g_c
    similar_class: torch.Tensor  # argmax_c g_c (long)
    similarity: torch.Tensor  # max_c g_c


def unknown_score(
    logits: torch.Tensor,
    emb: torch.Tensor,
    stats: ClassStats,
    radius: float = 1.0,
    eps: float = EPS,
    per_dimension: bool = False,
) -> UnknownScore:
    """ContMAV's unknown score ``(s_cont + s_sem)/2`` and the most similar known class.

    The most similar class is the argmax of ``log g_c`` (identical to argmax ``g_c`` except that
    it still ranks classes where every ``g_c`` underflows to 0).

    ``per_dimension``: use the geometric mean over the ``D`` logit dimensions,
    ``g_c^(1/D) = exp(-1/(2D) sum_d ...)``. The official unnormalised ``D``-dimensional
    Gaussian saturates: a pixel drawn from its own class has ``E[sum_d ...] = D``, so
    ``g_c ~ exp(-D/2)`` (``~7e-5`` for ``D = 19``) and ``s_sem`` is ~1 everywhere, exactly 1.0
    in float32 once ``sum_d ... > ~33``; the score then barely ranks pixels and the sum with
    ``s_cont`` is dominated by ``s_cont``. The root keeps the argmax and the ``[0, 1]`` range.
    """
    s_cont = contrastive_score(emb, radius)
    log_g = gaussian_log_similarity(logits, stats.means, stats.variances, stats.valid, eps)
    best, similar = log_g.max(dim=1)
    if per_dimension:
        best = best / logits.shape[1]
    similarity = best.exp()
    s_sem = 1.0 - similarity
    return UnknownScore((s_cont + s_sem) / 2, s_cont, s_sem, similar, similarity)
