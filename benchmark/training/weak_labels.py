"""Weak labels synthesised from dense labels and instance ids: regions, points, scribbles, boxes,
image tags.

Label maps are ``(H, W)`` ``np.uint8`` class ids with ``VOID`` (255) = unlabelled. A frame's
annotatable *regions* are its objects (one per instance id of a thing class) and its stuff regions
(one per 8-connected component of a stuff class, or of thing pixels without an instance id); void
pixels belong to none. Each generator simulates a published annotation protocol:

- points (Bearman et al., ECCV 2016, "What's the Point: Semantic Segmentation with Point
  Supervision"): one click per object / region; here the region's centroid when it lies inside
  the region, else the interior pixel farthest from its boundary; further points are drawn
  uniformly from the region;
- scribbles (Lin et al., CVPR 2016, "ScribbleSup: Scribble-Supervised Convolutional Networks for
  Semantic Segmentation"; synthesised from masks by skeletonisation): the region's skeleton,
  optionally cut to a contiguous stretch and thickened, never leaving the region;
- boxes (Khoreva et al., CVPR 2017, "Simple Does It: Weakly Supervised Instance and Semantic
  Segmentation"): the region's tightest box filled with its class, larger boxes painted first so
  smaller boxes lie on top; the paper's Box^i variant keeps only the centred inner box and
  ignores the band around it;
- image tags: which classes occur in the frame.

All generators work on each region's bounding-box crop (one pixel of margin), so their cost
grows with the regions' sizes, not with the number of regions times the frame's size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from owsbench.datasets.base import VOID

EIGHT = np.ones((3, 3), bool)  # 8-connectivity structuring element
STEPS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))

Window = tuple[slice, slice]


@dataclass(frozen=True)
class Region:
    """One annotatable object or stuff region: its class id and its non-empty bool mask
    ``(H, W)``."""

    class_id: int
    mask: np.ndarray  # bool (H, W), non-empty

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != bool or not self.mask.any():
            raise ValueError("a region's mask must be a non-empty 2-D bool array")
        if not 0 <= self.class_id < VOID:
            raise ValueError(f"a region's class id must be in 0..{VOID - 1}, not {self.class_id}")


def regions(
    semantic: np.ndarray, instances: np.ndarray | None, thing_classes: Sequence[int]
) -> list[Region]:
    """The annotatable regions of one frame.

    For a thing class: one region per instance id (the pixels with that id *and* that class, so
    an id spanning several classes is split by class); the class's pixels without an instance id
    (id 0), and every stuff class: one region per 8-connected component. Void pixels belong to no
    region. Order: by class id, then by instance id (objects) or component label (the rest).
    """
    if instances is not None and instances.shape != semantic.shape:
        raise ValueError(f"instance ids {instances.shape} do not match labels {semantic.shape}")
    things = {int(c) for c in thing_classes}
    found: list[Region] = []
    for class_id in (int(c) for c in np.unique(semantic) if c != VOID):
        of_class = semantic == class_id
        loose = of_class
        if class_id in things and instances is not None:
            ids = np.unique(instances[of_class])
            found.extend(Region(class_id, of_class & (instances == i)) for i in ids[ids != 0])
            loose = of_class & (instances == 0)
        components, count = ndimage.label(loose, structure=EIGHT)
        found.extend(Region(class_id, components == k) for k in range(1, count + 1))
    return found


def crop_window(mask: np.ndarray, margin: int = 1) -> Window:
    """The bounding box of ``mask``'s pixels grown by ``margin`` (clipped to the frame)."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return (
        slice(max(0, int(rows.min()) - margin), min(height, int(rows.max()) + 1 + margin)),
        slice(max(0, int(cols.min()) - margin), min(width, int(cols.max()) + 1 + margin)),
    )


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The click of a region (Bearman et al. 2016, simulated): its centroid, rounded, when that
    pixel lies in ``mask``; else the pixel farthest from the mask's boundary, i.e. the argmax of
    ``scipy.ndimage.distance_transform_edt`` of the mask padded by one pixel of False (ties: the
    first in row-major order)."""
    rows, cols = np.nonzero(mask)
    centre = int(round(float(rows.mean()))), int(round(float(cols.mean())))
    if mask[centre]:
        return centre
    window = crop_window(mask)
    distance = ndimage.distance_transform_edt(np.pad(mask[window], 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(r) + window[0].start, int(c) + window[1].start


def point_labels(
    shape: tuple[int, int],
    regions: list[Region],
    points_per_object: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Point labels (Bearman et al., ECCV 2016): per region its :func:`interior_point`, plus
    ``points_per_object - 1`` further pixels drawn uniformly without replacement from the rest of
    the region with ``rng`` (fewer when the region is smaller). Everything else is VOID."""
    if points_per_object < 1:
        raise ValueError(f"points_per_object must be at least 1, not {points_per_object}")
    labels = np.full(shape, VOID, np.uint8)
    for region in regions:
        first = interior_point(region.mask)
        labels[first] = region.class_id
        if points_per_object > 1:
            others = np.flatnonzero(region.mask)
            others = others[others != np.ravel_multi_index(first, shape)]
            count = min(points_per_object - 1, others.size)
            labels.flat[rng.choice(others, size=count, replace=False)] = region.class_id
    return labels


def skeleton_walk(skeleton: np.ndarray, start: tuple[int, int], limit: int) -> np.ndarray:
    """The first ``limit`` pixels of a breadth-first walk over ``skeleton``'s 8-neighbours from
    ``start``: the skeleton pixels geodesically nearest to ``start``. Every pixel joins next to
    one already taken, so the result is one contiguous (8-connected) stretch. Bool mask."""
    taken = np.zeros(skeleton.shape, bool)
    taken[start] = True
    queue, count = deque([start]), 1
    height, width = skeleton.shape
    while queue and count < limit:
        r, c = queue.popleft()
        for dr, dc in STEPS:
            q = (r + dr, c + dc)
            if 0 <= q[0] < height and 0 <= q[1] < width and skeleton[q] and not taken[q]:
                taken[q] = True
                queue.append(q)
                count += 1
                if count == limit:
                    break
    return taken


def skeleton_stretch(
    skeleton: np.ndarray, length_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """The part of a non-empty ``skeleton`` that a scribble keeps: all of it when
    ``length_fraction`` is 1; else ``max(1, round(f * n))`` pixels (``n`` = the skeleton's
    pixels; at most the size of its largest 8-connected piece) walked from a pixel of that
    piece drawn with ``rng`` (:func:`skeleton_walk`)."""
    if length_fraction >= 1:
        return skeleton
    pieces, _ = ndimage.label(skeleton, structure=EIGHT)
    sizes = np.bincount(pieces.ravel())[1:]
    largest = pieces == 1 + int(np.argmax(sizes))
    keep = min(max(1, int(round(length_fraction * int(skeleton.sum())))), int(sizes.max()))
    pixels = np.argwhere(largest)
    r, c = pixels[int(rng.integers(len(pixels)))]
    return skeleton_walk(largest, (int(r), int(c)), keep)


def scribble_labels(
    shape: tuple[int, int],
    regions: list[Region],
    length_fraction: float,
    thickness: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scribble labels (Lin et al., CVPR 2016), synthesised per region: the skeleton of its mask
    (``skimage.morphology.skeletonize``), cut to a contiguous stretch of ``length_fraction``
    (``0 < f <= 1``) of its pixels (:func:`skeleton_stretch`), thickened by a binary dilation with
    a ``(2 * thickness - 1)``-square (thickness 1 = the skeleton itself) and clipped to the mask,
    so a scribble never leaves its region. A region whose skeleton is empty gets its point label
    (:func:`interior_point`). Regions are painted in order; everything else is VOID."""
    if not 0 < length_fraction <= 1:
        raise ValueError(f"length_fraction must be in (0, 1], not {length_fraction}")
    if thickness < 1:
        raise ValueError(f"thickness must be at least 1, not {thickness}")
    labels = np.full(shape, VOID, np.uint8)
    square = np.ones((2 * thickness - 1,) * 2, bool)
    for region in regions:
        window = crop_window(region.mask, margin=thickness)
        mask = region.mask[window]
        skeleton = skeletonize(mask) & mask
        if not skeleton.any():
            labels[interior_point(region.mask)] = region.class_id
            continue
        scribble = skeleton_stretch(skeleton, length_fraction, rng)
        if thickness > 1:
            scribble = ndimage.binary_dilation(scribble, structure=square)
        labels[window][scribble & mask] = region.class_id
    return labels


def box_labels(
    shape: tuple[int, int],
    regions: list[Region],
    inner_fraction: float,
    background_class: int | None,
) -> np.ndarray:
    """Box labels (Khoreva et al., CVPR 2017): the tightest box of each region filled with its
    class, larger boxes painted first (equal areas: in region order) so smaller boxes lie on top.
    ``inner_fraction`` in (0, 1]: 1 = the full box; < 1 = Box^i: only the centred sub-box whose
    height and width are ``inner_fraction`` of the box's (rounded, at least one pixel) keeps the
    class, and the band between is VOID (ignored). Outside every box: ``background_class`` when
    it is not None (datasets with a background class), else VOID."""
    if not 0 < inner_fraction <= 1:
        raise ValueError(f"inner_fraction must be in (0, 1], not {inner_fraction}")
    outside = VOID if background_class is None else background_class
    labels = np.full(shape, outside, np.uint8)
    boxes = [(crop_window(region.mask, margin=0), region.class_id) for region in regions]
    boxes.sort(key=lambda box: -window_area(box[0]))  # stable: equal areas keep region order
    for (rows, cols), class_id in boxes:
        if inner_fraction == 1:
            labels[rows, cols] = class_id
            continue
        labels[rows, cols] = VOID
        labels[inner_slice(rows, inner_fraction), inner_slice(cols, inner_fraction)] = class_id
    return labels


def window_area(window: Window) -> int:
    """The number of pixels of a box given as two slices."""
    rows, cols = window
    return (rows.stop - rows.start) * (cols.stop - cols.start)


def inner_slice(span: slice, fraction: float) -> slice:
    """The centred part of ``span`` with ``max(1, round(fraction * length))`` elements (an odd
    leftover goes to the far side)."""
    length = span.stop - span.start
    inner = max(1, int(round(fraction * length)))
    start = span.start + (length - inner) // 2
    return slice(start, start + inner)


def image_tags(semantic: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level labels: bool ``(num_classes,)``, which classes occur in the frame (void
    ignored; any other id outside ``0..num_classes-1`` is an error)."""
    present = np.unique(semantic)
    present = present[present != VOID]
    if present.size and int(present.max()) >= num_classes:
        raise ValueError(f"class id {int(present.max())} outside 0..{num_classes - 1}")
    tags = np.zeros(num_classes, bool)
    tags[present] = True
    return tags


def void_outside(labels: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """``labels`` (uint8) with VOID wherever the dense label is VOID: nothing is ever labelled on
    void."""
    if labels.shape != semantic.shape:
        raise ValueError(f"weak labels {labels.shape} do not match dense labels {semantic.shape}")
    return np.where(semantic == VOID, np.uint8(VOID), labels).astype(np.uint8)


def labelled_fraction(labels: np.ndarray) -> float:
    """Share of pixels that are not VOID (0 for an empty map)."""
    return float(np.mean(labels != VOID)) if labels.size else 0.0
