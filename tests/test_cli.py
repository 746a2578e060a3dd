"""The ``dsa110`` command, run as a user runs it (a subprocess with PIPELINE_* variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import names, tier_env, touch

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
        touch(incoming, f"2025-01-15T12:00:0{sb % 3}_sb{sb:02d}.hdf5", age_s=600 - sb)
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
    touch(incoming, "2025-01-15T12:00:00_sb00.hdf5", age_s=60)
    touch(incoming, "2025-01-15T12:00:01_sb01.hdf5", age_s=50)
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
        (["normalize", "--tolerance", "x", "."], {}, "invalid float value"),
    ],
)
def test_errors_are_one_line_and_nonzero(env, args, extra_env, message):
    result = run(args, {**env, **extra_env}, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert message in result.stderr
    assert len(lines) == 1 or lines[0].startswith("usage:")  # argparse prints usage first
