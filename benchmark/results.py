"""``results.jsonl``: one self-describing JSON row per (method, dataset, split, seed).

Rows are keyed by ``owsbench.rows.KEY_FIELDS`` (method id, its config hash, dataset, dataset
fingerprint, split and seed; the schema is :mod:`owsbench.rows`); a row added under an existing
key replaces it.

Several processes may write into one output folder (two ``owsbench run``, cluster workers):
each :class:`ResultsStore` appends its rows, one fsynced line each, to a shard of its own,
``OUT/shards/<host>-<pid>-<token>.jsonl``, and never writes ``results.jsonl`` directly.
:func:`merge_shards` folds the shards into ``results.jsonl`` under a file lock
(``OUT/shards/merge.lock``, :mod:`filelock`) and rewrites it atomically (temporary sibling,
then ``os.replace``), so readers see the old or the new file, never half of one. Each shard line
is merged once, in merge order (``OUT/shards/merged.json`` records how many bytes of each
shard are in ``results.jsonl``); later lines win on the same key. A shard is removed once
merged when its writer closed it or is a dead process of this host. The coordinator merges at
the end of a run (``ResultsStore.close``), and every reader merges first (``ResultsStore``,
``owsbench report``, ``owsbench check``), so a process killed mid-job loses only the rows it had
not written yet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from owsbench.cache import append_durable, atomic_write_text
from owsbench.errors import BadInput
from owsbench.rows import KEY_FIELDS, row_key
from owsbench.tempfiles import left_by_dead_writer, writer_id

SHARDS = "shards"  # OUT/shards/: the writers' shards, the merge lock and the merge record
MERGED = "merged.json"


def parse_rows(lines: Iterable[str], path: Path, first: int = 1) -> list[dict[str, Any]]:
    """The rows of JSON ``lines`` (blank ones skipped); ``BadInput`` naming ``path`` and the line
    number (``first`` is the first line's) when one is malformed."""
    rows = []
    for number, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{path}:{number} is not a JSON row") from None
        if not isinstance(row, dict) or any(k not in row for k in KEY_FIELDS):
            raise BadInput(f"{path}:{number} lacks the fields {', '.join(KEY_FIELDS)}")
        rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl`` file; ``BadInput`` naming the line when one is malformed."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from None
    return parse_rows(lines, Path(path))


def row_lines(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def shard_rows(shard: Path, start: int) -> tuple[list[dict[str, Any]], int]:
    """The complete lines of ``shard`` after byte ``start`` as rows, and the byte offset after
    the last complete line (a partial last line, from a writer killed mid-write, is left)."""
    data = shard.read_bytes()
    end = data.rfind(b"\n") + 1
    if end <= start:
        return [], start
    first = data[:start].count(b"\n") + 1
    return parse_rows(data[start:end].decode().splitlines(), shard, first), end


def merge_shards(out: Path, closed: Iterable[Path] = ()) -> None:
    """Fold the shards of ``out`` into ``out/results.jsonl`` (see the module docstring);
    ``closed``: shards their writer has finished with (removed once merged). Nothing is written,
    and no lock taken, when there is no shard."""
    folder = Path(out) / SHARDS
    if not folder.is_dir() or not any(folder.glob("*.jsonl")):
        return
    with FileLock(folder / "merge.lock"):
        record_path = folder / MERGED
        before = record_path.read_text() if record_path.exists() else "{}"
        record = json.loads(before)
        path = Path(out) / "results.jsonl"
        old = path.read_text() if path.exists() else ""
        rows = {row_key(r): r for r in parse_rows(old.splitlines(), path)}
        shards = sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))
        for shard in shards:
            new, record[shard.name] = shard_rows(shard, record.get(shard.name, 0))
            rows.update((row_key(r), r) for r in new)
        text = row_lines(rows.values())
        if text != old:
            atomic_write_text(path, text)
        finished = {Path(p).name for p in closed}
        for shard in shards:
            if shard.name in finished or left_by_dead_writer(shard.name):
                shard.unlink(missing_ok=True)
                record.pop(shard.name)
        if json.dumps(record, indent=1, sort_keys=True) != before:
            atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True))


class ResultsStore:
    """The rows of one output directory: those merged into ``results.jsonl`` when it was opened
    (shards merged first) and those added since, which go to this store's shard."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / "results.jsonl"
        self.shard: Path | None = None  # created by the first ``add``
        merge_shards(self.out)
        rows = read_rows(self.path) if self.path.exists() else []
        self._rows: dict[tuple, dict[str, Any]] = {row_key(r): r for r in rows}

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def has(self, key: tuple) -> bool:
        return key in self._rows

    def add(self, row: dict[str, Any]) -> None:
        """Append ``row`` to this store's shard (fsynced: it survives a kill from here on)."""
        if self.shard is None:
            name = f"{writer_id()}-{uuid.uuid4().hex[:12]}.jsonl"
            self.shard = self.out / SHARDS / name
        append_durable(self.shard, row_lines([row]).encode())
        self._rows[row_key(row)] = row

    def close(self) -> None:
        """Merge this store's shard (and any other) into ``results.jsonl`` and remove it; a
        later ``add`` starts a new shard. The rows are then those of the merged file."""
        shard, self.shard = self.shard, None
        merge_shards(self.out, [shard] if shard is not None else [])
        if self.path.exists():
            self._rows = {row_key(r): r for r in read_rows(self.path)}
