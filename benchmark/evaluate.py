"""Streaming evaluation: one forward pass per batch, every method's metrics updated per frame.

Score maps are bilinearly upsampled to label resolution, class maps by nearest neighbour (the
project conventions, README.md); nothing but the metric states outlives a batch, so memory does
not grow with the split. Before a split, every method's ``start_split`` hook runs (stateful
predictions reset); a method whose prediction has a ``novel_class`` extra (discovered class ids,
-1 = not flagged) also gets a :class:`~owsbench.metrics.DiscoveryMetric`.

Non-finite outputs: every batch, each method's anomaly map (and the semantic logits behind it,
when the group has them) is checked once with ``torch.isfinite(...).all()``; a method with NaN
or ±inf gets ``SplitResult.nonfinite`` = (what, first frame id) and no further metric updates
or observed maps (the executor then writes no row for it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from owsbench.datasets.base import Frame, Split
from owsbench.frame_loader import loaded_batches
from owsbench.methods.base import Method, PosthocMethod, model_input
from owsbench.metrics import AnomalyMetric, DiscoveryMetric, ObjectCompleteness, SemanticMetric
from owsbench.metrics.per_image import PerImageAnomalyMetric
from owsbench.precision import inference_autocast
from owsbench.score_maps import score_map_path, write_score_map


@dataclass
class BatchOutput:
    """A group's predictions for one batch: one class map, one anomaly map per method."""

    semantic: torch.Tensor  # (B, h, w) long
    anomaly: dict[str, torch.Tensor]  # method id -> (B, h, w) float
    # method id -> named extra maps (B, h, w) of its Prediction, e.g. "novel_class"
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    nonfinite_logits: int | None = None  # first batch item whose semantic logits are not finite


@dataclass
class SplitResult:
    """The metric states of one method on one split, and the time spent."""

    anomaly: AnomalyMetric = field(default_factory=AnomalyMetric)
    per_image: PerImageAnomalyMetric | None = None
    semantic: SemanticMetric | None = None
    discovery: DiscoveryMetric | None = None  # when the method returns "novel_class"
    objects: ObjectCompleteness | None = None  # on frames with instance ids (shared, like semantic)
    frames: int = 0
    score_seconds: float = 0.0
    # (what, frame id) of the first non-finite output, e.g. ("anomaly scores", "0003")
    nonfinite: tuple[str, str] | None = None


@dataclass
class SemanticStates:
    """The semantic metric states a group's prediction updates once per frame: the confusion
    matrix and, on frames with instance ids, object completeness."""

    confusion: SemanticMetric
    objects: ObjectCompleteness

    def update(self, pred: torch.Tensor, frame: Frame) -> None:
        """Count ``pred`` (``(H, W)`` class ids on the model's device) against the frame."""
        self.confusion.update(pred, on_device(frame.semantic, pred.device))
        if frame.instances is not None:
            self.objects.update(pred.cpu(), frame.semantic, frame.instances)


class PosthocGroup:
    """A segmenter and the post-hoc methods that are all scored from its one forward pass."""

    def __init__(self, segmenter: torch.nn.Module, methods: dict[str, PosthocMethod]) -> None:
        self.segmenter = segmenter
        self.methods = methods
        self.score_seconds = dict.fromkeys(methods, 0.0)

    def start_split(self) -> None:
        for method in self.methods.values():
            method.start_split()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, precision: str = "fp32") -> BatchOutput:
        with inference_autocast(images.device, precision):
            outputs = self.segmenter(images)
        anomaly = {}
        for method_id, method in self.methods.items():
            start = time.perf_counter()
            anomaly[method_id] = method.score(outputs)
            self.score_seconds[method_id] += time.perf_counter() - start
        return BatchOutput(
            semantic=outputs.class_max()[1],
            anomaly=anomaly,
            nonfinite_logits=first_nonfinite(outputs.logits),
        )


class FrameObserver(Protocol):
    """Sees every labelled frame with each method's score map at label resolution (tensors on
    the model's device: an observer copies to the host only what it keeps)."""

    def observe(
        self, frame: Frame, scores: dict[str, torch.Tensor], semantic: torch.Tensor | None
    ) -> None:
        """``scores``: method id -> ``(H, W)`` anomaly map (empty on frames without anomaly
        labels); ``semantic``: the group's predicted class map (None without semantic labels)."""


class SampleCollector:
    """Keeps the first ``limit`` frames, every method's map and the group's semantic prediction
    (named ``model``, e.g. ``deeplabv3plus (points)``) for the qualitative figures."""

    def __init__(self, limit: int = 4, model: str = "model") -> None:
        self.limit = limit
        self.model = model
        self.frames: list[Frame] = []
        self.scores: dict[str, list[np.ndarray]] = {}
        self.semantic: list[np.ndarray] = []

    def observe(
        self, frame: Frame, scores: dict[str, torch.Tensor], semantic: torch.Tensor | None
    ) -> None:
        if len(self.frames) >= self.limit:
            return
        self.frames.append(frame)
        for method_id, score in scores.items():
            self.scores.setdefault(method_id, []).append(score.cpu().numpy().astype(np.float16))
        if semantic is not None:
            self.semantic.append(semantic.cpu().numpy().astype(np.uint8))

    def arrays(self) -> dict[str, np.ndarray]:
        """``frame_ids``, ``image``, ``anomaly`` (when every frame has it), ``semantic_gt`` and
        ``semantic:<model>`` (when every frame has semantic labels) and ``score:<method>``
        stacked (same sizes)."""
        if not self.frames or len({f.image.shape for f in self.frames}) > 1:
            return {}
        arrays = {
            "frame_ids": np.array([f.frame_id for f in self.frames]),
            "image": np.stack([f.image for f in self.frames]),
        }
        if all(f.anomaly is not None for f in self.frames):
            arrays["anomaly"] = np.stack([f.anomaly for f in self.frames])
        if len(self.semantic) == len(self.frames):
            arrays["semantic_gt"] = np.stack([f.semantic for f in self.frames])
            arrays[f"semantic:{self.model}"] = np.stack(self.semantic)
        return {
            **arrays,
            **{  # a method flagged non-finite stops contributing maps: left out
                f"score:{m}": np.stack(maps)
                for m, maps in self.scores.items()
                if len(maps) == len(self.frames)
            },
        }


class ScoreMapSaver:
    """Writes every map in the SMIYC layout (``owsbench.score_maps``)."""

    def __init__(self, root: Path, dataset: str) -> None:
        self.root, self.dataset = root, dataset

    def observe(
        self, frame: Frame, scores: dict[str, torch.Tensor], semantic: torch.Tensor | None
    ) -> None:
        for method_id, score in scores.items():
            write_score_map(
                score_map_path(self.root, method_id, self.dataset, frame.frame_id),
                score.cpu().numpy(),
            )


class TrainedGroup:
    """A trained method: its own model, predicted on its own (``Method.predict``)."""

    def __init__(self, method_id: str, method: Method) -> None:
        self.methods = {method_id: method}
        self.score_seconds = {method_id: 0.0}

    def start_split(self) -> None:
        for method in self.methods.values():
            method.start_split()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, precision: str = "fp32") -> BatchOutput:
        ((method_id, method),) = self.methods.items()
        start = time.perf_counter()
        with inference_autocast(images.device, precision):
            prediction = method.predict(images)
        self.score_seconds[method_id] += time.perf_counter() - start
        logits = prediction.logits
        return BatchOutput(
            semantic=prediction.semantic,
            anomaly={method_id: prediction.anomaly},
            extras={method_id: prediction.extras},
            nonfinite_logits=first_nonfinite(logits) if logits is not None else None,
        )


ModelGroup = PosthocGroup | TrainedGroup


def first_nonfinite(maps: torch.Tensor) -> int | None:
    """The first batch index of ``maps`` (``(B, ...)``) holding NaN or ±inf, None when all are
    finite.

    One float32 sum per call: a NaN or ±inf makes the sum non-finite, and a finite sum means every
    element is finite (about 15x faster than ``isfinite().all()`` on a CPU); only a non-finite sum
    (a non-finite element, or an overflow of large finite ones) is checked element-wise."""
    if not maps.is_floating_point() or bool(torch.isfinite(maps.sum(dtype=torch.float32))):
        return None
    if bool(torch.isfinite(maps).all()):
        return None
    bad = ~torch.isfinite(maps).flatten(1).all(1)
    return int(bad.nonzero()[0, 0])


def flag_nonfinite(
    output: BatchOutput, frames: list[Frame], results: dict[str, SplitResult]
) -> None:
    """Record on each method's result the first frame whose logits or anomaly map is not
    finite (methods already flagged are not checked again)."""
    for method_id, scores in output.anomaly.items():
        result = results[method_id]
        if result.nonfinite is not None:
            continue
        if output.nonfinite_logits is not None:
            result.nonfinite = ("semantic logits", frames[output.nonfinite_logits].frame_id)
        elif (b := first_nonfinite(scores)) is not None:
            result.nonfinite = ("anomaly scores", frames[b].frame_id)


def to_label_size(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``(B, h, w)`` maps to ``size``: bilinear for scores, nearest for class ids (on the
    maps' device)."""
    if tuple(maps.shape[-2:]) != size:
        if mode == "nearest":
            maps = F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].long()
        else:
            maps = F.interpolate(maps[:, None].float(), size=size, mode="bilinear")[:, 0]
    return maps


def on_device(labels: np.ndarray, device: torch.device) -> np.ndarray | torch.Tensor:
    """``labels`` where the metrics meet the maps: as they are on a CPU, else copied to
    ``device`` (one small uint8 copy per frame instead of every float map to the host)."""
    return labels if device.type == "cpu" else torch.from_numpy(labels).to(device)


def measure_frame(
    output: BatchOutput,
    b: int,
    frame: Frame,
    results: dict[str, SplitResult],
    semantic: SemanticStates,
    observers: tuple[FrameObserver, ...],
) -> bool:
    """Update every metric state with item ``b`` of a batch's output for ``frame`` (maps resized
    to its labels); return whether the frame had semantic labels."""
    labels = frame.anomaly if frame.anomaly is not None else frame.semantic
    size = labels.shape[-2:] if labels is not None else frame.image.shape[:2]
    pred = None
    if frame.semantic is not None:
        pred = to_label_size(output.semantic[b : b + 1], size, "nearest")[0]
        semantic.update(pred, frame)
    device = output.semantic.device
    for result in results.values():
        result.frames += 1
    if frame.anomaly is None:
        for observer in observers:
            observer.observe(frame, {}, pred)
        return frame.semantic is not None
    maps = {
        method_id: to_label_size(scores[b : b + 1], size, "bilinear")[0]
        for method_id, scores in output.anomaly.items()
        if results[method_id].nonfinite is None
    }
    anomaly = on_device(frame.anomaly, device)
    for method_id, score in maps.items():
        results[method_id].anomaly.update(score, anomaly)
        if results[method_id].per_image is not None:
            results[method_id].per_image.update(score, anomaly)
    for method_id, extras in output.extras.items():
        if "novel_class" in extras and method_id in maps:
            novel = to_label_size(extras["novel_class"][b : b + 1], size, "nearest")[0]
            if results[method_id].discovery is None:
                results[method_id].discovery = DiscoveryMetric()
            results[method_id].discovery.update(novel, anomaly)
    for observer in observers:
        observer.observe(frame, maps, pred)
    return frame.semantic is not None


def evaluate_split(
    group: ModelGroup,
    split: Split,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
    desc: str = "evaluate",
    per_image_fpr_rule: str | None = None,
    observers: tuple[FrameObserver, ...] = (),
    workers: int = 0,
    precision: str = "fp32",
) -> tuple[dict[str, SplitResult], float]:
    """Run ``group`` over ``split``; return per-method metric states and the wall seconds.

    With ``per_image_fpr_rule`` set, per-frame metrics are kept too (per-image-mean aggregation).
    ``workers`` processes decode the frames ahead of the model (``owsbench.frame_loader``; the
    order and the results do not depend on it); ``precision`` is the forward's autocast
    (``owsbench.precision``; scores and metrics stay float32).
    """
    results = {
        method_id: SplitResult(
            per_image=PerImageAnomalyMetric(per_image_fpr_rule) if per_image_fpr_rule else None
        )
        for method_id in group.methods
    }
    group.score_seconds = dict.fromkeys(group.methods, 0.0)
    group.start_split()
    semantic = SemanticStates(SemanticMetric(num_classes), ObjectCompleteness(num_classes))
    has_semantic = False
    start = time.perf_counter()
    bar = tqdm(total=len(split), desc=desc, unit="frame", disable=not progress, leave=False)
    batches = loaded_batches(split, batch_size, workers, pin_memory=device.type == "cuda")
    for runs in batches:
        for run, pixels in runs:
            output = group.forward(model_input(pixels, device), precision)
            flag_nonfinite(output, run, results)
            for b, frame in enumerate(run):
                has_semantic |= measure_frame(output, b, frame, results, semantic, observers)
            bar.update(len(run))
    bar.close()
    for method_id, result in results.items():
        result.semantic = semantic.confusion if has_semantic else None
        result.objects = semantic.objects if semantic.objects.counts.any() else None
        result.score_seconds = group.score_seconds[method_id]
    return results, time.perf_counter() - start
