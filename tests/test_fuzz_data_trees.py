"""Fuzzed data trees: seeded damage to the fixture tree of every file-based dataset, then
`owsbench data check` and the dataset's fingerprint. The outcome is either exit 2 / ``BadInput``
with one line naming a damaged file, or success that ignores the junk; never a traceback."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixtures_every import make_every_tree
from PIL import Image

from owsbench.catalog import DATASETS
from owsbench.cli import main
from owsbench.errors import BadInput

FILE_DATASETS = [d for d in DATASETS.ids() if d != "synthstreets"]
DAMAGES = ("truncate", "wrong mode", "junk", "delete", "symlink out")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Every fixture tree under one data root (built once; each case damages a copy)."""
    base = tmp_path_factory.mktemp("pristine")
    return make_every_tree(base / "data", base)


def candidates(root: Path, dataset_id: str) -> list[Path]:
    """The files the dataset reads: its frames' files and every file in its own folder."""
    dataset = DATASETS.get(dataset_id)(root, preset="default")
    paths = {p for p in (dataset.folder.rglob("*")) if p.is_file()}
    for split in dataset.splits:
        if split not in getattr(dataset, "unlabelled_splits", {}):
            for f in dataset.files(split):
                paths.update(p for p in (f.image, f.semantic, f.anomaly, f.instances) if p)
    return sorted(paths)


def _png_bytes(array: np.ndarray) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _mode(path: Path) -> str | None:
    try:
        return Image.open(path).mode
    except OSError:  # not an image (an AppleDouble "._" file of the fixture, ...)
        return None


def damage(kind: str, files: list[Path], outside: Path, rng) -> list[Path]:
    """Apply one damage; return the paths it touched (one of them must be named on failure)."""
    victim = files[int(rng.integers(len(files)))]
    if kind == "truncate":
        victim.write_bytes(victim.read_bytes()[: int(rng.integers(0, victim.stat().st_size // 2))])
    elif kind == "wrong mode":
        pngs = [f for f in files if f.suffix == ".png" and _mode(f) not in ("RGB", None)] or files
        victim = pngs[int(rng.integers(len(pngs)))]
        height, width = np.asarray(Image.open(victim)).shape[:2] if victim in pngs else (8, 8)
        if rng.random() < 0.5:
            array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # RGB
        else:
            array = rng.integers(300, 65535, (height, width), dtype=np.uint16)  # 16-bit
        victim.write_bytes(_png_bytes(array))
    elif kind == "junk":
        folder = victim.parent
        names = [".DS_Store", "Thumbs.db", "notes on data.txt"]
        names += [f"{victim.stem} (copy){victim.suffix}", f"ünïcödé é{victim.suffix}"]
        junk = [folder / name for name in names]
        for path in junk:
            path.write_bytes(rng.bytes(int(rng.integers(0, 64))))
        return junk
    elif kind == "delete":
        victim.unlink()
    else:  # a file replaced by a link to junk outside the data root
        outside.write_bytes(rng.bytes(100))
        victim.unlink()
        victim.symlink_to(outside)
    return [victim]


def data_check(root: Path, dataset_id: str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", dataset_id, "--data-root", str(root), "--no-progress"])
        raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr().err


def named(message: str, touched: list[Path]) -> bool:
    """Whether the message names a touched file (or, for a deleted one, its folder)."""
    return any(str(p) in message or str(p.parent) in message for p in touched)


@pytest.mark.parametrize("dataset_id", FILE_DATASETS)
def test_damaged_tree_fails_cleanly_or_ignores_the_junk(dataset_id, pristine, tmp_path, capsys):
    outcomes = []
    for number, kind in enumerate(DAMAGES):
        rng = np.random.default_rng(zlib.crc32(f"{dataset_id}/{kind}".encode()))
        root = tmp_path / f"case{number}" / "data"
        shutil.copytree(pristine, root, symlinks=True)
        touched = damage(kind, candidates(root, dataset_id), tmp_path / f"outside{number}", rng)
        code, err = data_check(root, dataset_id, capsys)
        assert "Traceback" not in err, (kind, err)
        assert code in (0, 2), (kind, err)
        if code == 2:
            (line,) = err.strip().splitlines()
            assert line.startswith("owsbench: error: ") and named(line, touched), (kind, line)
        try:  # what `run` computes before reading frames: must fail the same way, or not at all
            DATASETS.get(dataset_id)(root, preset="default").fingerprint()
        except BadInput as error:
            assert named(str(error), touched), (kind, str(error))
        outcomes.append(code)
    assert 2 in outcomes  # at least one damage per dataset is detected
