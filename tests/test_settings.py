from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import tier_env, tier_folders

from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry
from dsa110_assets.processing.calibrate_step import CalibrationPolicy
from dsa110_assets.settings import PRODUCT_SUBDIRS, STATE_SUBDIRS, Settings, SettingsError
from resources.pipeline import PipelineResource
from resources.wsclean import WSCleanResource


def test_defaults_live_in_the_checkout(tmp_path):
    s = Settings.from_env({}, root=tmp_path)
    assert s.input_dir == tmp_path / "data" / "incoming"
    assert s.products_dir == tmp_path / "data" / "stage"
    assert s.output_dir == tmp_path / "data" / "stage" / "ms"
    assert s.staging_dir == tmp_path / "data" / "stage" / "scratch"
    assert s.state_dir == tmp_path / "state"
    assert s.db_path == tmp_path / "state" / "db" / "pipeline.sqlite3"
    assert s.tmpfs_dir == Path("/dev/shm")
    assert s.archive_dir == tmp_path / "data" / "archive"
    assert s.cluster_tolerance_s == 60.0 and s.expected_subbands == 16


def test_environment_overrides_and_relative_paths(tmp_path):
    env = {
        "PIPELINE_INPUT_DIR": "/srv/incoming",
        "PIPELINE_STATE_DIR": "elsewhere",
        "PIPELINE_DB": "/srv/db.sqlite3",
        "PIPELINE_CLUSTER_TOLERANCE_S": "30",
    }
    s = Settings.from_env(env, root=tmp_path)
    assert s.input_dir == Path("/srv/incoming")
    assert s.state_dir == tmp_path / "elsewhere"
    assert s.db_path == Path("/srv/db.sqlite3")
    assert s.cluster_tolerance_s == 30.0


def test_ensure_dirs_creates_tiers(settings):
    for sub in ("ms", "images", "mosaics", "thumbnails", "caltables", "scratch"):
        assert (settings.products_dir / sub).is_dir()
    for sub in ("db", "catalogs", "logs", "run"):
        assert (settings.state_dir / sub).is_dir()


def test_uncreatable_folder_names_the_variable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {"PIPELINE_ARCHIVE_DIR": str(blocker / "archive")}
    with pytest.raises(SettingsError, match="PIPELINE_ARCHIVE_DIR"):
        Settings.from_env(env, root=tmp_path).ensure_dirs()


def test_folder_that_is_a_file_names_the_variable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="PIPELINE_INPUT_DIR"):
        Settings.from_env({"PIPELINE_INPUT_DIR": str(blocker)}, root=tmp_path).ensure_dirs()


@pytest.mark.parametrize(
    "var, value",
    [
        ("PIPELINE_CLUSTER_TOLERANCE_S", "sixty"),
        ("PIPELINE_SETTLE_S", "-1"),
        ("PIPELINE_EXPECTED_SUBBANDS", "17"),
    ],
)
def test_bad_numbers_name_the_variable(tmp_path, var, value):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: value}, root=tmp_path)


def _written_folders(settings: Settings) -> list[Path]:
    tiers = [
        settings.input_dir,
        settings.scratch_dir,
        settings.output_dir,
        settings.state_dir,
        settings.db_path.parent,
        settings.tmpfs_dir,
        settings.archive_dir,
    ]
    subs = [settings.scratch_dir / s for s in PRODUCT_SUBDIRS]
    return tiers + subs + [settings.state_dir / s for s in STATE_SUBDIRS]


def test_a_write_test_changes_the_folders_mtime(tmp_path):
    """What the next test relies on: probing a folder for writing leaves a trace."""
    os.utime(tmp_path, (0, 0))
    with tempfile.NamedTemporaryFile(dir=tmp_path):
        pass
    assert tmp_path.stat().st_mtime != 0


def test_the_resource_builds_its_settings_once(tmp_path):
    pipeline = PipelineResource(**tier_folders(tmp_path))
    first = pipeline.settings()
    assert pipeline.settings() is first
    folders = _written_folders(first)
    assert len(folders) == 17 and all(f.is_dir() for f in folders)

    # No folder is made or probed again: neither by the same resource, nor by another
    # settings object for the same folders (ensure_dirs is cheap within the process).
    for folder in folders:
        os.utime(folder, (0, 0))
    assert pipeline.settings() is first
    again = PipelineResource(**tier_folders(tmp_path)).settings()
    assert again == first and again is not first
    Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
    assert [f for f in folders if f.stat().st_mtime != 0] == []

    # A folder removed since is made (and probed) again.
    gone = first.products_dir / "thumbnails"
    shutil.rmtree(gone)
    first.ensure_dirs()
    assert gone.is_dir() and gone.stat().st_mtime != 0


def test_a_failed_build_is_not_cached(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    pipeline = PipelineResource(**{**tier_folders(tmp_path), "input_dir": str(blocker)})
    for _ in range(2):
        with pytest.raises(SettingsError, match="PIPELINE_INPUT_DIR"):
            pipeline.settings()


def test_resource_defaults_are_the_science_defaults():
    """PipelineResource and WSCleanResource declare no default of their own."""
    assert PipelineResource().calibration_policy() == CalibrationPolicy()
    declared = {f.name: f.default for f in dataclasses.fields(WSCleanParams)}
    resource = WSCleanResource()
    shared = set(declared) & set(WSCleanResource.model_fields)
    assert shared >= {"weight", "niter", "mgain", "auto_mask", "auto_threshold"}
    values = {name: getattr(resource, name) for name in shared}
    values["extra_args"] = tuple(values["extra_args"])  # a list in config, a tuple in params
    assert values == {name: declared[name] for name in shared}
    geometry = inspect.signature(choose_image_geometry).parameters
    for name in ("pixels_per_beam", "max_size"):
        assert getattr(resource, name) == geometry[name].default
