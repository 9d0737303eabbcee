"""Object families for anomalies: RGBA cut-outs from images that ship inside installed packages.

Two disjoint sets of families:

- ``TEST_ANOMALY_FAMILIES``: what synthstreets' val and test anomalies are made of (real-photo
  cut-outs of scikit-image's chelsea, coffee, astronaut and rocket, and the horse silhouette
  filled with a photo texture). Never seen in training.
- ``OUTLIER_FAMILIES``: the outlier-exposure source for methods that train with synthetic
  anomalies (scikit-learn's china and flower photos, scikit-image's camera photo and brick and
  gravel textures, and random procedural polygons).

The two share no family name and no source image (a test asserts both), so a method trained with
outlier exposure never sees the test objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.draw import polygon

CUTOUT_SIZE = 96  # cut-outs are made at this height and rescaled when pasted


@functools.cache
def load_source(name: str) -> np.ndarray:
    """A packaged image as ``(H, W, 3)`` uint8: ``skimage:<name>`` or ``sklearn:<file>``."""
    package, _, item = name.partition(":")
    if package == "skimage":
        import skimage.data

        image = np.asarray(getattr(skimage.data, item)())
    elif package == "sklearn":
        from sklearn.datasets import load_sample_image

        image = np.asarray(load_sample_image(item))
    else:
        raise ValueError(f"unknown image source {name!r}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def blob_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An irregular star-convex blob filling most of an ``height x width`` box."""
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.ones_like(angles)
    for k in range(2, 6):
        radius += rng.uniform(0, 0.3 / k * 2) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    radius /= radius.max()
    rows = height / 2 + radius * np.sin(angles) * (height / 2 - 1)
    cols = width / 2 + radius * np.cos(angles) * (width / 2 - 1)
    mask = np.zeros((height, width), bool)
    rr, cc = polygon(rows, cols, shape=mask.shape)
    mask[rr, cc] = True
    return mask


def random_crop(rng: np.random.Generator, image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A random crop whose sides are ``lo..hi`` of the image's shorter side."""
    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(lo, hi))
    aspect = rng.uniform(0.7, 1.4)
    ch, cw = min(h, side), min(w, int(side * aspect))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return image[top : top + ch, left : left + cw]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(image).resize((max(1, width), max(1, height)), Image.BILINEAR)
    )


def rgba(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.dstack([rgb, mask.astype(np.uint8) * 255])


def photo_cutout(source: str) -> Callable[[np.random.Generator], np.ndarray]:
    """Cut an irregular blob out of a random crop of a packaged photo."""

    def make(rng: np.random.Generator) -> np.ndarray:
        crop = random_crop(rng, load_source(source), 0.35, 0.8)
        width = int(CUTOUT_SIZE * crop.shape[1] / crop.shape[0])
        return rgba(resize(crop, CUTOUT_SIZE, width), blob_mask(rng, CUTOUT_SIZE, width))

    return make


def silhouette_cutout(
    shape_source: str, fill_source: str
) -> Callable[[np.random.Generator], np.ndarray]:
    """A binary silhouette (dark = object) filled with a crop of a packaged photo."""

    def make(rng: np.random.Generator) -> np.ndarray:
        shape = load_source(shape_source)[..., 0] < 128
        rows, cols = np.nonzero(shape)
        shape = shape[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        if rng.random() < 0.5:
            shape = shape[:, ::-1]
        width = int(CUTOUT_SIZE * shape.shape[1] / shape.shape[0])
        mask = resize(shape.astype(np.uint8) * 255, CUTOUT_SIZE, width) >= 128
        fill = resize(random_crop(rng, load_source(fill_source), 0.3, 0.6), CUTOUT_SIZE, width)
        return rgba(fill, mask)

    return make


def texture_cutout(source: str) -> Callable[[np.random.Generator], np.ndarray]:
    """A blob of a packaged grey texture, tinted with a random colour."""

    def make(rng: np.random.Generator) -> np.ndarray:
        crop = random_crop(rng, load_source(source), 0.2, 0.5).astype(np.float32) / 255
        tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        width = int(CUTOUT_SIZE * rng.uniform(0.6, 1.6))
        colored = (np.clip(crop * tint, 0, 1) * 255).astype(np.uint8)
        return rgba(resize(colored, CUTOUT_SIZE, width), blob_mask(rng, CUTOUT_SIZE, width))

    return make


def polygon_cutout(rng: np.random.Generator) -> np.ndarray:
    """A random polygon in a random colour with stripes (procedural outlier)."""
    width = int(CUTOUT_SIZE * rng.uniform(0.6, 1.8))
    n = rng.integers(3, 9)
    rows = rng.uniform(0, CUTOUT_SIZE, n)
    cols = rng.uniform(0, width, n)
    order = np.argsort(np.arctan2(rows - rows.mean(), cols - cols.mean()))
    mask = np.zeros((CUTOUT_SIZE, width), bool)
    rr, cc = polygon(rows[order], cols[order], shape=mask.shape)
    mask[rr, cc] = True
    if mask.sum() < 0.1 * mask.size:
        mask = blob_mask(rng, CUTOUT_SIZE, width)
    colors = rng.integers(0, 256, (2, 3)).astype(np.uint8)
    stripes = (np.arange(width)[None, :] // max(2, int(rng.integers(4, 16)))) % 2
    rgb = np.where(stripes[..., None] == 1, colors[0], colors[1])
    rgb = np.broadcast_to(rgb, (CUTOUT_SIZE, width, 3)).astype(np.uint8)
    return rgba(rgb, mask)


@dataclass(frozen=True)
class Family:
    """A kind of object: its name, the packaged images it is made from, and its maker."""

    name: str
    sources: tuple[str, ...]
    make: Callable[[np.random.Generator], np.ndarray]


def _photo(name: str, source: str) -> Family:
    return Family(name, (source,), photo_cutout(source))


TEST_FAMILIES: tuple[Family, ...] = (
    _photo("photo-chelsea", "skimage:chelsea"),
    _photo("photo-coffee", "skimage:coffee"),
    _photo("photo-astronaut", "skimage:astronaut"),
    _photo("photo-rocket", "skimage:rocket"),
    Family(
        "silhouette-horse",
        ("skimage:horse", "skimage:chelsea"),
        silhouette_cutout("skimage:horse", "skimage:chelsea"),
    ),
)

OUTLIER_EXPOSURE_FAMILIES: tuple[Family, ...] = (
    _photo("photo-china", "sklearn:china.jpg"),
    _photo("photo-flower", "sklearn:flower.jpg"),
    _photo("photo-camera", "skimage:camera"),
    Family("texture-brick", ("skimage:brick",), texture_cutout("skimage:brick")),
    Family("texture-gravel", ("skimage:gravel",), texture_cutout("skimage:gravel")),
    Family("procedural-polygon", (), polygon_cutout),
)

TEST_ANOMALY_FAMILIES = frozenset(f.name for f in TEST_FAMILIES)
OUTLIER_FAMILIES = frozenset(f.name for f in OUTLIER_EXPOSURE_FAMILIES)


class ObjectSource:
    """Draws RGBA cut-outs (``(H, W, 4)`` uint8, alpha 255 on the object) from some families."""

    def __init__(self, families: tuple[Family, ...]) -> None:
        self.families = families

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.families)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One cut-out and the name of its family."""
        family = self.families[rng.integers(len(self.families))]
        return family.make(rng), family.name


def evaluation_anomaly_source() -> ObjectSource:
    return ObjectSource(TEST_FAMILIES)


def outlier_exposure_source() -> ObjectSource:
    return ObjectSource(OUTLIER_EXPOSURE_FAMILIES)
