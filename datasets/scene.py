"""Procedural road scenes in the Cityscapes trainId space.

A scene is a pinhole view down a straight street: a horizon row ``h0``, a vanishing column ``vx``
and a ground scale ``S = H - h0``. A point at lateral offset ``X`` and depth factor ``t`` (``t = 1``
on the bottom row, ``t -> 0`` at the horizon; ``t`` is inverse distance) projects to column
``vx + X t S`` and row ``h0 + t S``; an object ``h`` units tall is ``h t S`` pixels tall there.
So everything shrinks toward the vanishing point, and objects are drawn far to near so nearer
ones occlude farther ones.

The scene is layered: sky and ground; road (with lane markings, labelled road), sidewalks and
terrain; street-side planes of buildings (with windows), walls, fences and hedges; then objects
sorted by depth: cars, trucks, people, bicycles, poles with traffic signs and lights, trees, and
void clutter (bins, crates, bollards labelled 255 like Cityscapes' "static"/"dynamic"). Some frames
get an ego-vehicle hood or a rectification border, also void. Lighting (brightness, colour cast,
cast shadows), low-frequency surface textures and sensor noise are applied last.

Extra objects (anomalies) can be handed to :func:`render_scene` as callables placed at a depth;
they are drawn in depth order with everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.draw import ellipse

from owsbench.datasets.labels import TRAIN_ID

VOID = 255


@dataclass(frozen=True)
class View:
    """The camera of one scene (see the module docstring)."""

    height: int
    width: int
    horizon: float  # h0, a row
    vanish_x: float  # vx, a column
    road_left: float  # lateral X of the road's left edge (negative)
    road_right: float  # lateral X of the road's right edge
    sidewalk: float  # sidewalk width (lateral units)
    verge: tuple[float, float]  # terrain width between sidewalk and street-side planes (L, R)

    @property
    def scale(self) -> float:
        return self.height - self.horizon

    def project(self, lateral: float, t: float) -> tuple[float, float]:
        """(column, row) of ground point (lateral, t)."""
        return self.vanish_x + lateral * t * self.scale, self.horizon + t * self.scale

    def anchor(self, lateral: float, t: float) -> tuple[float, float, float]:
        """(column, row, pixels per unit height) of an object standing at (lateral, t)."""
        x, y = self.project(lateral, t)
        return x, y, t * self.scale

    def row_t(self) -> np.ndarray:
        """Depth factor of every row (negative above the horizon)."""
        return (np.arange(self.height) + 0.5 - self.horizon) / self.scale


class Canvas:
    """A float RGB image in [0, 1], its label map and its instance-id map (0 = none), painted
    in layers."""

    def __init__(self, height: int, width: int) -> None:
        self.image = np.zeros((height, width, 3), np.float32)
        self.labels = np.full((height, width), VOID, np.uint8)
        self.instances = np.zeros((height, width), np.int32)

    def paint(self, mask: np.ndarray, color: np.ndarray, label: int) -> None:
        """Paint ``color`` (an RGB triple or an ``(H, W, 3)`` texture) where ``mask`` holds."""
        self.image[mask] = color[mask] if color.ndim == 3 else color
        self.labels[mask] = label


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean value noise of feature size ``cell`` pixels, roughly in [-1, 1]."""
    small = rng.uniform(-1, 1, (max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)))
    image = Image.fromarray(small.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)


def textured(
    rng: np.random.Generator, shape: tuple[int, int], color, amount: float, cell: float
) -> np.ndarray:
    """An ``(H, W, 3)`` texture: ``color`` modulated by smooth noise of relative ``amount``."""
    noise = smooth_noise(rng, shape[0], shape[1], cell)[..., None]
    return np.clip(np.asarray(color, np.float32) * (1 + amount * noise), 0, 1)


def jitter(rng: np.random.Generator, color, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def random_view(rng: np.random.Generator, height: int, width: int) -> View:
    horizon = height * rng.uniform(0.36, 0.5)
    scale = height - horizon
    vanish_x = width * rng.uniform(0.38, 0.62)
    half = width / scale  # lateral units across half the frame at t = 1
    return View(
        height=height,
        width=width,
        horizon=horizon,
        vanish_x=vanish_x,
        road_left=-half * rng.uniform(0.45, 0.8),
        road_right=half * rng.uniform(0.45, 0.8),
        sidewalk=rng.uniform(0.9, 1.8),
        verge=(rng.choice([0.0, rng.uniform(0.5, 2.0)]), rng.choice([0.0, rng.uniform(0.5, 2.0)])),
    )


# -- ground -----------------------------------------------------------------------------------
def paint_ground(canvas: Canvas, view: View, rng: np.random.Generator) -> np.ndarray:
    """Sky, terrain, sidewalks and road with lane markings; returns each pixel's lateral X."""
    h, w = view.height, view.width
    t = view.row_t()[:, None]
    rows = np.broadcast_to(t, (h, w))
    cols = np.arange(w)[None, :] + 0.5
    lateral = np.where(rows > 0, (cols - view.vanish_x) / (np.maximum(rows, 1e-6) * view.scale), 0)

    sky = rows <= 0
    top = jitter(rng, (0.35, 0.55, 0.85), 0.1)
    low = jitter(rng, (0.8, 0.85, 0.9), 0.06)
    frac = np.clip((np.arange(h) / max(1.0, view.horizon)), 0, 1)[:, None, None]
    gradient = top * (1 - frac) + low * frac
    clouds = np.clip(smooth_noise(rng, h, w, h / 5), 0, 1)[..., None] * rng.uniform(0, 0.5)
    canvas.paint(sky, np.broadcast_to(gradient * (1 - clouds) + clouds, (h, w, 3)), TRAIN_ID["sky"])

    ground = ~sky
    canvas.paint(
        ground, textured(rng, (h, w), jitter(rng, (0.42, 0.55, 0.22)), 0.25, 6), TRAIN_ID["terrain"]
    )
    sidewalk = (
        ground
        & (lateral > view.road_left - view.sidewalk)
        & (lateral < view.road_right + view.sidewalk)
    )
    paving = textured(rng, (h, w), jitter(rng, (0.62, 0.58, 0.55), 0.1), 0.12, 4)
    tiles = (np.mod(lateral * 2.0, 1.0) < 0.06) | (
        np.mod(np.log(np.maximum(rows, 1e-3)) * 12, 1) < 0.08
    )
    paving = np.where(tiles[..., None], paving * 0.8, paving)
    canvas.paint(sidewalk, paving, TRAIN_ID["sidewalk"])
    curb = ground & (
        (np.abs(lateral - view.road_left) < 0.12) | (np.abs(lateral - view.road_right) < 0.12)
    )
    canvas.paint(curb, np.float32([0.75, 0.74, 0.72]), TRAIN_ID["sidewalk"])

    road = ground & (lateral > view.road_left) & (lateral < view.road_right)
    asphalt = textured(rng, (h, w), jitter(rng, (0.3, 0.3, 0.32), 0.06), 0.15, 3)
    canvas.paint(road, asphalt, TRAIN_ID["road"])
    distance = 1.0 / np.maximum(rows, 1e-3)  # along-street coordinate, for dashes
    dashes = np.mod(distance * rng.uniform(0.6, 1.0), 1.0) < 0.5
    centre = (view.road_left + view.road_right) / 2
    paint_color = (
        np.float32([0.9, 0.9, 0.85]) if rng.random() < 0.7 else np.float32([0.9, 0.75, 0.2])
    )
    lines = road & (
        ((np.abs(lateral - centre) < 0.08) & dashes)
        | (np.abs(lateral - (view.road_left + 0.35)) < 0.06)
        | (np.abs(lateral - (view.road_right - 0.35)) < 0.06)
    )
    canvas.paint(lines, paint_color, TRAIN_ID["road"])
    return lateral


# -- street-side planes -------------------------------------------------------------------------
STRUCTURES = ("building", "building", "building", "wall", "fence", "vegetation")


def paint_street_sides(canvas: Canvas, view: View, rng: np.random.Generator) -> None:
    """Vertical planes parallel to the street on both sides: facades, walls, fences, hedges."""
    h, w = view.height, view.width
    rows = np.arange(h)[:, None] + 0.5
    for side, verge in ((-1, view.verge[0]), (1, view.verge[1])):
        edge = (
            view.road_left - view.sidewalk - verge
            if side < 0
            else view.road_right + view.sidewalk + verge
        )
        cols = np.arange(w) + 0.5
        t_col = (cols - view.vanish_x) / (edge * view.scale)  # depth factor of the plane per column
        valid = t_col > 0.02
        distance = np.where(valid, 1.0 / np.maximum(t_col, 1e-6), 1e6)
        start = 0.0
        while start < 60:  # segments of the plane, near (distance 1) to far
            length = rng.uniform(2.0, 12.0)
            kind = STRUCTURES[rng.integers(len(STRUCTURES))]
            tall = {
                "building": rng.uniform(1.6, 4.5),
                "wall": rng.uniform(0.3, 0.7),
                "fence": rng.uniform(0.4, 0.8),
                "vegetation": rng.uniform(0.5, 1.5),
            }[kind]
            in_segment = valid & (distance >= start) & (distance < start + length)
            if rng.random() < 0.12:  # a gap: terrain and sky show through
                start += length
                continue
            ground_row = view.horizon + t_col * view.scale
            top_row = ground_row - tall * t_col * view.scale
            mask = in_segment[None, :] & (rows >= top_row[None, :]) & (rows < ground_row[None, :])
            if mask.any():
                height_frac = (ground_row[None, :] - rows) / np.maximum(
                    t_col[None, :] * view.scale, 1e-6
                )
                paint_structure(canvas, mask, kind, distance[None, :], height_frac, rng)
            start += length


def paint_structure(
    canvas: Canvas,
    mask: np.ndarray,
    kind: str,
    along: np.ndarray,
    up: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Texture one street-side segment; ``along``/``up`` are plane coordinates per pixel."""
    shape = mask.shape
    if kind == "building":
        base = [(0.75, 0.68, 0.55), (0.6, 0.35, 0.28), (0.55, 0.55, 0.58), (0.85, 0.8, 0.7)]
        facade = textured(rng, shape, jitter(rng, base[rng.integers(len(base))]), 0.1, 5)
        spacing = rng.uniform(0.7, 1.3)
        windows = (
            (np.mod(along / spacing, 1.0) < 0.45) & (np.mod(up / 0.9, 1.0) > 0.35) & (up > 0.7)
        )
        glass = jitter(rng, (0.2, 0.25, 0.32), 0.05)
        facade = np.where(windows[..., None] & np.ones(shape, bool)[..., None], glass, facade)
        canvas.paint(mask, facade, TRAIN_ID["building"])
    elif kind == "wall":
        concrete = textured(rng, shape, jitter(rng, (0.68, 0.66, 0.6)), 0.08, 8)
        canvas.paint(mask, concrete, TRAIN_ID["wall"])
    elif kind == "fence":
        slats = np.mod(along * rng.uniform(4, 8), 1.0) < 0.5
        rails = np.abs(np.mod(up, 0.35) - 0.17) < 0.03
        color = jitter(rng, (0.45, 0.35, 0.25) if rng.random() < 0.5 else (0.3, 0.45, 0.35))
        fence = mask & (slats | rails | (up > 0.9 * up[mask].max(initial=0)))
        canvas.paint(fence, np.broadcast_to(color, shape + (3,)).copy(), TRAIN_ID["fence"])
    else:
        leaves = textured(rng, shape, jitter(rng, (0.2, 0.42, 0.15)), 0.45, 2)
        canvas.paint(mask, leaves, TRAIN_ID["vegetation"])


# -- objects ------------------------------------------------------------------------------------
Drawer = Callable[[Canvas, View, float, float, np.random.Generator], None]


def _box(canvas: Canvas, x0: float, y0: float, x1: float, y1: float, color, label: int) -> None:
    h, w = canvas.labels.shape
    r0, r1 = max(0, int(round(y0))), min(h, int(round(y1)))
    c0, c1 = max(0, int(round(x0))), min(w, int(round(x1)))
    if r1 > r0 and c1 > c0:
        canvas.image[r0:r1, c0:c1] = color
        canvas.labels[r0:r1, c0:c1] = label


def _ellipse(canvas: Canvas, cy: float, cx: float, ry: float, rx: float, color, label: int) -> None:
    rr, cc = ellipse(cy, cx, max(ry, 0.6), max(rx, 0.6), shape=canvas.labels.shape)
    canvas.image[rr, cc] = color
    canvas.labels[rr, cc] = label


def draw_car(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    x, y, u = view.anchor(lateral, t)
    truck = rng.random() < 0.15
    width, height = (1.6, 2.0) if truck else (1.25, rng.uniform(0.85, 1.05))
    label = TRAIN_ID["truck"] if truck else TRAIN_ID["car"]
    body = jitter(
        rng,
        [
            (0.7, 0.1, 0.1),
            (0.1, 0.2, 0.6),
            (0.85, 0.85, 0.85),
            (0.1, 0.1, 0.1),
            (0.5, 0.5, 0.55),
            (0.8, 0.7, 0.2),
        ][rng.integers(6)],
        0.05,
    )
    x0, x1 = x - width * u / 2, x + width * u / 2
    _box(canvas, x0, y - 0.55 * height * u, x1, y - 0.12 * u, body, label)
    _box(
        canvas,
        x0 + 0.12 * u,
        y - height * u,
        x1 - 0.12 * u,
        y - 0.5 * height * u,
        body * 0.9,
        label,
    )
    _box(
        canvas,
        x0 + 0.2 * u,
        y - 0.93 * height * u,
        x1 - 0.2 * u,
        y - 0.6 * height * u,
        np.float32([0.15, 0.18, 0.22]),
        label,
    )
    for wx in (x0 + 0.22 * u, x1 - 0.22 * u):
        _ellipse(
            canvas, y - 0.12 * u, wx, 0.13 * u, 0.15 * u, np.float32([0.05, 0.05, 0.05]), label
        )
    for lx in (x0 + 0.08 * u, x1 - 0.18 * u):
        _box(
            canvas,
            lx,
            y - 0.45 * height * u,
            lx + 0.1 * u,
            y - 0.35 * height * u,
            np.float32([0.95, 0.9, 0.6]),
            label,
        )


def draw_person(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    x, y, u = view.anchor(lateral, t)
    tall = rng.uniform(1.0, 1.25) * u
    shirt = jitter(
        rng, [(0.7, 0.2, 0.2), (0.2, 0.3, 0.6), (0.9, 0.9, 0.85), (0.2, 0.5, 0.3)][rng.integers(4)]
    )
    label = TRAIN_ID["person"]
    _box(
        canvas, x - 0.09 * u, y - 0.5 * tall, x + 0.09 * u, y, np.float32([0.15, 0.15, 0.25]), label
    )
    _box(canvas, x - 0.14 * u, y - 0.85 * tall, x + 0.14 * u, y - 0.48 * tall, shirt, label)
    _ellipse(
        canvas, y - 0.92 * tall, x, 0.08 * tall, 0.06 * tall, jitter(rng, (0.8, 0.6, 0.5)), label
    )


def draw_bicycle(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    x, y, u = view.anchor(lateral, t)
    label, dark = TRAIN_ID["bicycle"], np.float32([0.08, 0.08, 0.1])
    for wx in (x - 0.35 * u, x + 0.35 * u):
        rr, cc = ellipse(
            y - 0.25 * u, wx, 0.25 * u + 0.6, 0.25 * u + 0.6, shape=canvas.labels.shape
        )
        inner = ((rr - (y - 0.25 * u)) ** 2 + (cc - wx) ** 2) < (0.18 * u) ** 2
        canvas.image[rr[~inner], cc[~inner]] = dark
        canvas.labels[rr[~inner], cc[~inner]] = label
    frame = jitter(rng, (0.7, 0.1, 0.1), 0.2)
    _box(canvas, x - 0.35 * u, y - 0.3 * u, x + 0.35 * u, y - 0.24 * u, frame, label)
    _box(canvas, x - 0.05 * u, y - 0.6 * u, x + 0.03 * u, y - 0.25 * u, frame, label)


def _pole_sign(canvas: Canvas, x: float, top: float, u: float, rng: np.random.Generator) -> None:
    """A round (red rim, white face) or square (blue or yellow) traffic sign at a pole's top."""
    size = 0.3 * u
    cy = top + size
    label = TRAIN_ID["traffic sign"]
    if rng.random() < 0.5:
        _ellipse(canvas, cy, x, size, size, np.float32([0.85, 0.1, 0.1]), label)
        _ellipse(canvas, cy, x, 0.7 * size, 0.7 * size, np.float32([0.95, 0.95, 0.95]), label)
    else:
        color = np.float32([0.1, 0.3, 0.8]) if rng.random() < 0.5 else np.float32([0.95, 0.8, 0.1])
        _box(canvas, x - size, cy - size, x + size, cy + size, color, label)


def _pole_light(canvas: Canvas, x: float, top: float, u: float, rng: np.random.Generator) -> None:
    """A traffic light (dark housing, one lit lamp: red, amber or green) at a pole's top."""
    bw, bh = 0.14 * u, 0.45 * u
    label = TRAIN_ID["traffic light"]
    _box(canvas, x - bw, top, x + bw, top + bh, np.float32([0.08, 0.08, 0.08]), label)
    lamp = rng.integers(3)
    color = [
        np.float32([1.0, 0.15, 0.1]),
        np.float32([1.0, 0.75, 0.1]),
        np.float32([0.2, 1.0, 0.4]),
    ][lamp]
    _ellipse(canvas, top + bh * (0.2 + 0.3 * lamp), x, 0.09 * u, 0.09 * u, color, label)


def draw_pole(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    x, y, u = view.anchor(lateral, t)
    tall = rng.uniform(2.2, 3.2) * u
    half = max(0.5, 0.05 * u)
    color = jitter(rng, (0.45, 0.45, 0.47), 0.05)
    _box(canvas, x - half, y - tall, x + half, y, color, TRAIN_ID["pole"])
    accessory = rng.random()
    if accessory < 0.45:
        _pole_sign(canvas, x, y - tall, u, rng)
    elif accessory < 0.75:
        _pole_light(canvas, x, y - tall, u, rng)


def draw_tree(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    x, y, u = view.anchor(lateral, t)
    tall = rng.uniform(2.0, 3.5) * u
    label = TRAIN_ID["vegetation"]
    _box(
        canvas, x - 0.08 * u, y - tall * 0.6, x + 0.08 * u, y, jitter(rng, (0.3, 0.22, 0.15)), label
    )
    radius = rng.uniform(0.6, 1.1) * u
    rr, cc = ellipse(
        y - tall * 0.6 - radius * 0.6, x, radius, radius * 1.1, shape=canvas.labels.shape
    )
    leaves = textured(rng, canvas.labels.shape, jitter(rng, (0.18, 0.4, 0.12)), 0.5, 2)
    canvas.image[rr, cc] = leaves[rr, cc]
    canvas.labels[rr, cc] = label


def draw_clutter(
    canvas: Canvas, view: View, lateral: float, t: float, rng: np.random.Generator
) -> None:
    """Void objects (Cityscapes "static"/"dynamic"): bins, crates, bollards; labelled 255."""
    x, y, u = view.anchor(lateral, t)
    kind = rng.integers(3)
    if kind == 0:  # wheelie bin
        color = jitter(rng, (0.15, 0.35, 0.2) if rng.random() < 0.5 else (0.3, 0.3, 0.32))
        _box(canvas, x - 0.22 * u, y - 0.7 * u, x + 0.22 * u, y, color, VOID)
    elif kind == 1:  # stacked crates
        color = jitter(rng, (0.55, 0.4, 0.25))
        _box(canvas, x - 0.3 * u, y - 0.35 * u, x + 0.3 * u, y, color, VOID)
        _box(canvas, x - 0.2 * u, y - 0.65 * u, x + 0.25 * u, y - 0.35 * u, color * 0.85, VOID)
    else:  # bollard
        _box(canvas, x - 0.06 * u, y - 0.5 * u, x + 0.06 * u, y, np.float32([0.2, 0.2, 0.2]), VOID)
        _box(
            canvas,
            x - 0.06 * u,
            y - 0.45 * u,
            x + 0.06 * u,
            y - 0.38 * u,
            np.float32([0.9, 0.9, 0.9]),
            VOID,
        )


@dataclass(frozen=True)
class Placed:
    """An object to draw at ground point (lateral, t)."""

    t: float
    lateral: float
    draw: Drawer


def scatter_objects(view: View, rng: np.random.Generator) -> list[Placed]:
    """The scene's usual objects: where they stand and how to draw them."""
    placed: list[Placed] = []
    left_walk = (view.road_left - view.sidewalk + 0.2, view.road_left - 0.2)
    right_walk = (view.road_right + 0.2, view.road_right + view.sidewalk - 0.2)

    def walk() -> float:
        return rng.uniform(*(left_walk if rng.random() < 0.5 else right_walk))

    for _ in range(rng.integers(0, 5)):
        lane = rng.uniform(view.road_left + 0.8, view.road_right - 0.8)
        placed.append(Placed(rng.uniform(0.12, 0.9), lane, draw_car))
    for _ in range(rng.integers(0, 5)):
        placed.append(Placed(rng.uniform(0.15, 1.0), walk(), draw_person))
    for _ in range(rng.integers(0, 2)):
        placed.append(Placed(rng.uniform(0.2, 0.9), walk(), draw_bicycle))
    for _ in range(rng.integers(1, 5)):
        side = (
            view.road_left - view.sidewalk + 0.25
            if rng.random() < 0.5
            else view.road_right + view.sidewalk - 0.25
        )
        placed.append(Placed(rng.uniform(0.1, 1.0), side, draw_pole))
    for _ in range(rng.integers(0, 4)):
        side = (
            view.road_left - view.sidewalk - 0.5
            if rng.random() < 0.5
            else view.road_right + view.sidewalk + 0.5
        )
        placed.append(Placed(rng.uniform(0.1, 0.9), side, draw_tree))
    for _ in range(rng.integers(0, 3)):
        placed.append(Placed(rng.uniform(0.2, 1.0), walk(), draw_clutter))
    return placed


# -- finishing ----------------------------------------------------------------------------------
def paint_ego_void(canvas: Canvas, view: View, rng: np.random.Generator) -> None:
    """An ego-vehicle hood or a rectification border (void), in some frames."""
    h, w = canvas.labels.shape
    if rng.random() < 0.3:
        rr, cc = ellipse(
            h * 1.05, w * rng.uniform(0.4, 0.6), h * rng.uniform(0.1, 0.16), w * 0.75, shape=(h, w)
        )
        canvas.image[rr, cc] = jitter(rng, (0.12, 0.12, 0.14), 0.05)
        canvas.labels[rr, cc] = VOID
    if rng.random() < 0.15:
        border = max(1, int(w * rng.uniform(0.01, 0.04)))
        for sl in (np.s_[:, :border], np.s_[:, w - border :]):
            canvas.image[sl] = 0.0
            canvas.labels[sl] = VOID


def finish(image: np.ndarray, view: View, rng: np.random.Generator) -> np.ndarray:
    """Lighting (brightness, colour cast, a cast shadow), then sensor noise; uint8 RGB."""
    h, w = image.shape[:2]
    light = rng.uniform(0.7, 1.2) * jitter(rng, (1.0, 1.0, 1.0), 0.08)
    image = image * light
    if rng.random() < 0.5:  # a soft shadow across the lower frame
        row = int(view.horizon + rng.uniform(0.2, 0.8) * view.scale)
        shade = np.ones((h, 1, 1), np.float32)
        shade[row : row + int(rng.uniform(0.05, 0.2) * h)] = rng.uniform(0.55, 0.8)
        image = image * shade
    image = image + rng.normal(0.0, rng.uniform(0.005, 0.03), image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


UNWRITTEN = 253  # label of pixels no drawer has written yet, while one object is drawn
THING_TRAIN_IDS = tuple(range(TRAIN_ID["person"], TRAIN_ID["bicycle"] + 1))


def draw_object(canvas: Canvas, view: View, item: Placed, instance: int, rng) -> None:
    """Draw ``item``; the pixels it labels with a thing class get instance id ``instance``,
    every other pixel it labels loses its instance id (occlusion)."""
    before = canvas.labels.copy()
    canvas.labels[:] = UNWRITTEN
    item.draw(canvas, view, item.lateral, item.t, rng)
    written = canvas.labels != UNWRITTEN
    canvas.labels[~written] = before[~written]
    thing = np.isin(canvas.labels, THING_TRAIN_IDS)
    canvas.instances[written] = np.where(thing[written], instance, 0)


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    extra: Callable[[View, np.ndarray], list[Placed]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene: ``(image (H, W, 3) uint8, semantic (H, W) uint8 with 255 = void,
    instances (H, W) int32)``; each drawn object of a thing class (person, rider, car, truck,
    bus, train, motorcycle, bicycle) has its own instance id, 0 elsewhere.

    ``extra(view, semantic_so_far)`` may return more objects (e.g. anomalies) to draw in depth
    order with the scene's own objects; it sees the ground and street sides already painted.
    """
    view = random_view(rng, height, width)
    canvas = Canvas(height, width)
    paint_ground(canvas, view, rng)
    paint_street_sides(canvas, view, rng)
    placed = scatter_objects(view, rng)
    if extra is not None:
        placed += extra(view, canvas.labels.copy())
    for instance, item in enumerate(sorted(placed, key=lambda p: p.t), start=1):
        draw_object(canvas, view, item, instance, rng)
    paint_ego_void(canvas, view, rng)
    canvas.instances[canvas.labels == VOID] = 0
    return finish(canvas.image, view, rng), canvas.labels, canvas.instances
