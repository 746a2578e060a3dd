"""The pipeline resource: settings and registry access for assets and sensors."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings


class PipelineResource(dg.ConfigurableResource):
    """Platform configuration for Dagster code.

    Every field defaults to the ``PIPELINE_*`` environment (see the README); a deployment or a
    test overrides fields here instead of touching the environment.
    """

    input_dir: str | None = None
    scratch_dir: str | None = None
    output_dir: str | None = None
    state_dir: str | None = None
    db_path: str | None = None
    tmpfs_dir: str | None = None
    archive_dir: str | None = None
    group_timeout_s: float = 600.0
    min_subbands: int = 12
    max_files_per_tick: int = 4000

    def settings(self) -> Settings:
        overrides = {
            Settings.ENV[name]: value
            for name in (
                "input_dir",
                "scratch_dir",
                "output_dir",
                "state_dir",
                "db_path",
                "tmpfs_dir",
                "archive_dir",
            )
            if (value := getattr(self, name)) is not None
        }
        return Settings.from_env({**os.environ, **overrides}).ensure_dirs()

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        registry = Registry(self.settings().db_path)
        try:
            yield registry
        finally:
            registry.close()
