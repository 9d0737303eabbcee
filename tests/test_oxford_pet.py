"""Oxford-IIIT Pet on a tiny tree in the official layout (images.tar.gz + annotations.tar.gz)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from owsbench.catalog import DATASETS
from owsbench.cli import cli
from owsbench.datasets.oxford_pet import BREED_NAMES, OxfordPet, read_split_file
from owsbench.errors import BadInput

# (image id, class id, species, breed id): 12 trainval frames, 4 test frames
TRAINVAL = [
    ("Abyssinian_1", 1, 1, 1),
    ("Abyssinian_2", 1, 1, 1),
    ("american_bulldog_10", 2, 2, 1),
    ("american_bulldog_11", 2, 2, 1),
    ("basset_hound_3", 4, 2, 3),
    ("basset_hound_4", 4, 2, 3),
    ("Bengal_5", 6, 1, 2),
    ("Bengal_6", 6, 1, 2),
    ("Sphynx_7", 34, 1, 12),
    ("Sphynx_8", 34, 1, 12),
    ("yorkshire_terrier_9", 37, 2, 25),
    ("yorkshire_terrier_10", 37, 2, 25),
]
TEST = [
    ("Abyssinian_100", 1, 1, 1),
    ("american_bulldog_100", 2, 2, 1),
    ("Sphynx_100", 34, 1, 12),
    ("yorkshire_terrier_100", 37, 2, 25),
]
SIZES = [(20, 30), (24, 24), (30, 18)]  # (height, width)
GRAY, CMYK = "Bengal_5", "american_bulldog_11"
HEADER = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"


def trimap(height: int, width: int) -> np.ndarray:
    """Background 2, a pet rectangle 1 with a border ring 3."""
    out = np.full((height, width), 2, np.uint8)
    out[4 : height - 4, 4 : width - 4] = 3
    out[6 : height - 6, 6 : width - 6] = 1
    return out


def write_split(path: Path, entries: list) -> None:
    lines = [" ".join(map(str, e)) for e in entries]
    path.write_text(HEADER + "\n".join(lines) + "\n")


def make_pet_tree(base: Path) -> Path:
    """The official layout in ``base``: images/, annotations/{trimaps,trainval.txt,test.txt}."""
    (base / "images").mkdir(parents=True)
    (base / "annotations/trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (image_id, *_) in enumerate(TRAINVAL + TEST):
        height, width = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if image_id == GRAY:
            image = image.convert("L")
        elif image_id == CMYK:
            image = image.convert("CMYK")
        image.save(base / "images" / f"{image_id}.jpg", "JPEG")
        Image.fromarray(trimap(height, width)).save(base / f"annotations/trimaps/{image_id}.png")
    (base / "annotations/trimaps/._Abyssinian_1.png").write_bytes(b"\x00\x05\x16\x07junk")
    (base / "images/unlisted_1.jpg").write_bytes(b"not listed, not read")
    write_split(base / "annotations/trainval.txt", TRAINVAL)
    write_split(base / "annotations/test.txt", TEST)
    write_split(base / "annotations/list.txt", TRAINVAL + TEST)
    return base


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_pet_tree(root / "oxford-pet")
    return root


def test_breed_names_are_in_class_id_order():
    assert len(BREED_NAMES) == 37
    assert list(BREED_NAMES) == sorted(BREED_NAMES, key=str.lower)
    assert sum(name[0].isupper() for name in BREED_NAMES) == 12  # the cat breeds


def test_splits_carve_trainval(root: Path):
    dataset = OxfordPet(root)
    val, train, test = (dataset.split(s) for s in ("val", "train", "test"))
    assert [f.frame_id for f in val.files] == ["Abyssinian_1", "yorkshire_terrier_9"]  # i % 10 == 0
    assert len(train) == 10 and len(test) == 4
    assert {f.frame_id for f in train.files} | {f.frame_id for f in val.files} == {
        e[0] for e in TRAINVAL
    }
    assert dataset.eval_splits == ("test",) and dataset.validation_split == "val"


def test_species_labels_and_instances(root: Path):
    dataset = OxfordPet(root, size=None)
    assert dataset.class_names == ("background", "cat", "dog") and dataset.num_classes == 3
    assert dataset.thing_classes == (1, 2) and dataset.background_class == 0
    test = dataset.split("test")
    for files, frame in zip(test.files, test, strict=True):
        raw = np.asarray(Image.open(files.semantic))
        species = next(e[2] for e in TEST if e[0] == frame.frame_id)
        assert (frame.semantic[raw == 1] == species).all()
        assert (frame.semantic[raw == 2] == 0).all()
        assert (frame.semantic[raw == 3] == 255).all()
        assert frame.anomaly is None and frame.instances.dtype == np.int32
        assert (frame.instances == (raw == 1)).all()
        assert frame.image.shape == (*raw.shape, 3)


def test_breed_labels(root: Path):
    dataset = OxfordPet(root, classes="breeds", size=None)
    assert dataset.num_classes == 38 and dataset.class_names[34] == "Sphynx"
    assert dataset.thing_classes == tuple(range(1, 38))
    frames = {f.frame_id: f for f in dataset.split("test")}
    for image_id, class_id, *_ in TEST:
        semantic = frames[image_id].semantic
        assert set(np.unique(semantic).tolist()) == {0, class_id, 255}
    assert OxfordPet.class_names == ("background", "cat", "dog")  # the class stays the default


def test_images_are_rgb_and_resized(root: Path):
    dataset = OxfordPet(root, size=16)
    frames = list(dataset.split("train")) + list(dataset.split("val"))
    assert {f.frame_id for f in frames} >= {GRAY, CMYK}
    for frame in frames:
        assert frame.image.shape == (16, 16, 3) and frame.image.dtype == np.uint8
        assert frame.semantic.shape == frame.instances.shape == (16, 16)
        assert set(np.unique(frame.semantic).tolist()) <= {0, 1, 2, 255}
        pet = (frame.semantic == 1) | (frame.semantic == 2)
        assert pet.any() and (frame.instances == pet).all()
    native = {f.frame_id: f for f in OxfordPet(root, size=None).split("train")}
    assert {native[i].image.shape[:2] for i in native} == set(SIZES)
    assert OxfordPet(root).split("test")[0].image.shape == (256, 256, 3)  # the default size


def test_fingerprint_follows_the_options(root: Path):
    prints = {
        OxfordPet(root).fingerprint(),
        OxfordPet(root, size=None).fingerprint(),
        OxfordPet(root, classes="breeds").fingerprint(),
    }
    assert len(prints) == 3 and OxfordPet(root).fingerprint() == OxfordPet(root).fingerprint()


def test_bad_options_are_refused(root: Path):
    with pytest.raises(BadInput, match="classes must be one of species, breeds"):
        OxfordPet(root, classes="cats")
    with pytest.raises(BadInput, match="size must be an integer"):
        OxfordPet(root, size=2)


def test_torchvision_folder_is_accepted(tmp_path: Path):
    make_pet_tree(tmp_path / "oxford-pet/oxford-iiit-pet")
    dataset = OxfordPet(tmp_path)
    assert len(dataset.split("test")) == 4
    nested = tmp_path / "oxford-pet/oxford-iiit-pet"
    assert dataset.split("test").files[0].image.is_relative_to(nested)


@pytest.mark.parametrize("missing", ["oxford-pet", "oxford-pet/annotations/trimaps"])
def test_missing_folder_lists_the_layouts(tmp_path: Path, missing: str):
    make_pet_tree(tmp_path / "oxford-pet")
    shutil.rmtree(tmp_path / missing)
    with pytest.raises(BadInput) as err:
        OxfordPet(tmp_path).split("test")
    message = str(err.value)
    assert "\n" not in message and "looked for" in message
    assert f"{tmp_path}/oxford-pet/{{images" in message
    assert f"{tmp_path}/oxford-pet/oxford-iiit-pet/{{images" in message


def test_subset_on_disk_and_check_warns(tmp_path: Path):
    base = make_pet_tree(tmp_path / "oxford-pet")
    (base / "images/Sphynx_100.jpg").unlink()
    (base / "annotations/trimaps/Abyssinian_100.png").unlink()
    dataset = OxfordPet(tmp_path)
    assert [f.frame_id for f in dataset.split("test").files] == [
        "american_bulldog_100",
        "yorkshire_terrier_100",
    ]
    warnings = dataset.check(progress=False)
    assert "oxford-pet/test: 2 frames found, the official split has 3669" in warnings[-1]


def test_bad_split_line_names_the_file(tmp_path: Path):
    path = tmp_path / "test.txt"
    path.write_text("# comment\nAbyssinian_1 1 1 1\nbeagle_1 1 2 1\n")
    with pytest.raises(BadInput, match=r"test.txt:3: beagle_1 does not match class id 1"):
        read_split_file(path)
    path.write_text("Abyssinian_1 1 1\n")
    with pytest.raises(BadInput, match=r"test.txt:1: expected 'image_id class_id"):
        read_split_file(path)


def test_bad_trimap_values_name_the_file(tmp_path: Path):
    base = make_pet_tree(tmp_path / "oxford-pet")
    bad = base / "annotations/trimaps/Abyssinian_100.png"
    Image.fromarray(np.full((20, 30), 7, np.uint8)).save(bad)
    with pytest.raises(BadInput, match="Abyssinian_100.png: unexpected label values 7"):
        OxfordPet(tmp_path).check(progress=False)


def test_registered_and_cli_info_and_check(root: Path):
    assert DATASETS.get("oxford-pet") is OxfordPet
    runner = CliRunner()
    info = runner.invoke(cli, ["data", "info", "oxford-pet"])
    assert info.exit_code == 0, info.output
    assert "classes (3): background, cat, dog" in info.output
    assert "oxford-iiit-pet" in info.output and "robots.ox.ac.uk" in info.output
    check = runner.invoke(
        cli, ["data", "check", "oxford-pet", "--data-root", str(root), "--no-progress"]
    )
    assert check.exit_code == 0, check.output
    assert "oxford-pet/train: 10 frames" in check.output
    assert "oxford-pet/test: 4 frames" in check.output and check.output.endswith("ok\n")
