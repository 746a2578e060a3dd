from __future__ import annotations

from pathlib import Path

import pytest

from dsa110_assets.settings import Settings, SettingsError


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
