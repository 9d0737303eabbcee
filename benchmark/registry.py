"""A small generic registry with lazy ``"module:Attr"`` targets (after lm-eval-harness).

Entries are registered by id with an import target string and a one-line summary, so listing
them never imports the (heavy) modules behind them; ``get`` imports on first use. Unknown ids
raise ``BadInput`` naming the closest valid ids.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from owsbench.errors import BadInput


@dataclass(frozen=True)
class Entry:
    """One registered id: where it lives and what it is."""

    id: str
    target: str  # "package.module:Attribute"
    summary: str = ""


class Registry:
    """Id -> lazily imported object."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}

    def register(self, id: str, target: str, summary: str = "") -> None:
        if id in self._entries:
            raise ValueError(f"{self.kind} {id!r} is registered twice")
        if ":" not in target:
            raise ValueError(f"target {target!r} must look like 'module:Attribute'")
        self._entries[id] = Entry(id, target, summary)

    def register_object(self, id: str, obj: Any, summary: str = "") -> None:
        """Register an object that is already imported (a plugin, a test's class) as ``id``."""
        self.register(id, f"{obj.__module__}:{obj.__qualname__}", summary)
        self._loaded[id] = obj

    def unregister(self, id: str) -> None:
        """Remove ``id`` (e.g. what a test registered); unknown ids are ignored."""
        self._entries.pop(id, None)
        self._loaded.pop(id, None)

    def __contains__(self, id: object) -> bool:
        return id in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def ids(self) -> list[str]:
        return list(self._entries)

    def entry(self, id: str) -> Entry:
        """The entry for ``id``; ``BadInput`` with "did you mean" suggestions when unknown."""
        if id not in self._entries:
            raise BadInput(self.unknown_message(id))
        return self._entries[id]

    def get(self, id: str) -> Any:
        """Import and return the object registered as ``id``."""
        entry = self.entry(id)
        if id not in self._loaded:
            module_name, attr = entry.target.split(":", 1)
            self._loaded[id] = getattr(importlib.import_module(module_name), attr)
        return self._loaded[id]

    def unknown_message(self, id: str) -> str:
        return self.suggest(self.kind, id, self.ids())

    @staticmethod
    def suggest(kind: str, id: str, valid: list[str]) -> str:
        """``unknown <kind> 'x'; did you mean a, b?`` (or the valid list when nothing is close)."""
        close = difflib.get_close_matches(id, valid, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(valid)}"
        return f"unknown {kind} {id!r}; {hint}"
