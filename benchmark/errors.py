"""Exceptions that the CLI turns into exit codes.

``BadInput`` (bad usage, unknown ids, malformed files) exits with status 2 and prints its message
as one line; any other exception is a failure of the work (status 1).
"""

from __future__ import annotations


class BadInput(Exception):
    """The user asked for something that cannot be done as asked: exit status 2, one line."""
