"""Metrics computed from score maps on disk (SMIYC layout, ``owsbench.score_maps``).

Used by ``owsbench score-maps evaluate`` for maps written by any codebase, and by the runner for
the SMIYC component metrics, which need two passes: the pixel curve first (its best-F1 threshold)
and then the components at that threshold. The threshold is chosen on the evaluated split
itself, as SMIYC does; rows say so (``component_threshold_rule``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from owsbench.datasets.base import Dataset, Split
from owsbench.errors import BadInput
from owsbench.metrics import AnomalyMetric, ComponentMetric
from owsbench.metrics.per_image import PerImageAnomalyMetric
from owsbench.score_maps import read_score_map

THRESHOLD_RULE = "best pixel F1 on the evaluated split (SMIYC)"


def _maps(split: Split, maps_dir: Path, progress: bool, desc: str):
    """Yield ``(frame, score map)`` for every frame with anomaly labels; check sizes."""
    for frame in tqdm(split, total=len(split), desc=desc, disable=not progress, leave=False):
        if frame.anomaly is None:
            continue
        scores = read_score_map(Path(maps_dir) / f"{frame.frame_id}.hdf5")
        if scores.shape != frame.anomaly.shape:
            raise BadInput(
                f"score map {frame.frame_id}.hdf5 is {scores.shape[1]}x{scores.shape[0]}, "
                f"labels are {frame.anomaly.shape[1]}x{frame.anomaly.shape[0]}"
            )
        yield frame, scores


def component_metrics(
    split: Split, maps_dir: Path, dataset: Dataset, progress: bool = True
) -> dict[str, Any]:
    """SMIYC sIoU / PPV / F1 of the maps in ``maps_dir`` at their best pixel-F1 threshold."""
    pixel = AnomalyMetric()
    for frame, scores in _maps(split, maps_dir, progress, "pixel curve"):
        pixel.update(scores, frame.anomaly)
    if pixel.num_positives == 0:
        return {}
    _, threshold = pixel.best_f1()
    min_pred, min_gt = dataset.component_size_filters
    components = ComponentMetric(threshold, min_pred_size=min_pred, min_gt_size=min_gt)
    for frame, scores in _maps(split, maps_dir, progress, "components"):
        components.update(scores, frame.anomaly)
    return components.compute()


def evaluate_score_maps(
    split: Split,
    maps_dir: Path,
    dataset: Dataset,
    aggregation: str = "pooled",
    fpr_rule: str = "first",
    components: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """AP / AUROC / FPR95 (pooled or per-image) and optionally component metrics of saved maps."""
    pooled = AnomalyMetric()
    per_image = PerImageAnomalyMetric(fpr_rule) if aggregation == "per-image" else None
    frames = 0
    for frame, scores in _maps(split, maps_dir, progress, "score maps"):
        pooled.update(scores, frame.anomaly)
        if per_image is not None:
            per_image.update(scores, frame.anomaly)
        frames += 1
    if frames == 0:
        raise BadInput(f"{dataset.name}/{split.name} has no frames with anomaly labels")
    metrics = per_image.compute() if per_image is not None else pooled.compute(fpr_rule=fpr_rule)
    if components:
        metrics.update(component_metrics(split, maps_dir, dataset, progress))
    return {"frames": frames, **metrics}
