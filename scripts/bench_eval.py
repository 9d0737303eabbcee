"""Benchmark the evaluation path at real resolution: decode -> forward -> scores -> metrics.

Frames are written once as PNG files (an RGB image, trainId semantic labels and 0/1/255 anomaly
labels, 1024x2048 by default) and read back through the dataset code (``FileDataset``), so the
decode cost is that of a real adapter. Prints one JSON object:

    {"resolution": [H, W], "frames": N, "device": ..., "workers": W, "precision": ...,
     "forward_fps": ..., "pipeline_fps": ..., "overhead_ms_per_frame": ...,
     "split_ms": {"decode": ..., "forward": ..., "scores": ..., "metrics": ...}}

``pipeline_fps`` is the whole evaluation (``owsbench.evaluate.evaluate_split`` over the frames on
disk with five post-hoc scores, the pixel anomaly metric and the semantic metric);
``forward_fps`` the same model's forward alone on the same (already decoded) inputs, under the
same ``--precision`` autocast; ``overhead_ms_per_frame`` = ``1000 / pipeline_fps - 1000 /
forward_fps``. ``split_ms`` are the stages run one after the other in this process, per frame,
each timed between device synchronisations (medians over ``--repeats`` runs, each after a
warm-up run). ``--passes K`` lists the frames K times for the pipeline (each read decoded anew),
so start-up costs such as the loader's worker processes are spread over more frames.
``--model null`` replaces the network with one that returns precomputed logits (smooth random
logits, a different map per frame), which isolates the harness overhead; ``--model
deeplabv3plus`` is DeepLabV3+-ResNet18 (random init); ``--model eomt --segmenter-preset paper``
is EoMT-L (ViT-L/16, 1024x1024 sliding windows). ``peak_memory_mib`` is the CUDA
allocator's peak over the whole script (null on a CPU).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_eval.py --model null --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from owsbench.datasets.base import FileDataset, FrameFiles
from owsbench.datasets.labels import CITYSCAPES_TRAINID_NAMES
from owsbench.evaluate import PosthocGroup, SemanticStates, evaluate_split, measure_frame
from owsbench.methods.base import image_batch
from owsbench.methods.posthoc import MSP, Energy, Entropy, MaxLogit
from owsbench.methods.sml import SML, SMLStatistics
from owsbench.metrics import ObjectCompleteness, SemanticMetric
from owsbench.precision import inference_autocast
from owsbench.segmenters.base import SegmenterOutput

NUM_CLASSES = len(CITYSCAPES_TRAINID_NAMES)


class BenchFrames(FileDataset):
    """The benchmark's frames: ``NNNN_image.png``, ``NNNN_semantic.png``, ``NNNN_anomaly.png``."""

    name: ClassVar[str] = "bench-frames"
    class_names: ClassVar[tuple[str, ...]] = CITYSCAPES_TRAINID_NAMES
    train_on: ClassVar[str] = "bench-frames"
    splits: ClassVar[tuple[str, ...]] = ("val",)
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)

    def __init__(self, root: Path, passes: int = 1) -> None:
        super().__init__(root.parent)
        self.folder, self.passes = root, passes

    def list_files(self, split: str) -> list[FrameFiles]:
        """The frames on disk, listed ``passes`` times (each listing decoded anew)."""
        return [
            FrameFiles(p.name[:4], p, p.with_name(p.name[:4] + "_semantic.png"),
                       p.with_name(p.name[:4] + "_anomaly.png"))
            for p in sorted(self.folder.glob("*_image.png"))
        ] * self.passes  # fmt: skip


def smooth_field(rng: np.random.Generator, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """``(channels, H, W)`` float32: Gaussian noise at 1/16 resolution, bilinearly upsampled."""
    low = torch.from_numpy(rng.standard_normal((1, channels, size[0] // 16, size[1] // 16)))
    return F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False)[0]


def write_frames(root: Path, frames: int, size: tuple[int, int], seed: int) -> None:
    """Write ``frames`` PNG triples under ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(frames):
        image = (smooth_field(rng, 3, size) * 60 + 128).clamp(0, 255).byte().permute(1, 2, 0)
        semantic = smooth_field(rng, NUM_CLASSES, size).argmax(0).byte().numpy()
        anomaly = (smooth_field(rng, 1, size)[0] > 1.8).numpy().astype(np.uint8)
        anomaly[:16] = 255  # a void band, as ego-vehicle borders are
        Image.fromarray(image.numpy()).save(root / f"{i:04d}_image.png")
        Image.fromarray(semantic).save(root / f"{i:04d}_semantic.png")
        Image.fromarray(anomaly).save(root / f"{i:04d}_anomaly.png")


class NullSegmenter(torch.nn.Module):
    """Returns precomputed logits in turn (one per call), whatever the input; they are kept on
    the model's device, so its "forward" is free of host-to-device copies."""

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.bank, self.calls = logits, 0

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        logits = self.bank[self.calls % len(self.bank)].to(images.device)
        self.calls += 1
        return SegmenterOutput(logits=logits.expand(images.shape[0], -1, -1, -1))


def build_model(name: str, size: tuple[int, int], frames: int, device: torch.device, preset: str):
    """The null model, or segmenter ``name`` (random init) with its ``preset_values[preset]``
    (e.g. ``eomt`` at ``paper``: ViT-L/16, 1024x1024 windows)."""
    if name == "null":
        rng = np.random.default_rng(1)
        return NullSegmenter(
            [(smooth_field(rng, NUM_CLASSES, size)[None] * 4).to(device) for _ in range(frames)]
        )
    from owsbench.catalog import SEGMENTERS

    cls = SEGMENTERS.get(name)
    config = cls.Config(**cls.preset_values.get(preset, {}))
    return cls(config, NUM_CLASSES).to(device).eval()


def build_group(model: torch.nn.Module, images: list[torch.Tensor]) -> PosthocGroup:
    """msp, maxlogit, entropy, energy and sml (its statistics from the model on the frames)."""
    stats = SMLStatistics()
    with torch.inference_mode():
        for batch in images[:2]:
            stats.update(model(batch).logits)
    sml = SML(segmenter=model)
    sml.mean, sml.var = stats.compute()
    methods = {"msp": MSP(), "maxlogit": MaxLogit(), "entropy": Entropy(), "energy": Energy()}
    return PosthocGroup(model, {**{k: m for k, m in methods.items()}, "sml": sml})


def stage_times(split, group: PosthocGroup, device: torch.device, precision: str) -> dict:
    """Seconds per frame of each stage, run one after the other (one pass over the frames);
    ``scores`` is the synchronised time of the group's forward (segmenter and five scores) less
    that of the segmenter alone."""
    seconds = dict.fromkeys(("decode", "forward", "scores", "metrics"), 0.0)
    semantic = SemanticStates(SemanticMetric(NUM_CLASSES), ObjectCompleteness(NUM_CLASSES))
    from owsbench.evaluate import SplitResult

    results = {method_id: SplitResult() for method_id in group.methods}
    for i in range(len(split)):
        start = time.perf_counter()
        frame = split[i]
        seconds["decode"] += time.perf_counter() - start
        images = image_batch([frame.image], device)
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode(), inference_autocast(device, precision):
            group.segmenter(images)
        sync(device)
        forward = time.perf_counter() - start
        seconds["forward"] += forward
        start = time.perf_counter()
        with torch.inference_mode():
            output = group.forward(images, precision)
        sync(device)
        seconds["scores"] += time.perf_counter() - start - forward
        start = time.perf_counter()
        measure_frame(output, 0, frame, results, semantic, ())
        sync(device)
        seconds["metrics"] += time.perf_counter() - start
    return {k: v / len(split) for k, v in seconds.items()}


def peak_memory_mib(device: torch.device) -> float | None:
    """The CUDA allocator's peak since start (None on CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_seconds(
    model: torch.nn.Module, images: list[torch.Tensor], device, precision: str
) -> float:
    """Seconds of the model's forward alone (under the run's autocast) over the decoded inputs."""
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), inference_autocast(device, precision):
        for batch in images:
            model(batch)
    sync(device)
    return time.perf_counter() - start


def pipeline_seconds(group: PosthocGroup, split, device: torch.device, args) -> float:
    _, seconds = evaluate_split(
        group, split, NUM_CLASSES, 1, device, progress=False,
        workers=args.workers, precision=args.precision,
    )  # fmt: skip
    return seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="null", help="null or a segmenter id")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--resolution", default="1024x2048", help="HxW")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=1, help="pipeline: read the frames N times")
    parser.add_argument(
        "--segmenter-preset", default="default", help="the segmenter's preset_values to apply"
    )
    parser.add_argument(
        "--frames-dir", type=Path, help="keep the frames here and reuse them (same size and count)"
    )
    return parser.parse_args()


@contextlib.contextmanager
def frames_folder(args: argparse.Namespace, size: tuple[int, int]) -> Iterator[Path]:
    """A folder holding ``args.frames`` frames: ``--frames-dir`` (written when it has fewer),
    else a temporary one."""
    with contextlib.ExitStack() as stack:
        folder = args.frames_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.glob("*_image.png"))) < args.frames:
            write_frames(folder, args.frames, size, seed=0)
        yield folder


def main() -> None:
    args = parse_args()
    size = tuple(int(v) for v in args.resolution.lower().split("x"))
    device = torch.device(args.device)
    with frames_folder(args, size) as folder:
        split = BenchFrames(folder).split("val")
        passes = BenchFrames(folder, args.passes).split("val")
        model = build_model(args.model, size, args.frames, device, args.segmenter_preset)
        images = [image_batch([split[i].image], device) for i in range(len(split))]
        group = build_group(model, images)
        runs: dict[str, list[float]] = {"forward": [], "pipeline": []}
        stages: list[dict[str, float]] = []
        for repeat in range(args.repeats + 1):  # the first run warms up
            forward = forward_seconds(model, images, device, args.precision)
            pipeline = pipeline_seconds(group, passes, device, args)
            stage = stage_times(split, group, device, args.precision)
            if repeat:
                runs["forward"].append(forward)
                runs["pipeline"].append(pipeline)
                stages.append(stage)
    forward_fps = len(split) / statistics.median(runs["forward"])
    pipeline_fps = len(split) * args.passes / statistics.median(runs["pipeline"])
    print(json.dumps({
        "resolution": list(size), "frames": len(split), "device": str(device),
        "model": args.model, "workers": args.workers, "precision": args.precision,
        "threads": torch.get_num_threads(), "passes": args.passes,
        "segmenter_preset": args.segmenter_preset,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "peak_memory_mib": peak_memory_mib(device),
        "forward_fps": round(forward_fps, 3), "pipeline_fps": round(pipeline_fps, 3),
        "overhead_ms_per_frame": round(1000 / pipeline_fps - 1000 / forward_fps, 1),
        "split_ms": {k: round(1000 * statistics.median(s[k] for s in stages), 1)
                     for k in stages[0]},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
