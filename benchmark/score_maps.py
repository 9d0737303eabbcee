"""Per-frame anomaly score maps in the SegmentMeIfYouCan layout.

``<root>/anomaly_p/<method>/<dataset>/<frame id>.hdf5``, each file holding one float16 dataset
named ``value`` (H x W, higher = more anomalous), gzip-compressed: the layout of SMIYC's
``ChannelLoaderHDF5`` (``road_anomaly_benchmark``: ``anomaly_p`` channel, ``var_name='value'``,
float16), so maps written here can be submitted to or evaluated by the SMIYC tools, and maps
written by any other codebase in that layout can be evaluated by ``owsbench score-maps evaluate``.

float16 keeps about 3 significant digits: fine for probabilities; unbounded scores (max logit,
energy) lose resolution and overflow beyond +-65504, so they are clipped to that range.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from owsbench.errors import BadInput

FLOAT16_MAX = float(np.finfo(np.float16).max)


def score_map_path(root: Path, method: str, dataset: str, frame_id: str) -> Path:
    return Path(root) / "anomaly_p" / method / dataset / f"{frame_id}.hdf5"


def write_score_map(path: Path, scores: np.ndarray) -> None:
    """Write one ``(H, W)`` map as float16 (clipped to the float16 range)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.clip(np.asarray(scores, np.float32), -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    with h5py.File(path, "w") as f:
        f.create_dataset("value", data=values, compression="gzip", compression_opts=9)


def read_score_map(path: Path) -> np.ndarray:
    """Read one map as float32; ``BadInput`` naming the file when it is missing, unreadable or
    not an H x W array of real numbers without NaN."""
    try:
        with h5py.File(path, "r") as f:
            scores = _value(f, path)
    except FileNotFoundError:
        raise BadInput(f"score map missing: {path}") from None
    except (OSError, KeyError, RuntimeError) as err:  # h5py: truncated / not HDF5 / broken file
        raise BadInput(f"cannot read score map {path}: {_reason(err)}") from None
    if np.isnan(scores).any():
        raise BadInput(f"score map {path} holds NaN values")
    return scores


def _value(f: h5py.File, path: Path) -> np.ndarray:
    """The ``value`` dataset of ``f`` as float32 after checking its kind, dtype and rank."""
    value = f.get("value")
    if not isinstance(value, h5py.Dataset):
        found = ", ".join(sorted(f)) or "nothing"
        raise BadInput(f"score map {path} has no dataset 'value' (holds: {found})")
    if value.dtype.kind not in "biuf":
        raise BadInput(f"score map {path} holds {value.dtype} values, not real numbers")
    if value.ndim != 2:
        shape = "x".join(map(str, value.shape)) or "scalar"
        raise BadInput(f"score map {path} is {shape}, not an H x W map")
    return np.asarray(value[...], np.float32)


def _reason(err: Exception) -> str:
    """One line: the system's text for an errno, else h5py's message with its newlines folded."""
    if isinstance(err, OSError) and err.errno and not isinstance(err.errno, bool):
        try:
            return os.strerror(err.errno)
        except ValueError:
            pass
    return " ".join(str(err).split()) or type(err).__name__
