"""Fault injection on every write path of conversion: kill, full disk, read-only, EXDEV.

Each case proves the same invariant: the raw subband files are untouched (same bytes, inode
and mtime), no partial product is in place (no MS, no hidden staging, partial or copy left on
any tier), the registry says what happened (``failed`` with the error, or ``in_progress``
under a dead owner, and no ``ms_index`` row), and the next attempt succeeds.

The faults are real: SIGKILL of a real worker process, a real tmpfs mounted small and filled
with a real file, a real read-only bind mount, a real bind mount (rename gives ``EXDEV``).
Mounting needs root; these tests say so and skip without it. To fill a disk at a chosen moment
of the write, ``MeasurementSetWriter.write_spw`` is wrapped (the real method still runs) by a
function that writes a filler file until the kernel says ``ENOSPC``: the wrapper only picks
the moment; the full filesystem, and casacore's reaction to it, are real.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from casacore.tables import table
from helpers import land_observations

from dsa110_assets.conversion import InvalidSubbandFile
from dsa110_assets.conversion.convert import WriterDied
from dsa110_assets.conversion.ms_writer import MeasurementSetWriter
from dsa110_assets.ingest.groups import describe_group
from dsa110_assets.ingest.normalize import ingest_directory
from dsa110_assets.processing.convert_step import STAGE, convert_and_register
from dsa110_assets.registry import QueueState, Registry, get_stage, get_status
from dsa110_assets.registry.queue import (
    ATTEMPT_DIED,
    GroupBusy,
    Owner,
    claim,
    dead_attempts,
    promote_complete_groups,
    requeue_dead_attempts,
)
from dsa110_assets.safe_fs import atomic_output, rename_no_replace
from dsa110_assets.storage.products import ms_path_for

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs or a bind mount needs root"
)


# -- mounts ------------------------------------------------------------------------------


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{' '.join(args)} was refused here: {done.stderr.strip()}")


@contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a fresh tmpfs of ``size`` at ``path``, unmounted afterwards whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def bind_mount(source: Path, target: Path, *, read_only: bool = False) -> Iterator[Path]:
    """``source`` bind-mounted at ``target`` (read-only if asked), unmounted afterwards."""
    source.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(source), str(target))
    try:
        if read_only:
            _run("mount", "-o", "remount,ro,bind", str(target))
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its filesystem is full; return it."""
    filler = folder / "filler"
    with open(filler, "ab") as handle:
        try:
            while True:
                handle.write(b"\xa5" * 65536)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


# -- the group and the invariant ----------------------------------------------------------


class Env:
    """One registered group, its settings, and a snapshot of its raw files."""

    def __init__(self, root: Path) -> None:
        self.pipeline, sim = land_observations(
            root, n_groups=1, n_antennas=5, n_background_sources=0, seed=11
        )
        self.settings = self.pipeline.settings().ensure_dirs()
        self.registry = Registry(self.settings.db_path)
        ingest_directory(self.settings.input_dir, registry=self.registry)
        (self.group_id,) = [
            r[0] for r in self.registry.query("SELECT group_id FROM processing_queue")
        ]
        promote_complete_groups(self.registry)
        self.raw = self.snapshot()

    def group(self):
        return describe_group(self.registry, self.group_id)

    def snapshot(self) -> dict[str, tuple[str, int, int]]:
        return {
            p.name: (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_ino,
                p.stat().st_mtime_ns,
            )
            for p in sorted(self.settings.input_dir.glob("*.hdf5"))
        }

    @property
    def ms_path(self) -> Path:
        return ms_path_for(self.settings, self.group_id)

    def tiers(self) -> list[Path]:
        s = self.settings
        return [s.tmpfs_dir, s.staging_dir, self.ms_path.parent]

    def convert(self):
        return convert_and_register(self.settings, self.registry, self.group())

    def assert_nothing_in_place(self) -> None:
        assert self.snapshot() == self.raw, "the raw files changed"
        assert not self.ms_path.exists(), "a product is in place after a failure"
        leftovers = [
            e for t in self.tiers() if t.exists() for e in t.iterdir() if e.name.startswith(".")
        ]
        assert not leftovers, f"partial products left behind: {leftovers}"
        rows = self.registry.query("SELECT * FROM ms_index WHERE group_id = ?", (self.group_id,))
        assert not rows

    def assert_failed(self, error: str, text: str) -> None:
        status = get_status(self.registry, self.group_id)
        assert status.state is QueueState.FAILED
        assert status.error == error and text in status.error_message, status
        assert get_stage(self.registry, self.group_id, STAGE).status.value == "failed"

    def assert_next_attempt_succeeds(self, retries: int) -> None:
        result = self.convert()
        assert result is not None and result.ms_path == self.ms_path
        status = get_status(self.registry, self.group_id)
        assert status.state is QueueState.COMPLETED and status.retry_count == retries
        assert get_stage(self.registry, self.group_id, STAGE).status.value == "done"
        with table(str(self.ms_path / "SPECTRAL_WINDOW"), ack=False) as spw:
            assert spw.nrows() == 16
        (row,) = self.registry.query(
            "SELECT path FROM ms_index WHERE group_id = ?", (self.group_id,)
        )
        assert row[0] == str(self.ms_path)
        assert self.snapshot() == self.raw
        leftovers = [
            e for t in self.tiers() if t.exists() for e in t.iterdir() if e.name.startswith(".")
        ]
        assert not leftovers, leftovers


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path)
    yield environment
    environment.registry.close()


# -- kill ---------------------------------------------------------------------------------

_KILLED_WORKER = """
import sys
from pathlib import Path
from dsa110_assets.ingest.groups import describe_group
from dsa110_assets.processing.convert_step import convert_and_register
from dsa110_assets.registry import Registry
from helpers import hang_mid_write, tier_folders
from resources.pipeline import PipelineResource

hang_mid_write(Path(sys.argv[2]))
settings = PipelineResource(**tier_folders(Path(sys.argv[1]))).settings()
registry = Registry(settings.db_path)
convert_and_register(settings, registry, describe_group(registry, sys.argv[3]), run_id="doomed")
"""


def kill_mid_write(env: Env, root: Path) -> None:
    """Run a conversion in a worker process and SIGKILL it with the MS half written."""
    marker = root / "half-written"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WORKER, str(root), str(marker), env.group_id],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, "the conversion ended before it was killed"
            assert time.monotonic() < deadline, "the conversion never reached window 5"
            time.sleep(0.05)
        # While it runs, its owner is alive: nobody else may take the group.
        with pytest.raises(GroupBusy, match="doomed"):
            claim(env.registry, env.group_id, Owner.current(), stage=STAGE)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@needs_root
def test_a_killed_worker_is_taken_over_by_the_next_attempt(env: Env, tmp_path: Path) -> None:
    """Check the retry after a SIGKILL mid-write staged in tmpfs.

    Item 1: SIGKILL mid-write, staged in tmpfs; the retry used to fail forever with
    'illegal queue transition in_progress -> in_progress' and leave the staging in tmpfs.
    """
    with mounted_tmpfs(env.settings.tmpfs_dir, "64m"):
        kill_mid_write(env, tmp_path)
        staged = [e for e in env.settings.tmpfs_dir.iterdir() if e.name.startswith(".")]
        assert staged, "the half-written MS should be in tmpfs"
        assert env.snapshot() == env.raw and not env.ms_path.exists()
        status = get_status(env.registry, env.group_id)
        assert status.state is QueueState.IN_PROGRESS  # the registry is true: nobody finished
        dead = dead_attempts(env.registry)
        assert list(dead) == [env.group_id] and dead[env.group_id].run_id == "doomed"
        # The writer died with its worker (PR_SET_PDEATHSIG): nothing writes there any more.
        sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in staged]
        env.assert_next_attempt_succeeds(retries=1)
        assert not any(p.exists() for p in staged), "the dead attempt's tmpfs staging is gone"
        assert sum(sizes) > 0
    failed_row = env.registry.query(
        "SELECT error FROM processing_queue WHERE group_id = ?", (env.group_id,)
    )
    assert failed_row[0][0] is None  # completed clears the error


@needs_root
def test_a_killed_worker_is_requeued_for_the_sensor(env: Env, tmp_path: Path) -> None:
    """Check that the sensor requeues a dead attempt and the next attempt succeeds.

    The sensor requests pending groups only: a dead attempt goes back to pending with a new
    retry count (so a new run key), its death recorded; the next attempt cleans and succeeds.
    """
    kill_mid_write(env, tmp_path)
    moved = requeue_dead_attempts(env.registry)
    assert moved[env.group_id].state is QueueState.PENDING
    assert moved[env.group_id].retry_count == 1
    assert moved[env.group_id].error == ATTEMPT_DIED
    assert requeue_dead_attempts(env.registry) == {}  # once only
    env.assert_next_attempt_succeeds(retries=1)


# -- full disk ------------------------------------------------------------------------------


def _fill_during_window(
    monkeypatch: pytest.MonkeyPatch, folder: Path, window: int, *, before: bool
):
    """Fill ``folder``'s filesystem while window ``window`` is written.

    Fill ``folder``'s filesystem while window ``window`` is written: just before casacore
    writes it (casacore itself then meets ENOSPC) or just after (the space check meets it).
    """
    original = MeasurementSetWriter.write_spw

    def write(self, spw, *args, **kwargs):
        if spw == window and before and str(self.path).startswith(str(folder)):
            fill(folder)
        result = original(self, spw, *args, **kwargs)
        if spw == window and not before and str(self.path).startswith(str(folder)):
            fill(folder)
        return result

    monkeypatch.setattr(MeasurementSetWriter, "write_spw", write)


@needs_root
@pytest.mark.parametrize("inside_casacore", [True, False], ids=["casacore-aborts", "space-check"])
def test_tmpfs_filling_up_during_staging_falls_back_to_the_ssd(
    env: Env, monkeypatch: pytest.MonkeyPatch, inside_casacore: bool, capfd
) -> None:
    """Check that a tmpfs filling during staging falls back to the SSD.

    Item 1: tmpfs fills during staging. casacore abort()s on ENOSPC; the write runs in a
    child process, so the worker survives, cleans tmpfs and writes the MS on the SSD.
    """
    with mounted_tmpfs(env.settings.tmpfs_dir, "24m") as shm:
        _fill_during_window(monkeypatch, shm, 4, before=inside_casacore)
        result = env.convert()
        assert result is not None and result.tier == "ssd"
        assert result.timings.get("tmpfs_fallback") == 1.0
        assert [e.name for e in shm.iterdir()] == ["filler"], "tmpfs staging was not cleaned"
    err = capfd.readouterr().err
    if inside_casacore:
        assert "No space left on device" in err  # casacore's last words, relayed
    status = get_status(env.registry, env.group_id)
    assert status.state is QueueState.COMPLETED and status.retry_count == 0
    assert env.snapshot() == env.raw


@needs_root
def test_ssd_staging_filling_up_fails_the_attempt_cleanly(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check a full SSD scratch mid-write: the attempt fails cleanly and the retry succeeds.

    No tmpfs, and the SSD scratch fills mid-write inside casacore: the attempt fails (the
    writer process died, not the worker), nothing is left, and after space is freed the retry
    succeeds.
    """
    env.settings.tmpfs_dir.rmdir()  # no tmpfs folder: staging goes to the SSD scratch
    scratch = env.settings.staging_dir
    with mounted_tmpfs(scratch, "24m"):
        _fill_during_window(monkeypatch, scratch, 4, before=True)
        with pytest.raises(WriterDied, match="No space left on device"):
            env.convert()
        env.assert_failed("WriterDied", "SIGABRT")
        (scratch / "filler").unlink()
        monkeypatch.undo()
        env.assert_nothing_in_place()
        env.assert_next_attempt_succeeds(retries=1)


@needs_root
def test_a_full_destination_fails_cleanly_and_the_retry_succeeds(env: Env) -> None:
    """Check a full products folder: the copy fails cleanly and the retry succeeds.

    The products folder (another filesystem) is full: the copy into place fails with
    ENOSPC before anything is visible; freed, the next attempt succeeds.
    """
    with mounted_tmpfs(env.ms_path.parent, "1m") as out:
        filler = fill(out)
        with pytest.raises(OSError) as info:
            env.convert()
        assert info.value.errno == errno.ENOSPC
        env.assert_failed("OSError", "")
        filler.unlink()
        env.assert_nothing_in_place()
    env.assert_next_attempt_succeeds(retries=1)


# -- read-only ------------------------------------------------------------------------------


@needs_root
def test_a_read_only_destination_fails_cleanly_and_the_retry_succeeds(
    env: Env, tmp_path: Path
) -> None:
    out = env.ms_path.parent
    out.mkdir(parents=True, exist_ok=True)
    with bind_mount(out, out, read_only=True):
        with pytest.raises(OSError) as info:
            env.convert()
        assert info.value.errno == errno.EROFS
        env.assert_failed("OSError", "Read-only file system")
        env.assert_nothing_in_place()
    env.assert_next_attempt_succeeds(retries=1)


# -- EXDEV ----------------------------------------------------------------------------------


@needs_root
def test_products_on_a_bind_mount_of_the_staging_filesystem(env: Env, tmp_path: Path) -> None:
    """Check moving the MS into a bind mount of the staging filesystem.

    Item 13: the products folder is a bind mount of the staging filesystem (same st_dev,
    yet rename says EXDEV); the MS is copied and renamed into place.
    """
    out = env.ms_path.parent
    elsewhere = tmp_path / "elsewhere-on-the-same-disk"
    env.settings.tmpfs_dir.rmdir()  # no tmpfs folder: stage on the SSD scratch, same disk
    with bind_mount(elsewhere, out):
        assert os.stat(out).st_dev == os.stat(env.settings.staging_dir).st_dev
        probe = env.settings.staging_dir / "probe"
        probe.write_text("x")
        with pytest.raises(OSError) as info:
            os.rename(probe, out / "probe")
        assert info.value.errno == errno.EXDEV  # the fault is real here
        probe.unlink()
        env.assert_next_attempt_succeeds(retries=0)
        assert (elsewhere / env.ms_path.name / "table.dat").is_file()


@needs_root
def test_safe_fs_renames_across_a_bind_mount(tmp_path: Path) -> None:
    """Check the copy-and-rename fallback on EXDEV.

    rename_no_replace and atomic_output fall back to copy-and-rename on EXDEV, keep the
    no-replace guarantee, and leave no temporary copy.
    """
    src_dir, elsewhere, mnt = tmp_path / "src", tmp_path / "other", tmp_path / "mnt"
    src_dir.mkdir()
    with bind_mount(elsewhere, mnt):
        one = src_dir / "one.bin"
        one.write_bytes(b"\0" * 8192 + b"data")
        rename_no_replace(one, mnt / "one.bin")
        assert not one.exists() and (mnt / "one.bin").read_bytes() == b"\0" * 8192 + b"data"

        tree = src_dir / "tree.ms"
        (tree / "SUB").mkdir(parents=True)
        (tree / "table.dat").write_text("main")
        (tree / "SUB" / "table.dat").write_text("sub")
        rename_no_replace(tree, mnt / "tree.ms")
        assert (mnt / "tree.ms" / "SUB" / "table.dat").read_text() == "sub" and not tree.exists()

        again = src_dir / "one.bin"
        again.write_text("newer")
        with pytest.raises(FileExistsError):
            rename_no_replace(again, mnt / "one.bin")
        assert again.read_text() == "newer"  # both left as they were
        assert (mnt / "one.bin").read_bytes().endswith(b"data")
        assert sorted(p.name for p in mnt.iterdir()) == ["one.bin", "tree.ms"]

        with atomic_output(mnt / "table.csv") as tmp:
            tmp.write_text("a,b\n")
        assert (mnt / "table.csv").read_text() == "a,b\n"


# -- inputs swapped after ingest (item 12) --------------------------------------------------


def _swap(env: Env, swap) -> tuple[Path, Path]:
    victim = sorted(env.settings.input_dir.glob("*.hdf5"))[5]
    kept = victim.with_name("kept-aside.bin")
    os.rename(victim, kept)
    swap(victim)
    return victim, kept


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        (lambda p: os.symlink("/etc/shadow", p), "symbolic link"),
        (lambda p: os.mkfifo(p), "not a regular file"),
        (
            lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100),
            "not the file that was registered",
        ),
    ],
    ids=["symlink", "fifo", "other-file"],
)
def test_a_subband_swapped_after_ingest_is_refused(env: Env, swap, message: str) -> None:
    """Check that inputs that are links, not regular files or resized fail the group.

    Item 12: inputs are opened without following links, must be regular files, and must
    have the size they were registered with; the group fails naming the file, and once the
    real file is back the next attempt succeeds.
    """
    victim, kept = _swap(env, swap)
    with pytest.raises(InvalidSubbandFile, match=message) as info:
        env.convert()
    assert info.value.path == victim
    env.assert_failed("InvalidSubbandFile", victim.name)
    victim.unlink()
    os.rename(kept, victim)
    env.assert_nothing_in_place()
    env.assert_next_attempt_succeeds(retries=1)


# -- when is an owner dead ----------------------------------------------------------------


def test_an_owner_is_dead_when_its_process_is_gone_reused_or_rebooted() -> None:
    import dataclasses

    me = Owner.current()
    assert not me.is_alive()  # this process, but no attempt of it is running under that token
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        other = dataclasses.replace(me, pid=sleeper.pid, pid_start=None)
        from dsa110_assets.registry.queue import _pid_start_ticks

        live = dataclasses.replace(other, pid_start=_pid_start_ticks(sleeper.pid))
        assert live.is_alive()
        assert not dataclasses.replace(live, pid_start=live.pid_start + 1).is_alive()  # reused
        assert not dataclasses.replace(live, boot_id="another-boot").is_alive()  # rebooted
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not live.is_alive()  # gone
    far = dataclasses.replace(me, host="another-host", started_at=time.time() - 100)
    assert far.is_alive(foreign_lease_s=3600) and not far.is_alive(foreign_lease_s=50)


def test_a_dead_attempt_without_retries_left_is_recorded_failed(env: Env) -> None:
    from dsa110_assets.registry import MAX_RETRIES, RetriesExhausted

    env.registry.execute(
        "UPDATE processing_queue SET state = 'in_progress', retry_count = ? WHERE group_id = ?",
        (MAX_RETRIES, env.group_id),
    )  # as left by a worker killed on its last retry, before owners were recorded
    with pytest.raises(RetriesExhausted):
        env.convert()
    env.assert_failed(ATTEMPT_DIED, "without recording its owner")
    env.assert_nothing_in_place()
