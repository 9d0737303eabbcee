"""``synthstreets``: the embedded default dataset, procedural road scenes generated on first use.

Frames are rendered by :mod:`owsbench.datasets.scene` in the Cityscapes 19-class trainId space
(255 = void). ``train`` has no anomalies. ``val`` and ``test`` get one to three anomalies per
frame, cut-outs of :data:`~owsbench.datasets.objects.TEST_FAMILIES` (real photos from
scikit-image, the horse silhouette) standing on the road or sidewalk, scaled by perspective and
occluded by nearer objects; their pixels are anomaly 1 and semantic 255. ``val`` is
distribution-matched validation (the same families as ``test``, other scenes), as Fishyscapes and
SMIYC provide. Outlier exposure for training draws from the disjoint
:data:`~owsbench.datasets.objects.OUTLIER_EXPOSURE_FAMILIES` (:meth:`SynthStreets.outlier_source`).

On disk, under ``<data root>/synthstreets/<preset>/``: ``<split>/images/<id>.png`` (RGB),
``<split>/semantic/<id>.png`` (L, trainIds), ``<split>/anomaly/<id>.png`` (L, 0/1/255; val and
test) and ``manifest.json`` (generator version, seed, sizes, counts, per-split sha256). The data
is regenerated whenever the manifest does not match this generator or the files' checksums.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from owsbench.datasets.base import VOID, Dataset, Frame, Split
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.datasets.objects import (
    ObjectSource,
    evaluation_anomaly_source,
    outlier_exposure_source,
)
from owsbench.datasets.paste import composite, scaled_cutout
from owsbench.datasets.scene import THING_TRAIN_IDS, Canvas, Placed, View, render_scene
from owsbench.errors import BadInput
from owsbench.tempfiles import remove_stale, temp_prefix

GENERATOR_VERSION = 2  # 2: instance ids (instances/<frame id>.png, uint16)
DATASET_SEED = 20261121
SPLITS = ("train", "val", "test")
ANOMALY_MARK = 254  # temporary label of anomaly pixels while a scene is painted


@dataclass(frozen=True)
class SynthConfig:
    """Frame size and split sizes of one preset."""

    height: int
    width: int
    train: int
    val: int
    test: int


SIZES = {
    "quick": SynthConfig(height=96, width=192, train=64, val=8, test=16),
    "default": SynthConfig(height=128, width=256, train=400, val=40, test=120),
}


def anomaly_objects(rng: np.random.Generator, source: ObjectSource):
    """A scene callback placing 1-3 cut-outs from ``source`` on the road or sidewalk."""

    def place(view: View, _labels: np.ndarray) -> list[Placed]:
        placed = []
        for _ in range(rng.integers(1, 4)):
            cutout, _family = source.sample(rng)
            size = rng.uniform(0.35, 0.9)  # object height in camera heights
            if rng.random() < 0.85:
                lateral = rng.uniform(view.road_left + 0.3, view.road_right - 0.3)
            else:
                lateral = rng.uniform(view.road_right + 0.2, view.road_right + view.sidewalk - 0.2)

            def draw(
                canvas: Canvas, view: View, lateral: float, t: float, _rng, cutout=cutout, size=size
            ):
                x, y = view.project(lateral, t)
                height = max(3, round(size * t * view.scale))
                composite(
                    canvas.image, canvas.labels, scaled_cutout(cutout, height), y, x, ANOMALY_MARK
                )

            placed.append(Placed(rng.uniform(0.25, 0.95), lateral, draw))
        return placed

    return place


def generate_frame(
    split: str, index: int, config: SynthConfig, seed: int = DATASET_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Frame ``index`` of ``split`` as ``(image, semantic, anomaly or None, instances)``;
    deterministic."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    if split == "train":
        image, semantic, instances = render_scene(rng, config.height, config.width)
        return image, semantic, None, instances
    source = evaluation_anomaly_source()
    while True:  # re-roll the rare scene whose anomalies end up hidden
        image, labels, instances = render_scene(
            rng, config.height, config.width, anomaly_objects(rng, source)
        )
        hit = labels == ANOMALY_MARK
        if hit.sum() >= 12:
            break
    semantic = np.where(hit, VOID, labels).astype(np.uint8)
    anomaly = np.where(hit, 1, np.where(semantic == VOID, VOID, 0)).astype(np.uint8)
    return image, semantic, anomaly, instances


def _split_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class SynthSplit(Split):
    """Frames of one generated split, read lazily from PNG files."""

    def __init__(self, folder: Path, name: str, count: int) -> None:
        self.folder, self.name, self.count = folder, name, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Frame:
        if not 0 <= index < self.count:
            raise IndexError(f"{self.name} has {self.count} frames; no frame {index}")
        frame_id = f"{self.name}_{index:04d}"
        image = np.asarray(Image.open(self.folder / "images" / f"{frame_id}.png").convert("RGB"))
        semantic = np.asarray(Image.open(self.folder / "semantic" / f"{frame_id}.png"))
        anomaly_path = self.folder / "anomaly" / f"{frame_id}.png"
        anomaly = np.asarray(Image.open(anomaly_path)) if anomaly_path.exists() else None
        instances = np.asarray(Image.open(self.folder / "instances" / f"{frame_id}.png"))
        return Frame(frame_id, image, semantic, anomaly, instances.astype(np.int32))


class SynthStreets(Dataset):
    name: ClassVar[str] = "synthstreets"
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "synthstreets"
    splits: ClassVar[tuple[str, ...]] = SPLITS
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    validation_split: ClassVar[str | None] = "val"
    provides_instances: ClassVar[bool] = True
    thing_classes: ClassVar[tuple[int, ...]] = THING_TRAIN_IDS
    description: ClassVar[str] = (
        "Procedural road scenes in the Cityscapes 19-class trainId space (road, sidewalk, "
        "building, wall, fence, pole, traffic light/sign, vegetation, terrain, sky, person, car, "
        "truck, bicycle; 255 = void clutter, ego hood, borders), generated on first use into "
        "<data root>/synthstreets/<preset>/, with instance ids of the thing classes. Splits: "
        "train (no anomalies), val and test (1-3 "
        "anomalies per frame from object families never seen in training: photo cut-outs of "
        "scikit-image's chelsea, coffee, astronaut, rocket and the horse silhouette). Sizes: "
        + "; ".join(
            f"{p} {c.height}x{c.width}, train/val/test {c.train}/{c.val}/{c.test}"
            for p, c in SIZES.items()
        )
        + "."
    )

    def __init__(self, root: Path, preset: str = "default") -> None:
        if preset not in SIZES:
            raise BadInput(f"unknown synthstreets preset {preset!r}; valid: {', '.join(SIZES)}")
        super().__init__(root, preset)
        self.config = SIZES[preset]
        self.folder = self.root / self.name / preset
        self._ready = False  # set once the files on disk were checked or written

    def expected_manifest(self) -> dict:
        return {
            "generator_version": GENERATOR_VERSION,
            "seed": DATASET_SEED,
            "preset": self.preset,
            "config": asdict(self.config),
            "counts": {s: getattr(self.config, s) for s in SPLITS},
        }

    def manifest(self) -> dict | None:
        """The manifest on disk, or None when it is missing or unreadable."""
        try:
            return json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def is_current(self) -> bool:
        """True when the data on disk is what this generator, seed and preset produce."""
        manifest = self.manifest()
        if manifest is None or {k: manifest.get(k) for k in self.expected_manifest()} != (
            self.expected_manifest()
        ):
            return False
        checksums = manifest.get("checksums", {})
        return all(
            (self.folder / s).is_dir() and checksums.get(s) == _split_digest(self.folder / s)
            for s in SPLITS
        )

    def prepare(self, progress: bool = True) -> None:
        if not self.is_current():
            self.generate(progress)
        self._ready = True

    def generate(self, progress: bool = True) -> None:
        """Render every split into a temporary folder, then move it into place."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.folder.parent, self.folder.name)
        staging = Path(
            tempfile.mkdtemp(dir=self.folder.parent, prefix=temp_prefix(self.folder.name))
        )
        try:
            total = sum(getattr(self.config, s) for s in SPLITS)
            bar = tqdm(
                total=total,
                desc=f"generate synthstreets/{self.preset}",
                unit="frame",
                disable=not progress,
                leave=False,
            )
            for split in SPLITS:
                for index in range(getattr(self.config, split)):
                    self._write_frame(staging / split, split, index)
                    bar.update()
            bar.close()
            manifest = self.expected_manifest()
            manifest["checksums"] = {s: _split_digest(staging / s) for s in SPLITS}
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if self.folder.exists():
                shutil.rmtree(self.folder)
            staging.rename(self.folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_frame(self, folder: Path, split: str, index: int) -> None:
        image, semantic, anomaly, instances = generate_frame(split, index, self.config)
        frame_id = f"{split}_{index:04d}"
        arrays = {
            "images": image,
            "semantic": semantic,
            "anomaly": anomaly,
            "instances": instances.astype(np.uint16),
        }
        for kind, array in arrays.items():
            if array is not None:
                (folder / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / kind / f"{frame_id}.png")

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise BadInput(f"synthstreets has no split {name!r}; valid: {', '.join(SPLITS)}")
        if not (self._ready or self.is_current()):
            raise BadInput(f"synthstreets/{self.preset} is not generated; run prepare() first")
        self._ready = True
        return SynthSplit(self.folder / name, name, getattr(self.config, name))

    def fingerprint(self) -> str:
        manifest = self.manifest() or {}
        digest = hashlib.sha256(json.dumps(manifest.get("checksums"), sort_keys=True).encode())
        return f"synthstreets/{self.preset}/{digest.hexdigest()[:16]}"

    def outlier_source(self) -> ObjectSource:
        """Cut-outs for outlier exposure, from families disjoint from the test anomalies."""
        return outlier_exposure_source()
