"""Reading dataset files with errors that name the file (``BadInput``, one line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from owsbench.errors import BadInput


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise BadInput(f"missing file: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadInput(f"cannot read {path}: corrupt or truncated image ({err})") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB."""
    return np.asarray(_open(path).convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """A single-channel label PNG as ``(H, W)`` integers (palette indices kept as indices)."""
    image = _open(path)
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise BadInput(f"{path}: label image has mode {image.mode}, expected a single channel")
    return np.asarray(image)


def check_values(labels: np.ndarray, allowed: set[int], path: Path) -> None:
    """``BadInput`` naming ``path`` and the first unexpected values when ``labels`` has any."""
    present = {int(v) for v in present_values(labels)}
    unexpected = sorted(present - allowed)
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5]))
        raise BadInput(f"{path}: unexpected label values {shown} (allowed: {_ranges(allowed)})")


def present_values(labels: np.ndarray) -> np.ndarray:
    """The distinct values of ``labels``, ascending (``np.unique``; for 8- and 16-bit unsigned
    labels the non-zero bins of one ``np.bincount``, which is several times faster than a sort)."""
    if labels.dtype in (np.uint8, np.uint16) and labels.size:
        return np.flatnonzero(np.bincount(labels.reshape(-1), minlength=1))
    return np.unique(labels)


def check_size(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    if image.shape[:2] != labels.shape[:2]:
        raise BadInput(
            f"{path}: label is {labels.shape[1]}x{labels.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )


def _ranges(values: set[int]) -> str:
    """``{0, 1, 2, 255}`` -> ``"0..2, 255"``."""
    ordered = sorted(values)
    parts: list[str] = []
    start = prev = ordered[0]
    for cur in ordered[1:]:
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}..{prev}")
            start = cur
        prev = cur
    parts.append(str(start) if start == prev else f"{start}..{prev}")
    return ", ".join(parts)
