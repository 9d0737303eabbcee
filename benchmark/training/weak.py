"""Weak supervisions of a segmenter: image tags, points, scribbles, boxes and ``+`` hybrids.

A weak supervision is a list of *parts* (``WeakPart``), one per kind of annotation; each adds a
target to the batch (a label map that the shared augmentation moves with the image, or an
image-level target) and one named loss term; the total is ``sum_r w_r L_r`` with the weights
of ``SegmenterConfig.supervision_weights`` (1 for a part they leave out). The weak label maps
are derived once from the training split's dense labels and instance ids, seeded by
``weak_label_seed`` and cached (:mod:`owsbench.training.weak_store`); pixels that are void in
the dense labels are never labelled.

- ``points`` (Bearman et al., ECCV 2016, "What's the Point"): one pixel per object instance
  (thing classes) and per connected region (stuff), partial cross-entropy
  ``mean_{p labelled} -log softmax(z_p)_{y_p}`` (unlabelled pixels ignored).
- ``scribbles`` (Lin et al., CVPR 2016, "ScribbleSup", labels synthesised from dense masks):
  the skeleton of each object / region, partial cross-entropy.
- ``boxes`` (Khoreva et al., CVPR 2017, "Simple Does It": the filled-box and Box^i baselines):
  each object's / region's tightest box filled with its class, smaller boxes on top, partial
  cross-entropy; outside the boxes is the dataset's background class or, in road scenes, void.
- ``tags`` alone, two stages (the CAM pipeline of Zhou et al., CVPR 2016 and IRN, Ahn et al.,
  CVPR 2019): (1) a classifier of the segmenter's architecture trained with the multi-label soft
  margin loss on the global average of its logits, ``GAP(z)_k = mean_p z_k(p)``, which is the
  classification head "global pooling + linear" because the segmenter's last layer is linear
  per pixel; (2) its class activation maps ``CAM_k = relu(z_k)`` of the classes present in the
  image, normalised by their maximum, give pseudo-masks: ``argmax_k CAM_k`` where that is at
  least ``cam_threshold``, else the background class (or void); the segmenter is trained on them
  with cross-entropy. Both stages are cached: the classifier in the fit cache, the pseudo-masks
  in the weak-label cache.
- ``tags`` inside a combination (``tags+points``: ``L = L_cls + lambda L_pCE``) is the
  classification loss on the segmenter's own logits, in the same training run.

Deviations, on purpose: the point of a stuff region and of an object is its centroid (or the
interior point farthest from its boundary) rather than a human click; Bearman et al.'s
objectness prior and IRN's affinity refinement of the CAMs are not used (the study measures the
labels, not a refinement pipeline); the classifier is not ImageNet-initialised (no downloads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from owsbench.datasets.base import VOID, Frame, LabelTraits, Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, image_batch
from owsbench.segmenters.base import Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.training import weak_labels as wl
from owsbench.training.batches import Batch, check_label_range
from owsbench.training.losses import labels_at, semantic_ce
from owsbench.training.segmenter_loop import run_supervised
from owsbench.training.supervision import SegmenterSupervision
from owsbench.training.weak_store import WeakLabels, weak_labels

# the config fields that only shape weak labels or the loss mix (not a tag classifier's fit)
WEAK_LABEL_FIELDS = (
    "supervision",
    "supervision_weights",
    "cam_threshold",
    "points_per_object",
    "scribble_length",
    "scribble_thickness",
    "box_inner_fraction",
    "weak_label_seed",
)

# ------------------------------------------------------------------------------ functions


def tag_loss(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin loss of the global average of the logits against the image tags
    ``(B, K)`` in {0, 1}: ``mean_k -(t_k log s(g_k) + (1 - t_k) log(1 - s(g_k)))``,
    ``g = GAP(logits)`` (PyTorch's ``multilabel_soft_margin_loss``)."""
    return F.multilabel_soft_margin_loss(logits.mean(dim=(2, 3)), tags.to(logits.dtype))


def normalised_cams(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Class activation maps ``(K, H, W)`` of one image from its logits: ``relu(z_k)`` divided by
    its maximum over the image (IRN's ``cam / (max + 1e-5)``) for the classes present
    (``tags``, bool ``(K,)``); 0 for the absent ones."""
    cams = F.relu(logits)
    peak = cams.flatten(1).max(dim=1).values[:, None, None]
    return cams / (peak + 1e-5) * tags.to(cams.dtype)[:, None, None]


def cam_pseudo_labels(
    cams: torch.Tensor, threshold: float, background_class: int | None
) -> torch.Tensor:
    """``(H, W)`` pseudo-mask of normalised CAMs ``(K, H, W)``: the class of the largest CAM
    where it is at least ``threshold``, else ``background_class`` or void (uncertain)."""
    score, label = cams.max(dim=0)
    fill = VOID if background_class is None else background_class
    return torch.where(score >= threshold, label, torch.full_like(label, fill))


# ---------------------------------------------------------------------------------- parts


class WeakPart(ABC):
    """One kind of annotation in a weak supervision (module docstring): ``dense`` gives a label
    map per frame (moved with the image by augmentation) or None, ``image_target`` an
    image-level target or None, and ``loss`` the part's term."""

    name: ClassVar[str]
    needs_instances: ClassVar[bool] = False
    has_map: ClassVar[bool] = False  # whether ``dense`` gives a label map per frame

    def __init__(self, config: SegmenterConfig, num_classes: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.store: WeakLabels | None = None
        self.class_weight: torch.Tensor | None = None  # of its CE, set by the supervision

    def prepare(  # noqa: B027 - optional hook
        self, model: Segmenter, train: Split, context: FitContext
    ) -> None:
        """Runs before the loop (derive or load weak labels, fit a first stage)."""

    def dense(self, frame: Frame) -> np.ndarray | None:
        return None if self.store is None else self.store.get(frame.frame_id)

    def image_target(self, frame: Frame) -> np.ndarray | None:
        return None

    @abstractmethod
    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor | None, target: torch.Tensor | None
    ) -> torch.Tensor:
        """The part's loss from the logits, its label maps ``(B, H, W)`` and its target."""

    def report(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        return {f"{self.name}_labelled_fraction": self.store.manifest["labelled_fraction"]}


class TagPart(WeakPart):
    """Image tags and the multi-label soft margin loss on the logits' global average; the tags
    are those of the whole frame, also when training sees a crop of it (as in IRN)."""

    name: ClassVar[str] = "tags"

    def image_target(self, frame: Frame) -> np.ndarray:
        return wl.image_tags(frame.semantic, self.num_classes).astype(np.float32)

    def loss(self, logits, labels, target) -> torch.Tensor:
        return tag_loss(logits, target)


class MapPart(WeakPart):
    """A part trained with partial cross-entropy on weak label maps derived from the dense
    labels (``make``) and cached; ``options`` are the config fields that shape them."""

    needs_instances: ClassVar[bool] = True
    has_map: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()

    def recipe(self) -> dict[str, Any]:
        """What the weak labels depend on besides the training data (their cache key)."""
        return {
            "regime": self.name,
            "options": {k: getattr(self.config, k) for k in self.options},
            "seed": self.config.weak_label_seed,
        }

    def prepare(self, model: Segmenter, train: Split, context: FitContext) -> None:
        traits = context.label_traits
        recipe = self.recipe()

        def make(frame: Frame, rng: np.random.Generator) -> np.ndarray:
            return wl.void_outside(self.make(frame, traits, rng), frame.semantic)

        self.store = weak_labels(
            train, make, recipe, context.cache_dir, context.train_fingerprint, context.progress
        )

    def regions(self, frame: Frame, traits: LabelTraits) -> list[wl.Region]:
        if traits.provides_instances and frame.instances is None:
            raise BadInput(f"{self.name} labels need instance ids; frame {frame.frame_id} has none")
        return wl.regions(frame.semantic, frame.instances, traits.thing_classes)

    @abstractmethod
    def make(self, frame: Frame, traits: LabelTraits, rng: np.random.Generator) -> np.ndarray:
        """The frame's weak label map."""

    def loss(self, logits, labels, target) -> torch.Tensor:
        return semantic_ce(logits, labels_at(labels, logits.shape[-2:]), self.class_weight)


class PointPart(MapPart):
    name: ClassVar[str] = "points"
    options: ClassVar[tuple[str, ...]] = ("points_per_object",)

    def make(self, frame, traits, rng) -> np.ndarray:
        regions = self.regions(frame, traits)
        return wl.point_labels(frame.semantic.shape, regions, self.config.points_per_object, rng)


class ScribblePart(MapPart):
    name: ClassVar[str] = "scribbles"
    options: ClassVar[tuple[str, ...]] = ("scribble_length", "scribble_thickness")

    def make(self, frame, traits, rng) -> np.ndarray:
        cfg = self.config
        return wl.scribble_labels(
            frame.semantic.shape, self.regions(frame, traits), cfg.scribble_length,
            cfg.scribble_thickness, rng,
        )  # fmt: skip


class BoxPart(MapPart):
    name: ClassVar[str] = "boxes"
    options: ClassVar[tuple[str, ...]] = ("box_inner_fraction",)

    def make(self, frame, traits, rng) -> np.ndarray:
        return wl.box_labels(
            frame.semantic.shape, self.regions(frame, traits), self.config.box_inner_fraction,
            traits.background_class,
        )  # fmt: skip


class CamPseudoMaskPart(MapPart):
    """``tags`` alone, stage 2: cross-entropy on the CAM pseudo-masks of a tag classifier fitted
    (stage 1, cached) on the same split (module docstring)."""

    name: ClassVar[str] = "tags"
    needs_instances: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ("cam_threshold",)

    def prepare(self, model: Segmenter, train: Split, context: FitContext) -> None:
        self.classifier, self.classifier_report = fit_tag_classifier(model, train, context)
        self.classifier.to(context.device).eval()
        self.device = context.device
        super().prepare(model, train, context)

    def recipe(self) -> dict[str, Any]:
        """The pseudo-masks depend on the classifier too: its checkpoint's sha256 (None, and
        then never cached, for in-memory splits)."""
        return {**super().recipe(), "classifier": self.classifier_report["tags_classifier_sha256"]}

    @torch.no_grad()
    def make(self, frame, traits, rng) -> np.ndarray:
        images = image_batch([frame.image]).to(self.device)
        logits = self.classifier(images).logits
        logits = F.interpolate(logits, size=frame.semantic.shape, mode="bilinear")[0]
        tags = torch.from_numpy(wl.image_tags(frame.semantic, self.num_classes))
        cams = normalised_cams(logits.float().cpu(), tags)
        return cam_pseudo_labels(cams, self.config.cam_threshold, traits.background_class).numpy()

    def report(self) -> dict[str, Any]:
        return {**super().report(), **self.classifier_report}


def fit_tag_classifier(
    model: Segmenter, train: Split, context: FitContext
) -> tuple[Segmenter, dict[str, Any]]:
    """Stage 1 of ``tags``: a fresh segmenter of ``model``'s class and config trained with
    ``tag_loss`` alone (seeded with ``context.seed``), from the fit cache when the split has a
    fingerprint; returns it and a report (its loss at the end, its checkpoint's sha256)."""
    from owsbench.fits import FitCache, fit_or_load

    config = model.config
    stage = replace(context, validation=None)

    def build() -> Segmenter:
        return type(model)(config, model.num_classes)

    def train_stage(classifier: Segmenter) -> dict[str, Any]:
        supervision = TagClassifierSupervision(classifier, config)
        log, _ = run_supervised(classifier, train, config, stage, supervision, supervision.name)
        return {**log.meta(), "report": {"tags_classifier_final_loss": log.loss[-1]}}

    if context.train_fingerprint is None:
        torch.manual_seed(context.seed)
        classifier = build()
        return classifier, {**train_stage(classifier)["report"], "tags_classifier_sha256": None}
    values = asdict(config)
    recipe = {
        "segmenter": type(model).__name__,
        "config": {k: v for k, v in values.items() if k not in WEAK_LABEL_FIELDS},
        "num_classes": model.num_classes,
        "train": context.train_fingerprint,
        "seed": context.seed,
    }
    cache = FitCache(context.cache_dir)
    classifier, fit = fit_or_load(
        cache, "tags-classifier", recipe, build, train_stage, context.seed
    )
    return classifier, {**fit.meta.get("report", {}), "tags_classifier_sha256": fit.meta["sha256"]}


# ---------------------------------------------------------------------------- supervisions


class WeakSupervision(SegmenterSupervision):
    """A supervision made of weak parts (module docstring). ``alone``: the parts of the regime
    used by itself; ``part``: the part it contributes to a ``+`` combination."""

    alone: ClassVar[tuple[type[WeakPart], ...]]
    part: ClassVar[type[WeakPart]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``needs_instances`` follows from the parts: any of them needs instance ids."""
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "part"):
            cls.needs_instances = any(p.needs_instances for p in (*cls.alone, cls.part))

    def __init__(self, model: Segmenter, config: SegmenterConfig) -> None:
        super().__init__(model, config)
        self.parts = [cls(config, model.num_classes) for cls in self.part_classes(config)]
        weights = config.supervision_weights or {}
        self.weights = {p.name: float(weights.get(p.name, 1.0)) for p in self.parts}

    @classmethod
    def part_classes(cls, config: SegmenterConfig) -> tuple[type[WeakPart], ...]:
        return cls.alone

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        super().set_class_weight(weight)
        for part in self.parts:
            part.class_weight = weight

    def prepare(self, train: Split, context: FitContext) -> None:
        for part in self.parts:
            part.prepare(self.model, train, context)

    def batch(self, items: list[Frame], rng: np.random.Generator) -> Batch:
        """Images; the parts' label maps stacked ``(B, R, H, W)`` (a void map when no part has
        one, so the shared augmentation still crops and flips); image targets in ``extras``."""
        images = image_batch([f.image for f in items])
        maps = [np.stack([p.dense(f) for f in items]) for p in self.parts if p.has_map]
        if not maps:
            maps.append(np.full((len(items), *images.shape[-2:]), VOID, np.uint8))
        labels = torch.from_numpy(np.stack(maps, axis=1)).long()
        check_label_range(labels, self.model.num_classes, f"supervision {self.config.supervision}")
        extras = {}
        for part in self.parts:
            targets = [part.image_target(f) for f in items]
            if targets[0] is not None:
                extras[part.name] = torch.from_numpy(np.stack(targets))
        return Batch(images=images, labels=labels, extras=extras)

    def output_losses(self, output: SegmenterOutput, batch: Batch) -> dict[str, torch.Tensor]:
        terms, channel = {}, 0
        for part in self.parts:
            labels = None
            if part.has_map:
                labels, channel = batch.labels[:, channel], channel + 1
            terms[part.name] = part.loss(output.logits, labels, batch.extras.get(part.name))
        total = sum(self.weights[name] * term for name, term in terms.items())
        return {"total": total, **terms} if len(terms) > 1 else {"total": total}

    def report(self) -> dict[str, Any]:
        return {k: v for part in self.parts for k, v in part.report().items()}


class TagClassifierSupervision(WeakSupervision):
    """The first stage of ``tags``: the tag loss alone (not registered: ``tags`` runs it)."""

    name: ClassVar[str] = "tags classifier"
    alone = (TagPart,)
    part = TagPart


class TagsSupervision(WeakSupervision):
    name: ClassVar[str] = "tags"
    alone = (CamPseudoMaskPart,)
    part = TagPart


class PointsSupervision(WeakSupervision):
    name: ClassVar[str] = "points"
    alone = (PointPart,)
    part = PointPart


class ScribblesSupervision(WeakSupervision):
    name: ClassVar[str] = "scribbles"
    alone = (ScribblePart,)
    part = ScribblePart


class BoxesSupervision(WeakSupervision):
    name: ClassVar[str] = "boxes"
    alone = (BoxPart,)
    part = BoxPart


class CombinedSupervision(WeakSupervision):
    """``a+b+...``: the ``part`` of each named weak regime, in the order written."""

    name: ClassVar[str] = "combined"

    @classmethod
    def part_classes(cls, config: SegmenterConfig) -> tuple[type[WeakPart], ...]:
        return tuple(combined_part(regime) for regime in config.supervision.split("+"))


def combined_part(regime: str) -> type[WeakPart]:
    """The part weak regime ``regime`` contributes to a ``+`` combination; ``BadInput`` for a
    regime that cannot be combined (``full``, a supervision of another kind)."""
    from owsbench.catalog import SUPERVISIONS

    cls = SUPERVISIONS.get(regime)
    if not (isinstance(cls, type) and issubclass(cls, WeakSupervision)):
        raise BadInput(f"supervision {regime!r} cannot be part of a '+' combination")
    return cls.part
