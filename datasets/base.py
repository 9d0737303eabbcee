"""The dataset contract: frames, splits and dataset adapters.

Conventions (the project conventions, README.md): images are ``H x W x 3`` uint8 RGB; semantic
labels are ``H x W`` uint8 class ids ``0..K-1`` in the dataset's known-class space with ``255`` =
void; anomaly labels are ``H x W`` uint8 with ``0`` = inlier, ``1`` = anomaly, ``255`` = void;
instance ids (where a dataset has them) are ``H x W`` int32, ``0`` = no instance, each other value
one object of a thing class (unique within the frame).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from owsbench.errors import BadInput

VOID = 255


@dataclass(frozen=True)
class Frame:
    """One evaluation or training frame."""

    frame_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    semantic: np.ndarray | None = None  # (H, W) uint8, 0..K-1, 255 = void
    anomaly: np.ndarray | None = None  # (H, W) uint8, 0 / 1 / 255
    instances: np.ndarray | None = None  # (H, W) int32, 0 = none, else one object per value


@dataclass(frozen=True)
class LabelTraits:
    """What a dataset's training labels offer weak supervision: whether its frames carry
    instance ids, which class ids are thing classes (one object per instance; the others are
    stuff), and its background class (None where unlabelled pixels are void, as in road scenes)."""

    provides_instances: bool = False
    thing_classes: tuple[int, ...] = ()
    background_class: int | None = None


class Split(Sequence[Frame], ABC):
    """An indexable, lazily loaded list of frames (one frame in memory at a time)."""

    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Frame: ...  # type: ignore[override]

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]


class Dataset(ABC):
    """A dataset adapter: where the data lives, its class space, and its splits.

    ``train_on`` names the dataset whose ``train`` split the models evaluated here are fitted on;
    ``splits`` are all the splits it has; ``eval_splits`` those the runner evaluates by default.
    """

    name: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    train_on: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    eval_splits: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    # SMIYC component metrics: predicted components below the first size and ground-truth
    # components below the second (pixels) are dropped / made void; 0 = keep all.
    component_size_filters: ClassVar[tuple[int, int]] = (0, 0)
    # a labelled split for choices made during fits (validation); never one of eval_splits
    validation_split: ClassVar[str | None] = None
    # whether the training frames carry instance ids (``Frame.instances``), and for which class
    # ids (thing classes: one object per instance; every other class is "stuff")
    provides_instances: ClassVar[bool] = False
    thing_classes: ClassVar[tuple[int, ...]] = ()
    # the class id that means "background" (Oxford-IIIT Pet), or None where every pixel outside
    # the labelled classes is void (road scenes)
    background_class: ClassVar[int | None] = None

    def __init__(self, root: Path, preset: str = "default") -> None:
        self.root = Path(root)
        self.preset = preset

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def prepare(self, progress: bool = True) -> None:
        """Make the data ready to read (generate or check it); raise BadInput if it is not."""

    @abstractmethod
    def split(self, name: str) -> Split:
        """The named split; raise BadInput for an unknown or unavailable split."""

    def fingerprint(self) -> str:
        """A string that changes whenever the data changes (used in cache keys)."""
        return self.name

    def label_traits(self) -> LabelTraits:
        """The dataset's :class:`LabelTraits` (from its declared class attributes)."""
        traits = (self.provides_instances, tuple(self.thing_classes), self.background_class)
        return LabelTraits(*traits)

    def outlier_source(self) -> Any | None:
        """Cut-outs for outlier exposure (an ``ObjectSource``) when the dataset has some, else
        None (the default)."""
        return None

    def check(self, progress: bool = True) -> list[str]:
        """Validate the data on disk; return warnings, raise ``BadInput`` on a problem."""
        self.prepare(progress)
        return []


@dataclass(frozen=True)
class FrameFiles:
    """Where one frame of a dataset on disk lives."""

    frame_id: str
    image: Path
    semantic: Path | None = None
    anomaly: Path | None = None
    instances: Path | None = None


class FileSplit(Split):
    """A split of a dataset on disk: files listed once, frames decoded lazily one at a time."""

    def __init__(self, dataset: FileDataset, name: str, files: list[FrameFiles]) -> None:
        self.dataset, self.name, self.files = dataset, name, files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Frame:
        if not 0 <= index < len(self.files):
            raise IndexError(f"{self.name} has {len(self.files)} frames; no frame {index}")
        return self.dataset.load_frame(self.files[index])


class FileDataset(Dataset):
    """An official dataset unpacked as-is under ``<data root>/<id>/`` (read-only).

    Subclasses list each split's files (``list_files``) and decode raw label arrays into the
    project conventions (``decode_semantic`` / ``decode_anomaly``, raising ``BadInput`` naming the
    file on unexpected values). ``expected_counts`` are the official frame counts; fewer frames
    on disk is allowed (a subset) and reported by ``check``. Splits in ``unlabelled_splits`` have
    no public labels and are refused for evaluation with the reason.
    """

    layout: ClassVar[str] = ""  # the expected folder layout, for `owsbench data info`
    source: ClassVar[str] = ""  # where the official data comes from
    expected_counts: ClassVar[dict[str, int]] = {}
    unlabelled_splits: ClassVar[dict[str, str]] = {}

    def __init__(self, root: Path, preset: str = "default") -> None:
        super().__init__(root, preset)
        self.folder = self.root / self.name
        self._files: dict[str, list[FrameFiles]] = {}
        self._fingerprint: str | None = None

    @abstractmethod
    def list_files(self, split: str) -> list[FrameFiles]:
        """The split's frames in a fixed order; ``BadInput`` naming the missing folder/pattern."""

    def decode_semantic(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw semantic label array -> trainIds 0..K-1 / 255 (default: validate only)."""
        from owsbench.datasets.io import check_values

        check_values(raw, set(range(self.num_classes)) | {VOID}, path)
        return raw.astype(np.uint8)

    def decode_anomaly(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw anomaly label array -> 0 / 1 / 255 (default: validate only)."""
        from owsbench.datasets.io import check_values

        check_values(raw, {0, 1, VOID}, path)
        return raw.astype(np.uint8)

    def decode_instances(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw instance-id array -> ``(H, W)`` int32 ids, 0 = no instance (default: as is)."""
        return raw.astype(np.int32)

    def derive_anomaly(self, semantic_raw: np.ndarray, path: Path) -> np.ndarray | None:
        """Anomaly labels derived from the raw semantic labels, for datasets whose anomalies
        are a class of the semantic labels (StreetHazards, BDD-Anomaly); None by default."""
        return None

    def load_frame(self, files: FrameFiles) -> Frame:
        from owsbench.datasets.io import check_size, read_label, read_rgb

        image = read_rgb(files.image)
        semantic = anomaly = None
        if files.semantic is not None:
            raw = read_label(files.semantic)
            check_size(image, raw, files.semantic)
            semantic = self.decode_semantic(raw, files.semantic)  # validates first: raw may be
            anomaly = self.derive_anomaly(raw, files.semantic)  # 16-bit, beyond lookup tables
        if files.anomaly is not None:
            raw = read_label(files.anomaly)
            check_size(image, raw, files.anomaly)
            anomaly = self.decode_anomaly(raw, files.anomaly)
        instances = None
        if files.instances is not None:
            raw = read_label(files.instances)
            check_size(image, raw, files.instances)
            instances = self.decode_instances(raw, files.instances)
        return Frame(files.frame_id, image, semantic, anomaly, instances)

    def files(self, split: str) -> list[FrameFiles]:
        if split not in self.splits:
            raise BadInput(f"{self.name} has no split {split!r}; valid: {', '.join(self.splits)}")
        if split in self.unlabelled_splits:
            reason = self.unlabelled_splits[split]
            raise BadInput(f"{self.name}/{split} cannot be evaluated: {reason}")
        if split not in self._files:
            if not self.folder.is_dir():
                raise BadInput(
                    f"{self.name}: {self.folder} not found; unpack the official data there "
                    f"(see `owsbench data info {self.name}`)"
                )
            found = self.list_files(split)
            if not found:
                raise BadInput(f"{self.name}/{split}: no frames found under {self.folder}")
            self._files[split] = found
        return self._files[split]

    def prepare(self, progress: bool = True) -> None:
        for split in self.eval_splits:
            self.files(split)

    def split(self, name: str) -> Split:
        return FileSplit(self, name, self.files(name))

    def fingerprint(self) -> str:
        """Changes when the listed files change (names and sizes, not contents: cheap).

        Covers the evaluated splits and, for a dataset that is its own training source, the
        train split. Paths are taken relative to the data root: some datasets read images that
        live in another dataset's folder (Fishyscapes reads LostAndFound and Cityscapes images).
        Computed once per instance.
        """
        if self._fingerprint is None:
            used = list(self.eval_splits)
            if self.train_on == self.name and "train" in self.splits:
                used.append("train")
            digest = hashlib.sha256()
            for split in used:
                for f in self.files(split):
                    for path in (f.image, f.semantic, f.anomaly, f.instances):
                        if path is not None:
                            size = _size(path, f.image)
                            digest.update(f"{path.relative_to(self.root)}:{size};".encode())
            self._fingerprint = f"{self.name}/{digest.hexdigest()[:16]}"
        return self._fingerprint

    def check(self, progress: bool = True) -> list[str]:
        """Read every frame of every labelled split; return warnings (subset sizes).

        Raises ``BadInput`` at the first concrete problem (missing folder, unreadable file,
        size mismatch, unexpected label values), naming the file.
        """
        from tqdm.auto import tqdm

        warnings = []
        for split in self.splits:
            if split in self.unlabelled_splits:
                continue
            files = self.files(split)
            expected = self.expected_counts.get(split)
            if expected is not None and len(files) != expected:
                warnings.append(
                    f"{self.name}/{split}: {len(files)} frames found, the official split has "
                    f"{expected} (a subset is fine; numbers are not comparable to published ones)"
                )
            for f in tqdm(
                files, desc=f"check {self.name}/{split}", disable=not progress, leave=False
            ):
                self.load_frame(f)
        return warnings


def _size(path: Path, image: Path) -> int:
    """``path``'s size; ``BadInput`` naming it (and its frame's image) when it is gone."""
    of = "" if path == image else f" (the label of {image})"
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise BadInput(f"missing file: {path}{of}") from None
    except OSError as err:
        raise BadInput(f"cannot read {path}{of}: {err.strerror}") from None
