"""FRE: Feature Reconstruction Error over a segmenter's features (per-pixel PCA subspace).

Method: Ndiour, Ahuja, Genc & Tickoo (Intel Labs), "FRE: A Fast Method for Anomaly Detection and
Segmentation" (BMVC 2023, arXiv 2211.12650), building on arXiv 2012.04250 and 2203.10422.
Sources: ``IntelLabs/dfm`` (``run_mvtec.py``: PCA keeping 97 % of the variance, ``--pca 0.97``)
and ``openvinotoolkit/anomalib`` ``src/anomalib/models/image/fre/torch_model.py`` (FRE map).
The road-scene adaptation used here is derived (no public source names a "DeepLabV3+ with FRE"
method); its deviations from the sources are listed below.

Fit (in-distribution data only): feature vectors ``u in R^C`` of one segmenter layer at every
pixel of the training frames (a bounded, seeded random subsample) define a linear subspace by
PCA: mean ``m`` and the ``k`` leading principal directions ``W`` (``k x C``, orthonormal rows),
``k`` the smallest count keeping more than ``variance`` (0.97) of the total variance.

Score, per feature pixel ``p``: the reconstruction ``u_hat = m + W^T W (u - m)`` and

    FRE(p) = ||u(p) - u_hat(p)||^2 / C

(the paper's channel mean of the squared error; anomalib's channel sum differs only by the
factor ``C``). The map is upsampled bilinearly to the logits' resolution (see
``features_to_logits``); several layers give the sum of their maps. Higher = more anomalous.

Deliberate deviations from the sources:

- one subspace per layer shared by all pixel positions (``u`` is one pixel's C-vector), not
  anomalib's / dfm's image-level subspace of the whole flattened ``C x H x W`` map: road scenes are
  not spatially aligned like MVTec objects;
- features come from the benchmark's own segmenter trained on the training split (DeepLabV3+
  ``"decoder"`` = ASPP-fused decoder output before the head, 256-d for ResNet-18; ``"encoder"`` =
  deepest encoder stage), not an ImageNet-pretrained classifier's ``layer3``; no average pooling;
- the PCA is fitted on at most ``max_pixels`` vectors per layer, drawn uniformly at random per
  frame (seeded) from the first ``ctx.max_stat_frames`` training frames, without augmentation;
- PCA only (dfm's option); anomalib's tied linear autoencoder is not implemented;
- several layers are summed without per-layer standardisation (the optional variant in 6.2 is
  not implemented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
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

# ---------------------------------------------------------------- feature alignment


def pad_multiple(segmenter: torch.nn.Module | None) -> int | None:
    """The multiple a segmenter pads its input to (``Segmenter.output_stride``), when known."""
    value = getattr(segmenter, "output_stride", None)
    return int(value) if value else None


def padded_size(
    size: tuple[int, int], feature_size: tuple[int, int], multiple: int | None
) -> tuple[int, int]:
    """The padded input extent that features of ``feature_size`` cover, for logits of ``size``.

    Segmenters replicate-pad their (scaled) input at the bottom and right to a multiple of
    ``multiple`` and return features over that padded extent but logits cropped to ``size``
    (``segmenters/inputs.py``). With ``multiple`` unknown, the stride is taken as the smallest
    power of two ``s`` with ``feature_size * s >= size`` in both dimensions.
    """
    height, width = size
    if multiple is not None:
        return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    stride = 1
    while feature_size[0] * stride < height or feature_size[1] * stride < width:
        stride *= 2
    return feature_size[0] * stride, feature_size[1] * stride


def features_to_logits(
    maps: torch.Tensor, size: tuple[int, int], multiple: int | None
) -> torch.Tensor:
    """Bilinearly upsample ``(B, C, h, w)`` maps over the padded extent, crop to ``size``.

    This is what the segmentation head does to its own decoder features (upsample, then the
    logits are cropped to the image), so a map lines up with the logits pixel for pixel.
    """
    target = padded_size(size, tuple(maps.shape[-2:]), multiple)
    if tuple(maps.shape[-2:]) != target:
        maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return maps[..., : size[0], : size[1]]


def valid_feature_extent(
    size: tuple[int, int], feature_size: tuple[int, int], multiple: int | None
) -> tuple[int, int]:
    """Rows and columns of a feature map that overlap the image (not only its padding)."""
    pad_h, pad_w = padded_size(size, feature_size, multiple)
    rows = math.ceil(size[0] * feature_size[0] / pad_h)
    cols = math.ceil(size[1] * feature_size[1] / pad_w)
    return max(1, min(rows, feature_size[0])), max(1, min(cols, feature_size[1]))


# ---------------------------------------------------------------- subspace


def fit_pca(samples: np.ndarray, variance: float, seed: int) -> tuple[np.ndarray, ...]:
    """PCA of ``samples`` ``(N, C)`` keeping more than ``variance`` of the total variance.

    Returns ``(mean (C,), components (k, C), explained_variance_ratio (k,))`` from
    ``sklearn.decomposition.PCA(n_components=variance)`` (imported here: scoring needs no sklearn).
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=variance, random_state=seed)
    pca.fit(samples)
    return pca.mean_, pca.components_, pca.explained_variance_ratio_


def reconstruction_error(
    features: torch.Tensor, mean: torch.Tensor, components: torch.Tensor
) -> torch.Tensor:
    """``||u - m - W^T W (u - m)||^2 / C`` per pixel of ``features`` ``(B, C, h, w)``.

    Returns ``(B, h, w)``. ``mean``: ``(C,)``; ``components``: ``(k, C)`` with orthonormal rows.
    The residual is formed explicitly (not ``||v||^2 - ||W v||^2``, which cancels catastrophically
    near the subspace).
    """
    u = features.to(torch.promote_types(features.dtype, torch.float32)).movedim(1, -1)
    if u.shape[-1] != mean.shape[0]:
        raise ValueError(f"features have {u.shape[-1]} channels, the subspace {mean.shape[0]}")
    mean, components = mean.to(u), components.to(u)
    centred = u - mean
    residual = centred - (centred @ components.T) @ components
    return residual.square().mean(dim=-1)


class FRE(PosthocMethod):
    """Feature reconstruction error of segmenter features w.r.t. a per-pixel PCA subspace.

    See the module docstring for the formula, the sources and the deviations.
    """

    @dataclass(frozen=True)
    class Config:
        """FRE hyperparameters.

        ``layers``: segmenter feature names (``SegmenterOutput.features``); their maps are summed.
        ``variance``: fraction of variance the subspace keeps (``IntelLabs/dfm``: 0.97).
        ``max_pixels``: at most this many feature vectors per layer go into the PCA.
        ``stat_batch_size``: frames per forward pass while gathering features.
        """

        layers: tuple[str, ...] = ("decoder",)
        variance: Annotated[float, Range(gt=0, lt=1)] = 0.97
        max_pixels: Annotated[int, Range(ge=1, le=1_000_000)] = 200_000
        stat_batch_size: Annotated[int, Range(ge=1, le=4096)] = 8

    name = "fre"
    summary = "feature reconstruction error of a per-pixel PCA subspace of segmenter features"
    needs_fit = True

    def __init__(self, config: Any | None = None, segmenter: torch.nn.Module | None = None) -> None:
        super().__init__(config, segmenter)
        cfg = self.config
        if not cfg.layers:
            raise BadInput("fre: layers must name at least one feature map")
        if cfg.max_pixels < 1 or cfg.stat_batch_size < 1:
            raise BadInput("fre: max_pixels and stat_batch_size must be >= 1")
        # per layer: {"mean": (C,), "components": (k, C)} float32 on the CPU
        self.subspaces: dict[str, dict[str, torch.Tensor]] = {}
        self.fit_report: dict[str, Any] = {}
        self._device_cache: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- fit --------------------------------------------------------------------------------
    def _layer(self, outputs: SegmenterOutput, layer: str) -> torch.Tensor:
        if layer not in outputs.features:
            raise BadInput(
                f"fre: the segmenter has no feature {layer!r}; it has "
                f"{', '.join(sorted(outputs.features)) or 'none'}"
            )
        return outputs.features[layer]

    def fit(self, train: Split, ctx: FitContext) -> None:
        """Subsample feature vectors of ``train`` per layer and fit one PCA per layer."""
        if self.segmenter is None:
            raise RuntimeError(f"{self.name}: no segmenter attached")
        cfg = self.config
        frames = len(train) if ctx.max_stat_frames is None else min(ctx.max_stat_frames, len(train))
        if frames == 0:
            raise BadInput("fre: empty training split")
        # per-frame quotas summing to max_pixels (a frame with fewer pixels gives all it has)
        quotas = [cfg.max_pixels // frames + (i < cfg.max_pixels % frames) for i in range(frames)]
        rng = np.random.default_rng(ctx.seed)
        buffers: dict[str, np.ndarray] = {}
        filled = dict.fromkeys(cfg.layers, 0)
        multiple = pad_multiple(self.segmenter)
        index = 0

        def gather(outputs: SegmenterOutput) -> None:
            nonlocal index
            size = tuple(outputs.logits.shape[-2:])
            for b in range(outputs.logits.shape[0]):
                for layer in cfg.layers:
                    feats = self._layer(outputs, layer)[b]
                    rows, cols = valid_feature_extent(size, tuple(feats.shape[-2:]), multiple)
                    vectors = feats[:, :rows, :cols].reshape(feats.shape[0], -1)
                    take = min(quotas[index], vectors.shape[1])
                    picked = rng.choice(vectors.shape[1], take, replace=False)
                    picked = torch.from_numpy(np.sort(picked)).to(vectors.device)
                    chosen = vectors[:, picked].T.float().cpu().numpy()
                    if layer not in buffers:
                        buffers[layer] = np.empty((cfg.max_pixels, chosen.shape[1]), np.float32)
                    start = filled[layer]
                    buffers[layer][start : start + take] = chosen
                    filled[layer] = start + take
                index += 1

        visit_frozen_outputs(
            self.segmenter, train, cfg.stat_batch_size, ctx.max_stat_frames, ctx.device, gather,
            ctx.progress, "fre features",
        )  # fmt: skip
        self.subspaces = {}
        self._device_cache = {}
        self.fit_report = {}
        for layer in cfg.layers:
            samples = buffers[layer][: filled[layer]]
            if samples.shape[0] < 2:
                raise BadInput(f"fre: only {samples.shape[0]} feature vector(s) of {layer!r}")
            mean, components, ratio = fit_pca(samples, cfg.variance, ctx.seed)
            self.subspaces[layer] = {
                "mean": torch.from_numpy(np.asarray(mean, np.float32)),
                "components": torch.from_numpy(np.asarray(components, np.float32)),
            }
            self.fit_report[f"fre_{layer}_pixels"] = int(samples.shape[0])
            self.fit_report[f"fre_{layer}_components"] = int(components.shape[0])
            self.fit_report[f"fre_{layer}_variance_kept"] = float(np.sum(ratio))

    # -- score ------------------------------------------------------------------------------
    def _subspace(self, layer: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.subspaces:
            raise RuntimeError(f"{self.name}: no subspace for {layer!r}; call fit() first")
        key = (layer, device)
        if key not in self._device_cache:
            space = self.subspaces[layer]
            self._device_cache[key] = (space["mean"].to(device), space["components"].to(device))
        return self._device_cache[key]

    def score(self, outputs: SegmenterOutput) -> torch.Tensor:
        size = tuple(outputs.logits.shape[-2:])
        multiple = pad_multiple(self.segmenter)
        total = None
        for layer in self.config.layers:
            feats = self._layer(outputs, layer)
            mean, components = self._subspace(layer, feats.device)
            error = reconstruction_error(feats, mean, components)
            error = features_to_logits(error[:, None], size, multiple)[:, 0]
            total = error if total is None else total + error
        return total

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if set(self.subspaces) != set(self.config.layers):
            raise RuntimeError(f"{self.name}: not fitted")
        return {
            "subspaces": {
                layer: {k: v.clone() for k, v in space.items()}
                for layer, space in self.subspaces.items()
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        subspaces = state["subspaces"]
        missing = set(self.config.layers) - set(subspaces)
        if missing:
            raise ValueError(f"fre: state has no subspace for {sorted(missing)}")
        self.subspaces = {}
        for layer in self.config.layers:
            mean, components = subspaces[layer]["mean"], subspaces[layer]["components"]
            if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
                raise ValueError(
                    f"fre: bad subspace shapes {tuple(mean.shape)}/{tuple(components.shape)}"
                )
            self.subspaces[layer] = {
                "mean": mean.detach().to("cpu", torch.float32).clone(),
                "components": components.detach().to("cpu", torch.float32).clone(),
            }
        self._device_cache = {}
