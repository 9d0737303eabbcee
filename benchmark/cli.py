"""The ``owsbench`` command line (click). Heavy modules (torch, smp) load only inside commands.

Exit codes: 0 success, 1 failure of the work, 2 bad usage or bad input (one line, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

import owsbench
from owsbench.errors import BadInput

if TYPE_CHECKING:
    from owsbench.config import RunConfig

LISTABLE = ("methods", "datasets", "metrics", "segmenters", "supervisions")


def _choice_option(name: str, choices: tuple[str, ...], help: str):
    """An option taking one of ``choices``, the first being the default."""
    return click.option(
        name, type=click.Choice(choices), default=choices[0], show_default=True, help=help
    )


AGGREGATION_OPTION = _choice_option(
    "--aggregation",
    ("pooled", "per-image"),
    "Pixel metrics pooled over the split, or per-image means (Hendrycks CAOS).",
)
LAUNCH_OPTIONS = (  # `owsbench run`'s launcher and the SLURM tasks' resources
    _choice_option(
        "--launcher",
        ("local", "slurm"),
        "Run the jobs in this process, or submit them as SLURM job arrays (submitit).",
    ),
    click.option(
        "--wait/--no-wait",
        default=True,
        help="slurm: follow the tasks to their end (else return after submitting; see "
        "`owsbench status OUT`).",
    ),
    click.option(
        "--slurm-partition", metavar="NAME", help="slurm: the partition [the cluster's default]."
    ),
    click.option(
        "--slurm-time", type=int, metavar="MINUTES", help="slurm: time limit of each task [120]."
    ),
    click.option(
        "--cpus-per-job", type=int, metavar="N", help="slurm: CPUs (torch threads) per task [1]."
    ),
    click.option("--gpus-per-job", type=int, metavar="N", help="slurm: GPUs per task [0]."),
    click.option("--mem-per-job", type=float, metavar="GB", help="slurm: memory per task [8]."),
    click.option(
        "--max-parallel", type=int, metavar="N", help="slurm: tasks of an array run at once [256]."
    ),
)
SLURM_FLAGS = {  # option name -> SlurmOptions field
    "slurm_partition": "partition",
    "slurm_time": "time",
    "cpus_per_job": "cpus_per_job",
    "gpus_per_job": "gpus_per_job",
    "mem_per_job": "mem_per_job",
    "max_parallel": "max_parallel",
}


def _launch_options(command):
    for option in reversed(LAUNCH_OPTIONS):
        command = option(command)
    return command


FPR_RULE_OPTION = _choice_option(
    "--fpr-rule",
    ("first", "nearest"),
    "FPR95 at the first threshold with TPR >= 0.95, or the nearest to 0.95 (Hendrycks).",
)


def _data_root(path: Path | None) -> Path:
    """The data root to use: the option, ``$OWSBENCH_DATA`` or the user cache; must be a folder."""
    from owsbench.cache import default_data_root

    root = Path(path) if path is not None else default_data_root()
    if root.exists() and not root.is_dir():
        raise BadInput(f"data root {root} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot use data root {root}: {err.strerror}") from None
    return root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(owsbench.__version__, prog_name="owsbench")
def cli() -> None:
    """owsbench: benchmark open-world and anomaly segmentation methods on road scenes.

    \b
    Quick start:
      owsbench run --methods msp,maxlogit,sml --datasets synthstreets --preset quick
    """


@cli.command("list")
@click.argument("what", type=click.Choice(LISTABLE))
def list_cmd(what: str) -> None:
    """List the registered methods, datasets, metrics, segmenters or supervisions.

    Metrics are listed from their specs (``owsbench.metrics.specs``): every value a result row
    can carry, with its direction (↑ higher is better, ↓ lower is better, · neither), level
    and summary.
    """
    from owsbench import catalog

    if what == "metrics":
        from owsbench.metrics.specs import all_specs

        specs = all_specs()
        width = max(len(s.name) for s in specs)
        level = max(len(s.level) for s in specs)
        for spec in specs:
            click.echo(f"{spec.name:<{width}}  {spec.arrow}  {spec.level:<{level}}  {spec.summary}")
        return
    registry = {
        "methods": catalog.METHODS,
        "datasets": catalog.DATASETS,
        "segmenters": catalog.SEGMENTERS,
        "supervisions": catalog.SUPERVISIONS,
    }[what]
    width = max(len(e.id) for e in registry)
    for entry in registry:
        click.echo(f"{entry.id:<{width}}  {entry.summary}")


@cli.command()
@click.option(
    "--methods", "-m", help="Comma-separated method ids; NAME@SEGMENTER picks the segmenter."
)
@click.option("--datasets", "-d", help="Comma-separated dataset ids.")
@click.option(
    "--preset",
    default=None,
    help="quick | default (CPU-sized data, training, eval) | paper (GPU-scale recipes, real data).",
)
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML run config.")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2 (default 0).")
@click.option(
    "--supervision",
    "supervisions",
    default=None,
    help="Comma-separated supervision regimes to train the post-hoc methods' segmenter with, "
    "e.g. full,tags,points,scribbles,boxes,tags+points (default: the config's, full).",
)
@click.option(
    "--splits",
    default=None,
    help="Evaluate these splits instead of each dataset's default ones, e.g. val for model "
    "selection (`owsbench data info ID` lists them).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    help="Folder with one folder per dataset id [$OWSBENCH_DATA].",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True
)
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="Fitted checkpoints [$OWSBENCH_CACHE]."
)
@AGGREGATION_OPTION
@FPR_RULE_OPTION
@click.option(
    "--save-scores", is_flag=True, help="Keep float16 score maps, SMIYC layout, in OUT/scores/."
)
@click.option(
    "--components",
    is_flag=True,
    help="Add SMIYC component metrics (sIoU, PPV, F1); threshold = best pixel F1 on the split.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default=None,
    help="Autocast of the evaluation forward pass; scores and metrics stay float32 "
    "[config file's, else fp32].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes decoding frames ahead of the model (0: in the main process) "
    "[config file's, else half the CPUs beyond two, at most 8].",
)
@click.option("--progress/--no-progress", default=True, help="Show progress bars on stderr.")
@click.option(
    "--procs-per-job",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train each segmenter fit, and the fits of methods that declare data_parallel, "
    "data-parallel on N processes: forked, CPU only (gloo); with --launcher slurm, N srun "
    "tasks per job (gloo, or NCCL on GPUs).",
)
@click.option(
    "--write-jobs",
    type=click.Path(path_type=Path),
    help="Only plan: write each job to DIR/<job id>.json (for `owsbench run-job`) and stop.",
)
@_launch_options
def run(
    methods: str | None,
    datasets: str | None,
    preset: str | None,
    config_file: Path | None,
    seeds: str | None,
    supervisions: str | None,
    splits: str | None,
    device: str,
    data_root: Path | None,
    out: Path,
    cache_dir: Path | None,
    aggregation: str,
    fpr_rule: str,
    save_scores: bool,
    components: bool,
    progress: bool,
    write_jobs: Path | None,
    **launch,
) -> None:
    """Fit and evaluate METHODS on DATASETS; write OUT/results.jsonl and the leaderboard.

    Options given on the command line override the config file. A rerun reuses cached fits
    and skips rows already in OUT/results.jsonl. With --launcher slurm each job is a SLURM
    task (resources from the options or the config file's `slurm:` section); failed tasks are
    listed with their log tails (exit 1) and a rerun submits only the jobs with rows missing.
    """
    from owsbench.cache import user_cache_dir
    from owsbench.config import RunConfig, get_preset, load_config_file, parse_seeds, split_ids

    file = load_config_file(config_file) if config_file else {}
    method_ids = methods or file.get("methods")
    if not method_ids:
        raise BadInput("no methods given: use --methods msp,sml,... (see `owsbench list methods`)")
    config = RunConfig(
        methods=split_ids(method_ids, "methods"),
        datasets=split_ids(datasets or file.get("datasets") or "synthstreets", "datasets"),
        seeds=parse_seeds(seeds if seeds is not None else file.get("seeds", "0")),
        splits=_id_list(splits, file, "splits"),
        preset=get_preset(preset or file.get("preset", "default")),
        device=device,
        data_root=_data_root(data_root),
        out=out,
        cache_dir=cache_dir or user_cache_dir(),
        progress=progress,
        aggregation=aggregation,
        fpr_rule=fpr_rule,
        save_scores=save_scores or components,
        components=components,
        segmenter_overrides=file.get("segmenter") or {},
        method_overrides=file.get("method_configs") or {},
        dataset_options=file.get("dataset_options") or {},
        supervisions=_id_list(supervisions, file, "supervisions"),
        annotation_costs=file.get("annotation_costs") or {},
        **_execution(launch, file),
    )
    _run_config(config, write_jobs, _executor(launch, file.get("slurm") or {}, config))


def _execution(options: dict, file: dict) -> dict:
    """``--precision``, ``--workers`` and ``--procs-per-job`` (taken out of ``options``) over
    the config file's ``precision`` / ``workers``; ``BadInput`` for a negative worker count."""
    precision = options.pop("precision") or file.get("precision", "fp32")
    workers = options.pop("workers")
    workers = workers if workers is not None else file.get("workers")
    if workers is not None and workers < 0:
        raise BadInput(f"workers must be >= 0 (got {workers})")
    return {
        "precision": precision,
        "workers": workers,
        "procs_per_job": options.pop("procs_per_job"),
    }


def _executor(launch: dict, section: dict, config: RunConfig):
    """The SLURM executor of ``launch`` (the launcher options) over the config file's ``slurm:``
    ``section``; None for the local launcher (``BadInput`` when SLURM options are given)."""
    given = {SLURM_FLAGS[k]: v for k, v in launch.items() if k in SLURM_FLAGS and v is not None}
    if launch["launcher"] == "local":
        if given or not launch["wait"]:
            flag = "--no-wait" if not given else "--" + next(iter(given)).replace("_", "-")
            raise BadInput(f"{flag} applies to --launcher slurm only")
        return None
    from owsbench.config import apply_overrides
    from owsbench.slurm import SlurmExecutor, SlurmOptions

    options = apply_overrides(SlurmOptions(), {**section, **given}, "slurm")
    return SlurmExecutor(config.out, options, wait=launch["wait"], progress=config.progress)


def _run_config(config: RunConfig, jobs_dir: Path | None, executor=None) -> None:
    """Validate ``config`` (every id, split and the device) before any heavy work; then write
    its planned jobs to ``jobs_dir``, or run them (in this process, or with ``executor``) and
    print the leaderboard."""
    from owsbench.cache import atomic_write_text
    from owsbench.runner import Runner

    runner = Runner(config, executor)
    if jobs_dir is not None:
        _make_dir(jobs_dir, "jobs folder")
        jobs = runner.plan()
        for job in jobs:
            atomic_write_text(jobs_dir / f"{job.id}.json", job.to_json())
        rows = sum(len(job.rows) for job in jobs)
        click.echo(f"{len(jobs)} jobs ({rows} rows) in {jobs_dir}; run each: owsbench run-job FILE")
        return
    _make_dir(config.out, "output folder")
    rows = runner.run()
    if executor is not None and _slurm_submitted(executor, config.out):
        return
    from owsbench.report import markdown, write_leaderboard  # pandas: after the run

    write_leaderboard(rows, config.out)
    click.echo(markdown(rows))
    click.echo(
        f"results: {config.out / 'results.jsonl'}  leaderboard: {config.out / 'leaderboard.md'}"
    )
    _exit_if_failed(runner.executor)
    _exit_if_dropped(runner.executor.dropped)


def _slurm_submitted(executor, out: Path) -> bool:
    """Say what a SLURM run submitted; whether to stop there (``--no-wait``)."""
    stages = [r.stage for r in executor.submitted]
    click.echo(
        f"submitted {len(stages)} SLURM tasks ({stages.count('fit')} fit, "
        f"{stages.count('eval')} eval); jobs index: {out / 'slurm' / 'jobs.json'}",
        err=True,
    )
    if not executor.wait:
        click.echo(f"follow them with: owsbench status {out}")
    return not executor.wait


def _exit_if_failed(executor) -> None:
    """Exit 1 after a table of the SLURM tasks that failed and the tail of each one's log."""
    from owsbench.job_index import log_tail

    if not getattr(executor, "failed", None):
        return
    click.echo(f"{len(executor.failed)} SLURM task(s) failed:", err=True)
    click.echo(_task_table(executor.failed), err=True)
    for task in executor.failed:
        click.echo(f"--- {task.slurm_id} ({task.what}): {task.stderr}", err=True)
        click.echo("\n".join("    " + line for line in log_tail(task)), err=True)
    click.echo("fix and rerun: only the failed jobs are submitted again", err=True)
    sys.exit(1)


def _task_table(records) -> str:
    """One line per task: SLURM id, stage, state, what it runs, its log."""
    header = ("slurm id", "stage", "state", "job", "log")
    lines = [(r.slurm_id, r.stage, r.state, r.what, r.stderr) for r in records]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(4)]
    return "\n".join(
        "  ".join(line[i].ljust(widths[i]) for i in range(4)) + "  " + line[4]
        for line in [header, *lines]
    )


def _exit_if_dropped(dropped: list[str]) -> None:
    """Exit 1 when rows were left out for non-finite outputs (each was said on its line)."""
    if dropped:
        sys.exit(1)


def _make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create {what} {path}: {err.strerror}") from None


@cli.command("run-job")
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="[the job's]"
)
@click.option("--data-root", type=click.Path(path_type=Path), help="[the job's]")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="[the job's]")
@click.option("--progress/--no-progress", default=True, help="Show progress bars on stderr.")
def run_job(
    job_file: Path,
    out: Path,
    device: str | None,
    data_root: Path | None,
    cache_dir: Path | None,
    progress: bool,
) -> None:
    """Execute the serialised job JOB_FILE (`owsbench run --write-jobs DIR` writes them): fit,
    evaluate and add its rows to OUT/results.jsonl.

    Nothing is done when all the job's rows are there already. The device, data root and cache
    folder default to the ones the job was planned with; the data must have the planned
    fingerprints.
    """
    from owsbench.execute import LocalExecutor
    from owsbench.plan import Job

    job = Job.read(job_file)
    root = _data_root(data_root) if data_root is not None else None
    _make_dir(out, "output folder")
    executor = LocalExecutor(out, progress, device, root, cache_dir)
    rows = executor.run([job])
    done = "executed" if executor.executed else "nothing to do (all rows present)"
    click.echo(f"job {job.id}: {done}; {len(rows)} rows in {out / 'results.jsonl'}")
    _exit_if_dropped(executor.dropped)


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
def status(out: Path) -> None:
    """List the SLURM tasks of the run in OUT (`owsbench run --launcher slurm`): state (pending,
    running, done, failed), what each runs and its log.

    States come from submitit's result files and squeue; the tasks' row shards are merged
    into OUT/results.jsonl (so `owsbench report OUT` sees them after a --no-wait run).
    """
    from owsbench.job_index import JobIndex, counts

    index = JobIndex(out)
    if not index.records:
        raise BadInput(f"no SLURM jobs index in {out} (run with --launcher slurm)")
    records = index.refresh()
    click.echo(_task_table(records))
    found = counts(records)
    click.echo(", ".join(f"{n} {state}" for state, n in found.items()))


def _id_list(option: str | None, file: dict, key: str) -> list[str] | None:
    """The comma-separated ``option`` (else the config file's ``key``) as a list; None when
    neither is given (the run's defaults)."""
    from owsbench.config import split_ids

    value = option or file.get(key)
    return split_ids(value, key) if value else None


@cli.group()
def data() -> None:
    """Describe and check datasets."""


@data.command("info")
@click.argument("dataset_id")
def data_info(dataset_id: str) -> None:
    """Print what DATASET_ID is, its layout, classes and splits."""
    from owsbench.catalog import DATASETS

    entry = DATASETS.entry(dataset_id)
    cls = DATASETS.get(dataset_id)
    click.echo(f"{entry.id}: {entry.summary}")
    click.echo(f"splits: {', '.join(cls.splits)}; evaluated: {', '.join(cls.eval_splits)}")
    click.echo(f"methods evaluated on it train on: {cls.train_on} (train split)")
    click.echo(f"classes ({len(cls.class_names)}): {', '.join(cls.class_names)}")
    if cls.description:
        click.echo(cls.description.strip())
    for title, attribute in (("layout", "layout"), ("where to get it", "source")):
        if text := getattr(cls, attribute, ""):
            click.echo(f"{title}:\n{text.rstrip()}")
    if counts := getattr(cls, "expected_counts", {}):
        click.echo("official frame counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@data.command("check")
@click.argument("dataset_id")
@click.option("--data-root", type=click.Path(path_type=Path), help="[$OWSBENCH_DATA]")
@click.option("--preset", default="default", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show progress bars on stderr.")
def data_check(dataset_id: str, data_root: Path | None, preset: str, progress: bool) -> None:
    """Check that DATASET_ID is present and readable under the data root; print frame counts."""
    from owsbench.catalog import DATASETS
    from owsbench.config import get_preset

    cls = DATASETS.get(dataset_id)
    dataset = cls(_data_root(data_root), preset=get_preset(preset).name)
    for warning in dataset.check(progress=progress):
        click.echo(f"warning: {warning}")
    unlabelled = getattr(cls, "unlabelled_splits", {})
    for split in dataset.splits:
        if split in unlabelled:
            click.echo(f"{dataset_id}/{split}: not evaluable ({unlabelled[split]})")
        else:
            click.echo(f"{dataset_id}/{split}: {len(dataset.split(split))} frames")
    click.echo("ok")


@data.command("stats")
@click.argument("dataset_id")
@click.option("--split", "split_name", default="train", show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), help="[$OWSBENCH_DATA]")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="[$OWSBENCH_CACHE]")
@click.option("--preset", default="default", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show progress bars on stderr.")
def data_stats(
    dataset_id: str,
    split_name: str,
    data_root: Path | None,
    cache_dir: Path | None,
    preset: str,
    progress: bool,
) -> None:
    """Per-class pixel counts and frequencies of a split of DATASET_ID, with the class weights
    each `segmenter: {class_weighting}` gives; counted once per dataset fingerprint and kept as
    JSON under the cache dir (its path is printed)."""
    from tabulate import tabulate

    from owsbench.cache import user_cache_dir
    from owsbench.catalog import DATASETS
    from owsbench.config import get_preset
    from owsbench.segmenters.base import SegmenterConfig
    from owsbench.training.class_weights import WEIGHTINGS, cached_class_stats, class_weights

    dataset = DATASETS.get(dataset_id)(_data_root(data_root), preset=get_preset(preset).name)
    dataset.prepare(progress)
    split = dataset.split(split_name)
    stats, path, cached = cached_class_stats(
        split, dataset.num_classes, dataset.fingerprint(), cache_dir or user_cache_dir(), progress
    )
    smooth = SegmenterConfig().class_smooth
    weights = {m: class_weights(m, stats, smooth) for m in WEIGHTINGS if m != "none"}
    rows = [
        [name, stats.pixels[c], f"{100 * stats.frequencies()[c]:.3f}", stats.images[c]]
        + [f"{w[c]:.3f}" for w in weights.values()]
        for c, name in enumerate(dataset.class_names)
    ]
    headers = ["class", "pixels", "freq %", "frames", *(f"w {m}" for m in weights)]
    click.echo(tabulate(rows, headers=headers, tablefmt="github"))
    click.echo(
        f"{dataset_id}/{split_name}: {stats.frames} frames, {stats.total} labelled pixels "
        f"(void left out); w smoothed with class_smooth {smooth}; "
        f"{'cached' if cached else 'written'}: {path}"
    )


@data.command("make")
@click.argument("dataset_id", type=click.Choice(["cityscapes-cocopaste"]))
@click.option(
    "--cityscapes",
    "cityscapes_dir",
    type=click.Path(path_type=Path),
    help="Cityscapes folder with leftImg8bit/ and gtFine/ [<data root>/cityscapes].",
)
@click.option(
    "--coco",
    "coco_dir",
    type=click.Path(path_type=Path),
    help="COCO 2017 folder with annotations/ and {train2017,val2017}/ [<data root>/coco].",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "test"]),
    default="val",
    show_default=True,
    help="val: evaluation set (COCO val2017 into Cityscapes val); train: COCO train2017 into "
    "Cityscapes train (outlier exposure); test is refused (labels not public).",
)
@click.option("--seed", default=0, show_default=True, help="Same seed -> identical files.")
@click.option("--count", type=int, default=None, help="Only the first N Cityscapes frames.")
@click.option("--data-root", type=click.Path(path_type=Path), help="[$OWSBENCH_DATA]")
@click.option("--progress/--no-progress", default=True)
def data_make(
    dataset_id: str,
    cityscapes_dir: Path | None,
    coco_dir: Path | None,
    split: str,
    seed: int,
    count: int | None,
    data_root: Path | None,
    progress: bool,
) -> None:
    """Generate DATASET_ID into the data root from the official source datasets."""
    import json

    from owsbench.datasets.cocopaste import generate

    root = _data_root(data_root)
    out = generate(
        cityscapes_dir or root / "cityscapes",
        coco_dir or root / "coco",
        root,
        split=split,
        seed=seed,
        count=count,
        progress=progress,
    )
    manifest = out / "manifest.json"
    counts = json.loads(manifest.read_text())["counts"]
    click.echo(
        f"{dataset_id}/{split}: {counts['frames']} frames, {counts['objects']} objects "
        f"-> {out} (seed {seed}; manifest {manifest.name})"
    )


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "formats", default="md,csv", show_default=True, help="Any of md,csv,latex,html."
)
@click.option("--figures", is_flag=True, help="Also write PNG figures (html always has them).")
@click.option(
    "--cost-model",
    type=click.Choice(["relative", "seconds"]),
    default="relative",
    show_default=True,
    help="x axis of the cost-vs-mIoU figure: relative effort or published seconds per image.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Where to write (default: first DIR).")
@click.option("--smoothing", type=float, default=0.6, show_default=True, help="EMA weight [0, 1).")
def report(
    run_dirs: tuple[Path, ...],
    formats: str,
    figures: bool,
    cost_model: str,
    out: Path | None,
    smoothing: float,
) -> None:
    """Rebuild the leaderboard from one or more run folders' results.jsonl.

    Rows of later folders replace rows of earlier ones with the same key. Formats: md
    (leaderboard.md), csv (leaderboard.csv), latex (leaderboard.tex), html (report.html, one
    self-contained page with the figures). Figures go to figures/ in the output folder.
    """
    from owsbench.curves import check_smoothing
    from owsbench.report import load_runs, markdown, parse_formats, write_leaderboard

    check_smoothing(smoothing)
    wanted = parse_formats(formats)
    rows = load_runs(run_dirs)
    target = out or run_dirs[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create output folder {target}: {err.strerror}") from None
    written = write_leaderboard(rows, target, wanted, figures, cost_model, smoothing)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(markdown(rows))


@cli.group("score-maps")
def score_maps() -> None:
    """Evaluate per-frame score maps saved in the SMIYC layout (by owsbench or anything else)."""


@score_maps.command("evaluate")
@click.argument("maps_dir", type=click.Path(path_type=Path))
@click.option("--dataset", "dataset_id", required=True, help="Dataset id whose labels to use.")
@click.option("--split", default=None, help="Split (default: the dataset's first eval split).")
@click.option("--data-root", type=click.Path(path_type=Path), help="[$OWSBENCH_DATA]")
@click.option("--preset", default="default", show_default=True)
@AGGREGATION_OPTION
@FPR_RULE_OPTION
@click.option("--components", is_flag=True, help="Add SMIYC component metrics.")
@click.option("--progress/--no-progress", default=True)
def score_maps_evaluate(
    maps_dir: Path,
    dataset_id: str,
    split: str | None,
    data_root: Path | None,
    preset: str,
    aggregation: str,
    fpr_rule: str,
    components: bool,
    progress: bool,
) -> None:
    """Evaluate MAPS_DIR, a folder of <frame id>.hdf5 maps (float 'value', higher = more
    anomalous, at label resolution), e.g. OUT/scores/seed0/anomaly_p/<method>/<dataset>-<split>.
    """
    from owsbench.catalog import DATASETS
    from owsbench.config import get_preset
    from owsbench.score_eval import evaluate_score_maps

    if not maps_dir.is_dir():
        raise BadInput(f"score map folder {maps_dir} not found")
    dataset = DATASETS.get(dataset_id)(_data_root(data_root), preset=get_preset(preset).name)
    dataset.prepare(progress=progress)
    split_name = split or dataset.eval_splits[0]
    metrics = evaluate_score_maps(
        dataset.split(split_name), maps_dir, dataset, aggregation, fpr_rule, components, progress
    )
    click.echo(f"{dataset_id}/{split_name}: {maps_dir} ({aggregation}, FPR95 rule {fpr_rule})")
    for name, value in metrics.items():
        shown = f"{value:.6g}" if name in ("frames", "threshold") else _pct(value)
        click.echo(f"  {name:<20} {shown}")


@cli.group("cache")
def cache_group() -> None:
    """Verify and clean the fit cache (<cache dir>/fits: checkpoints and their metadata)."""


CACHE_DIR_OPTION = click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="Fitted checkpoints [$OWSBENCH_CACHE]."
)


def _cache_dir(path: Path | None) -> Path:
    """The cache folder (the option, else the one `run` uses); ``BadInput`` when it is missing."""
    from owsbench.cache import user_cache_dir

    folder = Path(path) if path is not None else user_cache_dir()
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "not found"
        raise BadInput(f"cache folder {folder} {what}")
    return folder


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _state(entry) -> str:
    return f"{entry.status} ({entry.reason})" if entry.reason else entry.status


@cache_group.command("verify")
@CACHE_DIR_OPTION
def cache_verify(cache_dir: Path | None) -> None:
    """List every fit (kind, hash, size, created, state) after checking each checkpoint against
    the sha256 in its metadata; exit 1 if any is corrupt.

    States: ok; corrupt (sha256 mismatch or unreadable metadata: a run moves it aside and
    refits); orphan (a .pt without its .json or the reverse: a run refits it). Fits being
    made or interrupted are listed after them as partial, with their resume checkpoints.
    """
    import time
    from collections import Counter

    from tabulate import tabulate

    from owsbench.fits import corrupt_files, list_entries

    folder = _cache_dir(cache_dir)
    entries = list_entries(folder)
    if entries:
        when = {e.stem: time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)) for e in entries}
        table = [[e.kind, e.hash, _size(e.size), when[e.stem], _state(e)] for e in entries]
        headers = ["kind", "hash", "size", "created", "state"]
        click.echo(tabulate(table, headers, tablefmt="github", disable_numparse=True))
    counts = Counter(e.status for e in entries)
    total = _size(sum(e.size for e in entries))
    click.echo(
        f"{len(entries)} fits in {folder / 'fits'} ({total}): {counts['ok']} ok, "
        f"{counts['corrupt']} corrupt, {counts['orphan']} orphan"
    )
    _echo_partial(folder)
    if moved := corrupt_files(folder):
        click.echo(
            f"{len(moved)} files moved aside in {folder / 'fits' / 'corrupt'} "
            "(`owsbench cache clean --corrupt` removes them)"
        )
    if counts["corrupt"]:
        sys.exit(1)


def _echo_partial(folder: Path) -> None:
    """One line per fit with resume checkpoints (running or interrupted), one in all."""
    from owsbench.fits import list_partial

    resumable = [e for e in list_partial(folder) if e.checkpoints or e.running]
    for e in resumable:
        state = "running" if e.running else "interrupted (a rerun resumes it)"
        click.echo(
            f"partial {e.stem}: {e.checkpoints} resume checkpoints, {_size(e.size)}, {state}"
        )
    if resumable:
        click.echo(
            f"{len(resumable)} partial fits in {folder / 'fits' / 'resume'} "
            "(`owsbench cache clean --partial` removes the interrupted ones)"
        )


@cache_group.command("clean")
@CACHE_DIR_OPTION
@click.option(
    "--older-than", type=float, metavar="DAYS", help="Remove fits created over DAYS days ago."
)
@click.option(
    "--corrupt",
    "broken",
    is_flag=True,
    help="Remove corrupt and orphaned fits and the corrupt/ folder of moved-aside files.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Remove the resume checkpoints of interrupted fits and the lock files of fits that "
    "are not running.",
)
@click.option("--all", "everything", is_flag=True, help="Remove every fit (and --partial).")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def cache_clean(
    cache_dir: Path | None,
    older_than: float | None,
    broken: bool,
    partial: bool,
    everything: bool,
    dry_run: bool,
) -> None:
    """Remove fits (both files of each): those older than DAYS, the corrupt ones, or all.

    A removed fit is simply refitted by the next run that needs it. With --partial (or --all;
    with --older-than those last written over DAYS ago) the checkpoints an interrupted fit
    left for its rerun to resume from go too (the rerun then starts from step 0), and the lock
    files; a fit being made now (its lock held) is never touched.
    """
    import math

    if older_than is not None and not (math.isfinite(older_than) and older_than >= 0):
        raise BadInput(f"--older-than must be a number of days >= 0 (got {older_than:g})")
    if older_than is None and not (broken or partial or everything):
        raise BadInput("nothing to clean: give --older-than DAYS, --corrupt, --partial or --all")
    folder = _cache_dir(cache_dir)
    if broken or everything or older_than is not None:
        _clean_fits(folder, older_than, broken, everything, dry_run)
    if partial or everything or older_than is not None:
        _clean_partial(folder, None if partial or everything else older_than, dry_run)


def _clean_fits(
    folder: Path, older_than: float | None, broken: bool, everything: bool, dry_run: bool
) -> None:
    """The stored-fit part of `cache clean`."""
    import time

    from owsbench.fits import corrupt_files, list_entries, remove_entries, select_entries

    chosen = select_entries(list_entries(folder, verify=broken), older_than, broken, everything)
    verb = "would remove" if dry_run else "removed"
    now = time.time()
    for e in chosen:
        suffixes = ", ".join(p.suffix for p in e.files)
        age = (now - e.created) / 86400
        click.echo(f"{verb} {e.stem} ({suffixes}; {_size(e.size)}; {age:.1f} days; {_state(e)})")
    moved = corrupt_files(folder) if broken else []
    if moved:
        click.echo(f"{verb} {folder / 'fits' / 'corrupt'}/ ({len(moved)} files moved aside)")
    size = _size(sum(e.size for e in chosen) + sum(p.stat().st_size for p in moved))
    if not dry_run:
        remove_entries(chosen, folder, broken)
    click.echo(f"{verb} {len(chosen)} fits and {len(moved)} moved-aside files ({size})")


def _clean_partial(folder: Path, older_than: float | None, dry_run: bool) -> None:
    """The partial-fit part of `cache clean`: every resume folder and lock file whose fit is
    not running (only those last written over ``older_than`` days ago, when given)."""
    import time

    from owsbench.fits import list_partial, remove_partial

    now = time.time()
    entries = [
        e for e in list_partial(folder)
        if older_than is None or now - e.modified > older_than * 86400
    ]  # fmt: skip
    idle = [e for e in entries if not e.running]
    removed = idle if dry_run else remove_partial(idle, folder)
    verb = "would remove" if dry_run else "removed"
    for e in removed:
        what = f"{e.checkpoints} resume checkpoints, " if e.checkpoints else ""
        click.echo(f"{verb} partial {e.stem} ({what}{_size(e.size)})")
    for e in entries:
        if e not in removed:
            click.echo(f"kept partial {e.stem} (its fit is running)")
    size = _size(sum(e.size for e in removed))
    click.echo(f"{verb} {len(removed)} partial fits ({size}); kept {len(entries) - len(removed)}")


def _rows_at(path: Path, what: str) -> list[dict]:
    """Rows of a run folder (its results.jsonl, shards merged first) or of a results.jsonl
    file."""
    from owsbench.results import merge_shards, read_rows

    file = path / "results.jsonl" if path.is_dir() else path
    if file.name == "results.jsonl":
        merge_shards(file.parent)
    if not file.is_file():
        raise BadInput(f"{what} {path} not found (expected a run folder or a results.jsonl)")
    rows = read_rows(file)
    if not rows:
        raise BadInput(f"{what} {file} holds no rows")
    return rows


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    required=True,
    type=click.Path(path_type=Path),
    help="A results.jsonl (or run folder) to compare with.",
)
@click.option(
    "--tolerance",
    default=None,
    help="Absolute tolerances, e.g. AP=0.02,FPR95=0.05 (default 0.01 for every metric).",
)
def check(run_dir: Path, baseline: Path, tolerance: str | None) -> None:
    """Compare RUN_DIR with a baseline; exit 1 and list what regressed beyond tolerance.

    Rows are matched on method, dataset, split, seed and preset; a metric regresses when it is
    worse than the baseline by more than its tolerance, in its declared direction (lower AP,
    AUROC, mIoU, component and discovery fractions; higher FPR95; `owsbench list metrics`).
    Fractions are printed as % (counts and plain numbers as they are).
    """
    from tabulate import tabulate

    from owsbench.check import MATCH_FIELDS, compare, parse_tolerances

    tolerances = parse_tolerances(tolerance)
    comparisons = compare(_rows_at(run_dir, "run"), _rows_at(baseline, "baseline"), tolerances)
    regressed = [c for c in comparisons if c.regressed]
    rows = len({c.key for c in comparisons})
    if not regressed:
        click.echo(f"ok: {len(comparisons)} metrics of {rows} rows within tolerance of {baseline}")
        return
    from owsbench.metrics.specs import metric_spec

    def shown(c, value: float | None) -> str:
        if value is None or metric_spec(c.metric).format == "percent":
            return _pct(value)
        return f"{value:g}"  # a count or a plain number

    table = [
        [*c.key, c.metric, shown(c, c.baseline), shown(c, c.value), shown(c, c.tolerance)]
        for c in regressed
    ]
    headers = [*MATCH_FIELDS, "metric", "baseline %", "now %", "tolerance %"]
    click.echo(tabulate(table, headers, tablefmt="github", disable_numparse=True))
    click.echo(f"regressed: {len(regressed)} of {len(comparisons)} metrics ({rows} rows)")
    sys.exit(1)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


@cli.group("curves")
def curves_group() -> None:
    """Training curves as CSV (step, name, value) and figures: a run's logs or MMEngine's."""


@curves_group.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="[RUN_DIR/curves_csv]")
def curves_export(run_dir: Path, out: Path | None) -> None:
    """Write each fit's loss.csv (per-step scalars) and metrics.csv (validation) from the
    run folder's training/*.json into OUT/<fit>/."""
    from owsbench.curves import export_curves

    written = export_curves(run_dir, out or run_dir / "curves_csv")
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"{len(written) // 2} fit(s) exported")


@curves_group.command("import")
@click.argument("scalars_json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="[SCALARS_JSON's folder/curves_csv]")
@click.option("--smoothing", type=float, default=0.6, show_default=True, help="EMA weight [0, 1).")
def curves_import(scalars_json: Path, out: Path | None, smoothing: float) -> None:
    """Read an MMEngine/MMSegmentation vis_data/scalars.json; write OUT/<fit>/loss.csv,
    metrics.csv (mIoU as a fraction) and curves.png (loss and mIoU, smoothed, with the trend)."""
    from owsbench.curves import check_smoothing, import_mmengine_scalars, write_curves
    from owsbench.figures import fit_curves_figure

    check_smoothing(smoothing)
    fit = import_mmengine_scalars(scalars_json)
    target = out or scalars_json.parent / "curves_csv"
    written = write_curves({fit.fit: fit}, target)
    figure = fit_curves_figure([(fit.fit, fit)], target / fit.fit / "curves.png", smoothing)
    for path in [*written, *([figure.path] if figure.path else [])]:
        click.echo(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``BadInput`` -> exit 2 and an ``OSError`` (disk full, ...) -> exit 1,
    each with one line on stderr."""
    try:
        cli.main(args=argv, prog_name="owsbench", standalone_mode=False)
    except BadInput as err:
        click.echo(f"owsbench: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("owsbench: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except OSError as err:  # disk full, permissions, ...: a failure of the work, said on one line
        click.echo(f"owsbench: error: {_os_error(err)}", err=True)
        sys.exit(1)


def _os_error(err: OSError) -> str:
    """``PATH: No space left on device``: an ``OSError`` as one line (its file, then why)."""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{err.filename}: {reason}" if err.filename is not None else reason


if __name__ == "__main__":
    main()
