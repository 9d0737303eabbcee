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
    """Read one map as float32; ``BadInput`` naming the file when it is missing or unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["value"][...], np.float32)
    except FileNotFoundError:
        raise BadInput(f"score map missing: {path}") from None
    except (OSError, KeyError) as err:
        raise BadInput(f"cannot read score map {path}: {err}") from None
