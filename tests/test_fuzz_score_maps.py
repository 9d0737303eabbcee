"""Fuzzed score map files for `owsbench score-maps evaluate`: each damaged map gives exit 2 and
one stderr line naming the file, never a traceback; the undamaged folder still evaluates."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from owsbench.cli import main
from owsbench.datasets.synthstreets import SynthStreets
from owsbench.score_maps import write_score_map


def _h5(path: Path, name: str = "value", **kwargs) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(name, **kwargs)


def _truncated(path: Path, shape, rng) -> None:
    write_score_map(path, rng.random(shape))
    data = path.read_bytes()
    path.write_bytes(data[: int(rng.integers(len(data) // 4, len(data) - 1))])


def _nan(path: Path, shape, rng) -> None:
    scores = rng.random(shape)
    scores[tuple(rng.integers(0, s) for s in shape)] = np.nan
    write_score_map(path, scores)


DAMAGES = {
    "string dtype": lambda p, shape, rng: _h5(p, data=np.full(shape, b"0.5", dtype="S3")),
    "complex dtype": lambda p, shape, rng: _h5(p, data=np.ones(shape, np.complex64)),
    "compound dtype": lambda p, shape, rng: _h5(
        p, data=np.zeros(shape, dtype=[("a", "f4"), ("b", "f4")])
    ),
    "1-D": lambda p, shape, rng: _h5(p, data=rng.random(shape[0] * shape[1])),
    "3-D": lambda p, shape, rng: _h5(p, data=rng.random((*shape, 1))),
    "scalar": lambda p, shape, rng: _h5(p, data=0.5),
    "transposed": lambda p, shape, rng: write_score_map(p, rng.random(shape[::-1])),
    "NaN": _nan,
    "empty file": lambda p, shape, rng: p.write_bytes(b""),
    "non-HDF5 bytes": lambda p, shape, rng: p.write_bytes(rng.bytes(4096)),
    "PNG bytes": lambda p, shape, rng: p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(64)),
    "other dataset name": lambda p, shape, rng: _h5(p, "scores", data=rng.random(shape)),
    "value is a group": lambda p, shape, rng: h5py.File(p, "w").create_group("value").file.close(),
    "truncated": _truncated,
    "a folder": lambda p, shape, rng: p.mkdir(),
}


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Synthstreets (quick) and a folder of good maps of its test split."""
    root = tmp_path_factory.mktemp("data")
    dataset = SynthStreets(root, preset="quick")
    dataset.prepare(progress=False)
    good = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    frames = [f for f in dataset.split("test") if f.anomaly is not None]
    for frame in frames:
        write_score_map(good / f"{frame.frame_id}.hdf5", rng.random(frame.anomaly.shape))
    return root, good, {f.frame_id: f.anomaly.shape for f in frames}


def evaluate(root: Path, maps_dir: Path, capsys) -> tuple[int, str]:
    argv = ["score-maps", "evaluate", str(maps_dir), "--dataset", "synthstreets",
            "--preset", "quick", "--data-root", str(root), "--no-progress"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr().err


def test_good_maps_evaluate(maps, capsys):
    root, good, _ = maps
    code, err = evaluate(root, good, capsys)
    assert code == 0, err


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_map_exits_2_naming_the_file(damage, maps, tmp_path, capsys):
    root, good, shapes = maps
    rng = np.random.default_rng(sorted(DAMAGES).index(damage))
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    for frame_id in shapes:
        (maps_dir / f"{frame_id}.hdf5").write_bytes((good / f"{frame_id}.hdf5").read_bytes())
    frame_id = sorted(shapes)[int(rng.integers(len(shapes)))]
    victim = maps_dir / f"{frame_id}.hdf5"
    victim.unlink()
    DAMAGES[damage](victim, shapes[frame_id], rng)

    code, err = evaluate(root, maps_dir, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("owsbench: error: ") and f"{frame_id}.hdf5" in line, line
