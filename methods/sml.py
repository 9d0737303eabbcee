"""Standardized Max Logits (SML; Jung et al., "Standardized Max Logits: A Simple yet Effective
Approach for Identifying Unexpected Road Obstacles in Urban-Scene Segmentation", ICCV 2021).

Source: ``shjung13/Standardized-max-logits`` (HEAD ``c52a513``): ``calculate_statistics.py``
(class statistics), ``network/deepv3.py`` (score, ``find_boundaries``, ``expand_boundaries``,
``BoundarySuppressionWithSmoothing``), ``eval.py`` (anomaly = ``-1 *`` score); the morphology is
that of the kornia commit the repository pins (``af948c5``,
``kornia/morphology/basic_operators.py``).

Pipeline, for logits ``z`` ``(B, K, H, W)``, max logit ``L(p) = max_c z_c(p)`` and predicted class
``c(p) = argmax_c z_c(p)``:

1. statistics over the training split, grouped by predicted class:
   ``mu_c = mean{L(p) : c(p) = c}``, ``var_c`` = the unbiased variance of the same set;
2. standardisation ``SML(p) = (L(p) - mu_{c(p)}) / sqrt(var_{c(p)})`` (a confidence);
3. iterative boundary suppression (``suppress_boundaries``);
4. dilated Gaussian smoothing (``dilated_smoothing``);
5. anomaly score ``-SML_pp`` (higher = more anomalous).

All maps are computed with ``max_pool2d`` and sums of shifted views (no ``conv2d``), on whatever
device the input is on: the arithmetic is exact float32 on every device (no TF32, no algorithm
choice by cuDNN) and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from owsbench.checks import Range
from owsbench.datasets.base import Split
from owsbench.errors import BadInput
from owsbench.methods.base import (
    FitContext,
    PosthocMethod,
    SegmenterOutput,
)
from owsbench.methods.nn.frozen import visit_frozen_outputs

VAR_FLOOR = 1e-12  # lower bound on a class variance before dividing by its square root


class SMLStatistics:
    """Streaming per-predicted-class mean and unbiased variance of the max logit.

    Each ``update`` reduces one batch to per-class ``(count, mean, M2)`` (``M2`` = sum of squared
    deviations from the mean) in float64 and merges it into the running totals with the parallel
    formula of Chan, Golub & LeVeque (1979): for parts ``a`` and ``b`` with ``d = mean_b - mean_a``,
    ``n = n_a + n_b``, ``mean = mean_a + d n_b / n``, ``M2 = M2_a + M2_b + d^2 n_a n_b / n``.
    Two accumulators over disjoint data therefore ``merge`` into the accumulator of their union.
    The per-class reductions are plain masked sums (no atomic scatter), so repeated runs on one
    device give identical results; the running totals live on the CPU.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.count: torch.Tensor | None = None  # (K,) float64
        self.mean: torch.Tensor | None = None  # (K,) float64
        self.m2: torch.Tensor | None = None  # (K,) float64

    def update(self, logits: torch.Tensor) -> None:
        """Add the pixels of logits ``(B, K, H, W)``, grouped by their argmax class."""
        num_classes = logits.shape[1]
        max_logit, pred = logits.detach().max(dim=1)
        values = max_logit.flatten().to(torch.float64)
        pred = pred.flatten()
        count, mean, m2 = (torch.zeros(num_classes, dtype=torch.float64) for _ in range(3))
        for c in pred.unique().tolist():
            members = values[pred == c]
            class_mean = members.mean()
            count[c] = members.numel()
            mean[c] = class_mean.item()
            m2[c] = (members - class_mean).square().sum().item()
        part = SMLStatistics(num_classes)
        part.count, part.mean, part.m2 = count, mean, m2
        self.merge(part)

    def merge(self, other: SMLStatistics) -> None:
        """Fold ``other`` (statistics over disjoint pixels) into this accumulator."""
        if other.count is None:
            return
        if self.num_classes is not None and other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.num_classes = other.num_classes
        if self.count is None:
            self.count, self.mean, self.m2 = (
                t.clone() for t in (other.count, other.mean, other.m2)
            )
            return
        total = self.count + other.count
        weight = other.count / total.clamp_min(1.0)  # n_b / n, 0 where both are empty
        delta = other.mean - self.mean
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + other.m2 + delta.square() * self.count * weight
        self.count = total

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class ``(mean, var)``, each ``(K,)`` float64 on the CPU.

        Fallbacks instead of the NaN the official code yields: a class never predicted gets the
        mean and variance of all pixels pooled; a class predicted at exactly one pixel keeps its
        mean and gets the pooled variance.
        """
        if self.count is None or self.count.sum() < 2:
            raise RuntimeError("SML statistics need at least two pixels; none or one was seen")
        n = self.count.sum()
        pooled_mean = (self.count * self.mean).sum() / n
        pooled_m2 = self.m2.sum() + (self.count * (self.mean - pooled_mean).square()).sum()
        pooled_var = pooled_m2 / (n - 1)
        mean = torch.where(self.count > 0, self.mean, pooled_mean)
        var = torch.where(self.count > 1, self.m2 / (self.count - 1).clamp_min(1.0), pooled_var)
        return mean, var


def standardized_max_logit(
    logits: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> torch.Tensor:
    """SML confidence ``(L(p) - mu_c) / sqrt(var_c)`` with ``c = argmax_k z_k(p)``: ``(B, H, W)``.

    ``logits``: ``(B, K, H, W)``; ``mean``, ``var``: ``(K,)`` class statistics of the max logit.
    """
    return standardized_of(SegmenterOutput(logits), mean, var)


def standardized_of(
    outputs: SegmenterOutput, mean: torch.Tensor, var: torch.Tensor
) -> torch.Tensor:
    """:func:`standardized_max_logit` of a segmenter output (its shared ``class_max``).
    Variances are floored at ``VAR_FLOOR`` so a degenerate class cannot divide by zero."""
    num_classes = outputs.logits.shape[1]
    if mean.shape != (num_classes,) or var.shape != (num_classes,):
        raise ValueError(
            f"statistics of shape {tuple(mean.shape)}/{tuple(var.shape)} "
            f"do not match {num_classes} classes"
        )
    max_logit, pred = outputs.class_max()
    mean = mean.to(max_logit)
    std = var.to(max_logit).clamp_min(VAR_FLOOR).sqrt()
    return (max_logit - mean[pred]) / std[pred]


def _dilate_cross(x: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation of ``(B, 1, H, W)`` by the 3x3 cross; pixels outside are ignored.

    The maximum of the pixel and its four neighbours, taken over shifted views in place (a max
    is exact, so this equals ``max_pool2d`` with (3, 1) and (1, 3) windows, and is faster)."""
    out = x.clone()
    torch.maximum(out[..., 1:, :], x[..., :-1, :], out=out[..., 1:, :])
    torch.maximum(out[..., :-1, :], x[..., 1:, :], out=out[..., :-1, :])
    torch.maximum(out[..., :, 1:], x[..., :, :-1], out=out[..., :, 1:])
    torch.maximum(out[..., :, :-1], x[..., :, 1:], out=out[..., :, :-1])
    return out


def boundary_mask(pred_classes: torch.Tensor, erosion_pad: float | None = None) -> torch.Tensor:
    """Class boundaries ``dilate(c, 3x3 cross) != erode(c, 3x3 square)``: bool ``(B, H, W)``.

    The class map ``(B, H, W)`` is treated as a float grey-level image (dilation = max over the
    structuring element, erosion = min), as ``find_boundaries`` does with kornia.

    Image border: ``erosion_pad=None`` ignores pixels outside the image in both operations
    (kornia's ``border_type="geodesic"``, its default since 0.5.4). The kornia commit pinned by the
    official requirements (``af948c5``) instead zero-pads the dilation (the same thing for class ids
    >= 0) but pads the erosion with the constant 1, so border pixels whose class id is >= 2 are
    always boundaries there; ``erosion_pad=1.0`` reproduces that.
    """
    labels = pred_classes[:, None].float()
    dilated = _dilate_cross(labels)
    if erosion_pad is not None:
        labels = F.pad(labels, (1, 1, 1, 1), value=erosion_pad)
    eroded = -F.max_pool2d(-labels, 3, stride=1, padding=1 if erosion_pad is None else 0)
    return (dilated != eroded)[:, 0]


def _sum3x3_replicate(x: torch.Tensor) -> torch.Tensor:
    """Sum of each 3x3 neighbourhood of ``(B, 1, H, W)``, with replication padding of 1 (the nine
    shifted views added in row-major order, accumulated in place)."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return _accumulate(
        padded[..., i : i + height, j : j + width] for i in range(3) for j in range(3)
    )


def _accumulate(terms: Iterator[torch.Tensor]) -> torch.Tensor:
    """``t_1 + t_2 + ... + t_n`` added left to right into one buffer (the rounding of Python's
    ``sum`` over the same terms, up to the sign of an all-zero sum)."""
    total = next(terms).clone()
    for term in terms:
        total += term
    return total


def suppress_boundaries(
    score: torch.Tensor,
    pred_classes: torch.Tensor,
    width: int = 4,
    iterations: int = 4,
    erosion_pad: float | None = None,
) -> torch.Tensor:
    """Iterative boundary suppression of SML (``BoundarySuppressionWithSmoothing``, stage 1).

    ``score``: ``(B, H, W)``; ``pred_classes``: ``(B, H, W)`` class ids. With ``B`` the boundary
    mask of ``pred_classes`` (``boundary_mask``) and ``D = width / iterations``, iteration
    ``i = 0..iterations-1`` uses the radius ``r_i = width - D i - 1`` (``r = 0`` in the last
    iteration or when ``width = 0``), ``M_i = B`` dilated by the diamond of radius ``r_i`` and
    ``N_i = 1 - M_i``, and replaces the score at every pixel of ``M_i`` by the mean of the scores of
    the ``N_i`` pixels in its 3x3 neighbourhood (replication padding); a pixel with no ``N_i``
    neighbour keeps its value, and pixels outside ``M_i`` never change.
    """
    if iterations < 0 or width < 0:
        raise ValueError(f"width and iterations must be >= 0, got {width} and {iterations}")
    if iterations == 0:
        return score
    if width % iterations:
        raise ValueError(f"width {width} is not a multiple of iterations {iterations}")
    step = width // iterations
    # a diamond of radius H + W - 2 reaches every pixel from any pixel: larger radii give the
    # same mask, so they are clipped (exact; a huge width cannot make the loop run for ever)
    saturation = sum(score.shape[-2:]) - 2
    boundaries = boundary_mask(pred_classes, erosion_pad)[:, None].to(score.dtype)
    out = score[:, None]
    for i in range(iterations):
        radius = 0 if width == 0 or i == iterations - 1 else width - step * i - 1
        radius = min(radius, saturation)
        expanded = boundaries
        for _ in range(radius):  # r dilations by the cross = one dilation by the radius-r diamond
            expanded = _dilate_cross(expanded)
        keep = 1.0 - expanded
        total = _sum3x3_replicate(out * keep)
        count = _sum3x3_replicate(keep)
        average = torch.where(count > 0, total / count.clamp_min(1.0), out)
        out = torch.where(expanded > 0, average, out)
    return out[:, 0]


def _gaussian_1d(kernel_size: int, sigma: float) -> list[float]:
    """Normalised 1-D Gaussian ``g_i ~ exp(-(i - (k-1)/2)^2 / (2 sigma^2))``, ``i = 0..k-1``."""
    centre = (kernel_size - 1) / 2
    weights = [math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    return [w / sum(weights) for w in weights]


def dilated_smoothing(
    score: torch.Tensor, kernel_size: int = 7, dilation: int = 6, sigma: float = 1.0
) -> torch.Tensor:
    """Dilated Gaussian smoothing of SML (``BoundarySuppressionWithSmoothing``, stage 2).

    ``out(p) = sum_{i,j} w_ij s(p + dilation (i - k//2, j - k//2))`` over ``(B, H, W)`` scores, with
    ``w = g g^T`` the normalised ``k x k`` Gaussian of standard deviation ``sigma`` (``g`` as in
    ``_gaussian_1d``) and replication padding of ``(k // 2) * dilation``; the output has the input's
    size. Evaluated as two separable passes (the same sums up to float rounding).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if dilation < 1 or sigma <= 0:
        raise ValueError(f"dilation must be >= 1 and sigma > 0, got {dilation} and {sigma}")
    height, width = score.shape[-2:]
    weights = _gaussian_1d(kernel_size, sigma)
    pad = (kernel_size // 2) * dilation
    padded = F.pad(score[:, None], (pad, pad, pad, pad), mode="replicate")[:, 0]
    rows = _accumulate(
        w * padded[:, i * dilation : i * dilation + height] for i, w in enumerate(weights)
    )
    return _accumulate(
        w * rows[..., j * dilation : j * dilation + width] for j, w in enumerate(weights)
    )


class SML(PosthocMethod):
    """Standardized Max Logits (Jung et al., ICCV 2021); anomaly = ``-SML_pp``.

    ``SML(p) = (max_c z_c(p) - mu_{c(p)}) / sqrt(var_{c(p)})`` with per-predicted-class statistics
    of the max logit over the training split, followed by iterative boundary suppression and
    dilated Gaussian smoothing; the score is negated, as the official ``eval.py`` does. See the
    module docstring for the sources and the functions above for each stage.

    Deviations from the official code:

    - statistics over the whole train split (or its first ``ctx.max_stat_frames`` frames), one pass
      without augmentation, at the logits' resolution; the official ``calculate_statistics.py``
      uses only the first 50 batches (4 crops each) of the augmented train loader (random scale
      0.5-2, 768 crops, flip, colour jitter, blur, class-uniform sampling);
    - statistics are merged per batch in float64 (``SMLStatistics``) rather than ``torch.var``
      over all max logits in float32 (equal up to rounding); a class never predicted gets the
      pooled mean and variance and a class predicted once the pooled variance, where the official
      code produces NaN; variances are floored at ``VAR_FLOOR``;
    - the boundary erosion ignores pixels outside the image by default; ``erosion_pad=1.0``
      reproduces the pinned kornia's constant-1 padding (see ``boundary_mask``);
    - boundary suppression and smoothing run at the logits' resolution; the official model
      upsamples its logits to the input size first, which the same kernels then match only for a
      segmenter that returns full-resolution logits (the smp segmenters do);
    - the smoothing kernel size and sigma are configurable (the official code fixes a 7x7 Gaussian
      with sigma 1 and padding ``3 * dilation``; the defaults reproduce it).
    """

    @dataclass(frozen=True)
    class Config:
        """SML hyperparameters (defaults = the official ones).

        ``erosion_pad``: ``None`` ignores the outside of the image in the boundary erosion;
        ``1.0`` mirrors the kornia commit pinned by the official code (see ``boundary_mask``).
        ``stat_batch_size``: frames per forward pass while gathering statistics.
        """

        boundary_width: Annotated[int, Range(ge=0, le=4096)] = 4
        boundary_iterations: Annotated[int, Range(ge=0, le=64)] = 4
        smoothing_kernel: Annotated[int, Range(ge=1, le=255, odd=True)] = 7
        smoothing_dilation: Annotated[int, Range(ge=1, le=64)] = 6
        smoothing_sigma: Annotated[float, Range(gt=0, le=1000)] = 1.0
        suppress_boundaries: bool = True
        smooth: bool = True
        stat_batch_size: Annotated[int, Range(ge=1, le=4096)] = 8
        erosion_pad: float | None = None

        def __post_init__(self) -> None:
            if self.boundary_iterations > 0 and self.boundary_width % self.boundary_iterations:
                raise BadInput(
                    f"sml.boundary_width must be a multiple of sml.boundary_iterations "
                    f"(got {self.boundary_width} and {self.boundary_iterations})"
                )

    name = "sml"
    summary = "standardized max logits + boundary suppression, smoothing"
    needs_fit = True

    def __init__(self, config: Any | None = None, segmenter: torch.nn.Module | None = None) -> None:
        super().__init__(config, segmenter)
        self.mean: torch.Tensor | None = None  # (K,) float64
        self.var: torch.Tensor | None = None  # (K,) float64

    def fit(self, train: Split, ctx: FitContext) -> None:
        """Gather the per-predicted-class max-logit statistics over ``train`` (no augmentation)."""
        if self.segmenter is None:
            raise RuntimeError(f"{self.name}: no segmenter attached")
        stats = SMLStatistics()
        visit_frozen_outputs(
            self.segmenter, train, self.config.stat_batch_size, ctx.max_stat_frames, ctx.device,
            lambda outputs: stats.update(outputs.logits), ctx.progress, "sml statistics",
        )  # fmt: skip
        self.mean, self.var = stats.compute()

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.var is None:
            raise RuntimeError(f"{self.name}: no class statistics; call fit() or load_state_dict()")
        return self.mean, self.var

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        mean, var = self._statistics()
        cfg = self.config
        confidence = standardized_of(outputs, mean, var)
        if cfg.suppress_boundaries:
            confidence = suppress_boundaries(
                confidence,
                outputs.class_max()[1],
                cfg.boundary_width,
                cfg.boundary_iterations,
                cfg.erosion_pad,
            )
        if cfg.smooth:
            confidence = dilated_smoothing(
                confidence, cfg.smoothing_kernel, cfg.smoothing_dilation, cfg.smoothing_sigma
            )
        return -confidence

    def state_dict(self) -> dict[str, Any]:
        mean, var = self._statistics()
        return {"mean": mean.clone(), "var": var.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean, var = state["mean"], state["var"]
        if mean.ndim != 1 or mean.shape != var.shape:
            raise ValueError(f"sml: bad statistics shapes {tuple(mean.shape)}/{tuple(var.shape)}")
        self.mean = mean.detach().to("cpu", torch.float64).clone()
        self.var = var.detach().to("cpu", torch.float64).clone()
