"""MSP on the cached cross-entropy-only ContMAV networks (the staged recipe's first stage).

The reference "MSP on the same network" of the staged-recipe study: every ``contmav-ce-*`` fit
in a cache folder is loaded (the architecture of ``ContMAVConfig`` defaults, i.e. the CPU size)
and scored with ``1 - max softmax(z)`` on a synthstreets split; prints one JSON object per split
with the per-seed and mean/std AP, AUROC, FPR95 and mIoU (%).

    python scripts/contmav_ce_msp.py --cache-dir CACHE --data-root DATA [--preset quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from owsbench.datasets.synthstreets import SynthStreets
from owsbench.methods.base import image_batch
from owsbench.methods.contmav import ContMAVConfig
from owsbench.methods.nn.contmav_model import ContMAVNet
from owsbench.metrics import AnomalyMetric, SemanticMetric


def score(net: torch.nn.Module, split) -> list[float]:
    """``[AP, AUROC, FPR95, mIoU]`` (fractions) of MSP and the argmax on ``split``."""
    anomaly, semantic = AnomalyMetric(), SemanticMetric(19)
    for frame in split:
        with torch.no_grad():
            z = net(image_batch([frame.image]))[0]
        anomaly.update(1 - F.softmax(z, 1).max(1).values[0].numpy(), frame.anomaly)
        semantic.update(z.argmax(1)[0].numpy(), frame.semantic)
    m = anomaly.compute()
    return [m["AP"], m["AUROC"], m["FPR95"], semantic.compute()["mIoU"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    dataset = SynthStreets(args.data_root, preset=args.preset)
    dataset.prepare(progress=False)
    fits = sorted((args.cache_dir / "fits").glob("contmav-ce-*.json"))
    results: dict[str, dict[int, list[float]]] = {"val": {}, "test": {}}
    for meta_path in fits:
        seed = json.loads(meta_path.read_text())["recipe"]["seed"]
        net = ContMAVNet.from_config(ContMAVConfig())
        state = torch.load(meta_path.with_suffix(".pt"), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        for split in results:
            results[split][seed] = score(net.eval(), dataset.split(split))
    for split, by_seed in results.items():
        values = 100 * np.array(list(by_seed.values()))
        print(json.dumps({
            "split": split,
            "per_seed": {s: [round(100 * v, 2) for v in m] for s, m in by_seed.items()},
            "mean": values.mean(0).round(2).tolist(),
            "std": values.std(0, ddof=1).round(2).tolist() if len(values) > 1 else None,
            "columns": ["AP", "AUROC", "FPR95", "mIoU"],
        }))  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
