"""Issue 10, ingest items 2, 3, 5, 6, 7: bad names, backlogs, empty and foreign files.

Every test first reproduces the reported failure on real files (header-only UVH5 files:
:mod:`dsa110_assets.ingest.samples`) and a real SQLite registry, then checks the rule for the
whole class: one bad file fails alone, no file falls behind the sensor's cursor, a file that
cannot be a subband takes no slot, a file is refused when its content is another observation.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import tier_folders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_assets.ingest import normalize_directory
from dsa110_assets.ingest.content import (
    NAME_TIME_TOLERANCE_S,
    UNIX_EPOCH_JD,
    UnreadableSubband,
    read_content_time,
)
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.ingest.tick import TickCursor, changed_files, ingest_tick, scan_ctimes
from dsa110_assets.instrument import FILE_DURATION_S
from dsa110_assets.naming import epoch_to_group_id, group_id_to_epoch, subband_filename
from dsa110_assets.registry import QueueState, Registry, get_status
from dsa110_assets.settings import Settings
from resources.pipeline import PipelineResource

GID = "2025-01-15T12:00:00"
T0 = group_id_to_epoch(GID)


def observation(folder: Path, start: float, subbands=range(16), age_s: float = 600.0) -> None:
    """Header-only files of one observation, names 0-2 s after its start (node clocks)."""
    now = time.time()
    for i, sb in enumerate(subbands):
        name = subband_filename(epoch_to_group_id(int(start) + sb % 3), sb)
        write_header_only_subband(folder / name, start, mtime=now - age_s + i * 0.01)


def settled(path: Path, age_s: float = 60.0) -> Path:
    os.utime(path, (time.time(), time.time() - age_s))
    return path


def make_settings(root: Path) -> Settings:
    """Return the pipeline's settings over ``root``'s tier folders, no settle wait."""
    base = PipelineResource(**tier_folders(root)).settings()
    return dataclasses.replace(base, settle_s=0.0).ensure_dirs()


def registered(registry: Registry) -> dict[tuple[str, int], str]:
    return {
        (r["group_id"], r["subband_idx"]): Path(r["path"]).name
        for r in registry.query("SELECT group_id, subband_idx, path FROM subband_files")
    }


# --- item 2: one badly named file fails alone ---------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "9999-12-31T23:59:30_sb00.hdf5",  # + tolerance is year 10000
        "9999-12-31T23:59:59_sb15.hdf5",
        "0001-01-01T00:00:00_sb00.hdf5",  # - tolerance is year 0
        "0001-01-01T00:00:30_sb07.hdf5",
        "2025-01-15T12:00:00_sb05.hdf5\n",
        "2025-01-15T12:00:00_sb\uff10\uff17.hdf5",
    ],
)
def test_a_bad_name_fails_alone_and_the_pass_registers_the_rest(tmp_path, registry, bad):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    observation(incoming, T0)
    observation(incoming, T0 + FILE_DURATION_S)
    write_header_only_subband(incoming / bad, T0, mtime=time.time() - 100)
    stats = normalize_directory(incoming, registry=registry, details=True)
    assert stats["files_registered"] == 32 and stats["groups_completed"] == 2
    (outcome,) = [f for f in stats["files"] if f["name"] == bad]
    assert outcome["action"] == "unmatched" and outcome["reason"]
    assert (incoming / bad).exists()


def test_an_unexpected_error_on_one_file_stays_with_that_file(tmp_path, registry):
    """Keep an unexpected error on one file with that file; the pass goes on.

    Whatever breaks while handling one file (here its reader fails) is that file's
    outcome, recorded, and the pass goes on.
    """
    observation(tmp_path, T0)
    victim = subband_filename(epoch_to_group_id(T0 + 1), 1)

    def reader(path: str):
        if path.endswith(victim):
            raise RuntimeError("disk controller reset")
        return read_content_time(path)

    stats = normalize_directory(tmp_path, registry=registry, details=True, content_reader=reader)
    assert stats["errors"] == 1 and stats["files_registered"] == 15
    (row,) = registry.query("SELECT path, kind, reason FROM ingest_rejects")
    assert row["path"].endswith(victim) and row["kind"] == "error"
    assert "disk controller reset" in row["reason"]


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -5.0])
def test_tolerances_that_would_disable_the_rule_are_refused(tmp_path, tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        normalize_directory(tmp_path, cluster_tolerance_s=tolerance)


def test_a_huge_finite_tolerance_does_not_overflow(tmp_path, registry):
    observation(tmp_path, T0)
    stats = normalize_directory(tmp_path, registry=registry, cluster_tolerance_s=1e15)
    assert stats["files_registered"] == 16


# --- item 3: no file ever falls behind the sensor's cursor --------------------------------


def coarse(resolution_ns: int):
    """Return the real folder listing, ctimes truncated to ``resolution_ns``.

    As on a filesystem with that resolution (1 s on ext3/HFS+/some NFS; here far coarser,
    so that every file shares one ctime).
    """

    def scan(directory: str):
        for name, ctime in scan_ctimes(directory):
            yield name, ctime - ctime % resolution_ns

    return scan


def test_changed_files_takes_ties_at_the_watermark_and_late_equal_ctimes():
    now_ns = 10**12
    burst = now_ns - 10**9  # a second ago: within the cursor's lag
    listing = [(f"f{i:04d}", burst) for i in range(2500)]
    cursor = TickCursor()
    seen: list[str] = []
    for _ in range(3):
        names, cursor, _ = changed_files("-", cursor, 1000, now_ns=now_ns, scan=lambda d: listing)
        seen += names
    assert sorted(seen) == sorted(n for n, _ in listing)  # 2500 with one ctime, 3 ticks
    # A file appearing later with the very same ctime (and a name sorting first) is seen too.
    listing.append(("a-late-one", burst))
    names, cursor, _ = changed_files("-", cursor, 1000, now_ns=now_ns, scan=lambda d: listing)
    assert names == ["a-late-one"]
    names, cursor, _ = changed_files("-", cursor, 1000, now_ns=now_ns, scan=lambda d: listing)
    assert names == []
    # Recent ctimes stay open (the horizon) and the cursor round-trips through JSON.
    again = TickCursor.from_json(cursor.to_json())
    assert again == cursor


def test_a_backlog_sharing_one_ctime_drains_completely(tmp_path):
    """Drain a backlog whose files all share one ctime, over as many ticks as it takes.

    4,800 files (300 observations) in one burst, all with one ctime, 500 per tick: the old
    ``ctime > newest taken`` cursor lost the files after the first tick's last one.
    """
    settings_ = make_settings(tmp_path)
    incoming = settings_.input_dir
    n_obs = 300
    for k in range(n_obs):
        observation(incoming, T0 + k * FILE_DURATION_S, age_s=3600)
    scan = coarse(10**18)  # ~31 years: one ctime for everything, renames included
    cursor = TickCursor()
    ticks = 0
    with Registry(settings_.db_path) as registry:
        while ticks < 40:
            result = ingest_tick(settings_, registry, cursor, max_files=500, scan=scan)
            cursor = TickCursor.from_json(result.cursor.to_json())
            ticks += 1
            if result.report is None and result.backlog == 0:
                break
        assert registry.query("SELECT COUNT(*) FROM subband_files")[0][0] == 16 * n_obs
        states = registry.query("SELECT state, COUNT(*) FROM processing_queue GROUP BY state")
        assert [tuple(r) for r in states] == [("pending", n_obs)]
    assert ticks < 40
    assert len(cursor.to_json()) < 400_000  # bounded by max_files + recent changes


def test_files_landing_between_ticks_with_an_old_ctime_are_not_lost(tmp_path):
    """Find a file whose ctime is older than the last one taken.

    A file whose ctime is older than the last one taken (a file server's clock behind
    ours, or a coarse timestamp) is still found while it is within the cursor's lag.
    """
    settings_ = make_settings(tmp_path)
    incoming = settings_.input_dir
    observation(incoming, T0, subbands=range(8))
    with Registry(settings_.db_path) as registry:
        first = ingest_tick(settings_, registry, TickCursor())
        observation(incoming, T0, subbands=range(8, 16))
        late = coarse(60 * 10**9)  # the new files' ctimes fall back to the minute
        cursor = first.cursor
        for _ in range(3):
            cursor = ingest_tick(settings_, registry, cursor, scan=late).cursor
        assert get_status(registry, GID).state is QueueState.PENDING


# --- item 5: a file that cannot be a subband yet takes no slot ----------------------------


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: p.write_bytes(b""),  # 0 bytes
        lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100)),  # a header cut short
        lambda p: p.write_bytes(os.urandom(4096)),  # not HDF5
        lambda p: h5py.File(p, "w").close(),  # HDF5, no Header/time_array
    ],
    ids=["empty", "truncated", "garbage", "no-time-array"],
)
def test_an_unreadable_subband_takes_no_slot_and_the_real_one_registers(tmp_path, registry, spoil):
    observation(tmp_path, T0, subbands=[sb for sb in range(16) if sb != 3])
    early = tmp_path / subband_filename(GID, 3)
    spoil(early)
    settled(early)
    stats = normalize_directory(tmp_path, registry=registry, details=True)
    (outcome,) = [f for f in stats["files"] if f["name"] == early.name]
    assert outcome["action"] == "unreadable" and early.name in outcome["reason"]
    assert (GID, 3) not in registered(registry)
    assert get_status(registry, GID).state is QueueState.COLLECTING
    (reject,) = registry.query("SELECT path, kind FROM ingest_rejects")
    assert reject["kind"] == "unreadable"

    # The correlator finishes the same file: it registers, and the reject is cleared.
    early.unlink()
    write_header_only_subband(early, T0, mtime=time.time() - 30)
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["conflicts"] == 0 and stats["files_registered"] == 1
    assert get_status(registry, GID).state is QueueState.PENDING
    assert registry.query("SELECT COUNT(*) FROM ingest_rejects")[0][0] == 0


def test_an_empty_file_then_the_real_one_under_another_stamp(tmp_path, registry):
    observation(tmp_path, T0, subbands=[sb for sb in range(16) if sb != 3])
    (tmp_path / "2025-01-15T12:00:00_sb03.hdf5").write_bytes(b"")
    settled(tmp_path / "2025-01-15T12:00:00_sb03.hdf5")
    normalize_directory(tmp_path, registry=registry)
    write_header_only_subband(
        tmp_path / "2025-01-15T12:00:02_sb03.hdf5", T0, mtime=time.time() - 20
    )
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["conflicts"] == 0 and stats["groups_completed"] == 1
    # The empty file keeps the canonical name (nothing is deleted); the real one registers
    # under its own, and stays registered on later passes.
    assert registered(registry)[(GID, 3)] == "2025-01-15T12:00:02_sb03.hdf5"
    again = normalize_directory(tmp_path, registry=registry)
    assert again["files_registered"] == 0 and again["conflicts"] == 0


def test_the_sensor_looks_again_at_an_unreadable_file(tmp_path):
    settings_ = make_settings(tmp_path)
    empty = settings_.input_dir / "2025-01-15T12:00:00_sb03.hdf5"
    empty.write_bytes(b"")
    with Registry(settings_.db_path) as registry:
        first = ingest_tick(settings_, registry, TickCursor())
        assert first.cursor.waiting == [empty.name]


# --- items 6 and 7: content of another observation is refused, naming that file -----------


@pytest.mark.parametrize("foreign_sb", [0, 1, 15])
def test_a_file_holding_another_observation_is_refused_by_name(tmp_path, registry, foreign_sb):
    """Refuse a file holding another observation, naming that file.

    The reported case: a group named 2026-01-20T00:00 with one subband's data from
    2026-01-15T13:47. When sb00 is the foreign one, the message names sb00, not sb01.
    """
    gid = "2026-01-20T00:00:00"
    start = group_id_to_epoch(gid)
    observation(tmp_path, start, subbands=[sb for sb in range(16) if sb != foreign_sb])
    foreign = tmp_path / subband_filename(gid, foreign_sb)
    write_header_only_subband(
        foreign, group_id_to_epoch("2026-01-15T13:47:00"), mtime=time.time() - 700
    )
    stats = normalize_directory(tmp_path, registry=registry, details=True)
    refused = [f for f in stats["files"] if f["action"] == "mismatch"]
    assert [f["name"] for f in refused] == [foreign.name]
    assert refused[0]["reason"].startswith(foreign.name)
    assert "2026-01-15T13:47:00" in refused[0]["reason"]
    assert (gid, foreign_sb) not in registered(registry)
    assert len(registered(registry)) == 15
    (row,) = registry.query("SELECT path, kind, reason FROM ingest_rejects")
    assert row["path"] == str(foreign) and row["kind"] == "mismatch"


@pytest.mark.parametrize("offset", [61.0, -61.0, FILE_DURATION_S, -FILE_DURATION_S, 86400.0])
def test_the_name_tolerance_edges(tmp_path, offset):
    ok = tmp_path / subband_filename(GID, 0)
    write_header_only_subband(ok, T0 - NAME_TIME_TOLERANCE_S, mtime=time.time() - 99)
    bad = tmp_path / subband_filename(GID, 1)
    write_header_only_subband(bad, T0 + offset, mtime=time.time() - 98)
    stats = normalize_directory(tmp_path, details=True)
    actions = {f["name"]: f["action"] for f in stats["files"]}
    assert actions == {ok.name: "unchanged", bad.name: "mismatch"}


def test_migration_6_adds_obs_start_and_rejects(registry):
    columns = {r[1] for r in registry.query("PRAGMA table_info(processing_queue)")}
    assert "obs_start" in columns
    rejects = {r[1] for r in registry.query("PRAGMA table_info(ingest_rejects)")}
    assert {"path", "kind", "reason", "first_seen", "last_seen"} <= rejects


def test_groups_registered_before_migration_6_keep_their_members(tmp_path, registry):
    observation(tmp_path, T0, subbands=range(8))
    normalize_directory(tmp_path, registry=registry)
    registry.execute("UPDATE processing_queue SET obs_start = NULL")  # an older database
    observation(tmp_path, T0, subbands=range(8, 16))
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["groups_created"] == 0 and stats["groups_completed"] == 1


# --- properties of the header fields ingest reads -----------------------------------------

header_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**62), 2**62),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    time_array=st.lists(header_values, min_size=0, max_size=3),
    integration=st.lists(header_values, min_size=0, max_size=3),
    dtype=st.sampled_from(["f8", "f4", "i8", "S8"]),
)
def test_any_header_values_give_a_plausible_time_or_unreadable(
    tmp_path_factory, time_array, integration, dtype
):
    path = tmp_path_factory.mktemp("h") / "f.hdf5"
    with h5py.File(path, "w") as f:
        for key, values in (("time_array", time_array), ("integration_time", integration)):
            data = np.array(values, dtype="f8")
            with np.errstate(invalid="ignore", over="ignore"):
                f[f"Header/{key}"] = data.astype(dtype)
    try:
        content = read_content_time(path)
    except UnreadableSubband as exc:
        assert str(exc)
        return
    assert np.isfinite(content.start_s) and content.integration_s > 0
    epoch_to_group_id(content.start_s)  # always representable


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.floats(0, group_id_to_epoch("2199-12-01T00:00:00")), n_times=st.integers(1, 4))
def test_content_time_round_trips(tmp_path_factory, start, n_times):
    path = tmp_path_factory.mktemp("h") / "f.hdf5"
    write_header_only_subband(path, start, n_times=n_times)
    assert read_content_time(path).start_s == pytest.approx(start, abs=1e-3)
    assert UNIX_EPOCH_JD == 2440587.5
