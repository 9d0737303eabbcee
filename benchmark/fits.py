"""On-disk cache of fitted state (checkpoints, statistics) under a content hash of its recipe.

``<cache_dir>/fits/<kind>-<hash>.pt`` holds the state (``torch.save``), ``.json`` beside it the
recipe, fit seconds, the training curve and the checkpoint's sha256; ``<hash>`` is the first 16
hex digits of the sha256 of the canonical JSON of ``{"recipe": recipe, "fit_version":
FIT_VERSION}`` (:func:`fit_stem`). Both files are written atomically; the ``.json`` is written
last, so a checkpoint counts only once its metadata is there. A fit runs under the file lock
``<kind>-<hash>.lock``, so concurrent processes that need one fit fit it once. While a fit runs,
its training loops checkpoint under ``<cache_dir>/fits/resume/<kind>-<hash>/``
(:func:`next_loop_checkpoint`, read by :class:`owsbench.training.loop.Loop`); a fit killed
midway resumes from there, and the folder is removed once the fit is stored.

:func:`fit_or_load` is the one fit function: segmenters, post-hoc statistics and trained methods
all go through it. Importing this module loads no torch (planning computes cache keys with it).

The cache heals itself: a cached checkpoint whose bytes do not hash to the ``sha256`` of its
metadata, that ``torch.load`` cannot read, or whose ``.json`` is unreadable is reported on one
stderr line, both files are moved aside into ``<cache_dir>/fits/corrupt/`` and the fit runs
again as if it were missing. :func:`list_entries` (``owsbench cache verify``) and
:func:`select_entries` / :func:`remove_entries` (``owsbench cache clean``) list, verify and
remove entries; :func:`list_partial` / :func:`remove_partial` the resume checkpoints and lock
files of fits that are not stored (an interrupted fit's, kept so that a rerun resumes it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from owsbench.cache import atomic_write_bytes, atomic_write_text, content_hash, sha256_file

FIT_VERSION = 2  # bump when a training loop changes so cached fits are not reused (2: one Loop)


def fit_stem(kind: str, recipe: dict[str, Any]) -> str:
    """The cache file name (without suffix) of the fit of ``recipe``: ``<kind>-<hash>``."""
    return f"{kind}-{content_hash({'recipe': recipe, 'fit_version': FIT_VERSION})}"


RESUME_DIR = "resume"  # under <cache_dir>/fits: the checkpoints of fits being made


@dataclass
class ResumeSlot:
    """Where the training loops of the fit being made keep their checkpoints:
    ``<cache_dir>/fits/resume/<kind>-<hash>/loop<i>.pt``, ``i`` counting the loops the fit has
    started (a fit's loops run in a fixed order, so a rerun finds each loop's own file)."""

    folder: Path
    every: int | None = None  # the cache's checkpoint_every (None: the loop's own default)
    loops: int = 0

    def next_checkpoint(self) -> tuple[Path, int | None]:
        path = self.folder / f"loop{self.loops}.pt"
        self.loops += 1
        return path, self.every


_RESUMING: ContextVar[ResumeSlot | None] = ContextVar("owsbench_resuming", default=None)


def next_loop_checkpoint() -> tuple[Path, int | None] | None:
    """The checkpoint file of the next training loop of the fit being made (by
    :meth:`FitCache.load_or_fit`, innermost first) and the cache's ``checkpoint_every``; None
    outside a fit."""
    slot = _RESUMING.get()
    return slot.next_checkpoint() if slot is not None else None


@dataclass
class Fit:
    """A fitted state and what is known about how it was made."""

    state: dict[str, Any]
    meta: dict[str, Any]
    cached: bool
    parent: Fit | None = None  # the fit this one continued from (a reward-tuned fit's MLE fit)


class Tasks(Protocol):
    """The tasks of one job that fit together (``owsbench.training.distributed.Group``)."""

    rank: int
    size: int

    def broadcast(self, value: object) -> object: ...


_TASKS: ContextVar[Tasks | None] = ContextVar("owsbench_fit_tasks", default=None)


def fit_with_tasks(tasks: Tasks | None) -> None:
    """Make every :class:`FitCache` of this process (made from now on) fit with ``tasks``."""
    _TASKS.set(tasks)


class FitCache:
    """The fits under ``<cache_dir>/fits`` (see the module docstring). ``checkpoint_every``:
    steps between the checkpoints of the loops of its fits, unless a loop's recipe sets its own
    (None: the loop's default, :class:`owsbench.training.loop.Recipe`; 0: none). ``tasks``:
    the job's tasks when this process is one of several that make each fit together (srun
    tasks of ``--procs-per-job``; default: those of :func:`fit_with_tasks`): see
    :meth:`load_or_fit_together`."""

    def __init__(
        self, cache_dir: Path, checkpoint_every: int | None = None, tasks: Tasks | None = None
    ) -> None:
        self.root = Path(cache_dir) / "fits"
        self.checkpoint_every = checkpoint_every
        self.tasks = tasks if tasks is not None else _TASKS.get()

    def paths(self, kind: str, recipe: dict[str, Any]) -> tuple[Path, Path]:
        stem = fit_stem(kind, recipe)
        return self.root / f"{stem}.pt", self.root / f"{stem}.json"

    def has(self, kind: str, recipe: dict[str, Any]) -> bool:
        return all(path.exists() for path in self.paths(kind, recipe))

    def load_or_fit(
        self,
        kind: str,
        recipe: dict[str, Any],
        fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Fit:
        """The cached fit of ``recipe``, else run ``fit() -> (state, extra meta)`` and store it.

        The fit runs under ``<stem>.lock`` (:mod:`filelock`): a second process (or thread)
        that needs the same fit waits for it and then loads it instead of fitting it again."""
        from filelock import FileLock

        if self.tasks is not None and self.tasks.size > 1:
            return self.load_or_fit_together(kind, recipe, fit, self.tasks)
        state_path, meta_path = self.paths(kind, recipe)
        cached = self.cached(state_path, meta_path)
        if cached is not None:
            return cached
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(state_path.with_suffix(".lock")):
            cached = self.cached(state_path, meta_path)  # fitted while this one waited
            return cached if cached is not None else self.fit_and_store(kind, recipe, fit)

    def load_or_fit_together(
        self,
        kind: str,
        recipe: dict[str, Any],
        fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
        tasks: Tasks,
    ) -> Fit:
        """:meth:`load_or_fit` by all tasks of a job at once, in the same order. Task 0 takes
        the lock, finds the fit or not, and tells the others; when it is not cached, every task
        runs ``fit()`` (its data-parallel loops train together; a loop that is not
        data-parallel runs on each task alike), task 0 stores the result and, once it is
        stored, the others load it, so every task goes on with task 0's state. Only task 0
        writes to the cache."""
        from filelock import FileLock

        state_path, meta_path = self.paths(kind, recipe)
        if tasks.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            with FileLock(state_path.with_suffix(".lock")):
                cached = self.cached(state_path, meta_path)
                tasks.broadcast(cached is not None)
                made = cached if cached is not None else self.fit_and_store(kind, recipe, fit)
            if cached is None:
                tasks.broadcast(True)  # stored
            return made
        found = tasks.broadcast(None)
        if not found:
            self.run_fit(state_path.stem, fit)
            tasks.broadcast(None)  # task 0 has stored it
        stored = self.load(state_path, meta_path)
        if stored is None:
            raise RuntimeError(f"task {tasks.rank}: task 0's fit {state_path} is unreadable")
        return replace(stored, cached=found)

    def run_fit(
        self, stem: str, fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, Any], ResumeSlot]:
        """``fit()`` with its loops' checkpoints under ``resume/<stem>/``; its result and slot."""
        slot = ResumeSlot(self.root / RESUME_DIR / stem, self.checkpoint_every)
        token = _RESUMING.set(slot)
        try:
            state, extra = fit()
        finally:
            _RESUMING.reset(token)
        return state, extra, slot

    def cached(self, state_path: Path, meta_path: Path) -> Fit | None:
        """The verified cached fit, None when there is none (or it was corrupt)."""
        if state_path.exists() and meta_path.exists():
            return self.load(state_path, meta_path)
        return None

    def fit_and_store(
        self,
        kind: str,
        recipe: dict[str, Any],
        fit: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Fit:
        """Run ``fit()`` and store its state and metadata (the ``.json`` last)."""
        import torch

        state_path, meta_path = self.paths(kind, recipe)
        start = time.perf_counter()
        state, extra, slot = self.run_fit(state_path.stem, fit)
        seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        atomic_write_bytes(state_path, payload)

        meta = {
            "kind": kind,
            "recipe": recipe,
            "fit_seconds": seconds,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
        shutil.rmtree(slot.folder, ignore_errors=True)  # the fit is stored: its loops are done
        return Fit(state=state, meta=meta, cached=False)

    def load(self, state_path: Path, meta_path: Path) -> Fit | None:
        """The cached fit in ``state_path`` / ``meta_path``, verified against its sha256; None
        (after one stderr line and moving both files aside) when it is corrupt."""
        import torch

        try:
            meta, payload = read_verified(state_path, meta_path)
            try:
                buffer = io.BytesIO(payload)
                state = torch.load(buffer, map_location="cpu", weights_only=True)
            except Exception as err:  # any unreadable checkpoint is refitted, never fatal
                raise CorruptFit(f"torch.load failed: {first_line(err)}") from None
        except CorruptFit as err:
            moved = quarantine(state_path, meta_path)
            where = moved[0].with_suffix(".*") if moved else self.root / CORRUPT_DIR
            warn(
                f"owsbench: cached fit {state_path} is corrupt ({err}); moved aside to "
                f"{where}, refitting"
            )
            return None
        return Fit(state=state, meta=meta, cached=True)


# ------------------------------------------------------------------ verification and cleaning

CORRUPT_DIR = "corrupt"  # under <cache_dir>/fits: corrupt entries moved aside


class CorruptFit(Exception):
    """A cached fit that cannot be used; the message is the reason (one short phrase)."""


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def warn(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def read_meta(meta_path: Path) -> dict[str, Any]:
    """The metadata of a fit; ``CorruptFit`` when it is unreadable or has no sha256."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptFit(f"unreadable metadata {meta_path.name}: {first_line(err)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        raise CorruptFit(f"metadata {meta_path.name} has no sha256")
    return meta


def read_verified(
    state_path: Path, meta_path: Path, keep: bool = True
) -> tuple[dict[str, Any], bytes | None]:
    """The metadata and (with ``keep``) the checkpoint's bytes, read once; ``CorruptFit`` on
    unreadable metadata or a checkpoint whose sha256 differs from the metadata's. Without
    ``keep`` the file is hashed in chunks and not kept in memory."""
    meta = read_meta(meta_path)
    try:
        if keep:
            payload: bytes | None = state_path.read_bytes()
            digest = hashlib.sha256(payload).hexdigest()
        else:
            payload, digest = None, sha256_file(state_path)
    except OSError as err:
        raise CorruptFit(f"unreadable checkpoint: {err.strerror or err}") from None
    if digest != meta["sha256"]:
        raise CorruptFit("sha256 mismatch")
    return meta, payload


def quarantine(*paths: Path) -> list[Path]:
    """Move the existing ``paths`` into ``<fits>/corrupt/`` as ``<name>.corrupt-<time><suffix>``
    (unique); return where they went. A file another process moved first is skipped."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for path in paths:
        folder = path.parent / CORRUPT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target, n = folder / f"{path.stem}.corrupt-{stamp}{path.suffix}", 1
        while target.exists():
            target, n = folder / f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}", n + 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            continue
        moved.append(target)
    return moved


@dataclass
class FitEntry:
    """One entry of the fit cache: ``<stem>.pt`` and/or ``<stem>.json``.

    ``status``: ``ok``, ``corrupt`` (``reason`` says why) or ``orphan`` (one of the two files
    only); ``size``: bytes of both files; ``created``: the newest file's modification time.
    """

    stem: str
    kind: str
    hash: str
    files: tuple[Path, ...]
    size: int
    created: float
    status: str
    reason: str = ""


def entry_of(root: Path, stem: str, verify: bool = True) -> FitEntry:
    """The :class:`FitEntry` of ``<root>/<stem>.{pt,json}`` (sha256 checked with ``verify``)."""
    state, meta = root / f"{stem}.pt", root / f"{stem}.json"
    files = tuple(p for p in (state, meta) if p.is_file())
    stats = [p.stat() for p in files]
    kind, _, hash_ = stem.rpartition("-")
    status, reason = "ok", ""
    if len(files) < 2:
        missing = ".json" if state in files else ".pt"
        status, reason = "orphan", f"no {missing}"
    elif verify:
        try:
            read_verified(state, meta, keep=False)
        except CorruptFit as err:
            status, reason = "corrupt", str(err)
    return FitEntry(
        stem=stem,
        kind=kind or stem,
        hash=hash_ if kind else "",
        files=files,
        size=sum(s.st_size for s in stats),
        created=max(s.st_mtime for s in stats),
        status=status,
        reason=reason,
    )


def list_entries(cache_dir: Path, verify: bool = True) -> list[FitEntry]:
    """Every entry under ``<cache_dir>/fits`` sorted by stem (temporary files left out)."""
    root = Path(cache_dir) / "fits"
    if not root.is_dir():
        return []
    stems = {
        p.stem
        for p in root.iterdir()
        if p.is_file() and p.suffix in (".pt", ".json") and not p.name.startswith(".")
    }
    return [entry_of(root, stem, verify) for stem in sorted(stems)]


def corrupt_files(cache_dir: Path) -> list[Path]:
    """The files moved aside into ``<cache_dir>/fits/corrupt/``."""
    folder = Path(cache_dir) / "fits" / CORRUPT_DIR
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def select_entries(
    entries: Iterable[FitEntry],
    older_than_days: float | None = None,
    broken: bool = False,
    everything: bool = False,
    now: float | None = None,
) -> list[FitEntry]:
    """The entries to clean: all with ``everything``; else those created more than
    ``older_than_days`` ago, and (``broken``) the corrupt and orphaned ones."""
    now = time.time() if now is None else now
    chosen = []
    for entry in entries:
        old = older_than_days is not None and now - entry.created > older_than_days * 86400
        if everything or old or (broken and entry.status != "ok"):
            chosen.append(entry)
    return chosen


def remove_entries(entries: Iterable[FitEntry], cache_dir: Path, broken: bool) -> list[Path]:
    """Delete the entries' files and, with ``broken``, the ``corrupt/`` folder; return what
    was removed (files, then the folder)."""
    removed = []
    for entry in entries:
        for path in entry.files:
            path.unlink(missing_ok=True)
            removed.append(path)
    folder = Path(cache_dir) / "fits" / CORRUPT_DIR
    if broken and folder.is_dir():
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


@dataclass
class PartialFit:
    """What a fit that is not stored (yet) leaves under ``<cache_dir>/fits``: its loops'
    checkpoints in ``resume/<stem>/`` and its lock file ``<stem>.lock`` (a stored fit keeps
    its lock file too). ``running``: a process holds the lock now (the fit is being made);
    ``modified``: the newest file's modification time."""

    stem: str
    files: tuple[Path, ...]
    size: int
    modified: float
    running: bool

    @property
    def checkpoints(self) -> int:
        return sum(1 for p in self.files if p.suffix == ".pt")


def lock_is_held(path: Path) -> bool:
    """Whether a process (this one included) holds the :mod:`filelock` lock ``path``."""
    from filelock import FileLock, Timeout

    if not path.exists():
        return False
    try:
        with FileLock(path, timeout=0):
            return False
    except Timeout:
        return True


def list_partial(cache_dir: Path) -> list[PartialFit]:
    """Every fit's resume folder and lock file under ``<cache_dir>/fits``, sorted by stem."""
    root = Path(cache_dir) / "fits"
    resume = root / RESUME_DIR
    folders = {p.name: p for p in resume.iterdir() if p.is_dir()} if resume.is_dir() else {}
    locks = {p.stem: p for p in root.glob("*.lock")} if root.is_dir() else {}
    partial = []
    for stem in sorted(folders.keys() | locks.keys()):
        files = (
            sorted(p for p in folders[stem].rglob("*") if p.is_file()) if stem in folders else []
        )
        files += [locks[stem]] if stem in locks else []
        stats = [p.stat() for p in files]
        partial.append(PartialFit(
            stem=stem, files=tuple(files), size=sum(s.st_size for s in stats),
            modified=max((s.st_mtime for s in stats), default=0.0),
            running=lock_is_held(root / f"{stem}.lock"),
        ))  # fmt: skip
    return partial


def remove_partial(entries: Iterable[PartialFit], cache_dir: Path) -> list[PartialFit]:
    """Delete the resume folders and lock files of ``entries`` whose fit is not running, each
    under its own lock (a fit that starts meanwhile waits, then starts from step 0); return
    the entries removed. A running fit is left alone."""
    from filelock import FileLock, Timeout

    root = Path(cache_dir) / "fits"
    removed = []
    for entry in entries:
        lock = root / f"{entry.stem}.lock"
        try:
            with FileLock(lock, timeout=0):
                shutil.rmtree(root / RESUME_DIR / entry.stem, ignore_errors=True)
                lock.unlink(missing_ok=True)
        except Timeout:
            continue
        removed.append(entry)
    return removed


class Fittable(Protocol):
    """A model whose fitted state round-trips through ``state_dict`` / ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


M = TypeVar("M", bound=Fittable)


def fit_or_load(
    cache: FitCache,
    kind: str,
    recipe: dict[str, Any],
    build: Callable[[], M],
    train: Callable[[M], dict[str, Any]],
    seed: int | None = None,
) -> tuple[M, Fit]:
    """A model built by ``build()`` and loaded with the fit of ``recipe``, and that ``Fit``.

    When the cache has no fit of ``(kind, recipe)``: torch's global generator is seeded with
    ``seed`` (when given; models that own their weights are initialised from it), then
    ``model = build()``, ``meta = train(model)`` (the extra metadata stored with the state, e.g.
    ``TrainLog.meta()``), and ``model.state_dict()`` is stored. Either way the returned model is
    a fresh ``build()`` loaded with the stored state, so a cached and a new fit give the same
    model.
    """

    def fit() -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        model = build()
        meta = train(model)
        return model.state_dict(), meta

    result = cache.load_or_fit(kind, recipe, fit)
    model = build()
    model.load_state_dict(result.state)
    return model, result
