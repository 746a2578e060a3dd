"""The deployment: instance config, PostgreSQL storage, systemd units, real daemons.

The daemon tests start ``dagster-daemon run`` as a subprocess, with a ``DAGSTER_HOME`` whose
``dagster.yaml`` is the shipped ``deploy/dagster.postgres.yaml`` (run monitoring polled every
2 s instead of 60), on a real PostgreSQL server started for the module
(``tests/postgres_server.py``), serving ``tests/deploy_location.py``: the production sensor,
assets and resources with a ``process_group`` job limited to ingest and conversion (see that
module for why). Everything waits for conditions with generous bounds; no assertion depends
on how long something took.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml
from daemon_process import stop_process_group, wait_for
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from helpers import land_observations, tier_env
from postgres_server import PostgresServer

from dsa110_assets.registry import QueueState, Registry, get_stage, get_status
from dsa110_assets.registry.queue import get_owner
from sensors.incoming import PRIORITY_TAG, QUEUE_TAG, QUEUE_VALUE, group_run_tags

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------
# Configuration files


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_postgres_config_is_the_instance_config_plus_storage():
    """Check that deploy/dagster.postgres.yaml matches dagster.yaml but for storage.

    deploy/dagster.postgres.yaml must not drift from dagster.yaml: the same queue, limits,
    retries and monitoring, with storage on PostgreSQL from DAGSTER_PG_* variables.
    """
    base = load_yaml(REPO / "dagster.yaml")
    prod = load_yaml(REPO / "deploy" / "dagster.postgres.yaml")
    storage = prod.pop("storage")
    assert prod == base
    assert "storage" not in base  # SQLite in DAGSTER_HOME for `make demo`
    db = dict(storage["postgres"]["postgres_db"])
    assert db.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres installs
    assert {k: v["env"] for k, v in db.items()} == {
        "hostname": "DAGSTER_PG_HOST",
        "port": "DAGSTER_PG_PORT",
        "username": "DAGSTER_PG_USERNAME",
        "password": "DAGSTER_PG_PASSWORD",
        "db_name": "DAGSTER_PG_DB",
    }


def test_instance_config_sets_the_documented_limits(tmp_path):
    """Check that the shipped dagster.yaml loads with the queue, limits, retries and monitoring.

    The shipped dagster.yaml loads as an instance with the queue, the per-group limit on
    the tag the sensor sets, one WSClean per machine, run retries and run monitoring.
    """
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        limits = [
            (t["key"], t.get("value"), t["limit"]) for t in queue.tag_concurrency_limits or []
        ]
        assert (QUEUE_TAG, QUEUE_VALUE, 2) in limits
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["poll_interval_seconds"] == 60


def test_wsclean_runs_in_its_pool():
    """The WSClean-running asset is in pool ``wsclean`` (limit: dagster.yaml's default)."""
    from dsa110_assets.definitions import defs

    assert defs.resolve_assets_def("image").op.pool == "wsclean"


def test_run_tags_put_the_oldest_group_first():
    """Check run priorities by group age and the concurrency tag on every per-group run.

    Older groups have the higher dagster/priority (the queue starts the highest first),
    and every per-group run carries the tag the concurrency limit counts.
    """
    groups = ["2026-01-15T00:05:09", "2026-01-15T00:00:00", "2027-03-01T12:00:00"]
    tags = {g: group_run_tags(g) for g in groups}
    by_priority = sorted(groups, key=lambda g: int(tags[g][PRIORITY_TAG]), reverse=True)
    assert by_priority == sorted(groups)
    assert all(t[QUEUE_TAG] == QUEUE_VALUE and t["group_id"] == g for g, t in tags.items())
    assert all(0 < int(t["dagster/max_runtime"]) < 6 * 3600 for t in tags.values())


# --------------------------------------------------------------------------------------------
# systemd units

UNITS = REPO / "deploy" / "systemd"


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a systemd unit file.

    A unit file as section -> key -> every value (systemd keys repeat, e.g. Environment;
    configparser keeps only the last).
    """
    unit: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"{path.name}: not a unit line: {raw!r}"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.mark.parametrize("name", ["dagster-webserver.service", "dagster-daemon.service"])
def test_systemd_unit(name, tmp_path):
    """Check the systemd units' restart policy, environment and verification.

    Each unit restarts on failure, sets DAGSTER_HOME and reads the PIPELINE_* and
    DAGSTER_PG_* environment file; ``systemd-analyze verify`` accepts it when installed.
    """
    path = UNITS / name
    unit = read_unit(path)
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    env = dict(v.split("=", 1) for v in service["Environment"])
    assert env["DAGSTER_HOME"].startswith("/")
    assert {"PIPELINE_INPUT_DIR", "PIPELINE_SCRATCH_DIR", "PIPELINE_STATE_DIR"} <= set(env)
    (env_file,) = service["EnvironmentFile"]
    assert env_file.lstrip("-").endswith(".env")
    exec_start = service["ExecStart"][0].split()
    assert Path(exec_start[0]).name == name.removesuffix(".service")
    assert "-w" in exec_start
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # parsed above; the full verification needs systemd's own parser
    # verify checks that ExecStart's binary exists: point it at this checkout's venv.
    text = path.read_text().replace("/opt/dsa110-assets/.venv/bin", str(BIN))
    text = text.replace("/opt/dsa110-assets", str(REPO))
    local = tmp_path / name
    local.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=120
    )
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if str(local) in line or name in line
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# Real daemons on PostgreSQL


def _children_map() -> dict[int, list[int]]:
    """Every process's children, from /proc (ppid is field 4 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """``pid``'s descendants (not ``pid`` itself), at this moment."""
    children = _children_map()
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # it ended


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class MemorySampler:
    """Peak resident memory of the deployment's processes, sampled from /proc.

    ``total``: the daemon and everything under it (code server, run workers, MS writers);
    ``runs``: the run processes only (everything under the code server); ``one_run``: the
    largest single run process.
    """

    daemon_pid: int
    total: int = 0
    runs: int = 0
    one_run: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        tree = descendants(self.daemon_pid)
        servers = [p for p in tree if "api grpc" in cmdline(p)]
        run_pids = {p for s in servers for p in descendants(s)}
        sizes = {p: rss_bytes(p) for p in [self.daemon_pid, *tree]}
        self.total = max(self.total, sum(sizes.values()))
        self.runs = max(self.runs, sum(sizes[p] for p in run_pids if p in sizes))
        self.one_run = max(self.one_run, max((sizes.get(p, 0) for p in run_pids), default=0))

    def __enter__(self) -> MemorySampler:
        def loop() -> None:
            while not self._stop.wait(0.2):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


@dataclass
class Deployment:
    """A running daemon: its DAGSTER_HOME, the pipeline tiers and an instance to read."""

    root: Path
    home: Path
    daemon: subprocess.Popen[bytes]
    instance: dg.DagsterInstance
    log: Path

    def runs(self, partition: str | None = None) -> list[Any]:
        tags = {QUEUE_TAG: QUEUE_VALUE}
        if partition is not None:
            tags["dagster/partition"] = partition
        return list(self.instance.get_run_records(RunsFilter(tags=tags)))

    def registry(self) -> Registry:
        return Registry(self.root / "state" / "db" / "pipeline.sqlite3")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def write_home(home: Path, workspace_dir: Path) -> None:
    """Write a DAGSTER_HOME for the deployment test.

    DAGSTER_HOME: the production config, run monitoring polled every 2 s, and a
    workspace serving tests/deploy_location.py.
    """
    config = load_yaml(REPO / "deploy" / "dagster.postgres.yaml")
    config["run_monitoring"]["poll_interval_seconds"] = 2
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    workspace = {
        "load_from": [
            {
                "python_module": {
                    "module_name": "deploy_location",
                    "attribute": "defs",
                    "working_directory": str(workspace_dir),
                    "location_name": "dsa110_assets",
                }
            }
        ]
    }
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, postgres: PostgresServer) -> Iterator[Deployment]:
    """Run the Dagster daemon on PostgreSQL for the module's tests.

    ``dagster-daemon run`` on PostgreSQL with the shipped instance config; stopped (its
    whole process group: code server and run workers) at the end.
    """
    root = tmp_path_factory.mktemp("deploy")
    home = root / "dagster_home"
    home.mkdir()
    write_home(home, TESTS)
    env = {
        **os.environ,
        **tier_env(root),
        **postgres.env(),
        "DAGSTER_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
    }
    log = root / "daemon.log"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**postgres.env(), "DAGSTER_HOME": str(home)}.items():
            mp.setenv(key, value)
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
                cwd=home,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one below
            )
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield Deployment(root, home, daemon, instance, log)
        finally:
            instance.dispose()
            stop_process_group(daemon)


def overlap_peak(intervals: list[tuple[float, float]]) -> int:
    """Return the largest number of [start, end) intervals that hold at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def launches(instance: dg.DagsterInstance) -> dict[str, float]:
    """Run id -> when the queue launched it (its RUN_STARTING event), in launch order.

    A run counts against the concurrency limits from its launch, not from RUN_START (which
    comes after its worker has imported the code location), so this is where its interval
    in the limit begins.
    """
    records = instance.fetch_run_status_changes(
        dg.DagsterEventType.RUN_STARTING, limit=1000, ascending=True
    ).records
    return {r.event_log_entry.run_id: r.event_log_entry.timestamp for r in records}


def failed_sensor_ticks(instance: dg.DagsterInstance) -> list[Any]:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == "incoming_sensor"]
    assert states, "the daemon never evaluated incoming_sensor"
    ticks = [t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id)]
    assert ticks
    return [t for t in ticks if t.status.value == "FAILURE"]


N_BACKLOG = 12


def test_backlog_runs_oldest_first_within_the_limit(
    deployment: Deployment, postgres: PostgresServer
):
    """Check a backlog of twelve observations: order, concurrency, memory and outputs.

    Twelve observations wait in the input folder at once: the sensor admits them all, the
    queue runs them oldest first and never more than two at a time, memory stays within the
    machine, and every group ends with a Measurement Set.
    """
    budget = mem_available()
    t0 = time.monotonic()
    with MemorySampler(deployment.daemon.pid) as memory:
        land_observations(
            deployment.root,
            n_groups=N_BACKLOG,
            n_antennas=5,
            n_channels=2,
            n_background_sources=0,
            field_sources=False,
            calibrator=None,
            seed=11,
        )

        def all_done() -> bool:
            assert deployment.daemon.poll() is None, deployment.log_tail()
            records = deployment.runs()
            failed = [r for r in records if r.dagster_run.status == DagsterRunStatus.FAILURE]
            assert not failed, f"runs failed: {[r.dagster_run.run_id for r in failed]}"
            return len(records) >= N_BACKLOG and all(
                r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records
            )

        wait_for(all_done, f"{N_BACKLOG} successful process_group runs")
    elapsed = time.monotonic() - t0

    records = deployment.runs()
    assert len(records) == N_BACKLOG
    partitions = sorted(r.dagster_run.tags["dagster/partition"] for r in records)
    assert len(set(partitions)) == N_BACKLOG
    launched_at = launches(deployment.instance)
    peak_running = overlap_peak([(launched_at[r.dagster_run.run_id], r.end_time) for r in records])
    assert 1 <= peak_running <= 2  # the per-group limit of dagster.yaml
    by_id = {r.dagster_run.run_id: r.dagster_run.tags["dagster/partition"] for r in records}
    launched = [by_id[run_id] for run_id in launched_at if run_id in by_id]
    assert launched == partitions  # oldest first
    assert not failed_sensor_ticks(deployment.instance)
    # The records are in PostgreSQL, where the daemon and its runs wrote them.
    assert type(deployment.instance.run_storage).__name__ == "PostgresRunStorage"
    with psycopg2.connect(postgres.url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] >= N_BACKLOG
    conn.close()
    with deployment.registry() as registry:
        for group_id in partitions:
            assert get_status(registry, group_id).state is QueueState.COMPLETED
            assert (deployment.root / "stage" / "ms" / f"{group_id}.ms").is_dir()
    assert memory.total < budget, (memory.total, budget)
    print(
        f"\nbacklog of {N_BACKLOG} groups: completed in {elapsed:.1f} s after landing; at most "
        f"{peak_running} running at once; peak RSS {memory.total / 2**20:.0f} MiB in all "
        f"(daemon, code server, runs), {memory.runs / 2**20:.0f} MiB of run processes, "
        f"{memory.one_run / 2**20:.0f} MiB the largest run process; "
        f"{budget / 2**20:.0f} MiB were available"
    )


def test_killed_run_worker_recovers_without_help(deployment: Deployment):
    """Check that a run worker killed mid-conversion is failed, retried and taken over.

    Kill -9 the run worker while it converts: the code server and run monitoring fail the
    run, the run retry (or the sensor's requeue of dead attempts) starts another, which takes
    over the dead attempt (registry/queue.py claim), cleans its staging and converts.
    """
    start = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)  # after the backlog's observations
    land_observations(
        deployment.root,
        n_groups=1,
        start=start,
        n_antennas=24,
        n_channels=16,
        n_background_sources=0,
        field_sources=False,
        calibrator=None,
        seed=5,
    )
    known = {r.dagster_run.tags["dagster/partition"] for r in deployment.runs()}

    def new_group() -> str | None:
        fresh = {r.dagster_run.tags["dagster/partition"] for r in deployment.runs()} - known
        return next(iter(fresh), None)

    group_id = wait_for(new_group, "a run for the new observation")
    assert group_id.startswith("2026-01-15T06:")

    def claimed():
        with deployment.registry() as registry:
            owner = get_owner(registry, group_id, "convert")
        tree = set(descendants(deployment.daemon.pid))
        return owner if owner is not None and owner.pid in tree else None

    owner = wait_for(claimed, f"{group_id}'s conversion to start")
    (killed_run,) = [r for r in deployment.runs(group_id) if r.dagster_run.run_id == owner.run_id]
    assert killed_run.dagster_run.status == DagsterRunStatus.STARTED
    os.kill(owner.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: not Path(f"/proc/{owner.pid}").exists() or _zombie(owner.pid), "the kill")
    with deployment.registry() as registry:
        assert get_status(registry, group_id).state is QueueState.IN_PROGRESS  # mid-conversion

    def completed() -> bool:
        assert deployment.daemon.poll() is None, deployment.log_tail()
        with deployment.registry() as registry:
            return get_status(registry, group_id).state is QueueState.COMPLETED

    wait_for(completed, f"{group_id} to be converted after the kill")
    recovery = time.monotonic() - killed_at

    def settled() -> list[Any] | None:
        records = deployment.runs(group_id)
        active = [r for r in records if not r.dagster_run.is_finished]
        return None if active else records

    records = wait_for(settled, f"every run of {group_id} to finish")
    status = {r.dagster_run.run_id: r.dagster_run.status for r in records}
    assert status[owner.run_id] == DagsterRunStatus.FAILURE
    assert DagsterRunStatus.SUCCESS in status.values()
    retried = [r for r in records if r.dagster_run.parent_run_id == owner.run_id]
    with deployment.registry() as registry:
        queue = get_status(registry, group_id)
        assert queue.state is QueueState.COMPLETED and queue.retry_count >= 1
        assert get_stage(registry, group_id, "convert").status.value == "done"
    root = deployment.root
    assert (root / "stage" / "ms" / f"{group_id}.ms").is_dir()
    leftovers = [
        e.name
        for folder in (root / "shm", root / "stage" / "scratch", root / "stage" / "ms")
        if folder.exists()
        for e in folder.iterdir()
        if e.name.startswith(".")
    ]
    assert not leftovers
    print(
        f"\ncrash: run worker pid {owner.pid} killed mid-conversion; {group_id} completed "
        f"{recovery:.1f} s later without help ({len(records)} runs: "
        f"{', '.join(s.value for s in status.values())}; "
        f"{'a run retry' if retried else 'the sensor requeue'} took over)"
    )


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped by its parent (the code server)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return bool(re.match(r"Z", raw[raw.rfind(")") + 2 :]))
