"""Weak labels from dense labels: regions, points, scribbles, boxes, tags, void handling, on small
hand-made masks with seeded generators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from owsbench.datasets.base import VOID
from owsbench.training import weak_labels as wl
from owsbench.training.weak_labels import (
    Region,
    box_labels,
    image_tags,
    labelled_fraction,
    point_labels,
    regions,
    scribble_labels,
    void_outside,
)

EIGHT = np.ones((3, 3), bool)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rect(shape: tuple[int, int], top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def ring(size: int = 15, outer: int = 7, inner: int = 4) -> np.ndarray:
    """An annulus centred in a ``size`` square: its centroid (the centre) lies outside it."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    radius = np.hypot(yy, xx)
    return (radius <= outer) & (radius > inner)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """20 x 24: road (0) below, two cars (class 2, ids 1 and 2), two sky blobs (class 1), a void
    patch, and one car pixel run without an instance id."""
    semantic = np.zeros((20, 24), np.uint8)
    instances = np.zeros((20, 24), np.int32)
    semantic[:6, :8] = 1
    semantic[:6, 14:] = 1
    semantic[8:14, 2:8] = 2
    instances[8:14, 2:8] = 1
    semantic[8:14, 12:20] = 2
    instances[8:14, 12:20] = 2
    semantic[16:18, 20:23] = 2  # thing pixels without an instance id
    semantic[0:3, 9:13] = VOID
    semantic[17:20, 0:5] = VOID
    return semantic, instances


# --- regions ---------------------------------------------------------------------------------


def test_regions_split_instances_and_stuff_blobs_and_skip_void():
    semantic, instances = scene()
    found = regions(semantic, instances, thing_classes=[2])
    cars = [r for r in found if r.class_id == 2]
    sky = [r for r in found if r.class_id == 1]
    assert len(cars) == 3  # two instances + one component of id-0 car pixels
    assert cars[0].mask.sum() == 36 and cars[0].mask[8, 2] and not cars[0].mask[8, 12]
    assert cars[1].mask.sum() == 48 and cars[1].mask[8, 12]
    assert cars[2].mask.sum() == 6 and cars[2].mask[16, 20]
    assert len(sky) == 2 and sky[0].mask[0, 0] and sky[1].mask[0, 23]
    assert [r.class_id for r in found] == sorted(r.class_id for r in found)
    covered = np.zeros(semantic.shape, int)
    for r in found:
        covered += r.mask
        assert (semantic[r.mask] == r.class_id).all()
    assert not covered[semantic == VOID].any()
    assert (covered[semantic != VOID] == 1).all()  # a partition of the labelled pixels


def test_regions_split_an_instance_id_that_spans_two_classes():
    semantic = np.zeros((6, 6), np.uint8)
    semantic[:, 3:] = 1
    instances = np.full((6, 6), 5, np.int32)
    found = regions(semantic, instances, thing_classes=[0, 1])
    assert [(r.class_id, int(r.mask.sum())) for r in found] == [(0, 18), (1, 18)]


def test_regions_without_instances_use_components_and_stuff_ignores_ids():
    semantic = np.full((5, 9), VOID, np.uint8)
    semantic[:, :3] = 3
    semantic[:, 6:] = 3
    instances = np.ones((5, 9), np.int32)
    assert len(regions(semantic, None, thing_classes=[3])) == 2
    assert len(regions(semantic, instances, thing_classes=[])) == 2  # stuff: components
    assert len(regions(semantic, instances, thing_classes=[3])) == 1  # one object, two parts


def test_diagonal_touch_is_one_component():
    semantic = np.full((4, 4), VOID, np.uint8)
    semantic[0, 0] = semantic[1, 1] = 0
    assert len(regions(semantic, None, [])) == 1


# --- points ----------------------------------------------------------------------------------


def test_point_lies_inside_its_object_and_one_per_region():
    semantic, instances = scene()
    found = regions(semantic, instances, [2])
    labels = point_labels(semantic.shape, found, 1, rng())
    assert (labels != VOID).sum() == len(found)
    for r in found:
        inside = labels[r.mask]
        assert (inside != VOID).sum() == 1 and (inside[inside != VOID] == r.class_id).all()
    assert labels[10, 4] == 2 or labels[11, 5] == 2  # the car's centroid (10.5, 4.5) rounded


def test_point_of_a_ring_is_the_farthest_from_its_boundary():
    mask = ring()
    assert not mask[7, 7]  # centroid outside
    labels = point_labels(mask.shape, [Region(4, mask)], 1, rng())
    ((r, c),) = np.argwhere(labels != VOID)
    assert mask[r, c] and labels[r, c] == 4
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert distance[r, c] == distance.max()
    first = np.unravel_index(int(np.argmax(distance)), mask.shape)
    assert (r, c) == first  # ties: first in row-major order


def test_point_of_a_c_shape_is_inside():
    mask = np.zeros((12, 12), bool)
    mask[1:11, 1:4] = mask[1:4, 1:11] = mask[8:11, 1:11] = True
    labels = point_labels(mask.shape, [Region(1, mask)], 1, rng())
    assert (labels != VOID).sum() == 1 and mask[labels != VOID].all()


def test_more_points_per_object_are_distinct_and_inside():
    mask = rect((10, 10), 2, 7, 3, 9)
    labels = point_labels(mask.shape, [Region(6, mask)], 3, rng(1))
    assert (labels == 6).sum() == 3 and mask[labels == 6].all()
    assert (labels[~mask] == VOID).all()
    tiny = rect((4, 4), 1, 2, 1, 3)  # two pixels, five asked
    assert (point_labels(tiny.shape, [Region(2, tiny)], 5, rng()) == 2).sum() == 2


def test_points_are_reproducible_with_the_same_seed():
    semantic, instances = scene()
    found = regions(semantic, instances, [2])
    a = point_labels(semantic.shape, found, 4, rng(7))
    b = point_labels(semantic.shape, found, 4, rng(7))
    c = point_labels(semantic.shape, found, 4, rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.uint8


def test_points_per_object_zero_is_refused():
    with pytest.raises(ValueError):
        point_labels((3, 3), [Region(0, np.ones((3, 3), bool))], 0, rng())


# --- scribbles -------------------------------------------------------------------------------


def test_scribbles_lie_inside_every_region():
    semantic, instances = scene()
    annulus = np.where(ring(21, 9, 4), np.uint8(3), np.uint8(0))
    for frame, ids in [(semantic, instances), (annulus, None)]:
        found = regions(frame, ids, [2])
        labels = scribble_labels(frame.shape, found, 1.0, 1, rng())
        for r in found:
            assert (labels[r.mask] == r.class_id).any()
            assert np.array_equal(labels[r.mask] != VOID, skeletonize(r.mask)[r.mask])
        assert (labels[frame == VOID] == VOID).all()
        assert ((labels == VOID) | (labels == frame)).all()


def test_half_a_scribble_is_a_contiguous_stretch_of_half_the_skeleton():
    mask = rect((9, 41), 2, 7, 2, 39)  # a horizontal bar: its skeleton is a line
    full = scribble_labels(mask.shape, [Region(1, mask)], 1.0, 1, rng()) != VOID
    for seed in range(5):
        half = scribble_labels(mask.shape, [Region(1, mask)], 0.5, 1, rng(seed)) != VOID
        assert half.sum() == round(0.5 * full.sum())
        assert (half <= full).all()  # a part of the skeleton
        assert ndimage.label(half, structure=EIGHT)[1] == 1  # contiguous


def test_stretch_of_a_branched_skeleton_is_contiguous():
    mask = np.zeros((31, 31), bool)
    mask[14:17, 2:29] = mask[2:29, 14:17] = True  # a plus sign
    full = skeletonize(mask)
    for seed in range(6):
        part = scribble_labels(mask.shape, [Region(0, mask)], 0.3, 1, rng(seed)) != VOID
        assert part.sum() == round(0.3 * full.sum()) and (part <= full).all()
        assert ndimage.label(part, structure=EIGHT)[1] == 1


def test_thicker_scribbles_label_more_but_stay_inside():
    mask = ring(21, 9, 4)
    thin = scribble_labels(mask.shape, [Region(2, mask)], 1.0, 1, rng()) != VOID
    thick = scribble_labels(mask.shape, [Region(2, mask)], 1.0, 2, rng()) != VOID
    assert thick.sum() > thin.sum() and (thin <= thick).all()
    assert mask[thick].all()
    assert np.array_equal(thick, ndimage.binary_dilation(thin, np.ones((3, 3), bool)) & mask)


def test_one_pixel_mask_gets_a_label_even_with_an_empty_skeleton(monkeypatch):
    mask = np.zeros((5, 5), bool)
    mask[2, 3] = True
    labels = scribble_labels(mask.shape, [Region(9, mask)], 0.5, 3, rng())
    assert labels[2, 3] == 9 and (labels != VOID).sum() == 1
    monkeypatch.setattr(wl, "skeletonize", lambda m: np.zeros_like(m))
    square = rect((6, 6), 1, 4, 1, 4)
    labels = scribble_labels(square.shape, [Region(4, square)], 1.0, 1, rng())
    assert labels[2, 2] == 4 and (labels != VOID).sum() == 1  # its point instead


def test_scribbles_reproducible_and_options_checked():
    semantic, instances = scene()
    found = regions(semantic, instances, [2])
    a = scribble_labels(semantic.shape, found, 0.4, 2, rng(3))
    assert np.array_equal(a, scribble_labels(semantic.shape, found, 0.4, 2, rng(3)))
    for fraction, thickness in [(0.0, 1), (1.5, 1), (0.5, 0)]:
        with pytest.raises(ValueError):
            scribble_labels(semantic.shape, found, fraction, thickness, rng())


# --- boxes -----------------------------------------------------------------------------------


def test_a_lone_box_is_tight():
    mask = ring(15)[:, :9]  # a C-shape: its box is larger than the mask
    labels = box_labels(mask.shape, [Region(3, mask)], 1.0, None)
    rows, cols = np.nonzero(mask)
    expected = rect(mask.shape, rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    assert np.array_equal(labels == 3, expected)
    assert (labels[~expected] == VOID).all()


def test_smaller_box_lies_on_top_of_a_larger_one():
    big = rect((12, 12), 0, 12, 0, 12) & ~rect((12, 12), 3, 7, 3, 7)
    small = rect((12, 12), 4, 6, 4, 6)
    for order in ([Region(1, small), Region(2, big)], [Region(2, big), Region(1, small)]):
        labels = box_labels((12, 12), order, 1.0, None)
        assert (labels[4:6, 4:6] == 1).all() and (labels == 1).sum() == 4
        assert (labels == 2).sum() == 144 - 4


def test_inner_box_leaves_the_band_void():
    mask = rect((14, 14), 2, 12, 2, 12)  # a 10 x 10 box
    labels = box_labels(mask.shape, [Region(5, mask)], 0.5, 0)
    inner = rect(mask.shape, 4, 9, 4, 9)  # the centred 5 x 5 sub-box
    assert np.array_equal(labels == 5, inner)
    assert (labels[mask & ~inner] == VOID).all()
    assert (labels[~mask] == 0).all()


def test_background_class_fills_outside_boxes_and_none_leaves_void():
    mask = rect((8, 8), 2, 5, 3, 6)
    with_background = box_labels(mask.shape, [Region(1, mask)], 1.0, 0)
    without = box_labels(mask.shape, [Region(1, mask)], 1.0, None)
    assert (with_background[~mask] == 0).all() and (with_background[mask] == 1).all()
    assert (without[~mask] == VOID).all() and (without[mask] == 1).all()
    assert (box_labels(mask.shape, [], 1.0, 7) == 7).all()
    with pytest.raises(ValueError):
        box_labels(mask.shape, [Region(1, mask)], 0.0, None)


# --- void, tags, fraction --------------------------------------------------------------------


def test_nothing_is_labelled_on_void_for_any_generator():
    semantic, instances = scene()
    found = regions(semantic, instances, [2])
    void = semantic == VOID
    maps = {
        "points": point_labels(semantic.shape, found, 50, rng()),
        "scribbles": scribble_labels(semantic.shape, found, 1.0, 3, rng()),
        "boxes": box_labels(semantic.shape, found, 1.0, 0),
        "inner": box_labels(semantic.shape, found, 0.7, 0),
    }
    assert (maps["boxes"][void] != VOID).any()  # boxes (and background) do cover the void patch
    for name, labels in maps.items():
        cleaned = void_outside(labels, semantic)
        assert cleaned.dtype == np.uint8, name
        assert (cleaned[void] == VOID).all(), name
        assert np.array_equal(cleaned[~void], labels[~void]), name


def test_image_tags():
    semantic, _ = scene()
    assert image_tags(semantic, 4).tolist() == [True, True, True, False]
    assert not image_tags(np.full((3, 3), VOID, np.uint8), 2).any()
    with pytest.raises(ValueError):
        image_tags(semantic, 2)


def test_labelled_fraction():
    labels = np.full((4, 5), VOID, np.uint8)
    assert labelled_fraction(labels) == 0.0
    labels[0, :] = 0
    labels[1, :2] = 3
    assert labelled_fraction(labels) == pytest.approx(7 / 20)
    assert labelled_fraction(np.zeros((2, 2), np.uint8)) == 1.0
