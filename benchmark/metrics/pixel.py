"""Streaming, constant-memory pixel-level anomaly metrics: AP, AUROC and FPR95.

Scores are unbounded (max-logit, energy, probabilities), so the histogram is built over the
*float32 bit pattern* instead of a fixed value range. A float32 ``s`` maps to the order-preserving
uint32 key ``key(s)``: non-negative floats get their sign bit set, negative floats have all bits
inverted, so ``s < t  <=>  key(s) < key(t)`` for every non-NaN pair (``-0.0`` is first normalised
to ``+0.0``, and ``-inf`` / ``+inf`` take the lowest / highest keys). The bin of a pixel is the top
``bits`` bits of its key, ``bin(s) = key(s) >> (32 - bits)``, so bin edges are relative: with
``m = bits - 9`` mantissa bits kept, a bin is ``2**-m`` of the score's power of two wide (the top 9
key bits are sign and exponent). ``+inf`` and ``-inf`` always sit in bins of their own.

Two int64 histograms are accumulated, ``pos[b]`` (label 1, anomaly, the positive class) and
``neg[b]`` (label 0). Counts are kept per (sign, exponent) block of ``2**m`` bins, allocated on
first use, so memory is bounded by ``2**bits`` bins but in practice is only the few blocks that the
scores occupy (a score spread over 10 powers of two at ``bits=24`` takes 10 * 512 KiB).

Thresholds are the lower edges ``t_1 > t_2 > ... > t_n`` of the non-empty bins, taken from high to
low; the rule "anomaly if ``score >= t_k``" is exact at every edge, so with

    TP_k = sum_{j<=k} pos_j,   FP_k = sum_{j<=k} neg_j,   P = TP_n,   N = FP_n,
    TPR_k = R_k = TP_k / P,    FPR_k = FP_k / N,          P_k = TP_k / (TP_k + FP_k),

the metrics are the exact metrics of the scores rounded down to their bin's lower edge:

    AP     = sum_k (R_k - R_{k-1}) * P_k,  R_0 = 0           (step sum, no interpolation)
    AUROC  = sum_k (FPR_k - FPR_{k-1}) * (TPR_k + TPR_{k-1}) / 2,  (FPR_0, TPR_0) = (0, 0)
    FPR95  = FPR_k* with k* = min {k : TPR_k >= 0.95}                          (fpr_rule="first")
    FPR95  = FPR_k* with k* = max argmin_{k <= k1} |R_k - 0.95|,  k1 = min {k : R_k = 1}
                                                                               (fpr_rule="nearest")
    F1_k   = 2 TP_k / (2 TP_k + FP_k + FN_k),  FN_k = P - TP_k;   best F1 = max_k F1_k

Sources: AP is scikit-learn's ``average_precision_score`` (``sklearn/metrics/_ranking.py``, which
ties equal scores into one threshold the same way); AUROC is the trapezoid ``np.trapz(tpr, fpr)``
and the default FPR95 the ``fpr[np.searchsorted(tpr, 0.95)]`` of the Fishyscapes benchmark
(``hermannsblum/bdl-benchmark: bdlb/fishyscapes/benchmark.py``) and of SegmentMeIfYouCan
(``SegmentMeIfYouCan/road-anomaly-benchmark: metrics/pixel_classification.py``), both pooled over
all pixels of a split with label 255 excluded. The "nearest" FPR95 is the rule of Hendrycks' CAOS
benchmark (``hendrycks/anomaly-seg: anom_utils.py: fpr_and_fdr_at_recall``) and the best F1 that
of SegmentMeIfYouCan (``metrics/pixel_classification_curves.py: curves_from_cmats``); see
:meth:`AnomalyMetric.compute` and :meth:`AnomalyMetric.best_f1` for their tie rules.

Accuracy of the default ``bits=24`` (absolute difference to scikit-learn on the raw float32
scores, 2e7 pixels, ~1 % positives, measured on this project's machine):

    scores                                 |dAP|     |dAUROC|  |dFPR95|
    sigmoid(N(2y, 1))       (probabilities)  3.0e-5    6e-9      5.8e-6
    sigmoid(N(6y - 3, 2))   (probabilities)  2.4e-5    4e-10     1.8e-6
    5 * N(3y, 2)            (logits)         2.7e-6    3e-9      7.1e-7
    -15 + N(2y, 2)          (energy)         1.9e-6    2e-8      7.8e-5

The AP error is a bias from ties inside a bin and halves with every extra bit (22 bits: 1.2e-4,
20 bits: 4.8e-4 on the first row); the FPR95 error is at most the share of negatives in the one
bin where TPR crosses 0.95 (last row: 7.9e-5). Resolution is relative to the score's magnitude,
so scores with a large common offset compared with their spread get coarser bins and a larger
error bound (``-100 + N(2y, 2)``, 5e6 pixels: |dAP| 1.4e-5, |dFPR95| 3.7e-5 measured, bound
3e-4); raise ``bits`` for such scores. Inputs whose distinct values fall in distinct bins (a few
distinct values, binary or rounded scores) give scikit-learn's numbers up to float rounding.

Speed and memory (``scripts/bench_metrics.py``, 2 CPU cores shared with two training runs):
the update is one compiled pass over the pixels (:mod:`owsbench.metrics.pixel_kernels`, numba),
about 8 ns per pixel, bound by the scattered increments into the histogram's blocks (a few
MiB): 2e7 pixels in 0.16 s (65x ``average_precision_score``'s 10.4 s) and 1e8 in 0.75 s (87x
its 65 s). Memory is flat in the pixel count: about 120 MB above the data, nearly all of it
numba's compiler runtime (the numpy formulation it replaced needed 20 MB and was 1.6x slower),
against 2.8 GB for scikit-learn at 1e8. Float32 scores with uint8 labels are read in place;
other dtypes are converted in pieces of 2**16 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .device_counts import (
    KEY_NEG_INF,
    anomaly_blocks,
    anomaly_counts,
    check_anomaly_labels,
    float_keys,
    is_device_tensor,
)

_CHUNK = 1 << 16  # elements per step: the work buffers (~1 MiB) stay in cache
_BLOCK_BITS = 9  # sign + exponent: the top bits of a key that select a block of bins
_NUM_BLOCKS = 1 << _BLOCK_BITS
_SIGN = np.uint32(0x80000000)
_UNALLOCATED = -(1 << 30)  # offset of a block without storage: makes its cell indices negative


def as_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.element_size() < 4:
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    return np.asarray(x)


def float_to_key(scores: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 key of float32 scores (see the module docstring)."""
    bits = (np.asarray(scores, np.float32) + np.float32(0.0)).view(np.uint32)
    return bits ^ ((bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | _SIGN)


def key_to_float(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`float_to_key` (keys below ``key(-inf)`` map to ``-inf``)."""
    keys = np.maximum(np.asarray(keys, np.uint32), np.uint32(KEY_NEG_INF))
    bits = np.where(keys >= _SIGN, keys ^ _SIGN, ~keys)
    return bits.view(np.float32)


@dataclass(frozen=True)
class AnomalyCurve:
    """ROC and PR points at the lower edges of the non-empty bins, thresholds descending.

    ``tpr[k]`` and ``fpr[k]`` are the exact rates of the rule ``score >= thresholds[k]``;
    ``recall`` equals ``tpr``. The ROC curve starts at (0, 0), which is not listed.
    """

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


class AnomalyMetric:
    """Pooled pixel anomaly metrics (AP, AUROC, FPR95) from a binned float32-key histogram.

    Labels: 0 = inlier, 1 = anomaly (positive class), 255 = void (ignored). Higher score = more
    anomalous. ``update`` any number of times, ``merge`` states from other workers, ``compute``.
    Formulas, sources and measured accuracy are in the module docstring.
    """

    def __init__(self, bits: int = 24) -> None:
        """``bits`` (12..28): key bits kept per bin. Each (sign, exponent) block that the scores
        reach costs ``2**(bits - 9) * 16`` bytes (512 KiB at the default 24, the smallest value
        that kept every measured difference to scikit-learn under 1e-4).
        """
        if not 12 <= bits <= 28:
            raise ValueError(f"bits must be in 12..28, got {bits}")
        self.bits = bits
        self._shift = 32 - bits
        self._block_size = 1 << (bits - _BLOCK_BITS)  # bins per (sign, exponent) block
        self.reset()

    # ----------------------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget all counts."""
        # _flat[0] is a trash cell for void pixels; then each allocated block holds interleaved
        # (neg, pos) counts per bin, starting at _offset[block] (odd), or _UNALLOCATED. Spare
        # capacity at the end stays zero.
        self._offset = np.full(_NUM_BLOCKS, _UNALLOCATED, np.int32)  # int32: faster add.at
        self._flat = np.zeros(1, np.int64)
        self._used = 1

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global bin ids, negative and positive counts of the non-empty bins, ascending."""
        blocks = np.flatnonzero(self._offset >= 0)
        if not blocks.size:
            return (np.zeros(0, np.int64),) * 3
        width = 2 * self._block_size
        rows = np.stack([self._flat[o : o + width] for o in self._offset[blocks]])
        rows = rows.reshape(len(blocks), self._block_size, 2)
        bins = (blocks[:, None] * self._block_size + np.arange(self._block_size)).ravel()
        neg, pos = rows[..., 0].ravel(), rows[..., 1].ravel()
        keep = (neg > 0) | (pos > 0)
        return bins[keep], neg[keep], pos[keep]

    def _allocate(self, blocks: np.ndarray) -> None:
        """Give storage to the blocks that have none yet (capacity grows by at least 1/4)."""
        new = [int(b) for b in np.unique(blocks) if self._offset[b] < 0]
        if not new:
            return
        width = 2 * self._block_size
        needed = self._used + len(new) * width
        if needed > self._flat.size:
            flat = np.zeros(max(needed, self._flat.size + self._flat.size // 4), np.int64)
            flat[: self._used] = self._flat[: self._used]
            self._flat = flat
        self._offset[new] = self._used + width * np.arange(len(new))
        self._used = needed

    @property
    def num_positives(self) -> int:
        """Anomaly pixels counted so far (void excluded)."""
        return int(self._flat[2::2].sum())

    @property
    def num_negatives(self) -> int:
        """Inlier pixels counted so far (void excluded)."""
        return int(self._flat[1::2].sum())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Sparse, ``np.savez``-friendly state: ``bits`` and the non-empty bins' counts."""
        bins, neg, pos = self._counts()
        return {"bits": np.asarray(self.bits), "bins": bins, "neg": neg, "pos": pos}

    def load_state_dict(self, state: dict[str, Any]) -> AnomalyMetric:
        """Replace the counts with ``state`` (from :meth:`state_dict`); ``bits`` must match."""
        if int(state["bits"]) != self.bits:
            raise ValueError(f"state has bits={int(state['bits'])}, metric has bits={self.bits}")
        self.reset()
        return self._add_counts(
            *(np.asarray(state[k], np.int64).reshape(-1) for k in ("bins", "neg", "pos"))
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> AnomalyMetric:
        """A new metric holding ``state``."""
        return cls(int(state["bits"])).load_state_dict(state)

    def merge(self, other: AnomalyMetric) -> AnomalyMetric:
        """Add the counts of ``other`` (same ``bits``) to this metric; returns ``self``."""
        if not isinstance(other, AnomalyMetric) or other.bits != self.bits:
            raise ValueError("merge needs an AnomalyMetric with the same bits")
        return self._add_counts(*other._counts())

    def _add_counts(self, bins: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> AnomalyMetric:
        self._allocate(bins // self._block_size)
        cells = self._offset[bins // self._block_size] + 2 * (bins % self._block_size)
        np.add.at(self._flat, cells, neg)
        np.add.at(self._flat, cells + 1, pos)
        return self

    # ---------------------------------------------------------------------------- update

    def update(self, scores: Any, labels: Any) -> None:
        """Count one batch of pixels; numpy arrays or torch tensors of any equal shape (scores
        on an accelerator are counted there: :meth:`update_tensor`).

        Raises ValueError (and leaves the counts unchanged) on a shape mismatch, NaN scores,
        non-integer labels or label values other than 0, 1 and 255.
        """
        if is_device_tensor(scores):
            self.update_tensor(scores, labels)
            return
        s, y = _flat_inputs(scores, labels)
        # float32 scores and uint8 labels are read in place, in one piece; others are converted
        # piece by piece into small buffers
        size = s.size if s.dtype == np.float32 and y.dtype == np.uint8 else _CHUNK
        work = _Work(min(s.size, size))
        starts = range(0, s.size, size)
        for done, start in enumerate(starts):
            piece = slice(start, start + size)
            try:
                self._add_piece(_score_bits(s[piece], work), _uint8_labels(y[piece], work), 1)
            except ValueError:
                for undo in starts[:done]:
                    piece = slice(undo, undo + size)
                    self._add_piece(_score_bits(s[piece], work), _uint8_labels(y[piece], work), -1)
                raise

    def update_tensor(self, scores: Any, labels: Any) -> None:
        """Count a torch score tensor with torch kernels on its own device (labels: a tensor or
        array, copied there); only the compact counts reach the host
        (:mod:`owsbench.metrics.device_counts`). The counts equal :meth:`update`'s exactly; the
        same errors, and the counts are unchanged on an error."""
        import torch

        y = torch.as_tensor(labels).to(scores.device)
        if tuple(scores.shape) != tuple(y.shape):
            raise ValueError(f"scores shape {tuple(scores.shape)} != labels shape {tuple(y.shape)}")
        if scores.dtype.is_complex or scores.dtype == torch.bool:
            raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
        if y.dtype.is_floating_point or y.dtype.is_complex:
            raise ValueError(f"labels must be integers (0, 1, 255), got dtype {y.dtype}")
        keys, void = float_keys(scores), check_anomaly_labels(y)
        self._allocate(anomaly_blocks(keys, void))
        counts = anomaly_counts(keys, y, void, self._offset, self._shift, self._block_size)
        self._flat[: counts.size] += counts

    def _add_piece(self, bits: np.ndarray, labels: np.ndarray, delta: int) -> None:
        """Add ``delta`` to the count of each pixel of one piece (float32 bit patterns, uint8
        labels; :func:`owsbench.metrics.pixel_kernels.add_counts`), allocating the blocks it
        reaches; on a NaN score or a bad label the piece's counts are taken back and
        ValueError raised."""
        from owsbench.metrics.pixel_kernels import NAN_SCORE, NEW_BLOCK, OK, add_counts, block_of

        start = 0
        while True:
            code, stop = add_counts(
                bits, labels, self._offset, self._flat, self._shift, delta, start
            )
            if code != NEW_BLOCK:
                break
            self._allocate(np.array([block_of(bits[stop])]))
            start = stop
        if code == OK:
            return
        add_counts(bits[:stop], labels[:stop], self._offset, self._flat, self._shift, -delta, 0)
        raise ValueError("scores contain NaN" if code == NAN_SCORE else LABEL_ERROR)

    # --------------------------------------------------------------------------- compute

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lower edges of the non-empty bins (descending) and the TP and FP counts at each."""
        bins, neg, pos = (a[::-1] for a in self._counts())
        edges = key_to_float((bins << self._shift).astype(np.uint32)).astype(np.float64)
        return edges, np.cumsum(pos), np.cumsum(neg)

    def curve(self) -> AnomalyCurve:
        """TPR, FPR, precision and recall at each non-empty bin's lower edge, descending."""
        edges, tp, fp = self._cumulative()
        n_pos, n_neg = (tp[-1], fp[-1]) if edges.size else (0, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
            fpr = fp / n_neg if n_neg else np.full(fp.shape, np.nan)
            precision = tp / (tp + fp)
        return AnomalyCurve(edges, tpr, fpr, precision, tpr.copy())

    def compute(self, fpr_rule: str = "first") -> dict[str, float]:
        """``{"AP", "AUROC", "FPR95"}`` as fractions in [0, 1]; NaN where undefined.

        AP needs positives; AUROC and FPR95 need positives and negatives. ``fpr_rule`` picks the
        threshold index ``k*`` whose FPR is reported as FPR95 (thresholds descending, recall
        ``R_k = TPR_k`` non-decreasing in ``k``):

        - ``"first"`` (default): ``k* = min {k : R_k >= 0.95}``, the first threshold reaching
          95 % recall, as ``fpr[np.searchsorted(tpr, 0.95)]`` in Fishyscapes
          (``bdlb/fishyscapes/benchmark.py``) and SegmentMeIfYouCan
          (``metrics/pixel_classification_curves.py``).
        - ``"nearest"``: the threshold whose recall is nearest to 0.95, as in Hendrycks' CAOS
          benchmark (``hendrycks/anomaly-seg: anom_utils.py: fpr_and_fdr_at_recall``, which
          takes ``np.argmin(np.abs(recall - 0.95))`` over the points ordered from the highest
          threshold with full recall upwards). Reproduced with its tie rules: points below the
          highest full-recall threshold ``k1 = min {k : R_k = 1}`` are dropped, and among
          points equally near to 0.95 the one with the lowest threshold (largest ``k``, so the
          largest FPR) wins: ``k* = max argmin_{k <= k1} |R_k - 0.95|``. The distances are
          computed in float64 from the same integer counts, so exact ties are the same ties.
          Hendrycks applies the rule per image and averages over images; here it is applied
          to the pooled curve.
        """
        if fpr_rule not in ("first", "nearest"):
            raise ValueError(f'fpr_rule must be "first" or "nearest", got {fpr_rule!r}')
        c = self.curve()
        has_pos, has_neg = self.num_positives > 0, self.num_negatives > 0
        nan = float("nan")
        ap = float(np.sum(np.diff(c.recall, prepend=0.0) * c.precision)) if has_pos else nan
        if not (has_pos and has_neg):
            return {"AP": ap, "AUROC": nan, "FPR95": nan}
        tpr, fpr = np.concatenate(([0.0], c.tpr)), np.concatenate(([0.0], c.fpr))
        auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
        if fpr_rule == "first":
            k = int(np.searchsorted(c.tpr, 0.95, side="left"))
        else:
            k1 = int(np.searchsorted(c.recall, c.recall[-1], side="left"))
            k = k1 - int(np.argmin(np.abs(c.recall[k1::-1] - 0.95)))
        return {"AP": ap, "AUROC": auroc, "FPR95": float(c.fpr[k])}

    def best_f1(self) -> tuple[float, float]:
        """Maximum pixel F1 over the curve's thresholds and the threshold achieving it.

        ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)`` for the rule ``score >= thresholds[k]``
        (``thresholds[k]`` is a bin's lower edge, so for float32 or float16 scores the rule is
        exact); ties go to the highest threshold (first maximum along the descending curve).
        Returns ``(nan, nan)`` without positives.

        SegmentMeIfYouCan (``metrics/pixel_classification_curves.py: curves_from_cmats``)
        computes the same F1 on its binned curve, whose thresholds are also lower bin edges
        counted with ``score >= threshold`` (``np.histogram`` bins are ``[e_i, e_{i+1})``), and
        takes ``np.nanargmax``, the same tie rule. Its component metrics then use this
        ``best_f1_threshold`` with the strict rule ``anomaly_p > thresh_p``
        (``metrics/instance_segmentation.py: default_instancer``), which drops pixels lying
        exactly on the edge; :class:`~owsbench.metrics.components.ComponentMetric` uses
        ``>=``, consistent with this F1 (pass ``np.nextafter(threshold, np.inf)`` to it for the
        official strict rule).
        """
        edges, tp, fp = self._cumulative()
        if not edges.size or not tp[-1]:
            return float("nan"), float("nan")
        f1 = 2 * tp / (tp + fp + tp[-1])  # 2 TP + FP + FN = TP + FP + P
        k = int(np.argmax(f1))
        return float(f1[k]), float(edges[k])

    def __repr__(self) -> str:
        return (
            f"AnomalyMetric(bits={self.bits}, positives={self.num_positives}, "
            f"negatives={self.num_negatives})"
        )


class _Work:
    """Reusable per-call buffers for one converted piece."""

    def __init__(self, n: int) -> None:
        self.bits = np.empty(n, np.uint32)
        self.u8 = np.empty(n, np.uint8)


def _flat_inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and type-check scores (real numbers) and labels (integers or booleans)."""
    s, y = as_numpy(scores), as_numpy(labels)
    if s.shape != y.shape:
        raise ValueError(f"scores shape {s.shape} != labels shape {y.shape}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    if y.dtype.kind not in "biu":
        raise ValueError(f"labels must be integers (0, 1, 255), got dtype {y.dtype}")
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    return s.reshape(-1), y.reshape(-1)


LABEL_ERROR = "labels must be 0 (inlier), 1 (anomaly) or 255 (void)"


def _uint8_labels(y: np.ndarray, work: _Work) -> np.ndarray:
    """``y`` as uint8 (copied into the work buffer unless it is uint8); raise when a label is
    outside 0..255 (the kernel checks the values)."""
    if y.dtype == np.uint8:
        return y
    if y.min() < 0 or y.max() > 255:
        raise ValueError(LABEL_ERROR)
    out = work.u8[: y.size]
    np.copyto(out, y, casting="unsafe")
    return out


def _score_bits(s: np.ndarray, work: _Work) -> np.ndarray:
    """The float32 bit patterns of ``s`` (a view of float32 scores; others converted into the
    work buffer, float64 beyond the float32 range becoming +-inf)."""
    if s.dtype == np.float32:
        return s.view(np.uint32)
    out = work.bits[: s.size]
    with np.errstate(over="ignore"):
        np.add(s, np.float32(0.0), out=out.view(np.float32), casting="same_kind")
    return out
