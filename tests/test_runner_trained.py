"""The runner's path for trained methods (their own model, fit cached, predicted on their own)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from owsbench.catalog import METHODS
from owsbench.config import PRESETS, RunConfig
from owsbench.datasets.base import Split
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Method, Prediction
from owsbench.runner import Runner


class MeanColour(Method):
    """Test-only trained method: class = nearest mean colour; anomaly = distance to it."""

    name: ClassVar[str] = "mean-colour"
    summary: ClassVar[str] = "nearest mean colour (test only)"
    fits: ClassVar[int] = 0

    @dataclass(frozen=True)
    class Config:
        steps: int = 1  # receives the preset's training size
        frames: int = 8

    def fit(self, train: Split, ctx: FitContext) -> None:
        type(self).fits += 1
        sums = np.zeros((19, 3))
        counts = np.zeros(19)
        for i in range(min(self.config.frames, len(train))):
            frame = train[i]
            known = frame.semantic != 255
            np.add.at(sums, frame.semantic[known], frame.image[known] / 255.0)
            np.add.at(counts, frame.semantic[known], 1)
        self.means = torch.tensor(sums / np.maximum(counts, 1)[:, None], dtype=torch.float32)

    def predict(self, images: torch.Tensor) -> Prediction:
        distance = torch.cdist(images.permute(0, 2, 3, 1).flatten(1, 2), self.means[None])
        distance = distance.unflatten(1, images.shape[-2:])  # (B, H, W, K)
        best, semantic = distance.min(-1)
        return Prediction(semantic=semantic, anomaly=best)

    def state_dict(self) -> dict[str, Any]:
        return {"means": self.means}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.means = state["means"]


@pytest.fixture
def registered():
    """Register the test-only method for the duration of one test."""
    METHODS.register("mean-colour", "test_runner_trained:MeanColour", MeanColour.summary)
    METHODS._loaded["mean-colour"] = MeanColour  # the class defined here, not a re-import
    yield
    METHODS._entries.pop("mean-colour", None)
    METHODS._loaded.pop("mean-colour", None)


def config(tmp_path, methods: list[str]) -> RunConfig:
    preset = dataclasses.replace(PRESETS["quick"], segmenter={"steps": 2, "batch_size": 2})
    return RunConfig(
        methods=methods, datasets=["synthstreets"], seeds=[0], preset=preset, device="cpu",
        data_root=tmp_path / "data", out=tmp_path / "out", cache_dir=tmp_path / "cache",
        progress=False,
    )  # fmt: skip


def test_trained_method_is_fitted_once_cached_and_evaluated(registered, tmp_path):
    MeanColour.fits = 0
    rows = Runner(config(tmp_path, ["mean-colour", "msp"])).run()
    by_method = {r["method"]: r for r in rows}
    trained = by_method["mean-colour"]
    assert trained["segmenter"] is None and trained["method_config"] == {"steps": 2, "frames": 8}
    assert 0 <= trained["metrics"]["AP"] <= 1 and 0 <= trained["metrics"]["mIoU"] <= 1
    assert trained["checkpoint_sha256"] != by_method["msp"]["checkpoint_sha256"]
    assert MeanColour.fits == 1
    # a new output folder: rows are recomputed but the fit comes from the cache
    again = config(tmp_path, ["mean-colour"])
    again.out = tmp_path / "again"
    (row,) = Runner(again).run()
    assert MeanColour.fits == 1 and row["fit_cached"]
    assert row["metrics"] == trained["metrics"]


def test_trained_methods_take_no_segmenter(registered, tmp_path):
    with pytest.raises(BadInput, match="mean-colour is a trained method"):
        Runner(config(tmp_path, ["mean-colour@deeplabv3plus"]))
