"""Compositing RGBA cut-outs into frames, with anomaly labels and perspective-consistent sizes.

Used both by the synthstreets generator (its val/test anomalies) and by methods that train with
outlier exposure on training frames, so pasted objects are labelled the same way everywhere:
``anomaly = 1`` and ``semantic = 255`` under the object (alpha >= 0.5), edges alpha-feathered.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from owsbench.datasets.labels import TRAIN_ID

VOID = 255


def scaled_cutout(rgba: np.ndarray, height: int) -> np.ndarray:
    """``rgba`` resized to ``height`` rows, keeping its aspect ratio."""
    width = max(1, round(rgba.shape[1] * height / rgba.shape[0]))
    return np.asarray(Image.fromarray(rgba).resize((width, max(1, height)), Image.BILINEAR))


def composite(
    image: np.ndarray,
    labels: np.ndarray,
    rgba: np.ndarray,
    bottom: float,
    centre_x: float,
    label: int,
    feather: float = 0.7,
) -> np.ndarray:
    """Blend ``rgba`` into ``image`` (float in [0, 1], in place) with its bottom-centre at
    (``bottom``, ``centre_x``); set ``labels`` to ``label`` where alpha >= 0.5.

    Returns the boolean mask of labelled pixels (frame-sized). Parts outside the frame are cut.
    """
    h, w = labels.shape
    oh, ow = rgba.shape[:2]
    top, left = int(round(bottom)) - oh, int(round(centre_x - ow / 2))
    r0, r1, c0, c1 = max(0, top), min(h, top + oh), max(0, left), min(w, left + ow)
    hit = np.zeros((h, w), bool)
    if r1 <= r0 or c1 <= c0:
        return hit
    alpha = rgba[..., 3].astype(np.float32) / 255
    if feather > 0:
        alpha = np.minimum(alpha, gaussian_filter(alpha, feather))
    window = np.s_[r0 - top : r1 - top, c0 - left : c1 - left]
    a = alpha[window][..., None]
    rgb = rgba[window][..., :3].astype(np.float32) / 255
    image[r0:r1, c0:c1] = image[r0:r1, c0:c1] * (1 - a) + rgb * a
    solid = alpha[window] >= 0.5
    labels[r0:r1, c0:c1][solid] = label
    hit[r0:r1, c0:c1] = solid
    return hit


def ground_placement(
    semantic: np.ndarray,
    rng: np.random.Generator,
    size_range: tuple[float, float] = (0.3, 0.9),
    road_share: float = 0.8,
) -> tuple[int, int, int] | None:
    """Where to stand an object on a labelled frame: ``(bottom row, column, height px)``.

    A random road pixel (``road_share`` of the time, else sidewalk). The horizon is estimated as
    the top row of the ground, and the height is ``size * t * (H - horizon)`` with ``t`` the
    pixel's depth factor, as in synthstreets' camera model. None when there is no ground.
    """
    classes = [TRAIN_ID["road"], TRAIN_ID["sidewalk"]]
    if rng.random() >= road_share:
        classes.reverse()
    ground = np.isin(semantic, classes)
    rows, cols = np.nonzero(semantic == classes[0])
    if rows.size == 0:
        rows, cols = np.nonzero(ground)
    if rows.size == 0:
        return None
    horizon = np.nonzero(ground.any(axis=1))[0].min()
    pick = rng.integers(rows.size)
    scale = semantic.shape[0] - horizon
    t = (rows[pick] + 0.5 - horizon) / scale
    height = max(4, int(rng.uniform(*size_range) * t * scale))
    return int(rows[pick]), int(cols[pick]), height


def paste_object(
    image: np.ndarray,
    semantic: np.ndarray,
    anomaly: np.ndarray | None,
    rgba: np.ndarray,
    bottom: int,
    centre_x: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a cut-out into a uint8 frame; return new ``(image, semantic, anomaly)`` arrays.

    ``anomaly`` may be None (a training frame): it starts as 0 with 255 where ``semantic`` is void.
    """
    if anomaly is None:
        anomaly = np.where(semantic == VOID, VOID, 0).astype(np.uint8)
    canvas = image.astype(np.float32) / 255
    semantic, anomaly = semantic.copy(), anomaly.copy()
    hit = composite(canvas, semantic, scaled_cutout(rgba, height), bottom, centre_x, VOID)
    anomaly[hit] = 1
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), semantic, anomaly
