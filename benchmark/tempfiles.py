"""Temporary siblings of a file or folder being written, named after their writer.

A writer creates ``.<name>.<host>-<pid>.<random>`` beside ``<name>`` and renames it into place
when complete. A process killed in between (``kill -9``, a node lost) leaves that sibling
behind; the next writer of ``<name>`` removes the siblings whose process is gone
(``remove_stale``), so an interrupted run followed by a rerun leaves no stray temporary files.
Siblings of live processes, and of other hosts (a shared file system), are left alone.

Other per-writer files (the results shards of :mod:`owsbench.results`) are named after their
writer the same way (``writer_id``) and told stale with ``left_by_dead_writer``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
from pathlib import Path


def writer_id() -> str:
    """This process as a writer: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary siblings of ``name``: ``.<name>.<host>-<pid>.``."""
    return f".{name}.{writer_id()}."


def left_by_dead_writer(name: str) -> bool:
    """Whether ``name`` (``<host>-<pid><rest>``, ``rest`` not starting with a digit) was written
    by a process of this host that is gone; False for other hosts' and live processes' files."""
    host = socket.gethostname()
    if not name.startswith(f"{host}-"):
        return False
    pid = re.match(r"\d+", name[len(host) + 1 :])
    return pid is not None and not _alive(int(pid.group()))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): a process that answers signals runs
    return state != "Z"


def remove_stale(folder: Path, name: str) -> list[Path]:
    """Remove the temporary siblings of ``name`` in ``folder`` left by dead processes of this
    host; return them."""
    host = socket.gethostname()
    removed = []
    for path in Path(folder).glob(f".{glob.escape(name)}.{glob.escape(host)}-*"):
        pid = path.name[len(name) + len(host) + 3 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
