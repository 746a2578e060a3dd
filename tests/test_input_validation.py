"""Issue 10, items 4, 8, 9, 10, 11, 14 (printing), 15 and 16: bad input and faults.

Each test reproduces a case of the issue through the real code path (the ``dsa110`` command
in a subprocess, real SQLite files, real read-only mounts, real process kills), then checks
the class of failure is gone, not just the instance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from helpers import names, tier_env, touch

from dsa110_assets import analytics, cli, instrument
from dsa110_assets.catalogs import CatalogError, cone_search, ingest_survey
from dsa110_assets.catalogs import survey as survey_mod
from dsa110_assets.registry import (
    LATEST_VERSION,
    Registry,
    SchemaTooNew,
    connect_readonly,
)
from dsa110_assets.settings import Settings, SettingsError


def run(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsa110_assets", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return tier_env(tmp_path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its content hash (to prove nothing changed)."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 10: every number from the command line or the environment is validated ----------------


def _all_actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for where, inner in _all_actions(sub):
                    yield f"{name} {where}".strip(), inner
        else:
            yield "", action


def test_no_option_takes_a_bare_int_or_float():
    """The class fix: no option parses numbers with int()/float() (nan, inf, -5 slip through)."""
    offenders = [
        f"{where} {'/'.join(a.option_strings) or a.dest}"
        for where, a in _all_actions(cli.build_parser())
        if a.type in (int, float)
    ]
    assert offenders == []
    assert cli.N_DATA_ANTENNAS == instrument.N_DATA_ANTENNAS
    assert cli.MIN_STRIP_WIDTH_DEG == survey_mod.MIN_STRIP_WIDTH_DEG


T0, T1 = "2026-01-15T00:00:00", "2026-01-15T01:00:00"
NUMERIC_OPTIONS = {
    "normalize --tolerance": (["normalize", "--tolerance", "{}", "."], ["-5", "0", "301"]),
    "normalize --settle": (["normalize", "--settle", "{}", "."], ["-1", "1e6"]),
    "simulate --groups": (["simulate", "--groups", "{}"], ["0", "-1", "1.5"]),
    "simulate --interval": (["simulate", "--interval", "{}"], ["-1"]),
    "simulate --dec": (["simulate", "--dec", "{}"], ["91", "-90.5"]),
    "simulate --antennas": (["simulate", "--antennas", "{}"], ["1", "97"]),
    "simulate --channels": (["simulate", "--channels", "{}"], ["0"]),
    "simulate --seed": (["simulate", "--seed", "{}"], ["-1", "4294967296"]),
    "simulate --sources": (["simulate", "--sources", "{}"], ["-3"]),
    "simulate --calibrator-groups": (["simulate", "--calibrator-groups", "{}"], ["0,-1"]),
    "mosaic --pb-cutoff": (
        ["mosaic", "create", "--start", T0, "--end", T1, "--pb-cutoff", "{}"],
        ["0", "1", "-0.2"],
    ),
    "catalog ingest --strip-width": (
        ["catalog", "ingest", "--survey", "nvss", "--strip-width", "{}", "f.csv"],
        ["0.1", "181"],
    ),
    "catalog cone RA": (["catalog", "cone", "--survey", "nvss", "{}", "0", "1"], ["400", "-1"]),
    "catalog cone DEC": (["catalog", "cone", "--survey", "nvss", "1", "{}", "1"], ["95"]),
    "catalog cone RADIUS": (["catalog", "cone", "--survey", "nvss", "1", "2", "{}"], ["0"]),
    "catalog cone --min-flux": (
        ["catalog", "cone", "--survey", "nvss", "1", "2", "1", "--min-flux", "{}"],
        ["-1"],
    ),
    "catalog cone --limit": (
        ["catalog", "cone", "--survey", "nvss", "1", "2", "1", "--limit", "{}"],
        ["-1"],
    ),
    "storage archive --older-than": (["storage", "archive", "--older-than", "{}"], ["-1", "4e4"]),
    "storage gc --grace-days": (["storage", "gc", "--grace-days", "{}"], ["-1", "1.5", "3651"]),
}
NOT_NUMBERS = ["nan", "inf", "-inf", "1e999", "x", "1_0", "\u0663", ""]


@pytest.mark.parametrize(
    "argv",
    [
        [part.format(value) for part in template]
        for key, (template, bad) in NUMERIC_OPTIONS.items()
        # an empty list of calibrator groups is a list (refused later, with a calibrator)
        for value in [*bad, *(v for v in NOT_NUMBERS if v or "groups" not in key)]
    ],
    ids=lambda argv: " ".join(argv),
)
def test_every_numeric_option_refuses_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: " in err[0], err  # (argparse: "-inf" looks like an option)


def test_good_values_still_parse():
    args = cli.build_parser().parse_args(["normalize", "--tolerance", "30", "--settle", "0", "."])
    assert (args.tolerance, args.settle) == (30.0, 0.0)
    parse = cli.build_parser().parse_args
    args = parse(["simulate", "--calibrator-groups", "0,2", "--groups", "3"])
    assert args.calibrator_groups == (0, 2) and args.groups == 3
    args = cli.build_parser().parse_args(
        ["catalog", "cone", "--survey", "nvss", "359.5", "-30", "1e-1", "--limit", "0"]
    )
    assert (args.ra, args.dec, args.radius, args.limit) == (359.5, -30.0, 0.1, 0)


def test_negative_tolerance_no_longer_splits_an_observation(tmp_path, env):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for sb in range(16):
        touch(incoming, f"2025-01-15T12:00:{sb % 3:02d}_sb{sb:02d}.hdf5", age_s=600)
    before = names(incoming)
    result = run(["normalize", "--tolerance", "-5", str(incoming)], env)
    assert result.returncode == 2 and "--tolerance" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert names(incoming) == before  # nothing renamed, nothing registered
    assert not (tmp_path / "state" / "db" / "pipeline.sqlite3").exists()


@pytest.mark.parametrize(
    "var, value",
    [
        ("PIPELINE_SETTLE_S", "nan"),
        ("PIPELINE_SETTLE_S", "inf"),
        ("PIPELINE_SETTLE_S", "-1"),
        ("PIPELINE_CLUSTER_TOLERANCE_S", "nan"),
        ("PIPELINE_CLUSTER_TOLERANCE_S", "-5"),
        ("PIPELINE_CLUSTER_TOLERANCE_S", "0"),
        ("PIPELINE_CLUSTER_TOLERANCE_S", "1e999"),
        ("PIPELINE_CLUSTER_TOLERANCE_S", "6_0"),
        ("PIPELINE_EXPECTED_SUBBANDS", "0"),
        ("PIPELINE_EXPECTED_SUBBANDS", "16.0"),
        ("PIPELINE_EXPECTED_SUBBANDS", "\u0661\u0666"),
    ],
)
def test_bad_environment_numbers_name_the_variable(tmp_path, env, var, value):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: value}, root=tmp_path)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    one_line_error(run(["normalize", str(incoming)], {**env, var: value}), var)


def test_settings_validate_however_they_are_made(settings):
    for field, bad in [("settle_s", math.nan), ("cluster_tolerance_s", -5.0)]:
        with pytest.raises(SettingsError, match=Settings.ENV[field]):
            dataclasses.replace(settings, **{field: bad})
    with pytest.raises(SettingsError, match="PIPELINE_EXPECTED_SUBBANDS"):
        dataclasses.replace(settings, expected_subbands=12.5)
    assert dataclasses.replace(settings, settle_s=0).settle_s == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("group_timeout_s", math.nan),
        ("group_timeout_s", -1.0),
        ("group_timeout_s", math.inf),
        ("min_subbands", 0),
        ("min_subbands", 17),
        ("max_files_per_tick", -1),
        ("gain_window_h", 0.0),
        ("field_min_snr", math.inf),
        ("min_beam_response", 1.5),
        ("pb_cutoff", 0.0),
        ("eta_threshold", math.nan),
        ("min_epochs", 1),
    ],
)
def test_the_pipeline_resource_refuses_bad_numbers_by_name(field, value):
    """The resource is Dagster's run config and a deployment's: its numbers obey rules too."""
    from pydantic import ValidationError

    from resources.pipeline import PipelineResource

    with pytest.raises(ValidationError, match=field):
        PipelineResource(**{field: value})
    assert PipelineResource(eta_threshold=None).eta_threshold is None  # None: population


@pytest.mark.parametrize(
    "value", ["2026-13-01", "2026-02-30", "26-01-01", "2026-0１-01", "yesterday"]
)
def test_a_bad_daily_start_is_refused_when_the_code_loads(value):
    """``PIPELINE_DAILY_START`` is read at import: a typo must name the variable."""
    code = "import dsa110_assets.defs.partitions"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PIPELINE_DAILY_START": value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "PIPELINE_DAILY_START" in done.stderr
    ok = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PIPELINE_DAILY_START": "2026-03-01"},
        check=False,
    )
    assert ok.returncode == 0


def test_cone_limit_zero_and_negative(tmp_path, env):
    file = tmp_path / "n.csv"
    file.write_text("NVSS,RAJ2000,DEJ2000,S1.4\na,10,20,5\nb,10.1,20,6\n")
    assert run(["catalog", "ingest", "--survey", "nvss", str(file)], env).returncode == 0
    out = run(["catalog", "cone", "--survey", "nvss", "10", "20", "1", "--limit", "0"], env)
    assert out.returncode == 0 and out.stdout.splitlines() == [
        "2 nvss sources within 1 deg of RA 10, Dec +20 (showing 0)"
    ]
    bad = run(["catalog", "cone", "--survey", "nvss", "10", "20", "1", "--limit", "-1"], env)
    one_line_error(bad, "--limit")


# --- 11: times with an offset are converted to UTC, never shifted ---------------------------


@pytest.mark.parametrize(
    "text, utc",
    [
        ("2026-03-01T05:00:00+05:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("2026-03-01T05:00:00-02:30", datetime(2026, 3, 1, 7, 30, tzinfo=UTC)),
        ("2026-03-01T05:00:00Z", datetime(2026, 3, 1, 5, 0, tzinfo=UTC)),
        ("2026-03-01T05:00:00", datetime(2026, 3, 1, 5, 0, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_iso_times_honour_offsets(text, utc):
    assert cli.iso_time_arg(text) == utc
    for argv in (
        ["mosaic", "create", "--start", text, "--end", "2027-01-01"],
        ["simulate", "--start", text],
    ):
        assert cli.build_parser().parse_args(argv).start == utc


@pytest.mark.parametrize(
    "text", ["yesterday", "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00",
             "2026-03-0\u0661", "2026-13-01"]
)  # fmt: skip
def test_bad_times_are_refused(text, capsys):
    for argv in (
        ["mosaic", "create", "--start", text, "--end", "2027-01-01"],
        ["simulate", "--start", text],
        ["backfill", "--start", text, "--end", "2026-01-02"],
    ):
        with pytest.raises(SystemExit):
            cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--start" in err[0]


def test_mosaic_create_queries_the_utc_range(tmp_path, env):
    assert run(["db", "init"], env).returncode == 0
    result = run(
        ["mosaic", "create", "--start", "2026-03-01T05:00:00+05:00",
         "--end", "2026-03-01T06:00:00+05:00"], env,
    )  # fmt: skip
    one_line_error(result, "between 2026-03-01T00:00:00 and 2026-03-01T01:00:00")
    result = run(["mosaic", "create", "--start", "2026-03-01T05:00:00+05:00",
                  "--end", "2026-03-01T00:30:00Z"], env)  # fmt: skip
    assert result.returncode == 1 and "no images registered" in result.stderr
    reversed_ = run(["mosaic", "create", "--start", "2026-03-01T01:00:00Z",
                     "--end", "2026-03-01T05:00:00+05:00"], env)  # fmt: skip
    one_line_error(reversed_, "is not after")


# --- 8: a registry from newer code is refused, never written --------------------------------


def _newer_registry(path: Path, version: int) -> None:
    Registry(path).close()
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO schema_version(version, name, applied_at) VALUES (?, 'future', 0)",
            (version,),
        )
    con.close()


@pytest.mark.parametrize("version", [LATEST_VERSION + 1, 99])
def test_newer_schema_is_refused_naming_both_versions(tmp_path, env, version):
    db = tmp_path / "state" / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True)
    _newer_registry(db, version)
    before = digest(db)
    for kwargs in ({}, {"migrate_schema": False}, {"readonly": True}):
        with pytest.raises(SchemaTooNew, match=rf"version {version}, newer .*'s {LATEST_VERSION}"):
            Registry(db, **kwargs)
    with pytest.raises(SchemaTooNew):
        connect_readonly(db)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    touch(incoming, "2025-01-15T12:00:01_sb01.hdf5")
    touch(incoming, "2025-01-15T12:00:00_sb00.hdf5")
    for args in (["db", "init"], ["db", "info"], ["normalize", str(incoming)],
                 ["query", "stats"], ["query", "lightcurve", "x"], ["db", "export"]):  # fmt: skip
        one_line_error(run(args, env), f"schema version {version}", str(LATEST_VERSION))
    assert names(incoming) == ["2025-01-15T12:00:00_sb00.hdf5", "2025-01-15T12:00:01_sb01.hdf5"]
    assert digest(db) == before


# --- 15: readers work on a registry they cannot write ---------------------------------------


@contextlib.contextmanager
def read_only_view(folder: Path) -> Iterator[Path]:
    """``folder`` through a read-only bind mount (chmod does not stop root), unmounted after."""
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    if os.geteuid() != 0:  # an ordinary user: permissions are enough
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        view.rmdir()
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        with pytest.raises(OSError):
            (view / "probe").write_text("x")  # the view really is read-only
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


def _registry_with_photometry(db: Path) -> None:
    with Registry(db) as registry, registry.transaction():
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
            " VALUES ('2026-01-15T12:00:00', 'pending', 0, 0)"
        )
        for k in range(3):
            registry.execute(
                "INSERT INTO photometry(source_id, ra_deg, dec_deg, image_path, group_id, mjd,"
                " flux_jy, flux_err_jy, created_at) VALUES ('src1', 1, 2, ?, "
                "'2026-01-15T12:00:00', ?, 0.1, 0.01, 0)",
                (f"/img/{k}.fits", 61055.5 + k),
            )


def test_readers_work_on_a_read_only_registry(tmp_path, env):
    state = tmp_path / "state"
    db = state / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True)
    _registry_with_photometry(db)
    assert not db.with_name(db.name + "-shm").exists()  # closed cleanly: WAL, no -shm
    before = tree(state)
    snapshots = tmp_path / "tmp"
    snapshots.mkdir()
    with read_only_view(state) as ro_state:
        ro_env = {**env, "PIPELINE_STATE_DIR": str(ro_state), "TMPDIR": str(snapshots)}
        info = run(["db", "info", "--json"], ro_env)
        assert info.returncode == 0, info.stderr
        payload = json.loads(info.stdout)
        assert payload["rows"]["photometry"] == 3 and payload["journal_mode"] == "wal"
        stats = run(["query", "stats", "--json"], ro_env)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["groups_by_state"] == {"pending": 1}
        lc = run(["query", "lightcurve", "src1", "--json"], ro_env)
        assert lc.returncode == 0 and len(json.loads(lc.stdout)) == 3, lc.stderr
        export = run(["db", "export", "--json"], ro_env)
        assert export.returncode == 0, export.stderr
        assert json.loads(export.stdout)["photometry"]["rows"] == 3
        assert run(["db", "info"], ro_env).stdout.startswith("registry:")
    assert tree(state) == before  # not a byte written, no -wal/-shm left behind
    assert list(snapshots.iterdir()) == []  # the private copy DuckDB read is gone


def test_read_only_open_sees_a_live_writers_uncommitted_wal(tmp_path):
    state = tmp_path / "state"
    db = state / "pipeline.sqlite3"
    state.mkdir()
    Registry(db).close()
    with read_only_view(state) as view:
        # (both connections closed before the unmount: SQLite keeps a closed connection's file
        # open while another connection of the process holds locks on the same file)
        writer = Registry(db)
        try:
            writer.execute(
                "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
                " VALUES ('2026-01-15T12:00:00', 'pending', 0, 0)"
            )  # in the -wal, not checkpointed: a reader must still see it
            conn = connect_readonly(view / db.name)
            try:
                assert not conn.immutable
                assert conn.execute("SELECT COUNT(*) FROM processing_queue").fetchone()[0] == 1
                with pytest.raises(sqlite3.OperationalError, match="readonly"):
                    conn.execute("DELETE FROM processing_queue")
            finally:
                conn.close()
        finally:
            writer.close()


# --- 16: concurrent exports, a closed pipe, table names -------------------------------------


def test_an_export_leaves_a_live_exports_temporary_folder_alone(settings):
    Registry(settings.db_path).close()
    out = settings.archive_dir / "parquet"
    out.mkdir(parents=True)
    live_tmp, live_lock, live_fd = analytics.export._claim_temp(out, "images")
    live_tmp.mkdir()
    (live_tmp / "part.parquet").write_bytes(b"being written")
    dead = out / ".images.tmp-1-deadbeef"  # an export killed long ago: no one holds its lock
    dead.mkdir()
    (out / ".images.tmp-1-deadbeef.lock").touch()
    try:
        report = analytics.export_parquet(settings, tables=["images"])
        assert (live_tmp / "part.parquet").read_bytes() == b"being written"
        assert not dead.exists() and not (out / ".images.tmp-1-deadbeef.lock").exists()
        assert report.tables[0].path == out / "images"
    finally:
        analytics.export._release_temp(live_tmp, live_lock, live_fd)
    assert sorted(p.name for p in out.iterdir()) == ["images"]


def test_two_exports_at_once_both_succeed(tmp_path, env):
    db = tmp_path / "state" / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True)
    _registry_with_photometry(db)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dsa110_assets", "db", "export", "--json"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    out = tmp_path / "archive" / "parquet"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    rows = duckdb.sql(
        f"SELECT COUNT(*) FROM read_parquet('{out}/photometry/**/*.parquet')"
    ).fetchone()[0]
    assert rows == 3


@pytest.mark.parametrize("args", [["db", "info"], ["db", "info", "--json"], ["query", "stats"]])
def test_a_closed_pipe_is_not_an_error(tmp_path, env, args):
    db = tmp_path / "state" / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True)
    _registry_with_photometry(db)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes anything (as after head -1)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dsa110_assets", *args],
            env={**os.environ, **env},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.stderr == "" and proc.returncode == 0


def test_db_info_quotes_table_names(tmp_path, env):
    db = tmp_path / "state" / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True)
    Registry(db).close()
    evil = 'x" ; DROP TABLE images; --\n\x1b[2J'
    with sqlite3.connect(db) as con:
        con.execute(f'CREATE TABLE "{evil.replace(chr(34), chr(34) * 2)}" (a INTEGER)')
        con.execute(f'INSERT INTO "{evil.replace(chr(34), chr(34) * 2)}" VALUES (1)')
    con.close()
    info = run(["db", "info", "--json"], env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["rows"][evil] == 1
    text = run(["db", "info"], env).stdout
    assert "\x1b" not in text and "\\x1b[2J" in text and "\\n" in text
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone() == (0,)
    con.close()


# --- 14 (printing): every name the command shows is escaped ---------------------------------


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain_sb00.hdf5", "plain_sb00.hdf5"),
        ("naïve é.hdf5", "naïve é.hdf5"),
        ("a\nrenamed: x -> y", "a\\nrenamed: x -> y"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("tab\there\r", "tab\\there\\r"),
        ("\u202eevil", "\\u202eevil"),
        ("zero\u200bwidth\u2028line", "zero\\u200bwidth\\u2028line"),
        ("back\\slash", "back\\\\slash"),
        (os.fsdecode(b"bad\xffbyte"), "bad\\xffbyte"),
        ("del\x7f c1\x85", "del\\x7f c1\\x85"),
        (Path("/a/b\nc"), "/a/b\\nc"),
    ],
)
def test_display_name(raw, shown):
    assert cli.display_name(raw) == shown
    assert cli.display_name(raw).isprintable()


def test_normalize_verbose_cannot_be_forged_by_a_file_name(tmp_path, env):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    touch(incoming, "2025-01-15T12:00:00_sb00.hdf5", age_s=60)
    touch(incoming, "2025-01-15T12:00:01_sb01.hdf5", age_s=60)
    touch(incoming, "junk\nrenamed: forged -> line.hdf5", age_s=60)
    touch(incoming, "\x1b[2Jclear\u202e.hdf5", age_s=60)
    (incoming / os.fsdecode(b"raw\xfe.hdf5")).write_bytes(b"x")
    result = run(["normalize", "--verbose", "--no-register", str(incoming)], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not any(line.startswith("renamed: forged") for line in lines)
    assert all(line.isprintable() for line in lines)
    assert "junk\\nrenamed: forged -> line.hdf5" in result.stdout
    assert "\\x1b[2Jclear\\u202e.hdf5" in result.stdout and "raw\\xfe.hdf5" in result.stdout


def test_errors_and_catalog_output_are_escaped(tmp_path, env):
    one_line_error(run(["normalize", str(tmp_path / "no\nsuch\x1b")], env), "no\\nsuch\\x1b")
    file = tmp_path / "cat\x1b.csv"
    file.write_text("NVSS,RAJ2000,DEJ2000,S1.4\nJ\x1b[31m1,10,20,5\n")
    ingest = run(["catalog", "ingest", "--survey", "nvss", str(file)], env)
    assert ingest.returncode == 0 and "\x1b" not in ingest.stdout
    assert "cat\\x1b.csv" in ingest.stdout
    cone = run(["catalog", "cone", "--survey", "nvss", "10", "20", "1"], env)
    assert "\x1b" not in cone.stdout and "J\\x1b[31m1" in cone.stdout


# --- 9: catalog rows are validated, duplicates dropped, counts reported ---------------------

VALIDATION_CSV = """\
NVSS,RAJ2000,DEJ2000,S1.4,e_S1.4,MajAxis
good1,10.0,20.0,5.0,0.5,
good2,13 31 08.29,+30 30 32.9,14900,450,30
good3,359.9,-89.9,3.0,,
negflux,10.0,20.0,-5.0,0.5,
zeroflux,10.0,20.0,0,0.5,
ra400,400,20.0,5.0,0.5,
raneg,-1,20.0,5.0,0.5,
dec95,10.0,95,5.0,0.5,
min75,13 75 00,+30 00 00,5.0,0.5,
hour25,25 00 00,+30 00 00,5.0,0.5,
sec61,12:30:61,+30:00:00,5.0,0.5,
innersign,12 30 00,+30 -30 00,5.0,0.5,
deg91,12 30 00,+91 00 00,5.0,0.5,
garbage,12h3x,20,5.0,0.5,
nanflux,10.0,20.0,nan,0.5,
infflux,10.0,20.0,inf,0.5,
underscore,10.0,20.0,1_000,0.5,
arabic,10.0,20.0,\u0663,0.5,
negerr,10.0,20.0,5.0,-0.5,
negmajor,10.0,20.0,5.0,0.5,-3
,10.0,20.0,5.0,0.5,
good1,11.0,21.0,6.0,0.5,
good2,12.0,22.0,7.0,0.5,
"""


def test_catalog_rows_are_validated_and_counted(tmp_path):
    file = tmp_path / "nvss.csv"
    file.write_text(VALIDATION_CSV)
    report = ingest_survey("nvss", file, tmp_path / "cat")
    assert (report.n_rows, report.n_sources, report.n_skipped) == (23, 3, 20)
    assert report.n_duplicates == 2
    assert report.rejected == {
        "column 'RAJ2000' not a position": 4,  # min75, hour25, sec61, garbage
        "column 'DEJ2000' not a position": 2,  # innersign, deg91
        "column 'S1.4' not a number": 4,  # nan, inf, underscore, arabic
        "duplicate source id (first kept)": 2,
        "flux not positive": 2,
        "RA outside 0..360 deg": 2,
        "Dec outside -90..90 deg": 1,
        "flux_err negative": 1,
        "major negative": 1,
        "no source id": 1,
    }
    assert report.examples["duplicate source id (first kept)"] == "row 22: 'good1' (first at row 1)"
    assert report.examples["RA outside 0..360 deg"] == "row 6: RA 400"
    found = cone_search(tmp_path / "cat", "nvss", 0, 0, 180)
    assert sorted((s.source_id, round(s.ra_deg, 4)) for s in found) == [
        ("good1", 10.0), ("good2", 202.7845), ("good3", 359.9),
    ]  # fmt: skip


def test_catalog_ingest_reports_rejections(tmp_path, env):
    file = tmp_path / "nvss.csv"
    file.write_text(VALIDATION_CSV)
    out = run(["catalog", "ingest", "--survey", "nvss", str(file)], env).stdout
    assert "(20 rows skipped," in out.splitlines()[0]
    assert "  skipped 2 rows: duplicate source id (first kept) (first: row 22: 'good1'" in out
    report = json.loads(run(["catalog", "ingest", "--survey", "nvss", str(file), "--json"],
                            env).stdout)  # fmt: skip
    assert report["duplicates"] == 2 and report["rejected"]["flux not positive"] == 2


# --- 4: an ingest is all or nothing, and replaces the catalog atomically --------------------


def _catalog(path: Path, n: int, prefix: str, flux: float = 1.0) -> set[str]:
    rows = [f"{prefix}{k},{(k * 37.0) % 360:.3f},{-80 + (k * 13.0) % 160:.3f},{flux}"
            for k in range(n)]  # fmt: skip
    path.write_text("NVSS,RAJ2000,DEJ2000,S1.4\n" + "\n".join(rows) + "\n")
    return {f"{prefix}{k}" for k in range(n)}


def _ids(catalogs: Path) -> set[str]:
    return {s.source_id for s in cone_search(catalogs, "nvss", 0, 0, 180)}


@pytest.mark.parametrize(
    "content, message",
    [
        ("NVSS,RAJ2000,DEJ2000,S1.4\n", "no data rows"),
        ("# comment\nNVSS,RAJ2000,DEJ2000,S1.4\n# only comments\n", "no data rows"),
        ("NVSS,RAJ2000,DEJ2000,S1.4\na,400,0,1\nb,1,1,-1\n", "none of the 2 rows is usable"),
    ],
)
def test_a_file_without_valid_rows_changes_nothing(tmp_path, env, content, message):
    catalogs = tmp_path / "state" / "catalogs"
    old = _catalog(tmp_path / "old.csv", 40, "old")
    assert run(["catalog", "ingest", "--survey", "nvss", str(tmp_path / "old.csv")],
               env).returncode == 0  # fmt: skip
    before = tree(catalogs)
    empty = tmp_path / "empty.csv"
    empty.write_text(content)
    one_line_error(run(["catalog", "ingest", "--survey", "nvss", str(empty)], env), message)
    with pytest.raises(CatalogError, match=message):
        ingest_survey("nvss", empty, catalogs)
    assert tree(catalogs) == before and _ids(catalogs) == old


_WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.mkdir",
                 "sqlite3.connect"}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def _is_write(event: str, args: tuple) -> bool:
    if event in _WRITE_EVENTS:
        return True
    if event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        return bool((mode and any(c in str(mode) for c in "wax+")) or (flags or 0) & _WRITE_FLAGS)
    return False


def _ingest_in_child(catalogs: Path, file: Path, kill_at: int | None, count_fd: int) -> None:
    """Fork a child that ingests, and kills itself at a chosen write or counts the writes.

    The child SIGKILLs itself at its ``kill_at``-th write (a real crash: no finally, no
    cleanup), or reports how many writes an ingest makes.
    """
    pid = os.fork()
    if pid == 0:  # the child
        try:
            seen = [0]

            def hook(event: str, args: tuple) -> None:
                if _is_write(event, args):
                    seen[0] += 1
                    if seen[0] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.addaudithook(hook)
            ingest_survey("nvss", file, catalogs, strip_width_deg=20.0)
            os.write(count_fd, str(seen[0]).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_a_crash_at_any_point_leaves_the_old_catalog_or_the_new(tmp_path):
    pristine = tmp_path / "pristine"
    old = _catalog(tmp_path / "old.csv", 60, "old")
    new = _catalog(tmp_path / "new.csv", 90, "new")
    ingest_survey("nvss", tmp_path / "old.csv", pristine, strip_width_deg=5.0)
    read, write = os.pipe()
    trial = tmp_path / "count"
    shutil.copytree(pristine, trial)
    _ingest_in_child(trial, tmp_path / "new.csv", None, write)
    n_writes = int(os.read(read, 100))
    assert n_writes > 15 and _ids(trial) == new
    outcomes = []
    for kill_at in range(1, n_writes + 1):
        work = tmp_path / f"crash{kill_at}"
        shutil.copytree(pristine, work)
        _ingest_in_child(work, tmp_path / "new.csv", kill_at, write)
        got = _ids(work)
        assert got in (old, new), f"crash at write {kill_at}: a mix of {len(got)} sources"
        outcomes.append("old" if got == old else "new")
        # the next ingest succeeds and leaves exactly one published generation, no leftovers
        report = ingest_survey("nvss", tmp_path / "new.csv", work)
        assert _ids(work) == new and report.n_sources == 90
        assert [p.name for p in (work / "nvss").iterdir()] == [report.strips[0].parent.name]
        assert sorted(p.name for p in work.iterdir()) == [".nvss.ingest.lock", "nvss",
                                                          "nvss_strips.json"]  # fmt: skip
        shutil.rmtree(work)
    os.close(read)
    os.close(write)
    assert outcomes[0] == "old" and outcomes[-1] == "new"  # both sides of the commit were hit


def test_concurrent_ingests_and_searches_never_see_a_mix(tmp_path):
    catalogs = tmp_path / "cat"
    sets = {name: _catalog(tmp_path / f"{name}.csv", 50 + 10 * k, name)
            for k, name in enumerate(("a", "b", "c"))}  # fmt: skip
    ingest_survey("nvss", tmp_path / "a.csv", catalogs)
    errors: list[BaseException] = []
    seen: list[set[str]] = []

    def ingest(name: str) -> None:
        try:
            for _ in range(3):
                ingest_survey("nvss", tmp_path / f"{name}.csv", catalogs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(n,)) for n in ("b", "c")]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen.append(_ids(catalogs))
    for t in threads:
        t.join()
    assert errors == []
    assert all(s in sets.values() for s in seen)
    assert len(list((catalogs / "nvss").iterdir())) == 1


def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    r"""Strip the byte order mark that spreadsheet exports start with (U+FEFF).

    It used to become part of the first column name ('no ra column ... the file has columns
    \ufeffra').
    """
    file = tmp_path / "nvss.csv"
    file.write_bytes("\ufeffra,dec,flux_jy\n10.0,20.0,1.5\n".encode())
    report = ingest_survey("nvss", file, tmp_path / "cat")
    assert report.n_sources == 1


@pytest.mark.parametrize("content", [b"garbage\n", b"SQLite format 3\x00" + b"\x00" * 200])
def test_a_registry_that_is_not_a_database_is_named_and_left_alone(tmp_path, env, content):
    """Name the file SQLite calls only "file is not a database", exit 1, change nothing.

    Every command does so: no WAL switch, no migration.
    """
    db = Path(env["PIPELINE_STATE_DIR"]) / "db" / "pipeline.sqlite3"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(content)
    for args in (["db", "init"], ["db", "info"], ["query", "stats"]):
        one_line_error(run(args, env), str(db))
    assert db.read_bytes() == content
    from dsa110_assets.registry import RegistryUnreadable

    for readonly in (False, True):
        with pytest.raises(RegistryUnreadable, match="pipeline.sqlite3"):
            Registry(db, readonly=readonly)
