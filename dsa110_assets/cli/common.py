"""What every subcommand shares: its expected error, the settings, the registry, the definitions."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from dsa110_assets.errors import PipelineError
from dsa110_assets.settings import Settings

EXIT_ERROR = 1


class CommandError(PipelineError):
    """An expected failure with a message for the user."""


def tier_settings() -> Settings:
    """Return the settings from the environment, with the tier folders created."""
    return Settings.from_env().ensure_dirs()


def existing_registry(settings: Settings) -> Path:
    """Return the registry's path, refusing when there is none yet.

    Raises
    ------
    CommandError
        When the file does not exist (the user has to run ``dsa110 db init`` first).
    """
    if not settings.db_path.is_file():
        raise CommandError(f"registry {settings.db_path} does not exist (run 'dsa110 db init')")
    return settings.db_path


def load_definitions() -> Any:
    """Return the ``dsa110_assets.definitions`` module, imported on demand.

    The definitions import Dagster and every asset (seconds); only the commands that run
    Dagster need them. Their preview/beta notices are not news on the command line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dsa110_assets import definitions
    return definitions
