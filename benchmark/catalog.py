"""Every registered id: methods, segmenters, supervisions, datasets and metrics (lazy targets,
no torch here)."""

from __future__ import annotations

from owsbench.registry import Registry

METHODS = Registry("method")
METHODS.register("msp", "owsbench.methods.posthoc:MSP", "maximum softmax probability: 1 - max p")
METHODS.register("maxlogit", "owsbench.methods.posthoc:MaxLogit", "negated maximum logit")
METHODS.register("entropy", "owsbench.methods.posthoc:Entropy", "softmax entropy / log K")
METHODS.register("energy", "owsbench.methods.posthoc:Energy", "free energy -T logsumexp(z/T)")
METHODS.register(
    "rba", "owsbench.methods.rba:RbA", "rejected by all: -sum tanh(l) of a mask model's scores"
)
METHODS.register(
    "rba-oe",
    "owsbench.methods.rba_oe:RbAOE",
    "RbA on a mask model's class/mask heads fine-tuned with RbA's outlier loss on OE pastes",
)
METHODS.register(
    "sml", "owsbench.methods.sml:SML", "standardized max logits + boundary suppression, smoothing"
)
METHODS.register(
    "fre",
    "owsbench.methods.fre:FRE",
    "feature reconstruction error: per-pixel PCA (97% variance) of segmenter decoder features",
)
METHODS.register(
    "anomaly-head-stats",
    "owsbench.methods.anomaly_head:AnomalyHeadStats",
    "per-pixel MLP over 5 softmax statistics of a frozen segmenter, trained with OE pastes",
)
METHODS.register(
    "anomaly-head-hybrid",
    "owsbench.methods.anomaly_head:AnomalyHeadHybrid",
    "stats MLP + projected decoder features of a frozen segmenter, trained with OE pastes",
)
METHODS.register(
    "contmav",
    "owsbench.methods.contmav:ContMAV",
    "ContMAV: contrastive + semantic decoders, class mean activation vectors (trained)",
)
METHODS.register(
    "contmav-focal",
    "owsbench.methods.contmav:ContMAVFocal",
    "ContMAV with the semantic CE replaced by focal loss (smp FocalLoss)",
)
METHODS.register(
    "contmav-focal-dice",
    "owsbench.methods.contmav:ContMAVFocalDice",
    "ContMAV with focal + Dice semantic losses (smp FocalLoss, DiceLoss)",
)
METHODS.register(
    "contmav-trufor",
    "owsbench.methods.contmav_trufor:ContMAVTruFor",
    "ContMAV + TruFor-style anomaly (OE, CE + Dice) and confidence (TCP) decoders; fused score",
)
METHODS.register(
    "contmav-infonce",
    "owsbench.methods.contmav_infonce:ContMAVInfoNCE",
    "ContMAV on an encoder pre-trained with MoCo + label-aware InfoNCE on known/unknown crops",
)
METHODS.register(
    "contmav-infonce-synco",
    "owsbench.methods.contmav_infonce:ContMAVInfoNCESynCo",
    "contmav-infonce + SynCo synthetic hard negatives across the known/unknown boundary",
)
METHODS.register(
    "dual-head",
    "owsbench.methods.dual_head:DualHead",
    "semantic + binary anomaly head trained with outlier-exposure pastes; sigmoid score (trained)",
)

SEGMENTERS = Registry("segmenter")
SEGMENTERS.register(
    "deeplabv3plus",
    "owsbench.segmenters.smp_models:SmpSegmenter",
    "DeepLabV3+ with a ResNet-18 encoder (segmentation-models-pytorch, random init)",
)
SEGMENTERS.register(
    "erfnet",
    "owsbench.segmenters.erfnet:ERFNetSegmenter",
    "ERFNet (Romera et al. 2018), pure torch, random init",
)
SEGMENTERS.register(
    "eomt",
    "owsbench.segmenters.eomt:EoMTSegmenter",
    "EoMT encoder-only mask transformer (Kerssies et al. 2025) on a timm ViT, random init",
)
DEFAULT_SEGMENTER = "deeplabv3plus"

SUPERVISIONS = Registry("supervision")
SUPERVISIONS.register(
    "full",
    "owsbench.training.supervision:FullSupervision",
    "dense labels: cross-entropy over every labelled pixel (void ignored)",
)
SUPERVISIONS.register(
    "tags",
    "owsbench.training.weak:TagsSupervision",
    "image-level tags: CAMs of a tag classifier (multi-label soft margin) as pseudo-masks",
)
SUPERVISIONS.register(
    "points",
    "owsbench.training.weak:PointsSupervision",
    "one pixel per object instance / stuff region, partial cross-entropy",
)
SUPERVISIONS.register(
    "scribbles",
    "owsbench.training.weak:ScribblesSupervision",
    "the skeleton of each object / region (optionally cut and thickened), partial CE",
)
SUPERVISIONS.register(
    "boxes",
    "owsbench.training.weak:BoxesSupervision",
    "tightest box per object / region, smaller on top (Box^i: inner band only), partial CE",
)

DATASETS = Registry("dataset")
DATASETS.register(
    "synthstreets",
    "owsbench.datasets.synthstreets:SynthStreets",
    "procedural road scenes (Cityscapes classes) with unseen-family anomalies; no download",
)
DATASETS.register(
    "cityscapes", "owsbench.datasets.cityscapes:Cityscapes", "Cityscapes gtFine, 19 trainIds"
)
DATASETS.register(
    "cityscapes-cocopaste",
    "owsbench.datasets.cocopaste:CityscapesCocoPaste",
    "COCO instances pasted into Cityscapes val (made by `owsbench data make`)",
)
DATASETS.register(
    "streethazards",
    "owsbench.datasets.streethazards:StreetHazards",
    "CAOS StreetHazards (CARLA), 12/13 known classes, anomaly objects",
)
DATASETS.register(
    "bdd-anomaly",
    "owsbench.datasets.bdd_anomaly:BDDAnomaly",
    "BDD100K 10K with train/motorcycle/bicycle held out as anomalies",
)
DATASETS.register(
    "fishyscapes-laf",
    "owsbench.datasets.fishyscapes:FishyscapesLostAndFound",
    "Fishyscapes Lost & Found validation (anomaly labels only)",
)
DATASETS.register(
    "fishyscapes-static",
    "owsbench.datasets.fishyscapes:FishyscapesStatic",
    "Fishyscapes Static validation (anomaly labels only)",
)
DATASETS.register(
    "smiyc-ra21",
    "owsbench.datasets.smiyc:RoadAnomaly21",
    "SegmentMeIfYouCan RoadAnomaly21 (anomaly track; validation labels)",
)
DATASETS.register(
    "smiyc-ro21",
    "owsbench.datasets.smiyc:RoadObstacle21",
    "SegmentMeIfYouCan RoadObstacle21 (obstacle track; validation labels)",
)
DATASETS.register(
    "lostandfound",
    "owsbench.datasets.lostandfound:LostAndFound",
    "Lost and Found testNoKnown (obstacles on the road)",
)
DATASETS.register(
    "road-anomaly", "owsbench.datasets.road_anomaly:RoadAnomaly", "Road Anomaly (Lis et al.)"
)
DATASETS.register(
    "oxford-pet",
    "owsbench.datasets.oxford_pet:OxfordPet",
    "Oxford-IIIT Pet trimaps: background / cat / dog (or 37 breeds), one instance per image",
)

# Metrics: derived from the metric specs (owsbench.metrics.specs), one entry per spec in display
# order; each target resolves to the MetricSpec itself (the specs module's ``__getattr__``).
from owsbench.metrics.specs import all_specs  # noqa: E402  (the specs import nothing heavy)

METRICS = Registry("metric")
for _metric in all_specs():
    METRICS.register(
        _metric.name,
        f"owsbench.metrics.specs:{_metric.name}",
        f"{_metric.arrow} {_metric.level}: {_metric.summary}",
    )
del _metric
