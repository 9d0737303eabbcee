"""Benchmark AnomalyMetric against scikit-learn: time, peak memory and accuracy.

Data: N float32 scores ``sigmoid(N(2y, 1))`` with ``y ~ Bernoulli(0.01)`` (uint8 labels; sklearn
gets the same bytes as bool). Every measurement runs in a fresh spawned process that first builds
the data; "extra MB" is the peak RSS (``resource.getrusage().ru_maxrss``) after the measurement
minus the RSS right after building the data (the peak is reset there through
``/proc/self/clear_refs``, so the data's build temporaries do not hide a smaller peak).
AnomalyMetric is timed as the median of ``--repeats`` runs after one warm-up run; sklearn likewise
up to ``--sklearn-once-above`` pixels and once above it. FPR95 from sklearn is
``fpr[searchsorted(tpr, 0.95)]`` of ``roc_curve(..., drop_intermediate=False)``.

    .venv/bin/python scripts/bench_metrics.py --sizes 1e7,1e8
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np

GEN_CHUNK = 10_000_000


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``sigmoid(2y + z)`` (float32) and labels ``y`` (uint8, ~1 % ones), built in chunks."""
    rng = np.random.default_rng(seed)
    scores, labels = np.empty(n, np.float32), np.empty(n, np.uint8)
    for start in range(0, n, GEN_CHUNK):
        stop = min(start + GEN_CHUNK, n)
        y = rng.random(stop - start) < 0.01
        z = rng.standard_normal(stop - start, dtype=np.float32) + 2 * y.astype(np.float32)
        scores[start:stop] = 1.0 / (1.0 + np.exp(-z))
        labels[start:stop] = y
    return scores, labels


def owsbench_all(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from owsbench.metrics import AnomalyMetric

    metric = AnomalyMetric()
    metric.update(scores, labels)
    return metric.compute()


def sklearn_ap(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score

    return {"AP": float(average_precision_score(labels.view(bool), scores))}


def sklearn_auroc(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {"AUROC": float(roc_auc_score(labels.view(bool), scores))}


def sklearn_fpr95(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels.view(bool), scores, drop_intermediate=False)
    return {"FPR95": float(fpr[np.searchsorted(tpr, 0.95)])}


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "owsbench AnomalyMetric (AP+AUROC+FPR95)": owsbench_all,
    "sklearn average_precision_score": sklearn_ap,
    "sklearn roc_auc_score": sklearn_auroc,
    "sklearn roc_curve -> FPR95": sklearn_fpr95,
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_peak_rss() -> None:
    """Make the peak RSS equal the current RSS (Linux >= 4.0; otherwise leave it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(method: str, n: int, repeats: int, warmup: bool) -> dict:
    """Run in a fresh process: build the data, then time ``method`` and record peak memory."""
    import sklearn.metrics  # noqa: F401  (import cost kept out of the memory figure)

    import owsbench.metrics  # noqa: F401

    scores, labels = make_data(n)
    reset_peak_rss()
    base = peak_rss_mb()
    func = METHODS[method]
    if warmup:
        func(scores, labels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        values = func(scores, labels)
        times.append(time.perf_counter() - start)
    return {"time": statistics.median(times), "extra_mb": peak_rss_mb() - base, "values": values}


def run_isolated(method: str, n: int, repeats: int, warmup: bool) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (method, n, repeats, warmup))


def bench_size(n: int, args: argparse.Namespace) -> dict[str, dict]:
    rows = {}
    for method in METHODS:
        is_sklearn = method.startswith("sklearn")
        if is_sklearn and n > args.skip_sklearn_above:
            continue
        once = is_sklearn and n > args.sklearn_once_above
        rows[method] = run_isolated(method, n, 1 if once else args.repeats, not once)
        rows[method]["runs"] = "1" if once else f"median of {args.repeats} after warm-up"
        print(f"  done: N={n:.0e} {method}: {rows[method]['time']:.2f} s", flush=True)
    return rows


def print_tables(results: dict[int, dict[str, dict]]) -> None:
    print("\nTiming and memory (each row in its own process)")
    print(f"| {'N':>5} | {'method':<40} | {'time s':>8} | {'extra MB':>8} | runs")
    print(f"|{'-' * 7}|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 30}")
    for n, rows in results.items():
        for method, r in rows.items():
            print(
                f"| {n:>5.0e} | {method:<40} | {r['time']:>8.3f} | {r['extra_mb']:>8.1f} | "
                f"{r['runs']}"
            )
    print("\nAccuracy vs sklearn (absolute differences) and speed-up")
    print(
        f"| {'N':>5} | {'AP':>8} | {'AUROC':>8} | {'FPR95':>8} | {'|dAP|':>8} | {'|dAUROC|':>8} "
        f"| {'|dFPR95|':>8} | {'x vs sklearn AP':>15} | {'x vs all three':>14}"
    )
    print(f"|{'-' * 7}|" + f"{'-' * 10}|" * 6 + f"{'-' * 17}|{'-' * 16}")
    ours_name = next(iter(METHODS))
    for n, rows in results.items():
        ours = rows[ours_name]
        sk = [r for name, r in rows.items() if name != ours_name]
        ref = {k: v for r in sk for k, v in r["values"].items()}
        diff = {
            k: abs(ours["values"][k] - ref[k]) if k in ref else float("nan") for k in ours["values"]
        }
        sk_ap_time = rows.get("sklearn average_precision_score", {"time": float("nan")})["time"]
        sk_all_time = sum(r["time"] for r in sk) if len(sk) == 3 else float("nan")
        v = ours["values"]
        print(
            f"| {n:>5.0e} | {v['AP']:>8.5f} | {v['AUROC']:>8.5f} | {v['FPR95']:>8.5f} "
            f"| {diff['AP']:>8.1e} | {diff['AUROC']:>8.1e} | {diff['FPR95']:>8.1e} "
            f"| {sk_ap_time / ours['time']:>15.1f} | {sk_all_time / ours['time']:>14.1f}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,1e8", help="comma-separated pixel counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--skip-sklearn-above", type=float, default=float("inf"), metavar="N")
    parser.add_argument("--sklearn-once-above", type=float, default=2e7, metavar="N")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    results = {}
    for n in sizes:
        print(f"N = {n:.0e}", flush=True)
        results[n] = bench_size(n, args)
    print_tables(results)


if __name__ == "__main__":
    main()
