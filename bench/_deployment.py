"""The real deployment for the end-to-end benchmarks: a daemon, its instance, files landing.

``dagster-daemon run`` (sensors, the run queue, run monitoring and retries) on the repository's
``workspace.yaml`` and ``dagster.yaml`` (queued run coordinator, concurrency limits), in a
``DAGSTER_HOME`` inside a temporary folder, with every ``PIPELINE_*`` tier folder beside it,
as ``tests/test_backfill.py`` and ``tests/test_deployment.py`` start it. Files land in the
input folder as the correlator lands them: present under ``*_incomplete.hdf5`` while being
written, then renamed to their final name. Memory is sampled from ``/proc``.

The scripts run as ``python bench/NAME.py``, so this module is imported as ``_deployment``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def tier_env(root: Path) -> dict[str, str]:
    """Return ``PIPELINE_*`` variables putting every tier folder inside ``root``.

    The same folders as ``tests/helpers.py``'s ``tier_env``: ``incoming``, ``stage``,
    ``state``, ``shm`` (the tmpfs tier, here a plain folder) and ``archive``.
    """
    from dsa110_assets.settings import Settings

    folders = {
        "input_dir": root / "incoming",
        "scratch_dir": root / "stage",
        "state_dir": root / "state",
        "tmpfs_dir": root / "shm",
        "archive_dir": root / "archive",
    }
    return {Settings.ENV[name]: str(path) for name, path in folders.items()}


def deployment_env(root: Path, home: Path) -> dict[str, str]:
    """Return the daemon's environment: this one without ``PIPELINE_*``/``DAGSTER_*``, plus ours.

    Inherited ``PIPELINE_*`` and ``DAGSTER_*`` variables are dropped, so the deployment runs
    with the repository's defaults (settle time, tolerance, expected subbands) and no other
    instance's settings.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "DAGSTER_"))}
    return {
        **inherited,
        **tier_env(root),
        "DAGSTER_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{inherited.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
    }


def write_dagster_home(home: Path, location: Path | None = None) -> None:
    """Write ``home``: the repository's ``dagster.yaml`` as it is, and its ``workspace.yaml``.

    The workspace is the repository's, with its working directory set to the checkout (so the
    code server imports ``dsa110_assets.definitions``, ``resources`` and ``sensors`` from it);
    ``location``, a Python file defining ``defs``, replaces the repository's module (the
    baseline of ``bench/pipeline.py``), under the same location name.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    for entry in workspace["load_from"]:
        module = entry["python_module"]
        module["working_directory"] = str(REPO)
        if location is not None:
            entry.pop("python_module")
            entry["python_file"] = {
                "relative_path": str(location),
                "attribute": module["attribute"],
                "location_name": module["location_name"],
                "working_directory": str(REPO),
            }
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and everything in its process group (code server, run and step workers).

    SIGTERM first (the daemon shuts its threads down), SIGKILL after 60 s; then SIGKILL to
    the group anyway, for workers that outlived the daemon.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_for(
    condition: Callable[[], Any], what: str, *, timeout: float, poll_s: float = 0.5
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Parameters
    ----------
    condition
        Called every ``poll_s`` seconds; it may raise to stop the wait (a failed run).
    what
        What is waited for, named in the error.
    timeout
        Seconds before giving up.
    poll_s
        Seconds between calls.

    Raises
    ------
    TimeoutError
        When ``timeout`` passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class Deployment:
    """A running ``dagster-daemon``: its tiers, ``DAGSTER_HOME``, environment and instance."""

    root: Path
    home: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]
    instance: Any  # dagster.DagsterInstance
    log: Path
    location: Path | None = None  # the Python file served instead of the repository's module

    def definitions(self) -> Any:
        """Return the ``Definitions`` the daemon serves (loaded here as well)."""
        if self.location is None:
            from dsa110_assets.definitions import defs

            return defs
        import runpy

        return runpy.run_path(str(self.location))["defs"]

    @property
    def input_dir(self) -> Path:
        """The input tier (``PIPELINE_INPUT_DIR``): where the correlator's files land."""
        return Path(self.env["PIPELINE_INPUT_DIR"])

    @property
    def db_path(self) -> Path:
        """The registry (``pipeline.sqlite3``) of this deployment."""
        return Path(self.env["PIPELINE_STATE_DIR"]) / "db" / "pipeline.sqlite3"

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the end of the daemon's log if the daemon has exited."""
        if self.daemon.poll() is not None:
            raise RuntimeError(
                f"dagster-daemon exited with {self.daemon.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the daemon's log (code server and run workers log there too)."""
        return self.log.read_text(errors="replace")[-chars:]

    def sensor_ticks(self, name: str, after: float | None = None) -> list[Any]:
        """Return the ticks of sensor ``name`` (oldest first), those after ``after`` only."""
        states = [s for s in self.instance.all_instigator_state() if s.instigator_name == name]
        ticks = [
            t
            for s in states
            for t in self.instance.get_ticks(s.instigator_origin_id, s.selector_id, after=after)
        ]
        return sorted(ticks, key=lambda t: t.timestamp)

    def partition_runs(self, partition: str) -> list[Any]:
        """Return the run records of ``partition`` (oldest first)."""
        import dagster as dg

        records = self.instance.get_run_records(
            dg.RunsFilter(tags={"dagster/partition": partition})
        )
        return sorted(records, key=lambda r: r.create_timestamp)


@contextlib.contextmanager
def running_deployment(root: Path, location: Path | None = None) -> Iterator[Deployment]:
    """Run ``dagster-daemon run`` for tiers inside ``root``; stop all of it on the way out.

    ``location``: a Python file whose ``defs`` the daemon serves instead of the repository's
    (see :func:`write_dagster_home`).

    The daemon runs in its own session, so its process group holds the code server, the
    run workers and their step processes (and WSClean), all stopped together at the end,
    also after Ctrl-C or an error; any of its descendants that left the group is killed by
    its id after that.
    """
    import dagster as dg

    home = root / "dagster_home"
    write_dagster_home(home, location)
    env = deployment_env(root, home)
    log = root / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    instance = None
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        yield Deployment(root, home, env, daemon, instance, log, location)
    finally:
        tree = process_tree(daemon.pid)[1:]  # in case one left the process group
        stop_process_group(daemon)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if instance is not None:
            instance.dispose()


def land_files(files: list[Path], input_dir: Path) -> list[float]:
    """Land ``files`` in ``input_dir`` as the correlator does; return each one's landing time.

    Each file is first moved in (same filesystem: a rename) under its ``*_incomplete.hdf5``
    name, which ingest leaves alone, as the correlator's file while it is written. Then, file
    by file, its modification time is set to now (the correlator's last write) and it is
    renamed to its final name: that rename is the landing (``time.time()`` just after it).
    """
    from dsa110_assets.naming import INCOMPLETE_SUFFIX

    writing = []
    for path in files:
        partial = input_dir / (path.name.removesuffix(".hdf5") + INCOMPLETE_SUFFIX)
        os.rename(path, partial)
        writing.append((partial, input_dir / path.name))
    landed = []
    for partial, final in writing:
        os.utime(partial)
        os.rename(partial, final)
        landed.append(time.time())
    return landed


# --------------------------------------------------------------------------------------------
# Memory


def _children_map() -> dict[int, list[int]]:
    """Every process's children, from ``/proc`` (ppid is field 4 of ``/proc/PID/stat``)."""
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


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants, at this moment."""
    children = _children_map()
    found, todo = [pid], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def rss_bytes(pid: int) -> int:
    """Return the resident memory of ``pid`` in bytes (0 once it has ended)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _meminfo_bytes(key: str) -> int:
    """Return the ``/proc/meminfo`` entry ``key`` (e.g. ``MemAvailable``) in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/meminfo")


@dataclass
class MemorySampler:
    """Peak memory while it runs, sampled every ``interval_s`` from ``/proc`` in a thread.

    ``tree_peak``: the largest sum of resident memory of ``pid``'s process tree (daemon, code
    server, run and step workers, WSClean; set ``pid`` once the daemon runs); pages shared
    between processes count once per process, so it is an upper bound. ``min_available``:
    the machine's lowest ``MemAvailable``, against ``baseline_available`` (when sampling
    started) and ``total`` (``MemTotal``): everything on the machine, page cache that cannot
    be dropped (tmpfs) included.
    """

    pid: int | None = None
    interval_s: float = 0.5
    tree_peak: int = 0
    baseline_available: int = 0
    min_available: int = 0
    total: int = 0
    overall_tree_peak: int = 0  # since sampling started, whatever :meth:`restart` did
    overall_min_available: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def machine_peak(self) -> int:
        """Bytes in use on the whole machine at its peak (``MemTotal - min MemAvailable``)."""
        return self.total - self.min_available

    @property
    def above_baseline(self) -> int:
        """Peak bytes in use above what was in use when sampling started."""
        return self.baseline_available - self.min_available

    @property
    def overall_machine_peak(self) -> int:
        """:attr:`machine_peak` since sampling started, whatever :meth:`restart` did."""
        return self.total - self.overall_min_available

    def restart(self) -> None:
        """Start the peaks again from the current state (baseline and overall peaks kept)."""
        self.tree_peak = 0
        self.min_available = _meminfo_bytes("MemAvailable")

    def sample(self) -> None:
        """Take one sample now."""
        if self.pid is not None:
            tree = sum(rss_bytes(p) for p in process_tree(self.pid))
            self.tree_peak = max(self.tree_peak, tree)
            self.overall_tree_peak = max(self.overall_tree_peak, tree)
        available = _meminfo_bytes("MemAvailable")
        self.min_available = min(self.min_available, available)
        self.overall_min_available = min(self.overall_min_available, available)

    def __enter__(self) -> MemorySampler:
        self.total = _meminfo_bytes("MemTotal")
        available = _meminfo_bytes("MemAvailable")
        self.baseline_available = self.min_available = self.overall_min_available = available

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
