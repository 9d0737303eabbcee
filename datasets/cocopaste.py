"""``cityscapes-cocopaste``: COCO instances pasted into Cityscapes frames (generator and adapter).

Made by ``owsbench data make cityscapes-cocopaste --cityscapes DIR --coco DIR [--split val]``
into ``<data root>/cityscapes-cocopaste/<split>/``::

    images/<frame id>.png     RGB, the Cityscapes frame with 1-3 pasted COCO instances
    semantic/<frame id>.png   L, Cityscapes trainIds 0..18, 255 = void and under pasted objects
    anomaly/<frame id>.png    L, 0 = inlier, 1 = pasted object (alpha >= 0.5), 255 = Cityscapes void
    manifest.json             generator version, seed, sources, filters, per-frame COCO image and
                              annotation ids and categories, counts, sha256 of every file

Sources. ``--split val`` (the evaluation set) pastes COCO ``val2017`` instances into Cityscapes
``val`` (Cityscapes test labels are not public, and placement needs them, so ``test`` is
refused). ``--split train`` (for outlier-exposure training) pastes COCO ``train2017`` into
Cityscapes ``train`` and never reads COCO val2017 or Cityscapes val (every read is checked).

Categories. Excluded: everything a Cityscapes model knows or sees in street scenes: the
Meta-OoD list (``robin-chan/meta-ood: preparation/prepare_coco_segmentation.py``: person,
bicycle, car, motorcycle, bus, truck, traffic light, stop sign), plus train (a Cityscapes class
that Meta-OoD misses), plus fire hydrant, parking meter and bench (street furniture present in
Cityscapes frames, labelled void there, so neither clearly known nor clearly anomalous) and
potted plant (Cityscapes annotates plants as vegetation).

Instance filters (:class:`InstanceFilter`; after
``Giacomo-FMJ/MaskArchitectureAnomaly: cityscapes_coco_anomaly/synthgen/quality.py``): not crowd,
at least ``min_area`` pixels and 0.2 %-20 % of the COCO image, bounding box clear of the image
border (the object is not truncated), bounding-box aspect ratio in [0.3, 3], solidity (mask area
/ convex-hull area) >= 0.4 (stricter than that source's 0.2: spindly masks make poor cut-outs).
Instances are drawn category-uniformly, then uniformly within the category.

Placement (:class:`PasteConfig`, :func:`owsbench.datasets.paste.ground_placement`): the object
stands on a random road pixel (70 %) or sidewalk pixel, its height proportional to the pixel's
depth below the horizon (bigger lower in the image); it is rejected when its mask, dilated by
2 px, touches a person, rider or vehicle trainId or an earlier pasted object, when it is cut by
the frame border, or when more than 25 % of it lies on void. Blending is the alpha-feathered
composite of :mod:`owsbench.datasets.paste` (no colour matching). Every frame uses its own
generator seeded by (seed, crc32 of the frame id), so the output is byte-identical for a seed
and a frame's content does not depend on ``--count``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation
from tqdm.auto import tqdm

from owsbench.datasets.base import VOID, FileDataset, FrameFiles
from owsbench.datasets.cityscapes import IMAGE_DIRS, LABEL_DIRS, Cityscapes
from owsbench.datasets.io import read_rgb
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES, TRAIN_ID
from owsbench.datasets.paste import ground_placement, paste_object
from owsbench.errors import BadInput
from owsbench.tempfiles import remove_stale, temp_prefix

NAME = "cityscapes-cocopaste"
GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
META_OOD_EXCLUDED = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "truck",
    "traffic light",
    "stop sign",
)
EXCLUDED_CATEGORIES = (
    *META_OOD_EXCLUDED,
    "train",
    "fire hydrant",
    "parking meter",
    "bench",
    "potted plant",
)
# Cityscapes split and COCO set of each generated split; the evaluation sources are never read
# for "train".
SOURCES = {"val": ("val", "val2017"), "train": ("train", "train2017")}
EVALUATION_SOURCES = SOURCES["val"]
FORBIDDEN_UNDER = tuple(
    TRAIN_ID[c]
    for c in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
)


@dataclass(frozen=True)
class InstanceFilter:
    """Which COCO instances may be pasted (see the module docstring for the sources)."""

    min_area: int = 1024
    area_fraction: tuple[float, float] = (0.002, 0.2)
    aspect_ratio: tuple[float, float] = (0.3, 3.0)
    min_solidity: float = 0.4
    border_margin: float = 1.0

    def accepts(self, ann: dict, image: dict) -> bool:
        """The metadata filters (everything but solidity, which needs the mask)."""
        x, y, w, h = ann["bbox"]
        fraction = ann["area"] / (image["width"] * image["height"])
        m = self.border_margin
        return (
            not ann.get("iscrowd", 0)
            and ann["area"] >= self.min_area
            and self.area_fraction[0] <= fraction <= self.area_fraction[1]
            and h > 0
            and self.aspect_ratio[0] <= w / h <= self.aspect_ratio[1]
            and x >= m
            and y >= m
            and x + w <= image["width"] - m
            and y + h <= image["height"] - m
        )


@dataclass(frozen=True)
class PasteConfig:
    """How many objects per frame, their sizes and the placement rules."""

    objects: tuple[int, int] = (1, 3)  # inclusive range per frame
    size_range: tuple[float, float] = (0.15, 0.5)  # height / (rows below the horizon) at depth 1
    road_share: float = 0.7
    tries: int = 50  # placement attempts per frame
    min_pixels: int = 64
    max_void_share: float = 0.25
    margin: int = 2  # px of dilation for the overlap checks


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


class CocoInstances:
    """The pasteable instances of one COCO set; cut-outs decoded when drawn.

    ``guard`` is called with every path before it is read (the training variant's check).
    """

    def __init__(
        self,
        coco_dir: Path,
        coco_set: str,
        filters: InstanceFilter,
        guard: Callable[[Path], None],
    ) -> None:
        self.json_path = coco_dir / "annotations" / f"instances_{coco_set}.json"
        self.images_dir = coco_dir / coco_set
        if not coco_dir.is_dir():
            raise BadInput(f"COCO folder {coco_dir} not found (expected {self.json_path})")
        if not self.json_path.is_file():
            raise BadInput(f"missing COCO annotations {self.json_path}")
        if not self.images_dir.is_dir():
            raise BadInput(f"missing COCO images {self.images_dir} (expected {coco_set}/*.jpg)")
        from pycocotools.coco import COCO

        guard(self.json_path)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
                self.coco = COCO(str(self.json_path))
        except (ValueError, KeyError) as err:
            raise BadInput(f"cannot read {self.json_path}: {err}") from None
        self.filters, self.guard = filters, guard
        names = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        by_category: dict[str, list[int]] = {}
        for ann_id in sorted(self.coco.anns):
            ann = self.coco.anns[ann_id]
            name = names[ann["category_id"]]
            if name not in EXCLUDED_CATEGORIES and filters.accepts(
                ann, self.coco.imgs[ann["image_id"]]
            ):
                by_category.setdefault(name, []).append(ann_id)
        if not by_category:
            raise BadInput(f"{self.json_path}: no instance passes the filters")
        self.by_category = dict(sorted(by_category.items()))
        self.categories = list(self.by_category)
        self.names = names
        self._solid: dict[int, bool] = {}

    def draw(self, rng: np.random.Generator) -> tuple[dict, np.ndarray] | None:
        """A random instance ``(annotation, RGBA cut-out)``; None when it fails solidity."""
        category = self.categories[rng.integers(len(self.categories))]
        ids = self.by_category[category]
        ann = self.coco.anns[ids[rng.integers(len(ids))]]
        if self._solid.get(ann["id"]) is False:
            return None
        rgba = self.cutout(ann)
        self._solid[ann["id"]] = rgba is not None
        return None if rgba is None else (ann, rgba)

    def cutout(self, ann: dict) -> np.ndarray | None:
        """The instance cropped to its box as RGBA (alpha 255 on the mask); None if not solid."""
        from skimage.morphology import convex_hull_image

        info = self.coco.imgs[ann["image_id"]]
        path = self.images_dir / info["file_name"]
        self.guard(path)
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise BadInput(f"{path}: image size does not match {self.json_path}")
        x, y, w, h = ann["bbox"]
        rows = slice(int(y), int(np.ceil(y + h)))
        cols = slice(int(x), int(np.ceil(x + w)))
        mask = self.coco.annToMask(ann)[rows, cols].astype(bool)
        if not mask.any() or mask.sum() < self.filters.min_solidity * (
            convex_hull_image(mask).sum()
        ):
            return None
        alpha = np.where(mask, 255, 0).astype(np.uint8)
        return np.dstack([image[rows, cols], alpha])


def paste_frame(
    image: np.ndarray,
    semantic: np.ndarray,
    instances: CocoInstances,
    rng: np.random.Generator,
    config: PasteConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Paste ``config.objects`` instances (as many as fit in ``config.tries`` attempts) into one
    labelled frame; return ``(image, semantic, anomaly, objects)``, objects as manifest records."""
    original = semantic
    anomaly = np.where(semantic == VOID, VOID, 0).astype(np.uint8)
    wanted = int(rng.integers(config.objects[0], config.objects[1] + 1))
    structure = np.ones((2 * config.margin + 1,) * 2, bool)
    objects: list[dict] = []
    for _ in range(config.tries):
        if len(objects) == wanted:
            break
        drawn = instances.draw(rng)
        where = ground_placement(original, rng, config.size_range, config.road_share)
        if drawn is None or where is None:
            continue
        ann, rgba = drawn
        bottom, centre_x, height = where
        new_image, new_semantic, new_anomaly = paste_object(
            image, semantic, None, rgba, bottom, centre_x, height
        )
        hit = new_anomaly == 1
        near = binary_dilation(hit, structure)
        if (
            hit.sum() < config.min_pixels
            or hit[0].any()
            or hit[:, 0].any()
            or hit[:, -1].any()
            or (anomaly[near] == 1).any()
            or np.isin(original[near], FORBIDDEN_UNDER).any()
            or (original[hit] == VOID).mean() > config.max_void_share
        ):
            continue
        image, semantic = new_image, new_semantic
        anomaly[hit] = 1
        objects.append(
            {
                "coco_image_id": ann["image_id"],
                "annotation_id": ann["id"],
                "category": instances.names[ann["category_id"]],
                "bottom": bottom,
                "centre_x": centre_x,
                "height": height,
                "pixels": int(hit.sum()),
            }
        )
    return image, semantic, anomaly, objects


def _read_anything(path: Path) -> None:
    """The read check of the evaluation variant: every source may be read."""


def _training_guard(forbidden: list[Path]) -> Callable[[Path], None]:
    """A check that refuses reads under ``forbidden`` (the evaluation sources)."""
    resolved = [p.resolve() for p in forbidden]

    def guard(path: Path) -> None:
        target = path.resolve()
        if any(target == f or f in target.parents for f in resolved):
            raise RuntimeError(f"training generation must not read evaluation data: {path}")

    return guard


def _check_request(split: str, count: int | None, cityscapes_dir: Path) -> tuple[str, str]:
    """The (Cityscapes split, COCO set) a generation request reads; ``BadInput`` when the
    request cannot be made."""
    if split == "test":
        raise BadInput(
            "cityscapes-cocopaste: --split test is not possible: Cityscapes test labels are not "
            "public and placement needs them; use --split val for evaluation"
        )
    if split not in SOURCES:
        raise BadInput(f"cityscapes-cocopaste: unknown split {split!r}; valid: val, train")
    if count is not None and count < 1:
        raise BadInput(f"--count must be at least 1, got {count}")
    cs_split, coco_set = SOURCES[split]
    if not cityscapes_dir.is_dir():
        raise BadInput(
            f"Cityscapes folder {cityscapes_dir} not found (expected "
            f"{cityscapes_dir}/leftImg8bit/{cs_split}/<city>/*_leftImg8bit.png)"
        )
    return cs_split, coco_set


def _split_guard(split: str, cityscapes_dir: Path, coco_dir: Path) -> Callable[[Path], None]:
    """The read guard of a split: training generation must not read evaluation data."""
    if split != "train":
        return _read_anything
    return _training_guard(
        [
            *(cityscapes_dir / sub / EVALUATION_SOURCES[0] for sub, _ in IMAGE_DIRS + LABEL_DIRS),
            coco_dir / EVALUATION_SOURCES[1],
            coco_dir / "annotations" / f"instances_{EVALUATION_SOURCES[1]}.json",
        ]
    )


def _write_frame(
    files: FrameFiles,
    cityscapes: Cityscapes,
    instances: CocoInstances,
    staging: Path,
    seed: int,
    config: PasteConfig,
    guard: Callable[[Path], None],
) -> list[dict]:
    """Paste into one frame (its own seeded stream), write its three PNGs; return its objects."""
    for path in (files.image, files.semantic):
        guard(path)  # type: ignore[arg-type]
    frame = cityscapes.load_frame(files)
    assert frame.semantic is not None
    rng = np.random.default_rng([seed, zlib.crc32(files.frame_id.encode())])
    image, semantic, anomaly, objects = paste_frame(
        frame.image, frame.semantic, instances, rng, config
    )
    for kind, array in (("images", image), ("semantic", semantic), ("anomaly", anomaly)):
        (staging / kind).mkdir(exist_ok=True)
        Image.fromarray(array).save(staging / kind / f"{files.frame_id}.png")
    return objects


def _manifest(
    records: list[dict], staging: Path, split: str, seed: int, sources: tuple[str, str],
    filters: InstanceFilter, config: PasteConfig,
) -> dict:  # fmt: skip
    """The manifest of a generated split: settings, counts, per-frame objects, checksums."""
    pasted = [o for r in records for o in r["objects"]]
    per_category: dict[str, int] = {}
    for o in pasted:
        per_category[o["category"]] = per_category.get(o["category"], 0) + 1
    return {
        "generator": NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
        "sources": {"cityscapes": sources[0], "coco": sources[1]},
        "excluded_categories": list(EXCLUDED_CATEGORIES),
        "filters": asdict(filters),
        "paste": asdict(config),
        "counts": {
            "frames": len(records),
            "objects": len(pasted),
            "frames_with_anomaly": sum(bool(r["objects"]) for r in records),
            "per_category": dict(sorted(per_category.items())),
        },
        "categories": sorted(per_category),
        "frames": records,
        "checksums": {
            _rel(p, staging): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(staging.rglob("*.png"))
        },
    }


def generate(
    cityscapes_dir: Path,
    coco_dir: Path,
    data_root: Path,
    split: str = "val",
    seed: int = 0,
    count: int | None = None,
    filters: InstanceFilter = InstanceFilter(),
    config: PasteConfig = PasteConfig(),
    progress: bool = True,
) -> Path:
    """Write ``<data_root>/cityscapes-cocopaste/<split>/`` (atomically); return that folder."""
    cs_split, coco_set = _check_request(split, count, cityscapes_dir)
    if split == "train":
        assert cs_split != EVALUATION_SOURCES[0] and coco_set != EVALUATION_SOURCES[1]
    guard = _split_guard(split, cityscapes_dir, coco_dir)
    cityscapes = Cityscapes(cityscapes_dir.parent)
    cityscapes.folder = cityscapes_dir
    frames = cityscapes.files(cs_split)[:count]
    instances = CocoInstances(coco_dir, coco_set, filters, guard)

    out = data_root / NAME / split
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, out.name)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out.name)))
    try:
        records = []
        for files in tqdm(frames, desc=f"make {NAME}/{split}", disable=not progress, leave=False):
            objects = _write_frame(files, cityscapes, instances, staging, seed, config, guard)
            records.append(
                {
                    "frame_id": files.frame_id,
                    "cityscapes_image": _rel(files.image, cityscapes_dir),
                    "objects": objects,
                }
            )
        manifest = _manifest(records, staging, split, seed, (cs_split, coco_set), filters, config)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


class CityscapesCocoPaste(FileDataset):
    """The generated set (see the module docstring for the layout and label encodings)."""

    name: ClassVar[str] = NAME
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "cityscapes"
    splits: ClassVar[tuple[str, ...]] = ("val", "train")
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    expected_counts: ClassVar[dict[str, int]] = {"val": 500, "train": 2975}
    layout: ClassVar[str] = (
        "cityscapes-cocopaste/{val,train}/images/<frame id>.png        (RGB)\n"
        "cityscapes-cocopaste/{val,train}/semantic/<frame id>.png      (trainIds, 255 = void)\n"
        "cityscapes-cocopaste/{val,train}/anomaly/<frame id>.png       (0 / 1 / 255)\n"
        "cityscapes-cocopaste/{val,train}/manifest.json"
    )
    source: ClassVar[str] = (
        "generated from Cityscapes (leftImg8bit + gtFine) and COCO 2017 (instances_*.json + "
        "images): owsbench data make cityscapes-cocopaste --cityscapes DIR --coco DIR "
        "[--split val|train] [--seed N] [--count N]"
    )
    description: ClassVar[str] = (
        "COCO 2017 instances (categories that overlap Cityscapes classes excluded) pasted with "
        "feathered edges onto the road or sidewalk of Cityscapes frames, perspective-scaled, "
        "never over people or vehicles: val = COCO val2017 into Cityscapes val (evaluated), "
        "train = COCO train2017 into Cityscapes train (for outlier exposure). Models train on "
        "cityscapes."
    )

    def __init__(self, root: Path, preset: str = "default") -> None:
        super().__init__(root, preset)
        generated = tuple(s for s in self.splits if (self.folder / s / MANIFEST).is_file())
        self.splits = generated or self.eval_splits  # type: ignore[misc]

    def files(self, split: str) -> list[FrameFiles]:
        manifest = self.folder / split / MANIFEST
        if split in type(self).splits and not manifest.is_file():
            raise BadInput(
                f"{NAME}/{split} is not generated ({manifest} missing); run `owsbench data make "
                f"{NAME} --cityscapes DIR --coco DIR --split {split}`"
            )
        return super().files(split)

    def manifest(self, split: str) -> dict:
        path = self.folder / split / MANIFEST
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise BadInput(f"cannot read {path}: {err}") from None

    def list_files(self, split: str) -> list[FrameFiles]:
        folder = self.folder / split
        return [
            FrameFiles(
                r["frame_id"],
                folder / "images" / f"{r['frame_id']}.png",
                semantic=folder / "semantic" / f"{r['frame_id']}.png",
                anomaly=folder / "anomaly" / f"{r['frame_id']}.png",
            )
            for r in self.manifest(split)["frames"]
        ]

    def fingerprint(self) -> str:
        """Changes with the generated files (their sha256 in the manifests)."""
        for split in self.eval_splits:
            self.files(split)
        checksums = {s: self.manifest(s)["checksums"] for s in self.eval_splits}
        digest = hashlib.sha256(json.dumps(checksums, sort_keys=True).encode())
        return f"{NAME}/{digest.hexdigest()[:16]}"
