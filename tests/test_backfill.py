"""``dsa110 backfill``: a real Dagster partition backfill, run by a real daemon.

The command submits the backfill to the instance at ``DAGSTER_HOME`` (here a temporary home
with the repository's ``dagster.yaml`` and a workspace serving the production
``dsa110_assets.definitions``), as the UI would; ``dagster-daemon run`` then runs it with
the daily assets' declared ``BackfillPolicy`` (one run per day). The days have no images, so
each day's run is quick (an empty mosaic), but it goes through the daemon, the queued run
coordinator and the run launcher like any other. Conditions are waited for with generous
bounds; no assertion depends on how long something took.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from daemon_process import WAIT_S, stop_process_group, wait_for
from dagster._core.execution.backfill import BulkActionStatus
from helpers import tier_env

from dsa110_assets.cli.backfill import run_partitions

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAYS = ("2026-03-01", "2026-03-02")
DAILY_ASSETS = ["daily_mosaic", "light_curves", "mosaic_photometry"]


def dsa110(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command as a user does, with ``env`` on top of this environment."""
    return subprocess.run(
        [sys.executable, "-m", "dsa110_assets", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=WAIT_S + 120,
    )


def backfill_id(stdout: str) -> str:
    """Return the id the command printed (``backfill <id>: ...``)."""
    match = re.search(r"^backfill (\w+): daily_products", stdout, flags=re.M)
    assert match, stdout
    return match.group(1)


def failures(instance: dg.DagsterInstance, bid: str) -> str:
    """Return the failure events of the backfill's runs, to explain a failed assertion."""
    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter.for_backfill(bid)):
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is not None and event.is_failure:
                lines.append(f"{run.run_id} {event.event_type_value}: {event.event_specific_data}")
    return "\n".join(lines)[-6000:]


@dataclass
class Home:
    """A DAGSTER_HOME with the repository's instance config, and the command's environment."""

    path: Path
    env: dict[str, str]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.path))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    """Make a fresh instance home (SQLite storage, the shipped dagster.yaml) and tiers."""
    root = tmp_path_factory.mktemp("backfill")
    path = root / "dagster_home"
    path.mkdir()
    shutil.copy(REPO / "dagster.yaml", path / "dagster.yaml")
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    workspace["load_from"][0]["python_module"]["working_directory"] = str(REPO)
    (path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    env = {**tier_env(root), "DAGSTER_HOME": str(path), "PIPELINE_DAILY_START": DAYS[0]}
    assert dsa110(["db", "init"], env).returncode == 0
    return Home(path, env)


@contextlib.contextmanager
def running_daemon(home: Home) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run`` against ``home``; its whole process group stopped at the end."""
    env = {
        **os.environ,
        **home.env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
    }
    with open(home.path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(home.path / "workspace.yaml")],
            cwd=home.path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield daemon
    finally:
        stop_process_group(daemon)


def test_without_dagster_home_the_command_refuses(tmp_path):
    env = {**tier_env(tmp_path), "DAGSTER_HOME": ""}
    result = dsa110(["backfill", "--start", DAYS[0], "--end", DAYS[1]], env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "dsa110 backfill: error: DAGSTER_HOME is not set: a backfill needs a persistent "
        "Dagster instance and its daemon (dagster-daemon run) to run it"
    ]


@pytest.mark.parametrize(
    "start, end, message",
    [
        (DAYS[1], DAYS[0], f"--end {DAYS[0]} is before --start {DAYS[1]}"),
        ("2026-02-28", DAYS[0], "2026-02-28: not a partition of daily_products"),
        ("2026-02-30", DAYS[0], "'2026-02-30' is not a date"),
    ],
)
def test_bad_dates_are_refused_before_anything_is_submitted(home, start, end, message):
    result = dsa110(["backfill", "--start", start, "--end", end], home.env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    with home.instance() as instance:
        assert instance.get_backfills() == []


def test_backfill_is_submitted_and_the_daemon_runs_one_run_per_day(home):
    """Submit with --wait before any daemon runs; check the record, then let a daemon run it."""
    args = ["backfill", "--start", DAYS[0], "--end", DAYS[1], "--wait", "--poll", "1"]
    command = subprocess.Popen(
        [sys.executable, "-m", "dsa110_assets", *args, "--timeout", str(WAIT_S)],
        env={**os.environ, **home.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with home.instance() as instance:

            def submitted() -> Any:
                assert command.poll() is None, command.communicate()
                return instance.get_backfills()

            [backfill] = wait_for(submitted, "the backfill to be submitted")
            bid = backfill.backfill_id
            assert backfill.status is BulkActionStatus.REQUESTED  # no daemon yet: nothing ran
            assert backfill.is_asset_backfill
            assert sorted(k.to_user_string() for k in backfill.asset_selection) == DAILY_ASSETS
            target = backfill.asset_backfill_data.target_subset
            assert sorted(
                (k.asset_key.to_user_string(), k.partition_key)
                for k in target.iterate_asset_partitions()
            ) == sorted((asset, day) for asset in DAILY_ASSETS for day in DAYS)
            assert backfill.tags == {"dsa110/backfill": "cli"}

            with running_daemon(home):
                stdout, stderr = command.communicate(timeout=WAIT_S + 120)
            assert command.returncode == 0, f"{stderr}\n{failures(instance, bid)}"
            assert instance.get_backfill(bid).status is BulkActionStatus.COMPLETED_SUCCESS
            runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(bid))
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()

    assert backfill_id(stdout) == bid
    assert f"for {DAYS[0]} .. {DAYS[1]} (2 days)" in stdout
    assert f"UI: /runs/b/{bid}" in stdout
    assert f"backfill {bid}: COMPLETED_SUCCESS" in stdout
    for day in DAYS:  # --wait lists each run
        assert re.search(rf"^  {day}: SUCCESS \(run [0-9a-f-]+\)$", stdout, flags=re.M), stdout
    # BackfillPolicy.multi_run(1): one run per day, each with all three assets.
    assert sorted(run_partitions(r.tags) for r in runs) == list(DAYS)
    assert all(r.status is dg.DagsterRunStatus.SUCCESS for r in runs)
    assert all(sorted(k.to_user_string() for k in r.asset_selection) == DAILY_ASSETS for r in runs)
