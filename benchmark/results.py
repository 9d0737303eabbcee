"""``results.jsonl``: one self-describing JSON row per (method, dataset, split, seed).

Rows are keyed by ``owsbench.rows.KEY_FIELDS`` (method id, its config hash, dataset, dataset
fingerprint, split and seed; the schema is :mod:`owsbench.rows`); a row added under an existing
key replaces it. Every change rewrites the file atomically, so an interrupted run never leaves a
truncated line and a rerun skips the rows already there. One writer per file: parallel workers
write to separate folders (``owsbench report`` merges them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from owsbench.cache import atomic_write_text
from owsbench.errors import BadInput
from owsbench.rows import KEY_FIELDS, row_key


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl`` file; ``BadInput`` naming the line when one is malformed."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from None
    for number, line in enumerate(lines, 1):
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


class ResultsStore:
    """The rows of one output directory."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "results.jsonl"
        self._rows: dict[tuple, dict[str, Any]] = {}
        if self.path.exists():
            for row in read_rows(self.path):
                self._rows[row_key(row)] = row

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def has(self, key: tuple) -> bool:
        return key in self._rows

    def add(self, row: dict[str, Any]) -> None:
        self._rows[row_key(row)] = row
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._rows.values())
        atomic_write_text(self.path, text)
