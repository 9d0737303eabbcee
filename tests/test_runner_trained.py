"""The runner's path for trained methods (their own model, fit cached, predicted on their own)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from owsbench.cache import default_data_root
from owsbench.catalog import METHODS
from owsbench.config import PRESETS, RunConfig
from owsbench.datasets.base import Split
from owsbench.datasets.objects import OUTLIER_FAMILIES
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext, Method, Prediction
from owsbench.runner import Runner


class MeanColour(Method):
    """Test-only trained method: class = nearest mean colour; anomaly = distance to it."""

    name: ClassVar[str] = "mean-colour"
    summary: ClassVar[str] = "nearest mean colour (test only)"
    inference_fields: ClassVar[tuple[str, ...]] = ("gain",)
    fits: ClassVar[int] = 0
    contexts: ClassVar[list[FitContext]] = []

    @dataclass(frozen=True)
    class Config:
        steps: int = 1  # receives the preset's training size
        frames: int = 8
        gain: float = 1.0  # inference only: scales the anomaly map

    def fit(self, train: Split, ctx: FitContext) -> None:
        type(self).fits += 1
        type(self).contexts.append(ctx)
        self.fit_report = {"frames_used": min(self.config.frames, len(train))}
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
        return Prediction(semantic=semantic, anomaly=best * self.config.gain)

    def state_dict(self) -> dict[str, Any]:
        return {"means": self.means}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.means = state["means"]


@pytest.fixture
def registered():
    """Register the test-only method for the duration of one test."""
    METHODS.register_object("mean-colour", MeanColour, MeanColour.summary)
    yield
    METHODS.unregister("mean-colour")


def config(tmp_path, methods: list[str]) -> RunConfig:
    preset = dataclasses.replace(PRESETS["quick"], segmenter={"steps": 2, "batch_size": 2})
    return RunConfig(
        methods=methods, datasets=["synthstreets"], seeds=[0], preset=preset, device="cpu",
        data_root=default_data_root(), out=tmp_path / "out", cache_dir=tmp_path / "cache",
        progress=False,
    )  # fmt: skip


def test_trained_method_is_fitted_once_cached_and_evaluated(registered, tmp_path):
    MeanColour.fits = 0
    rows = Runner(config(tmp_path, ["mean-colour", "msp"])).run()
    by_method = {r["method"]: r for r in rows}
    trained = by_method["mean-colour"]
    assert trained["segmenter"] is None
    assert trained["method_config"] == {"steps": 2, "frames": 8, "gain": 1.0}
    assert trained["fit_report"] == {"frames_used": 8}
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


def test_fit_context_has_outlier_source_and_validation_split(registered, tmp_path):
    MeanColour.contexts = []
    Runner(config(tmp_path, ["mean-colour"])).run()
    (ctx,) = MeanColour.contexts
    assert ctx.outlier_source.names == OUTLIER_FAMILIES
    assert ctx.validation is not None and ctx.validation[0].anomaly is not None
    assert ctx.validation[0].frame_id.startswith("val")


def test_inference_fields_reuse_the_fit(registered, tmp_path):
    MeanColour.fits = 0
    (first,) = Runner(config(tmp_path, ["mean-colour"])).run()
    doubled = config(tmp_path, ["mean-colour"])
    doubled.method_overrides = {"mean-colour": {"gain": 2.0}}
    (second,) = Runner(doubled).run()
    assert MeanColour.fits == 1 and second["fit_cached"]
    assert second["config_hash"] != first["config_hash"]  # a different row, same checkpoint
    assert second["checkpoint_sha256"] == first["checkpoint_sha256"]
    frames = config(tmp_path, ["mean-colour"])
    frames.method_overrides = {"mean-colour": {"frames": 3}}
    Runner(frames).run()
    assert MeanColour.fits == 2  # a training field is part of the fit's key


def test_preset_method_values_then_config_file(registered, tmp_path, monkeypatch):
    run = config(tmp_path, ["mean-colour"])
    monkeypatch.setattr(
        MeanColour, "preset_values", {"quick": {"frames": 3}, "paper": {"frames": 9}}
    )
    runner = Runner(run)
    spec = runner.specs[0]
    assert runner.method_config(spec).frames == 3
    run.method_overrides = {"mean-colour": {"frames": 5}}
    assert Runner(run).method_config(spec).frames == 5


def test_splits_option_evaluates_other_splits(registered, tmp_path):
    run = config(tmp_path, ["mean-colour"])
    run.splits = ["val"]
    (row,) = Runner(run).run()
    assert row["split"] == "val" and row["frames"] == 8  # quick synthstreets val
    run.splits = ["nope"]
    with pytest.raises(BadInput, match="synthstreets has no split 'nope'; valid: train, val, test"):
        Runner(run)
