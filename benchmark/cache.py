"""Content-hash keys, atomic file writes and the default cache / data locations."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from owsbench.tempfiles import remove_stale, temp_prefix


def content_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), first ``length`` hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half.

    On failure the temporary file is removed and ``path`` keeps its old content; an ``OSError``
    that names no file (ENOSPC from a write) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and reports are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise naming(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def naming(err: OSError, path: Path) -> OSError:
    """``err``, naming ``path`` when it names no file (a failed write(2) / fsync(2))."""
    return OSError(err.errno, err.strerror, str(path)) if err.filename is None else err


def append_durable(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0644 when missing) and fsync it before returning.

    On failure the file is cut back to its old length, so it never ends in a part of ``data``
    (a process killed during the write can still leave a partial last line: readers of
    appended files skip a last line without its newline).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    size = os.fstat(fd).st_size
    try:
        with os.fdopen(fd, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        os.truncate(path, size)
        raise naming(err, path) from err


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def user_cache_dir() -> Path:
    """``$OWSBENCH_CACHE``, else ``$XDG_CACHE_HOME/owsbench``, else ``~/.cache/owsbench``."""
    if env := os.environ.get("OWSBENCH_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "owsbench"


def default_data_root() -> Path:
    """``$OWSBENCH_DATA``, else ``<user cache dir>/data`` (where synthstreets is generated)."""
    if env := os.environ.get("OWSBENCH_DATA"):
        return Path(env).expanduser()
    return user_cache_dir() / "data"
