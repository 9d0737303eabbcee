"""`owsbench report`: md / csv / LaTeX / HTML tables with the best values marked, figures from
the rows' artifacts, merging run folders, missing artifacts, bad formats."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from owsbench.metrics import AnomalyMetric
from owsbench.report import load_runs, write_leaderboard

# metrics per method and seed (fractions); the means decide the best: gamma has the best AP of
# any single seed (0.70) but not the best mean; mean_F1 of alpha and beta tie at print precision
TEST_METRICS = {
    "alpha_1": [
        {"AP": 0.50, "AUROC": 0.80, "FPR95": 0.40, "mIoU": 0.60, "sIoU": 0.30, "mean_F1": 0.5},
        {"AP": 0.52, "AUROC": 0.82, "FPR95": 0.42, "mIoU": 0.60, "sIoU": 0.32, "mean_F1": 0.5},
    ],
    "beta@seg": [
        {"AP": 0.30, "AUROC": 0.90, "FPR95": 0.20, "mIoU": 0.60, "sIoU": 0.45, "mean_F1": 0.5},
        {"AP": 0.30, "AUROC": 0.92, "FPR95": 0.22, "mIoU": 0.60, "sIoU": 0.47, "mean_F1": 0.50001},
    ],
    "gamma": [
        {"AP": 0.70, "AUROC": 0.85, "FPR95": 0.60, "mIoU": 0.55},
        {"AP": 0.00, "AUROC": 0.85, "FPR95": 0.60, "mIoU": 0.55},
    ],
}
EXPECTED_BEST = {
    ("alpha_1", "AP"),
    ("beta@seg", "AUROC"),
    ("beta@seg", "FPR95"),  # lower is better
    ("alpha_1", "mIoU"),
    ("beta@seg", "mIoU"),  # a tie: both marked
    ("beta@seg", "sIoU"),
    ("alpha_1", "mean_F1"),
    ("beta@seg", "mean_F1"),  # equal at print precision: both marked
}
METHOD_ORDER = ["alpha_1", "gamma", "beta@seg"]  # by mean AP


def owsbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "owsbench", "report", *args], capture_output=True, text=True
    )


def _row(method: str, split: str, seed: int, metrics: dict, artifacts: dict | None) -> dict:
    row = {
        "method": method,
        "config_hash": "c0ffee",
        "dataset": "synth",
        "dataset_fingerprint": "synth/test/1",
        "split": split,
        "seed": seed,
        "metrics": metrics,
        "metric_version": "pixel-v1",
        "fit_seconds": 12.0 + seed,
        "infer_seconds": 1.5,
        "trained_on": "synth",
    }
    if artifacts is not None:
        row["artifacts"] = artifacts
    return row


def _curve(path: Path, separation: float, seed: int) -> None:
    """A curve artifact: an AnomalyMetric fed random scores (separation: how good)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(20_000) < 0.1).astype(np.uint8)
    labels[rng.random(labels.size) < 0.05] = 255
    metric = AnomalyMetric()
    metric.update(rng.normal(separation * (labels == 1), 1.0).astype(np.float32), labels)
    np.savez(path, **metric.state_dict())


def _samples(path: Path, methods: list[str], seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, h, w = 5, 24, 48
    anomaly = np.zeros((n, h, w), np.uint8)
    anomaly[:, 8:16, 20:30] = 1
    anomaly[:, -3:] = 255
    scores = {f"score:{m}": rng.random((n, h, w)).astype(np.float16) for m in methods}
    frame_ids = np.array([f"frame_{i:03d}" for i in range(n)])
    image = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    np.savez(path, frame_ids=frame_ids, image=image, anomaly=anomaly, **scores)


def _training(path: Path, seed: int) -> None:
    steps = np.arange(60)
    loss = 2.0 * np.exp(-steps / 20) + 0.1 * np.random.default_rng(seed).random(60) + 0.05
    lr = np.linspace(1e-3, 0, 60)
    fit = {"kind": "deeplabv3plus", "train_loss": loss.tolist(), "lr": lr.tolist()}
    path.write_text(json.dumps({**fit, "fit_seconds": 12.0 + seed}))


def build_run(run_dir: Path, metrics: dict[str, list[dict]] = TEST_METRICS) -> Path:
    """A run folder: split ``test`` with every artifact (curves, samples, training logs) for
    ``metrics`` (method -> one dict per seed), and an older split ``val`` without artifacts."""
    (run_dir / "artifacts").mkdir(parents=True)
    rows = []
    for seed in (0, 1):
        samples = f"artifacts/samples-test-{seed}.npz"
        training = f"artifacts/fit-{seed}.json"
        _samples(run_dir / samples, list(metrics), seed)
        _training(run_dir / training, seed)
        for i, (method, per_seed) in enumerate(metrics.items()):
            curve = f"artifacts/curve-{i}-{seed}.npz"
            _curve(run_dir / curve, 1.0 + i, seed)
            artifacts = {"curve": curve, "samples": samples, "training": [training]}
            rows.append(_row(method, "test", seed, per_seed[seed], artifacts))
    rows += [_row(m, "val", 0, {"AP": 0.1, "AUROC": 0.5, "FPR95": 0.9}, None) for m in metrics]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run folder reported in every format; one curve file deleted beforehand."""
    run_dir = build_run(tmp_path_factory.mktemp("report") / "run")
    (run_dir / "artifacts" / "curve-2-1.npz").unlink()  # gamma, seed 1
    result = owsbench(str(run_dir), "--format", "md,csv,latex,html")
    assert result.returncode == 0, result.stderr
    return run_dir, result


# ------------------------------------------------------------------ best values, per format


def _normalise_column(header: str) -> str:
    return header.split()[0].replace("\\_", "_") if header.split() else header


def _markdown_best(text: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Methods (in order) and the (method, column) cells in bold of the first table."""
    lines = [line for line in text.split("\n\n")[1].splitlines()]
    header = [_normalise_column(c.strip()) for c in lines[0].strip("|").split("|")]
    methods, best = [], set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        methods.append(cells[0])
        best |= {(cells[0], h) for h, c in zip(header, cells, strict=True) if c.startswith("**")}
    return methods, best


def test_markdown_has_directions_mean_std_and_marks_the_best(report):
    run_dir, result = report
    text = (run_dir / "leaderboard.md").read_text()
    assert text.startswith("### synth / test")
    assert "### synth / val" in text
    for header in ("AP ↑", "AUROC ↑", "FPR95 ↓", "mIoU ↑", "sIoU ↑", "mean_F1 ↑"):
        assert header in text.split("### synth / val")[0]
    assert "sIoU" not in text.split("### synth / val")[1]  # no component metrics there
    methods, best = _markdown_best(text)
    assert methods == METHOD_ORDER
    assert best == EXPECTED_BEST
    assert " **51.00 ± 1.41** |" in text  # alpha_1 AP: mean ± sample std over two seeds
    assert " 35.00 ± 49.50 |" in text  # gamma AP: best single seed, not best mean
    assert text in result.stdout


def test_csv_has_means_stds_and_component_columns(report):
    run_dir, _ = report
    lines = (run_dir / "leaderboard.csv").read_text().splitlines()
    header = lines[0].split(",")
    for column in ("AP", "AP_std", "FPR95", "sIoU", "sIoU_std", "mean_F1", "seeds"):
        assert column in header
    alpha = dict(zip(header, lines[1].split(","), strict=True))
    assert alpha["method"] == "alpha_1" and float(alpha["AP"]) == pytest.approx(0.51)


def test_latex_booktabs_escaped_and_marked(report):
    run_dir, _ = report
    tex = (run_dir / "leaderboard.tex").read_text()
    assert tex.count("\\begin{table}") == 2  # one per (dataset, split)
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == 2
    assert "alpha\\_1" in tex and "beta@seg" in tex and "alpha_1" not in tex
    assert "FPR95 $\\downarrow$" in tex and "mean\\_F1 $\\uparrow$" in tex
    first = tex.split("\\begin{table}")[1]
    header = first.split("\\toprule\n")[1].split(" \\\\")[0].split(" & ")
    body = first.split("\\midrule\n")[1].split("\n\\bottomrule")[0].splitlines()
    columns = [_normalise_column(h) for h in header]
    best = set()
    for line in body:
        cells = line.removesuffix(" \\\\").split(" & ")
        method = cells[0].replace("\\_", "_")
        best |= {(method, c) for c, v in zip(columns, cells, strict=True) if "\\textbf{" in v}
    assert best == EXPECTED_BEST
    assert "\\textbf{51.00 $\\pm$ 1.41}" in tex


class _TableParser(HTMLParser):
    """Cells of every ``<table>``: (tag, class, text) per row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str, str]]]] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("th", "td"):
            self._cell = [tag, dict(attrs).get("class") or "", ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None


def test_html_is_self_contained_with_marked_tables_and_figures(report):
    run_dir, _ = report
    page = (run_dir / "report.html").read_text()
    parser = _TableParser()
    parser.feed(page)
    assert len(parser.tables) == 2
    header, *body = parser.tables[0]
    columns = [_normalise_column(text) for _, _, text in header]
    assert [row[0][2] for row in body] == METHOD_ORDER
    best = {
        (row[0][2], column)
        for row in body
        for column, (_, cls, _) in zip(columns, row, strict=True)
        if "best" in cls.split()
    }
    assert best == EXPECTED_BEST
    # three figures drawn (curves, samples of test; training), embedded as PNG data URIs
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == page.count("<img") == 3
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # nothing loaded from elsewhere
    assert "<link" not in page and "<script" not in page
    assert "td.best" in page  # the class is styled inline
    # what is missing is said, not fatal: the deleted curve file, the val rows without artifacts
    assert "gamma seed 1:" in page and "curve-2-1.npz not found" in page
    assert "no curve artifact recorded for alpha_1 seed 0, beta@seg seed 0, gamma seed 0" in page
    assert "synth / val: anomaly maps</strong>: not drawn" in page
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert figures == ["curves-synth-test.png", "samples-synth-test.png", "training.png"]


# ---------------------------------------------------------------- merging, flags, bad input


def test_merging_run_folders_later_folder_wins(tmp_path):
    first = build_run(tmp_path / "a")
    better = {"AP": 0.99, "AUROC": 0.99, "FPR95": 0.01, "mIoU": 0.7}
    second = build_run(tmp_path / "b", {"alpha_1": [better, better], "delta": [better, better]})
    result = owsbench(str(first), str(second), "--format", "md", "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "r" / "leaderboard.md").read_text()
    assert re.search(r"\| alpha_1 +\| +\*\*99\.00 ± 0\.00\*\* \|", text)  # b's rows won
    assert "| delta " in text and "| gamma " in text and "| beta@seg " in text
    rows = load_runs([first, second])
    assert len(rows) == 2 * 3 + 3 + 2 * 1 + 1  # a: test 6 + val 3; b adds delta test 2 + val 1
    delta = next(r for r in rows if r["method"] == "delta" and r["split"] == "test")
    assert Path(delta["artifacts"]["curve"]).parent == second / "artifacts"
    assert not (tmp_path / "r" / "figures").exists()  # md alone draws no figures


def test_figures_flag_and_rows_without_any_artifacts(tmp_path):
    run_dir = build_run(tmp_path / "run")
    rows = [r for r in load_runs([run_dir]) if r["split"] == "val"]  # no artifacts at all
    written = write_leaderboard(rows, tmp_path / "out", ("md", "html"))
    assert [p.name for p in written] == ["leaderboard.md", "report.html"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<img" not in page and page.count("not drawn") == 3
    assert "no training artifact recorded for" in page
    result = owsbench(str(run_dir), "--format", "latex", "--figures")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "curves-synth-test.png",
        "samples-synth-test.png",
        "training.png",
    }
    assert f"wrote {run_dir / 'leaderboard.tex'}" in result.stdout


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("md,pdf", "unknown report format 'pdf'; valid: md, csv, latex, html"),
        (",", "no report format given; valid: md, csv, latex, html"),
    ],
)
def test_bad_format_exits_2_with_one_line(tmp_path, fmt, message):
    (tmp_path / "results.jsonl").write_text("")
    result = owsbench(str(tmp_path), "--format", fmt)
    assert result.returncode == 2
    assert result.stderr.strip() == f"owsbench: error: {message}"
    assert not (tmp_path / "leaderboard.md").exists()
