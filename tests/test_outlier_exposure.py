"""Outlier exposure: pastes land on the ground, are labelled like test anomalies, and the two
targets survive the shared augmentation together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_fixtures import scene

from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.nn.outlier_exposure import (
    OUTLIER,
    PasteConfig,
    outlier_batch,
    paste_outliers,
    require_source,
    split_outlier_labels,
)
from owsbench.segmenters.base import SegmenterConfig
from owsbench.training.batches import augment


def _frame(seed: int) -> Frame:
    image, semantic = scene(seed)
    return Frame(f"f{seed}", image, semantic)


def test_pastes_change_the_image_only_where_labelled():
    frame = _frame(3)
    image, labels = paste_outliers(
        frame, outlier_exposure_source(), np.random.default_rng(0), PasteConfig(probability=1.0)
    )
    pasted = labels == OUTLIER
    assert pasted.sum() >= 12
    # outside the paste the labels are the frame's own; the image changed inside the paste
    np.testing.assert_array_equal(labels[~pasted], frame.semantic[~pasted])
    assert np.abs(image[pasted].astype(int) - frame.image[pasted]).mean() > 5


def test_probability_zero_leaves_the_frame_untouched():
    frame = _frame(4)
    image, labels = paste_outliers(
        frame, outlier_exposure_source(), np.random.default_rng(0), PasteConfig(probability=0.0)
    )
    np.testing.assert_array_equal(image, frame.image)
    np.testing.assert_array_equal(labels, frame.semantic)


def test_split_targets_and_augmentation_keep_them_aligned():
    frames = [_frame(s) for s in range(3)]
    images, labels = outlier_batch(
        frames, outlier_exposure_source(), np.random.default_rng(1), PasteConfig(probability=1.0)
    )
    assert images.shape == (3, 3, 64, 128) and labels.dtype == torch.long
    cfg = SegmenterConfig(crop=(48, 48), scale_range=(0.9, 1.1))
    _, aug = augment(images, labels, cfg, torch.Generator().manual_seed(0))
    semantic, anomaly = split_outlier_labels(aug)
    assert set(anomaly.unique().tolist()) <= {0, 1, VOID}
    assert (semantic[anomaly == 1] == VOID).all()  # pastes are void for the semantic loss
    assert (anomaly[semantic != VOID] == 0).all()  # known pixels are inliers
    assert ((aug == VOID) == ((semantic == VOID) & (anomaly == VOID))).all()


def test_missing_source_is_a_one_line_error():
    with pytest.raises(BadInput, match="outlier-exposure source"):
        require_source("dual-head", None)
