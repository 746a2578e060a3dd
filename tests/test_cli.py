"""The ``dsa110`` command, run as a user runs it (a subprocess with PIPELINE_* variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import names, tier_env, touch

from dsa110_assets.ingest.samples import write_header_only_subband


def subband(folder: Path, name: str, *, age_s: float) -> Path:
    """Write a header-only subband file whose content time is the time in its name."""
    from datetime import UTC, datetime

    start = datetime.fromisoformat(name.split("_sb")[0]).replace(tzinfo=UTC).timestamp()
    folder.mkdir(parents=True, exist_ok=True)
    return write_header_only_subband(folder / name, start, mtime=time.time() - age_s)


SUBCOMMANDS = [
    ["simulate"], ["normalize"], ["db"], ["db", "init"], ["db", "info"], ["query"],
    ["query", "stats"],
]  # fmt: skip


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dsa110_assets", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed: {result.stderr}")
    return result


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return tier_env(tmp_path)


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(sub, env):
    result = run([*sub, "--help"], env)
    assert result.stdout.startswith("usage: dsa110")


def test_db_init_info_normalize_and_stats(tmp_path, env):
    out = run(["db", "init"], env).stdout
    assert "schema version" in out
    incoming = tmp_path / "incoming"
    for sb in range(16):
        subband(incoming, f"2025-01-15T12:00:0{sb % 3}_sb{sb:02d}.hdf5", age_s=600 - sb)
    dry = json.loads(run(["normalize", "--dry-run", "--json", str(incoming)], env).stdout)
    assert dry["dry_run"] and dry["files_renamed"] == 10 and dry["files_registered"] == 0
    stats = json.loads(run(["normalize", "--json", str(incoming)], env).stdout)
    assert stats["files_registered"] == 16 and stats["groups_completed"] == 1
    assert names(incoming) == [f"2025-01-15T12:00:00_sb{sb:02d}.hdf5" for sb in range(16)]

    info = json.loads(run(["db", "info", "--json"], env).stdout)
    assert info["rows"]["subband_files"] == 16 and info["journal_mode"] == "wal"

    query = json.loads(run(["query", "stats", "--json"], env).stdout)
    assert query["groups_by_state"] == {"pending": 1}
    assert query["per_day"] == [{"date": "2025-01-15", "groups": 1, "subband_files": 16, "ms": 0}]
    assert query["bytes_per_tier"]["hdd_input"]["files"] == 16
    text = run(["query", "stats"], env).stdout
    assert "pending=1" in text


def test_verbose_normalize_lists_renames(tmp_path, env):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    subband(incoming, "2025-01-15T12:00:00_sb00.hdf5", age_s=60)
    subband(incoming, "2025-01-15T12:00:01_sb01.hdf5", age_s=50)
    touch(incoming, "junk.txt", age_s=50)
    out = run(["normalize", "--verbose", "--no-register", str(incoming)], env).stdout
    assert "renamed: 2025-01-15T12:00:01_sb01.hdf5 -> 2025-01-15T12:00:00_sb01.hdf5" in out
    assert "unmatched: junk.txt" in out


@pytest.mark.parametrize(
    "args, extra_env, message",
    [
        (["normalize", "/nonexistent/folder"], {}, "is not a folder"),
        (["db", "info"], {}, "does not exist"),
        (["db", "init"], {"PIPELINE_STATE_DIR": "/dev/null/state"}, "PIPELINE_STATE_DIR"),
        (["simulate", "--start", "yesterday"], {}, "not an ISO time"),
        (["normalize", "--tolerance", "x", "."], {}, "argument --tolerance: 'x' is not"),
    ],
)
def test_errors_are_one_line_and_nonzero(env, args, extra_env, message):
    result = run(args, {**env, **extra_env}, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert message in result.stderr
    assert len(lines) == 1 or lines[0].startswith("usage:")  # argparse prints usage first


# --- catalog --------------------------------------------------------------------------------

CATALOG_SUBCOMMANDS = [
    ["catalog"], ["catalog", "ingest"], ["catalog", "calibrators"], ["catalog", "cone"],
]  # fmt: skip


@pytest.mark.parametrize("sub", CATALOG_SUBCOMMANDS, ids=" ".join)
def test_catalog_subcommands_have_help(sub, env):
    assert run([*sub, "--help"], env).stdout.startswith("usage: dsa110 catalog")


def test_catalog_calibrators_ingest_and_cone(tmp_path, env):
    from dsa110_assets.catalogs import packaged_calibrators

    n_cals = len(packaged_calibrators())
    db = tmp_path / "state" / "catalogs" / "vla_calibrators.sqlite3"
    out = run(["catalog", "calibrators"], env).stdout
    assert out.splitlines()[0] == f"{n_cals} VLA calibrators in {db}"
    assert db.is_file() and len(out.splitlines()) == n_cals + 2
    line = next(x for x in out.splitlines() if x.split()[0] == "3C286")
    assert line.split()[1:4] == ["202.784534", "+30.509155", "14.90"]
    payload = json.loads(run(["catalog", "calibrators", "--build", "--json"], env).stdout)
    assert len(payload["calibrators"]) == n_cals
    assert {c["name"]: c for c in payload["calibrators"]}["3C48"]["flux_1400_jy"] == 16.0

    file = tmp_path / "nvss.csv"
    file.write_text(
        "NVSS,RAJ2000,DEJ2000,S1.4,e_S1.4,MajAxis,MinAxis,PA\n"
        "J133108+303032,13 31 08.29,+30 30 32.9,14900.0,450,,,\n"
        "near,202.9,30.9,120.5,0.5,25.0,20.0,10\n"
        "far,10.0,-10.0,5.0,0.5,,,\n"
    )
    out = run(["catalog", "ingest", "--survey", "nvss", str(file)], env).stdout
    assert out.startswith(f"ingested 3 nvss sources from {file} into 2 strips of 1 deg in ")
    report = json.loads(
        run(["catalog", "ingest", "--survey", "nvss", str(file), "--strip-width", "2", "--json"],
            env).stdout
    )  # fmt: skip
    assert report["sources"] == 3 and len(report["removed_strips"]) == 2
    assert sorted(Path(p).name for p in report["strips"]) == [
        "nvss_dec+31.0.sqlite3", "nvss_dec-09.0.sqlite3",
    ]  # fmt: skip
    cone = json.loads(
        run(["catalog", "cone", "--survey", "nvss", "202.78", "30.5", "1", "--json"], env).stdout
    )
    assert cone["count"] == 2
    assert [(s["source_id"], s["flux_jy"]) for s in cone["sources"]] == [
        ("J133108+303032", 14.9), ("near", 0.1205),
    ]  # fmt: skip
    assert cone["sources"][1]["major_arcsec"] == 25.0
    text = run(["catalog", "cone", "--survey", "nvss", "202.78", "30.5", "1", "--limit", "1"], env)
    assert text.stdout.splitlines()[0] == (
        "2 nvss sources within 1 deg of RA 202.78, Dec +30.5 (showing 1)"
    )


def test_catalog_errors_are_one_line(tmp_path, env):
    result = run(["catalog", "cone", "--survey", "vlass", "10", "20", "1"], env, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "survey vlass has not been ingested" in result.stderr
    bad = tmp_path / "first.csv"
    bad.write_text("FIRST,RAJ2000,DEJ2000,S_int\na,1,2,3\n")
    result = run(["catalog", "ingest", "--survey", "first", str(bad)], env, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"dsa110 catalog: error: {bad}: no flux column for survey first" in result.stderr


def test_an_export_error_is_an_expected_one_line_error(tmp_path, env):
    """ExportError is a PipelineError: printed as the message, not as an unexpected bug."""
    import sqlite3

    run(["db", "init"], env)
    db = tmp_path / "state" / "db" / "pipeline.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE photometry")
    result = run(["db", "export", "--out", str(tmp_path / "parquet")], env, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dsa110 db: error: registry {db} has no table photometry (is its schema migrated?)"
    ]
