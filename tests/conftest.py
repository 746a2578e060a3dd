"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import first_group_files, simulate_into, tier_env

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


@pytest.fixture(scope="module")
def root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder shared by the tests of one module."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest, root: Path):
    """Simulate the observations the module's ``SIM`` configuration describes, once."""
    return simulate_into(root, **request.module.SIM)


@pytest.fixture(scope="module")
def files(sim) -> dict[int, Path]:
    """Return the first simulated group's files by subband."""
    return first_group_files(sim)
