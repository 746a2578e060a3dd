"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tier_env

from dsa110_assets import offline  # noqa: F401  (astropy never downloads in tests)
from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory):
    """Yield a fresh registry kept outside ``tmp_path``, which tests use as an input folder."""
    reg = Registry(tmp_path_factory.mktemp("state") / "pipeline.sqlite3")
    yield reg
    reg.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Return settings with every tier inside the test's temporary folder."""
    return Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
