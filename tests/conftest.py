"""Test-wide settings: offline hub, and data/cache folders kept out of the user's home."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point $OWSBENCH_DATA and $OWSBENCH_CACHE at a per-session temporary folder."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("OWSBENCH_DATA", str(base / "data"))
    monkeypatch.setenv("OWSBENCH_CACHE", str(base / "cache"))
