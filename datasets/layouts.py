"""The layouts an official archive produces when unpacked in the obvious ways.

An archive with a top folder (``leftImg8bit.zip`` holding ``leftImg8bit/``) unpacked as-is gives
the documented layout; unpacked into a folder named after the archive (Windows "Extract all",
macOS Archive Utility for archives with several top entries, ``unzip -d NAME``) it gains one
level. An archive without a top folder (the Fishyscapes mask zips) unpacked as-is drops straight
into the dataset folder, and with a folder of its name it has one level more. Adapters list the
candidates in order of preference (documented layout first); :func:`find_dir` takes the first
that is there and otherwise raises ``BadInput`` naming every layout it looked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from owsbench.errors import BadInput

AS_IS = "as unpacked"
NAMED_FOLDER = "unpacked into a folder named after the archive"
FLAT = "unpacked without its top folder"


def candidates(
    base: Path, options: Sequence[tuple[str, str]], *parts: str
) -> list[tuple[Path, str]]:
    """``(base/<sub>/<parts...>, layout)`` for each ``(sub, layout)`` of ``options`` (``sub``
    ``""``: ``base`` itself)."""
    return [(base.joinpath(sub, *parts), layout) for sub, layout in options]


def find_dir(
    what: str,
    pattern: str,
    candidates: Sequence[tuple[Path, str]],
    contains: str | None = None,
) -> Path:
    """The first ``(folder, layout)`` candidate that is a folder (holding a file that matches
    the glob ``contains``, when given).

    ``BadInput`` otherwise, one line: ``<first folder> not found; expected <what> in one of the
    layouts looked for: <folder>/<pattern> (<layout>); ...``.
    """
    for folder, _ in candidates:
        if folder.is_dir() and (contains is None or next(folder.glob(contains), None)):
            return folder
    first = candidates[0][0]
    looked = "; ".join(f"{folder}/{pattern} ({layout})" for folder, layout in candidates)
    raise BadInput(f"{first} not found; expected {what} in one of the layouts looked for: {looked}")
