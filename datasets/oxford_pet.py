"""``oxford-pet``: the Oxford-IIIT Pet dataset (Parkhi et al., CVPR 2012), pet vs background.

Layout (the official ``images.tar.gz`` and ``annotations.tar.gz`` unpacked as-is under
``<data root>/oxford-pet/``; the same folders one level down, in ``oxford-pet/oxford-iiit-pet/``
as torchvision's ``OxfordIIITPet`` downloads them, are accepted too)::

    images/{image_id}.jpg
    annotations/trimaps/{image_id}.png
    annotations/trainval.txt
    annotations/test.txt

Checked against the dataset's ``annotations/README`` and ``list.txt`` header and torchvision's
``datasets/oxford_iiit_pet.py``. Each split-file line is ``image_id class_id species breed_id``
(whitespace separated; lines starting with ``#`` are comments): ``class_id`` 1..37 numbers the
breeds in the case-insensitive alphabetical order of their names (the image id without its
trailing ``_{n}``), ``species`` is 1 = cat, 2 = dog (cat breeds are the capitalised names).
Frames are listed from the split files only (the archive also holds images outside them and
junk files such as ``._*`` beside the trimaps); a listed frame whose image or trimap is missing
is left out (a subset; ``check`` reports the counts). A few images are grayscale, CMYK or RGBA
JPEGs: they are converted to RGB.

Trimap values: 1 = pet, 2 = background, 3 = border / not classified. Semantic labels: the pet
pixels get the frame's class, background 0, border 255 (void). ``classes="species"`` (default):
background, cat, dog; ``classes="breeds"``: background + the 37 breeds in class-id order. One
instance per image (``Frame.instances`` 1 on the pet pixels, 0 elsewhere). No anomaly labels:
rows report mIoU only.

Splits: ``train`` and ``val`` carve ``trainval.txt`` deterministically, ``val`` = every 10th
listed frame (line index ``i % 10 == 0`` among the non-comment lines, in file order; the file is
sorted by breed, so val covers every breed), ``train`` the rest; ``test`` = ``test.txt``
(evaluated). The carve is by position in the split file, so a subset on disk keeps each frame in
its split.

Size: the images come in many sizes, and training stacks the frames of a batch, so by default
every image is resized to ``size x size`` (256; bilinear) and its trimap likewise (nearest
neighbour) before decoding; ``size=None`` keeps the native sizes (evaluation batches frames of
equal size together; training then needs batch size 1). The aspect ratio is not kept, and
metrics are computed at the resized label resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from owsbench.datasets.base import VOID, FileDataset, Frame, FrameFiles
from owsbench.errors import BadInput

SPECIES_NAMES: tuple[str, ...] = ("background", "cat", "dog")
# the 37 breeds in class-id order (1..37): the case-insensitive alphabetical order of the names
# as they appear in the image ids; capitalised names are cats
BREED_NAMES: tuple[str, ...] = (
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "boxer",
    "British_Shorthair",
    "chihuahua",
    "Egyptian_Mau",
    "english_cocker_spaniel",
    "english_setter",
    "german_shorthaired",
    "great_pyrenees",
    "havanese",
    "japanese_chin",
    "keeshond",
    "leonberger",
    "Maine_Coon",
    "miniature_pinscher",
    "newfoundland",
    "Persian",
    "pomeranian",
    "pug",
    "Ragdoll",
    "Russian_Blue",
    "saint_bernard",
    "samoyed",
    "scottish_terrier",
    "shiba_inu",
    "Siamese",
    "Sphynx",
    "staffordshire_bull_terrier",
    "wheaten_terrier",
    "yorkshire_terrier",
)
CAT, DOG = 1, 2  # the species column
CLASS_OPTIONS = ("species", "breeds")
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
NESTED_FOLDER = "oxford-iiit-pet"  # torchvision's download folder
SPLIT_FILES = {"train": "trainval.txt", "val": "trainval.txt", "test": "test.txt"}
VAL_EVERY = 10  # val = every 10th trainval.txt line (index % 10 == 0)
DEFAULT_SIZE = 256
MIN_SIZE = 8


@dataclass(frozen=True)
class PetFrameFiles(FrameFiles):
    """A frame's files and the class id its pet pixels get (species or breed)."""

    class_id: int = 0


def read_split_file(path: Path) -> list[tuple[str, int, int]]:
    """``(image id, class id 1..37, species 1..2)`` of every line of an official split file.

    ``BadInput`` naming the file and line for a missing file, a malformed line, an id out of
    range, or a class id or species that does not match the breed named by the image id.
    """
    if not path.is_file():
        raise BadInput(f"{path} not found; expected lines 'image_id class_id species breed_id'")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]):
            raise BadInput(f"{where}: expected 'image_id class_id species breed_id', got {line!r}")
        image_id, class_id, species = fields[0], int(fields[1]), int(fields[2])
        if not 1 <= class_id <= len(BREED_NAMES) or species not in (CAT, DOG):
            raise BadInput(f"{where}: class id {class_id} / species {species} out of range")
        breed = BREED_NAMES[class_id - 1]
        if image_id.rsplit("_", 1)[0] != breed or (species == CAT) != breed[0].isupper():
            raise BadInput(
                f"{where}: {image_id} does not match class id {class_id} ({breed}) / "
                f"species {species}"
            )
        entries.append((image_id, class_id, species))
    return entries


def carve(entries: list, split: str) -> list:
    """The ``train`` / ``val`` share of ``trainval.txt`` entries (module docstring); ``test``
    entries as they are."""
    if split == "val":
        return [e for i, e in enumerate(entries) if i % VAL_EVERY == 0]
    if split == "train":
        return [e for i, e in enumerate(entries) if i % VAL_EVERY != 0]
    return entries


def resize(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """``array`` (an RGB image or a label map) resized to ``size x size``."""
    if array.shape[:2] == (size, size):
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


class OxfordPet(FileDataset):
    """Oxford-IIIT Pet trimaps as pet-class / background / void labels (module docstring)."""

    name: ClassVar[str] = "oxford-pet"
    class_names: ClassVar[tuple[str, ...]] = SPECIES_NAMES  # the default; per instance
    train_on: ClassVar[str] = "oxford-pet"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    validation_split: ClassVar[str | None] = "val"
    expected_counts: ClassVar[dict[str, int]] = {"train": 3312, "val": 368, "test": 3669}
    provides_instances: ClassVar[bool] = True
    thing_classes: ClassVar[tuple[int, ...]] = (1, 2)  # every non-background class; per instance
    background_class: ClassVar[int | None] = 0
    layout: ClassVar[str] = (
        "oxford-pet/images/{image_id}.jpg\n"
        "oxford-pet/annotations/trimaps/{image_id}.png  (1 pet, 2 background, 3 border)\n"
        "oxford-pet/annotations/{trainval,test}.txt  (image_id class_id species breed_id)\n"
        "  (or the same under oxford-pet/oxford-iiit-pet/, torchvision's folder)"
    )
    source: ClassVar[str] = (
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (Parkhi et al., CVPR 2012, 'Cats and "
        "Dogs'): images.tar.gz and annotations.tar.gz, both unpacked into <data root>/oxford-pet/"
    )
    description: ClassVar[str] = (
        "Oxford-IIIT Pet: 7349 photos of 37 cat and dog breeds with pet/background/border "
        "trimaps. Classes: background, cat, dog (OxfordPet(root, classes='breeds'): background + "
        "37 breeds); pet pixels get the frame's class, border is void; one instance per image. "
        "No anomaly labels: rows report mIoU only. Splits train/val = trainval.txt with every "
        "10th frame as val (3312/368), test = test.txt (3669, evaluated). Images and trimaps are "
        "resized to size x size (default 256; size=None keeps native sizes)."
    )

    def __init__(
        self,
        root: Path,
        preset: str = "default",
        *,
        classes: str = "species",
        size: int | None = DEFAULT_SIZE,
    ) -> None:
        super().__init__(root, preset)
        if classes not in CLASS_OPTIONS:
            raise BadInput(f"oxford-pet: classes must be one of {', '.join(CLASS_OPTIONS)}")
        if size is not None and (type(size) is not int or size < MIN_SIZE):
            raise BadInput(f"oxford-pet: size must be an integer >= {MIN_SIZE} or null")
        self.classes, self.size = classes, size
        names = SPECIES_NAMES if classes == "species" else ("background", *BREED_NAMES)
        self.class_names = names  # type: ignore[misc]
        self.thing_classes = tuple(range(1, len(names)))  # type: ignore[misc]
        self._base: Path | None = None

    def data_folder(self) -> Path:
        """The folder holding ``images/`` and ``annotations/trimaps/``: ``<root>/oxford-pet``
        or ``<root>/oxford-pet/oxford-iiit-pet``; ``BadInput`` naming both when neither does."""
        if self._base is None:
            candidates = (self.folder, self.folder / NESTED_FOLDER)
            found = [c for c in candidates if (c / "images").is_dir()]
            found = [c for c in found if (c / "annotations" / "trimaps").is_dir()]
            if not found:
                looked = " and ".join(f"{c}/{{images,annotations/trimaps}}/" for c in candidates)
                raise BadInput(
                    f"{self.name}: Oxford-IIIT Pet not found; looked for {looked} (unpack "
                    f"images.tar.gz and annotations.tar.gz into {self.folder}; see "
                    f"`owsbench data info {self.name}`)"
                )
            self._base = found[0]
        return self._base

    def files(self, split: str) -> list[FrameFiles]:
        if split in self.splits and split not in self._files:
            self.data_folder()  # names the layouts looked for, also when the folder is missing
        return super().files(split)

    def list_files(self, split: str) -> list[FrameFiles]:
        base = self.data_folder()
        entries = carve(read_split_file(base / "annotations" / SPLIT_FILES[split]), split)
        files: list[FrameFiles] = []
        for image_id, class_id, species in entries:
            image = base / "images" / f"{image_id}.jpg"
            trimap = base / "annotations" / "trimaps" / f"{image_id}.png"
            if image.is_file() and trimap.is_file():
                label = species if self.classes == "species" else class_id
                files.append(PetFrameFiles(image_id, image, semantic=trimap, class_id=label))
        return files

    def load_frame(self, files: FrameFiles) -> Frame:
        """RGB image, trimap decoded with the frame's class, one instance on the pet pixels;
        both resized to ``size`` first when set."""
        from owsbench.datasets.io import check_size, check_values, read_label, read_rgb

        assert isinstance(files, PetFrameFiles) and files.semantic is not None
        image = read_rgb(files.image)
        trimap = read_label(files.semantic)
        check_size(image, trimap, files.semantic)
        check_values(trimap, {TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER}, files.semantic)
        trimap = trimap.astype(np.uint8)
        if self.size is not None:
            image = resize(image, self.size, Image.Resampling.BILINEAR)
            trimap = resize(trimap, self.size, Image.Resampling.NEAREST)
        semantic = np.full(trimap.shape, VOID, np.uint8)
        semantic[trimap == TRIMAP_PET] = files.class_id
        semantic[trimap == TRIMAP_BACKGROUND] = 0
        instances = (trimap == TRIMAP_PET).astype(np.int32)
        return Frame(files.frame_id, image, semantic, None, instances)

    def fingerprint(self) -> str:
        """The listed files, the split files' contents, the class option and the size."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name in sorted(set(SPLIT_FILES.values())):
                digest.update((self.data_folder() / "annotations" / name).read_bytes())
            listed = super().fingerprint()
            size = "native" if self.size is None else self.size
            self._fingerprint = f"{listed}/{digest.hexdigest()[:8]}/{self.classes}/{size}"
        return self._fingerprint
