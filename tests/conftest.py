"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A fresh registry kept outside ``tmp_path``, which tests use as an input folder."""
    reg = Registry(tmp_path_factory.mktemp("state") / "pipeline.sqlite3")
    yield reg
    reg.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with every tier inside the test's temporary folder."""
    env = {
        "PIPELINE_INPUT_DIR": str(tmp_path / "incoming"),
        "PIPELINE_SCRATCH_DIR": str(tmp_path / "stage"),
        "PIPELINE_STATE_DIR": str(tmp_path / "state"),
        "PIPELINE_TMPFS_DIR": str(tmp_path / "shm"),
        "PIPELINE_ARCHIVE_DIR": str(tmp_path / "archive"),
    }
    return Settings.from_env(env, root=tmp_path).ensure_dirs()
