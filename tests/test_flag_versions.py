"""Flag versions in CASA's ``flagmanager`` format, with CASA itself as the oracle.

Ours saves and CASA lists and restores; CASA saves (and deletes) and ours lists and
restores; the flags compared bit for bit. CASA runs once, in its own environment
(``tests/test_casa.py``'s runner), on several copies of one converted MS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from casacore import tables as pt
from test_casa import run_casa

from dsa110_assets.conversion.convert import convert_group
from dsa110_assets.flagging.versions import (
    FlagVersion,
    FlagVersionError,
    UnknownFlagVersion,
    delete_flag_version,
    list_flag_versions,
    restore_flag_version,
    save_flag_version,
    versions_dir,
)

SIM = dict(n_antennas=12, n_channels=4, n_groups=1, seed=3, n_background_sources=0)


@pytest.fixture(scope="module")
def ms(root: Path, files: dict[int, Path]) -> Path:
    """Return the group converted by the pipeline's converter (pristine: tests copy it)."""
    out = root / "group.ms"
    convert_group(files, out, tmpfs_dir=None, scratch_dir=root / "scratch", durable=False)
    return out


def _copy(ms: Path, folder: Path, name: str) -> Path:
    target = folder / f"{name}.ms"
    shutil.copytree(ms, target)
    return target


def _flags(ms: Path) -> tuple[np.ndarray, np.ndarray]:
    with pt.table(str(ms), ack=False) as t:
        return t.getcol("FLAG"), t.getcol("FLAG_ROW")


def _set_flags(ms: Path, seed: int) -> np.ndarray:
    """Set a random FLAG (and FLAG_ROW where a whole row is flagged); return FLAG."""
    with pt.table(str(ms), readonly=False, ack=False) as t:
        shape = t.getcol("FLAG").shape
        flag = np.random.default_rng(seed).random(shape) < 0.2
        flag[::7] = True  # some whole rows
        t.putcol("FLAG", flag)
        t.putcol("FLAG_ROW", flag.all(axis=(1, 2)))
    return flag


@pytest.fixture(scope="module")
def casa_round_trip(ms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Prepare three MSs, let CASA act on them in one run, return what to compare."""
    work = tmp_path_factory.mktemp("casa-flagversions")
    ours, theirs, deleted = (_copy(ms, work, n) for n in ("ours", "theirs", "deleted"))
    saved_ours = _set_flags(ours, 1)
    save_flag_version(ours, "ours_v1", "pattern one, saved by dsa110")
    _set_flags(ours, 2)
    saved_theirs = _set_flags(theirs, 3)
    save_flag_version(deleted, "keep_me", "kept")
    save_flag_version(deleted, "drop_me", "dropped")
    delete_flag_version(deleted, "drop_me")
    fm = "flagmanager"
    steps = [
        {"task": fm, "args": {"vis": str(ours), "mode": "list"}},
        {"task": fm, "args": {"vis": str(ours), "mode": "restore", "versionname": "ours_v1"}},
        {
            "task": fm,
            "args": dict(vis=str(theirs), mode="save", versionname="casa_v1", comment="by CASA"),
        },
        {"task": fm, "args": dict(vis=str(theirs), mode="save", versionname="casa_v2")},
        {"task": fm, "args": dict(vis=str(theirs), mode="delete", versionname="casa_v2")},
        {"task": "flagdata", "args": dict(vis=str(theirs), mode="unflag", flagbackup=False)},
        {"task": fm, "args": {"vis": str(deleted), "mode": "list"}},
    ]
    report = run_casa(steps, work / "casa")
    return dict(
        ours=ours,
        theirs=theirs,
        saved_ours=saved_ours,
        saved_theirs=saved_theirs,
        listed_ours=report["steps"][0]["value"],
        listed_deleted=report["steps"][6]["value"],
    )


def _names(listing: dict) -> dict[str, str]:
    return {v["name"]: v["comment"] for k, v in listing.items() if k != "MS"}


def test_casa_lists_and_restores_our_version(casa_round_trip) -> None:
    assert _names(casa_round_trip["listed_ours"]) == {"ours_v1": "pattern one, saved by dsa110"}
    flag, flag_row = _flags(casa_round_trip["ours"])
    assert np.array_equal(flag, casa_round_trip["saved_ours"])
    assert np.array_equal(flag_row, flag.all(axis=(1, 2)))


def test_we_list_and_restore_casas_version(casa_round_trip) -> None:
    theirs = casa_round_trip["theirs"]
    assert list_flag_versions(theirs) == [FlagVersion("casa_v1", "by CASA")]
    assert not (versions_dir(theirs) / "flags.casa_v2").exists()
    assert not _flags(theirs)[0].any()  # CASA unflagged everything after saving
    restore_flag_version(theirs, "casa_v1")
    assert np.array_equal(_flags(theirs)[0], casa_round_trip["saved_theirs"])


def test_casa_sees_our_delete(casa_round_trip) -> None:
    assert _names(casa_round_trip["listed_deleted"]) == {"keep_me": "kept"}


def test_replace_keeps_one_entry_with_the_new_flags(ms: Path, tmp_path: Path) -> None:
    copy = _copy(ms, tmp_path, "replace")
    _set_flags(copy, 4)
    save_flag_version(copy, "v", "first")
    second = _set_flags(copy, 5)
    save_flag_version(copy, "v", "second")
    _set_flags(copy, 6)
    assert list_flag_versions(copy) == [FlagVersion("v", "second")]
    restore_flag_version(copy, "v")
    assert np.array_equal(_flags(copy)[0], second)
    assert sorted(p.name for p in versions_dir(copy).iterdir()) == ["FLAG_VERSION_LIST", "flags.v"]


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a:b", "..", "x\n"])
def test_bad_names_are_refused(ms: Path, name: str) -> None:
    with pytest.raises(FlagVersionError, match="bad flag version name"):
        save_flag_version(ms, name)
    assert not versions_dir(ms).exists()


def test_unknown_version_is_a_clear_error(ms: Path, tmp_path: Path) -> None:
    copy = _copy(ms, tmp_path, "unknown")
    save_flag_version(copy, "there")
    with pytest.raises(UnknownFlagVersion, match="no flag version 'missing' .*saved: there"):
        restore_flag_version(copy, "missing")
    with pytest.raises(UnknownFlagVersion):
        delete_flag_version(copy, "missing")


def test_restore_into_another_ms_fails_and_touches_nothing(ms: Path, tmp_path: Path) -> None:
    copy = _copy(ms, tmp_path, "source")
    save_flag_version(copy, "v")
    other = tmp_path / "other.ms"
    with pt.table(str(ms), ack=False) as t:
        fewer = t.selectrows(list(range(t.nrows() - 3)))
        fewer.copy(str(other), deep=True)
        fewer.close()
    before = _flags(other)[0]
    other_versions = versions_dir(other)
    shutil.copytree(versions_dir(copy), other_versions)
    with pytest.raises(FlagVersionError, match="rows"):
        restore_flag_version(other, "v")
    assert np.array_equal(_flags(other)[0], before)


def test_a_dead_attempts_leftover_does_not_block_the_next_save(ms: Path, tmp_path: Path) -> None:
    copy = _copy(ms, tmp_path, "leftover")
    folder = versions_dir(copy)
    dead = folder / ".tmp-999999999-abcd1234-flags.v"  # a pid above pid_max: never alive
    dead.mkdir(parents=True)
    (dead / "table.dat").write_bytes(b"half written")
    save_flag_version(copy, "v")
    assert not dead.exists()
    assert list_flag_versions(copy) == [FlagVersion("v", "")]


def test_cli_lists_saves_restores_and_deletes_a_groups_versions(
    ms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from helpers import tier_env

    from dsa110_assets.cli import main
    from dsa110_assets.registry import Registry
    from dsa110_assets.registry.products import register_ms
    from dsa110_assets.settings import Settings

    env = tier_env(tmp_path / "tiers")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env().ensure_dirs()
    copy = _copy(ms, tmp_path, "cli")
    group = "2026-01-15T12:00:00"
    with Registry(settings.db_path) as registry:
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
            " VALUES (?, 'completed', 0, 0)",
            (group,),
        )
        register_ms(registry, {"path": str(copy), "group_id": group, "mid_mjd": 61000.0})
    saved = _set_flags(copy, 9)
    assert main(["flags", "save", group, "--name", "mine", "--comment", "by hand"]) == 0
    _set_flags(copy, 10)
    assert main(["flags", "list", group]) == 0
    assert "mine : by hand" in capsys.readouterr().out
    assert main(["flags", "restore", group, "--name", "mine"]) == 0
    assert np.array_equal(_flags(copy)[0], saved)
    assert main(["flags", "restore", group, "--name", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no flag version 'nope'" in err and "Traceback" not in err
    assert main(["flags", "delete", group, "--name", "mine"]) == 0
    assert list_flag_versions(copy) == []
    assert main(["flags", "list", "2026-01-15T13:00:00"]) == 1
    assert "has no Measurement Set" in capsys.readouterr().err
