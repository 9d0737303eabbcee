"""The fixture trees of every file-based dataset under one data root (official layouts)."""

from __future__ import annotations

from pathlib import Path

from dataset_fixtures import make_cityscapes_tree
from fixtures_bdd_coco import make_bdd_tree, make_coco_tree
from fixtures_fishy_laf import (
    make_fishyscapes_laf_tree,
    make_fishyscapes_static_tree,
    make_lostandfound_tree,
)
from fixtures_streethazards_smiyc import (
    make_road_anomaly_tree,
    make_smiyc_tree,
    make_streethazards_tree,
)
from test_oxford_pet import make_pet_tree

from owsbench.datasets.cocopaste import generate


def make_every_tree(root: Path, scratch: Path) -> Path:
    """Build every file-based dataset's fixture under ``root`` (cityscapes-cocopaste generated
    from a COCO fixture made in ``scratch``); returns ``root``."""
    cityscapes = make_cityscapes_tree(root)
    make_lostandfound_tree(root)
    make_fishyscapes_laf_tree(root)
    make_fishyscapes_static_tree(root)
    make_streethazards_tree(root)
    make_smiyc_tree(root, "anomaly")
    make_smiyc_tree(root, "obstacle")
    make_road_anomaly_tree(root)
    make_bdd_tree(root)
    make_pet_tree(root / "oxford-pet")
    generate(cityscapes, make_coco_tree(scratch), root, split="val", seed=0, progress=False)
    return root
