"""Frames decoded ahead of the model: a split's batches loaded in DataLoader worker processes.

``loaded_batches(split, batch_size, workers)`` yields, in the split's order, each batch of
``batch_size`` consecutive frames as runs of equal-sized frames (:func:`same_size_runs`), each run
with its images stacked into one ``(B, H, W, 3)`` uint8 tensor. With ``workers > 0`` the frames
are read and decoded by that many ``torch.utils.data.DataLoader`` worker processes while the
main process runs the model on earlier batches (``prefetch`` batches per worker are queued);
a frame's arrays travel as tensors in shared memory and come back as numpy views of them, so
nothing is copied twice. On CUDA the stacked images are pinned so the host-to-device copy can
overlap (``non_blocking``). Frame order, and therefore every result, is the same for any number
of workers; ``workers = 0`` loads in the calling process.

An error raised while loading a frame (``BadInput`` for a missing or malformed file) is sent
back as the exception object and raised in the main process as it was, so its one-line
message is not wrapped in the worker's traceback.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from owsbench.datasets.base import Frame, Split

Run = tuple[list[Frame], torch.Tensor]  # equal-sized frames and their (B, H, W, 3) uint8 images


def default_workers() -> int:
    """Decoding workers by default: half of the CPUs this process may run on beyond two, at most
    8 (none on one or two CPUs: measured on two cores, a worker only competes with the model's
    threads, and the whole path is slower)."""
    return max(0, min(8, (len(os.sched_getaffinity(0)) - 2) // 2))


def same_size_runs(frames: list[Frame]) -> Iterator[list[Frame]]:
    """Split a batch into runs of consecutive frames with the same image size (stackable)."""
    run: list[Frame] = []
    for frame in frames:
        if run and frame.image.shape != run[0].image.shape:
            yield run
            run = []
        run.append(frame)
    if run:
        yield run


def batch_frames(split: Split, start: int, batch_size: int) -> list[Frame]:
    """The frames ``start .. start + batch_size - 1`` of ``split`` (fewer at its end)."""
    return [split[i] for i in range(start, min(start + batch_size, len(split)))]


def stacked_runs(frames: list[Frame]) -> list[Run]:
    """The batch's runs, each with its images stacked."""
    return [
        (run, torch.from_numpy(np.stack([f.image for f in run]))) for run in same_size_runs(frames)
    ]


class _Batches(torch.utils.data.Dataset):
    """Item ``i``: batch ``i`` of the split as stacked runs whose frames hold tensors (shared
    memory between processes), or the exception that loading it raised."""

    def __init__(self, split: Split, batch_size: int) -> None:
        self.split, self.batch_size = split, batch_size

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __getitem__(self, index: int) -> list[Run] | Exception:
        try:
            frames = batch_frames(self.split, index * self.batch_size, self.batch_size)
        except Exception as err:  # raised again, as it is, by the main process
            return err
        return [([_shared(f) for f in run], images) for run, images in stacked_runs(frames)]


def _shared(frame: Frame) -> Frame:
    """``frame`` without its image (sent once, stacked) and with its label arrays as tensors."""
    arrays = {
        f.name: torch.from_numpy(np.ascontiguousarray(v))
        for f in dataclasses.fields(frame)
        if isinstance(v := getattr(frame, f.name), np.ndarray) and f.name != "image"
    }
    return dataclasses.replace(frame, image=None, **arrays)


def _unshared(frame: Frame, image: torch.Tensor) -> Frame:
    """Inverse of :func:`_shared`: numpy views of the tensors, the image a view of the stack."""
    arrays = {
        f.name: v.numpy()
        for f in dataclasses.fields(frame)
        if isinstance(v := getattr(frame, f.name), torch.Tensor)
    }
    return dataclasses.replace(frame, image=image.numpy(), **arrays)


def _as_is(item: object) -> object:
    return item


def loaded_batches(
    split: Split, batch_size: int, workers: int = 0, pin_memory: bool = False, prefetch: int = 2
) -> Iterator[list[Run]]:
    """The split's batches in order, as stacked runs (see the module docstring)."""
    if workers <= 0:
        for start in range(0, len(split), batch_size):
            yield stacked_runs(batch_frames(split, start, batch_size))
        return
    loader = DataLoader(
        _Batches(split, batch_size),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        prefetch_factor=prefetch,
    )
    for item in loader:
        if isinstance(item, Exception):
            raise item
        yield [
            ([_unshared(f, images[b]) for b, f in enumerate(run)], images) for run, images in item
        ]
