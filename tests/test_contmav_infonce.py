"""contmav-infonce(-synco): the crop bank (same size, correct class, disk cache), the contrastive
pre-training (it separates known from unknown crops, SynCo after the warm-up), the method's
phase wiring and a CLI run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from dataset_fixtures import ListSplit, scene

from owsbench.datasets.base import VOID, Frame
from owsbench.datasets.objects import outlier_exposure_source
from owsbench.errors import BadInput
from owsbench.methods.base import FitContext
from owsbench.methods.contmav_infonce import (
    ContMAVInfoNCE,
    ContMAVInfoNCEConfig,
    ContMAVInfoNCESynCo,
)
from owsbench.methods.nn.crops import (
    UNKNOWN,
    CropConfig,
    build_crop_bank,
    frame_crops,
    load_or_build,
    window,
)
from owsbench.methods.nn.outlier_exposure import OUTLIER, PasteConfig
from owsbench.methods.nn.region_pretraining import (
    CropEmbedder,
    PretrainConfig,
    embedding_similarity,
    pretrain_encoder,
    two_views,
)
from owsbench.methods.nn.synco import SynCoConfig


def test_window_is_centred_and_kept_inside():
    assert window((10, 10), 4, (20, 30)) == (8, 8)
    assert window((0, 0), 4, (20, 30)) == (0, 0)
    assert window((19, 29), 4, (20, 30)) == (16, 26)


def test_frame_crops_have_one_size_and_their_class():
    # labels: class 3 left, class 7 right, a void band and a pasted block; the image's red
    # channel repeats the label so every crop shows what it covers
    labels = np.full((64, 96), 3, np.uint8)
    labels[:, 48:] = 7
    labels[:8] = VOID
    labels[30:46, 60:76] = OUTLIER
    image = np.stack([labels, labels, labels], axis=-1)
    config = CropConfig(size=16, known_per_frame=6, unknown_per_frame=4)
    crops, classes = frame_crops(image, labels, config, np.random.default_rng(0))
    assert len(crops) == len(classes) > 0
    assert all(c.shape == (16, 16, 3) for c in crops)
    assert set(classes) <= {3, 7, UNKNOWN} and UNKNOWN in classes and {3, 7} <= set(classes)
    for crop, cls in zip(crops, classes, strict=True):
        red = crop[..., 0]
        if cls == UNKNOWN:
            assert np.isin(red, (VOID, OUTLIER)).mean() >= config.min_unknown_fraction
            assert (red == OUTLIER).any()  # centred on the paste when the frame has one
        else:
            assert (red == cls).mean() >= config.min_known_fraction


def test_frames_smaller_than_the_crop_give_nothing_and_an_empty_bank_is_an_error():
    labels = np.zeros((8, 8), np.uint8)
    crops, _ = frame_crops(np.zeros((8, 8, 3), np.uint8), labels, CropConfig(size=16), None)
    assert crops == []
    split = ListSplit([Frame("tiny", np.zeros((8, 8, 3), np.uint8), labels)])
    with pytest.raises(BadInput, match="no 16x16 crop"):
        build_crop_bank(split, CropConfig(size=16), None, PasteConfig(), np.random.default_rng(0))


@pytest.fixture(scope="module")
def split() -> ListSplit:
    return ListSplit([Frame(f"f{s}", *scene(s)) for s in range(6)])


def test_bank_from_pasted_frames_and_its_disk_cache(split, tmp_path):
    config, paste = CropConfig(size=32), PasteConfig(probability=1.0)
    source = outlier_exposure_source()
    bank, cached = load_or_build(split, config, source, paste, 0, tmp_path, "fp-a")
    assert not cached
    assert bank.images.shape[1:] == (32, 32, 3) and bank.images.dtype == np.uint8
    assert len(bank) == len(bank.labels) == len(bank.frames)
    assert bank.num_unknown > 0 and bank.num_known > 0
    assert set(bank.labels[bank.labels != UNKNOWN]) <= set(range(19))
    again, cached = load_or_build(split, config, source, paste, 0, tmp_path, "fp-a")
    assert cached and np.array_equal(again.images, bank.images)
    assert np.array_equal(again.labels, bank.labels)
    other, cached = load_or_build(split, config, source, paste, 1, tmp_path, "fp-a")
    assert not cached  # another seed is another bank
    _, cached = load_or_build(split, config, source, paste, 0, tmp_path, None)
    assert not cached  # no fingerprint (in-memory data): never cached
    assert len(list((tmp_path / "crops").glob("*.npz"))) == 2


def test_two_views_keep_size_and_range():
    crops = torch.rand(5, 3, 32, 32)
    views = two_views(crops, (0.4, 1.0), 0.4, torch.Generator().manual_seed(0))
    assert views.shape == crops.shape
    assert float(views.min()) >= 0 and float(views.max()) <= 1
    assert not torch.equal(views, crops)


@pytest.fixture(scope="module")
def bank(split):
    source = outlier_exposure_source()
    config = CropConfig(size=32, known_per_frame=6, unknown_per_frame=4)
    bank, _ = load_or_build(split, config, source, PasteConfig(1.0), 0, None, None)
    return bank


def _gap(similarity: dict) -> float:
    return similarity["same_class"] - similarity["known_unknown"]


def test_pretraining_separates_known_from_unknown_crops(bank):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        encoder = smp.encoders.get_encoder("resnet18", weights=None)
        before = embedding_similarity(CropEmbedder(encoder, 512, 32), bank)
        start = {k: v.clone() for k, v in encoder.state_dict().items()}
        config = PretrainConfig(steps=40, batch_size=16, queue_size=128, projection_dim=32)
        result = pretrain_encoder(encoder, 512, bank, config, 0, torch.device("cpu"), False)
    finally:
        torch.set_num_threads(threads)
    assert len(result.loss) == 40 and all(math.isfinite(v) for v in result.loss)
    assert any(not torch.equal(v, encoder.state_dict()[k]) for k, v in start.items())
    assert not encoder.training
    after = result.similarity
    assert set(after) == {"same_class", "other_class", "known_unknown"}
    # the encoder learned the labels: same-class pairs end up closer than known-unknown ones,
    # and by a wider margin than at initialisation
    assert _gap(after) > 0.05 and _gap(after) > _gap(before) + 0.05
    report = result.report()
    assert report["pretrain_steps"] == 40 and report["pretrain_synthetic_from_step"] is None


def test_synco_starts_after_the_warmup(bank, monkeypatch):
    import owsbench.methods.nn.region_pretraining as rp

    calls = []
    real = rp.directional_negatives

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[1].any().item())
        return out

    monkeypatch.setattr(rp, "directional_negatives", spy)
    config = PretrainConfig(
        steps=6, batch_size=8, queue_size=64, projection_dim=16, synco_warmup_fraction=0.5,
        synco=SynCoConfig(n_hard=8, n1=4, n2=4, n3=4, n4=2, n5=2, n6=2),
    )  # fmt: skip
    encoder = smp.encoders.get_encoder("resnet18", weights=None)
    result = pretrain_encoder(encoder, 512, bank, config, 0, torch.device("cpu"), False)
    assert len(calls) == 3  # steps 3, 4, 5: none during the warm-up
    assert all(calls)  # the queue holds both kinds by then, so every call gave negatives
    assert result.report()["pretrain_synthetic_from_step"] == 3


SMALL = dict(
    encoder="resnet18", decoder_channels=(32, 16, 16), decoder_blocks=1, steps=2, batch_size=2,
    crop=(64, 64), pretrain_steps=3, pretrain_batch_size=8, queue_size=32, projection_dim=16,
)  # fmt: skip


def _ctx(source, cache_dir=Path("."), fingerprint=None) -> FitContext:
    return FitContext(
        seed=0, device=torch.device("cpu"), cache_dir=cache_dir, progress=False,
        outlier_source=source, train_fingerprint=fingerprint,
    )  # fmt: skip


def test_phase1_changes_the_encoder_phase2_starts_from(split):
    method = ContMAVInfoNCE(ContMAVInfoNCEConfig(**SMALL))
    torch.manual_seed(0)
    method.model = method._build()
    fresh = {k: v.clone() for k, v in method.model.state_dict().items()}
    method.before_training(split, _ctx(outlier_exposure_source()))
    state = method.model.state_dict()
    changed = {k.split(".")[0] for k, v in fresh.items() if not torch.equal(v, state[k])}
    assert changed == {"encoder"}  # decoders, context and skips keep their initialisation
    report = method.fit_report
    assert report["unknown_crops_from"] == "void + pastes" and report["crops"]["unknown"] > 0
    assert report["pretrain_steps"] == 3 and not report["crops_cached"]


def test_without_outlier_source_unknown_crops_come_from_void(split):
    method = ContMAVInfoNCE(ContMAVInfoNCEConfig(**SMALL))
    method.model = method._build()
    method.before_training(split, _ctx(None))
    assert method.fit_report["unknown_crops_from"] == "void"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("synco_direction", "sideways", "synco_direction must be one of"),
        ("synco_counts", (1, 2, 3), "six counts"),
        ("crop_size", 40, "multiple of 32"),
    ],
)
def test_bad_options_are_one_line_errors(field, value, message):
    with pytest.raises(BadInput, match=message):
        ContMAVInfoNCESynCo(ContMAVInfoNCEConfig(**{field: value}))


def test_synco_variant_defaults():
    config = ContMAVInfoNCESynCo().config
    assert config.synco and config.synco_direction == "both"
    pretrain = config.pretrain_config()
    assert pretrain.synco == SynCoConfig() and pretrain.steps == config.steps
    assert ContMAVInfoNCE().config.pretrain_config().synco is None


def _run(tmp_path: Path, method: str, config: Path, out: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "run", "--methods", method,
         "--datasets", "synthstreets", "--preset", "quick", "--config", str(config),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [
        json.loads(line) for line in (tmp_path / out / "results.jsonl").read_text().splitlines()
    ]
    return row


def test_cli_runs_both_variants_and_reuses_the_crop_bank(tmp_path):
    tiny = (
        "{steps: 2, batch_size: 2, pretrain_steps: 3, pretrain_batch_size: 8, queue_size: 32, "
        "decoder_channels: [32, 16, 16], encoder: resnet18, synco_direction: known-anchors}"
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"method_configs:\n  contmav-infonce-synco: {tiny}\n  contmav-infonce: {tiny}\n"
    )
    row = _run(tmp_path, "contmav-infonce-synco", config, "a")
    assert row["method"] == "contmav-infonce-synco" and row["checkpoint_sha256"]
    assert 0 <= row["metrics"]["AP"] <= 1 and row["method_config"]["synco"] is True
    report = row["fit_report"]
    assert report["crops_cached"] is False and report["pretrain_synthetic_from_step"] == 0
    assert set(report["pretrain_similarity"]) == {"same_class", "other_class", "known_unknown"}
    # the plain variant has the same crop recipe, seed and data: it reads the bank from disk
    row = _run(tmp_path, "contmav-infonce", config, "b")
    assert row["fit_report"]["crops_cached"] is True
    assert row["fit_report"]["pretrain_synthetic_from_step"] is None
