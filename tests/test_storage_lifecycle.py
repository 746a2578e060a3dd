"""The lifecycle of the bytes: raw retention, orphan collection, tier alerts, stale staging.

Real files on every tier, a real registry filled by ingest, real crashes (SIGKILL of a real
archive process at a chosen step), the ``dsa110`` command run as a user runs it, and the
Dagster job and checks on a real instance. Clocks are injected; nothing races the wall.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from helpers import tier_env, tier_folders

from dsa110_assets.ingest.normalize import normalize_directory
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.naming import group_id_to_epoch, subband_filename
from dsa110_assets.registry import QueueState, Registry, StageOutcome, record_stage, transition
from dsa110_assets.registry.products import register_ms
from dsa110_assets.registry.queue import promote_complete_groups
from dsa110_assets.registry.upsert import upsert
from dsa110_assets.settings import Settings
from dsa110_assets.storage.orphans import QUARANTINE, collect_garbage
from dsa110_assets.storage.products import ms_path_for, thumbnail_path
from dsa110_assets.storage.retention import archive_folder, archive_raw
from dsa110_assets.storage.stale_staging import clean_stale_staging
from dsa110_assets.storage.usage import (
    TierUsage,
    UsageThresholds,
    tier_alerts,
    tier_usage,
)

DAY = 86400.0
NOW = group_id_to_epoch("2026-03-01T00:00:00")
OLD = "2026-02-01T12:00:00"  # 28 days old, completed, imaged: archived
OLD_2 = "2026-02-01T12:05:09"  # 28 days old, completed, imaged: archived
FAILED = "2026-02-01T12:10:18"  # old but failed: never archived
IMAGE_FAILED = "2026-02-01T12:15:27"  # old, converted, but its image failed: kept
YOUNG = "2026-02-28T12:00:00"  # half a day old, finished: kept at the default age
SUBBANDS = 2  # files per group (the groups expect two)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _set_mtime(path: Path, when: float) -> Path:
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def _tree(root: Path) -> dict[str, tuple[int, float, str]]:
    """Every file under ``root`` with its size, mtime and hash: a snapshot to compare."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if name.endswith(("-shm", "-wal")):  # SQLite's own, read-only readers touch them
                continue
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime, _sha(path))
    return out


@dataclass
class Landed:
    """A registry with groups in every state, and their raw files on the input tier."""

    settings: Settings
    registry: Registry
    files: dict[str, list[Path]]
    digests: dict[Path, str]

    def paths(self, group_id: str) -> list[str]:
        return [
            r[0]
            for r in self.registry.query(
                "SELECT path FROM subband_files WHERE group_id = ? ORDER BY subband_idx",
                (group_id,),
            )
        ]


def _finish(registry: Registry, settings: Settings, group_id: str, *, image: StageOutcome) -> None:
    transition(registry, group_id, QueueState.IN_PROGRESS, now=NOW)
    transition(registry, group_id, QueueState.COMPLETED, now=NOW)
    ms = ms_path_for(settings, group_id)
    ms.mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"casa table")
    register_ms(
        registry,
        {
            "path": str(ms),
            "group_id": group_id,
            "start_mjd": 0.0,
            "end_mjd": 0.0,
            "mid_mjd": 0.0,
            "stage": "converted",
            "field_name": "meridian_icrs_t0",
            "pointing_ra_deg": 0.0,
            "pointing_dec_deg": 0.0,
        },
    )
    record_stage(registry, group_id, "image", image)


@pytest.fixture
def landed(tmp_path: Path) -> Landed:
    settings = Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
    registry = Registry(settings.db_path)
    files: dict[str, list[Path]] = {}
    for gid in (OLD, OLD_2, FAILED, IMAGE_FAILED, YOUNG):
        t0 = group_id_to_epoch(gid)
        files[gid] = [
            write_header_only_subband(
                settings.input_dir / subband_filename(gid, sb), t0, n_times=64, mtime=t0 + 300
            )
            for sb in range(SUBBANDS)
        ]
    normalize_directory(settings.input_dir, registry=registry, expected_subbands=SUBBANDS)
    promote_complete_groups(registry, now=NOW)
    for gid in (OLD, OLD_2, YOUNG):
        _finish(registry, settings, gid, image=StageOutcome.DONE)
    _finish(registry, settings, IMAGE_FAILED, image=StageOutcome.FAILED)
    transition(registry, FAILED, QueueState.IN_PROGRESS, now=NOW)
    transition(registry, FAILED, QueueState.FAILED, error="E", error_message="broken", now=NOW)
    digests = {p: _sha(p) for paths in files.values() for p in paths}
    yield Landed(settings, registry, files, digests)
    registry.close()


# --- raw retention ---------------------------------------------------------------------------


def test_finished_old_groups_move_to_the_archive_verified(landed: Landed):
    report = archive_raw(landed.settings, landed.registry, now=NOW)
    assert report.problems == []
    assert report.groups == [OLD, OLD_2]
    assert len(report.archived) == 2 * SUBBANDS
    for moved in report.archived:
        assert moved.archived == archive_folder(landed.settings, moved.group_id) / moved.source.name
        assert moved.archived.parent == landed.settings.archive_dir / "raw" / "2026-02-01"
        assert not moved.source.exists()  # the original went only after the verified copy
        assert _sha(moved.archived) == landed.digests[moved.source] == moved.sha256
        # The correlator's write time is kept on the copy.
        assert moved.archived.stat().st_mtime == group_id_to_epoch(moved.group_id) + 300
    assert landed.paths(OLD) == [str(f.archived) for f in report.archived if f.group_id == OLD]
    # Failed, not-done and young groups are untouched: files in place, rows unchanged.
    for gid in (FAILED, IMAGE_FAILED, YOUNG):
        assert landed.paths(gid) == [str(p) for p in landed.files[gid]]
        assert all(_sha(p) == landed.digests[p] for p in landed.files[gid])
    assert not list(landed.settings.archive_dir.rglob(".*"))  # no temporary left
    again = archive_raw(landed.settings, landed.registry, now=NOW)
    assert (again.archived, again.finished, again.problems) == ([], [], [])


def test_the_age_is_configurable_and_validated(landed: Landed):
    report = archive_raw(landed.settings, landed.registry, now=NOW, older_than_days=0.25)
    assert report.groups == [OLD, OLD_2, YOUNG]
    for bad in (float("nan"), -1.0, float("inf"), 1e6):
        with pytest.raises(ValueError, match="older_than_days"):
            archive_raw(landed.settings, landed.registry, now=NOW, older_than_days=bad)


def test_a_dry_run_changes_nothing(landed: Landed, tmp_path: Path):
    before = _tree(tmp_path)
    rows = landed.registry.query("SELECT * FROM subband_files ORDER BY path")
    with Registry(landed.settings.db_path, readonly=True) as readonly:
        report = archive_raw(landed.settings, readonly, now=NOW, dry_run=True)
    assert report.groups == [OLD, OLD_2] and report.problems == []
    assert all(f.sha256 is None for f in report.archived)
    assert "would archive 4 files of 2 groups" in report.summary()
    assert _tree(tmp_path) == before
    assert landed.registry.query("SELECT * FROM subband_files ORDER BY path") == rows


_KILLER = """
import os, signal, sys
from dsa110_assets.registry import Registry
from dsa110_assets.settings import Settings
from dsa110_assets.storage.retention import archive_raw

step, now = sys.argv[1], float(sys.argv[2])
def stop(name, path):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
settings = Settings.from_env()
with Registry(settings.db_path) as registry:
    archive_raw(settings, registry, now=now, on_step=stop)
"""


@pytest.mark.parametrize("step", ["copied", "placed", "registered"])
def test_a_run_killed_at_any_step_keeps_a_copy_and_the_next_run_finishes(
    landed: Landed, tmp_path: Path, step: str
):
    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, step, str(NOW)],
        env={**os.environ, **tier_env(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = landed.files[OLD][0]
    target = archive_folder(landed.settings, OLD) / first.name
    # Never neither: the original is there, or the copy the registry names is.
    assert first.exists() or (landed.paths(OLD)[0] == str(target) and target.exists())
    if step == "registered":  # the row moved, the original not yet removed
        assert first.exists() and landed.paths(OLD)[0] == str(target)
    report = archive_raw(landed.settings, landed.registry, now=NOW)
    assert report.problems == []
    assert len(report.archived) + len(report.finished) == 2 * SUBBANDS
    for gid in (OLD, OLD_2):
        for original, path in zip(landed.files[gid], landed.paths(gid), strict=True):
            assert not original.exists()
            assert _sha(Path(path)) == landed.digests[original]
    assert not [p for p in landed.settings.archive_dir.rglob("*") if p.name.startswith(".")]


def test_a_corrupted_copy_is_detected_and_the_original_kept(landed: Landed):
    first = landed.files[OLD][0]

    def corrupt(step: str, path: Path) -> None:
        if step == "copied" and path.name.startswith(f".{first.name}."):
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

    report = archive_raw(landed.settings, landed.registry, now=NOW, on_step=corrupt)
    ((path, reason),) = report.problems
    assert path == first and "SHA-256" in reason and "differs" in reason
    assert first.exists() and _sha(first) == landed.digests[first]
    assert landed.paths(OLD)[0] == str(first)
    assert not (archive_folder(landed.settings, OLD) / first.name).exists()
    assert not list(archive_folder(landed.settings, OLD).glob(".*"))
    assert len(report.archived) == 2 * SUBBANDS - 1  # the others went

    # A foreign file already at the archive name is never trusted nor replaced.
    target = archive_folder(landed.settings, OLD) / first.name
    target.write_bytes(b"not the original")
    again = archive_raw(landed.settings, landed.registry, now=NOW)
    ((path, reason),) = again.problems
    assert path == first and "differs" in reason
    assert first.exists() and target.read_bytes() == b"not the original"
    target.unlink()
    final = archive_raw(landed.settings, landed.registry, now=NOW)
    assert final.problems == [] and [f.source for f in final.archived] == [first]
    assert _sha(target) == landed.digests[first] and not first.exists()


def test_a_group_reprocessed_during_the_pass_keeps_its_files(landed: Landed):
    """A stage of the group starts between the listing and the row's move: nothing moves."""
    first = landed.files[OLD][0]

    def reprocess(step: str, path: Path) -> None:
        if step == "placed" and path.name == first.name:
            record_stage(landed.registry, OLD, "calibrate", StageOutcome.RUNNING)

    report = archive_raw(landed.settings, landed.registry, now=NOW, on_step=reprocess)
    assert [p for p, _ in report.problems] == landed.files[OLD]
    assert all("changed meanwhile" in reason for _, reason in report.problems)
    assert all(p.exists() for p in landed.files[OLD])
    assert landed.paths(OLD) == [str(p) for p in landed.files[OLD]]
    assert report.groups == [OLD_2]
    # Once the stage is done the next pass finds the verified copy and finishes the move.
    record_stage(landed.registry, OLD, "calibrate", StageOutcome.DONE)
    again = archive_raw(landed.settings, landed.registry, now=NOW)
    assert again.problems == [] and again.groups == [OLD]
    assert not any(p.exists() for p in landed.files[OLD])


def test_a_registered_file_of_another_size_is_not_archived(landed: Landed):
    first = landed.files[OLD][0]
    with first.open("ab") as handle:
        handle.write(b"appended")
    report = archive_raw(landed.settings, landed.registry, now=NOW)
    assert [p for p, _ in report.problems] == [first]
    assert "not the same file" in report.problems[0][1]
    assert first.exists() and landed.paths(OLD)[0] == str(first)


# --- orphans ---------------------------------------------------------------------------------


def _product(folder: Path, name: str, *, when: float, table: bool = False) -> Path:
    """Write a product file (or a CASA-table folder) last modified at ``when``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if table:
        path.mkdir()
        for part in ("table.dat", "table.f0"):
            (path / part).write_bytes(b"data")
            _set_mtime(path / part, when)
    else:
        path.write_bytes(name.encode())
    return _set_mtime(path, when)


@pytest.fixture
def products(landed: Landed) -> dict[str, Path]:
    """Make registered products, orphans, in-flight temporaries and a too-young orphan."""
    s, old = landed.settings, NOW - 10 * DAY
    images = s.products_dir / "images"
    image = _product(images, f"{OLD}-meridian_icrs_t0-image.fits", when=old)
    row = {
        "path": str(image),
        "group_id": OLD,
        "image_type": "image",
        "created_at": old,
        "thumbnail_path": str(thumbnail_path(s, OLD)),
    }
    with landed.registry.transaction():
        upsert(landed.registry, "images", [row])
    return {
        "image": image,
        "dirty": _product(images, f"{OLD}-meridian_icrs_t0-dirty.fits", when=old),
        "thumbnail": _product(s.products_dir / "thumbnails", f"{OLD}.png", when=old),
        "flagversions": _product(s.output_dir, f"{OLD}.ms.flagversions", when=old),
        "photometry": _product(s.products_dir / "photometry", f"{OLD}.csv", when=old),
        "orphan_ms": _product(s.output_dir, "2025-06-01T00:00:00.ms", when=old, table=True),
        "orphan_image": _product(images, "2025-06-01T00:00:00-x-image.fits", when=old),
        "orphan_thumbnail": _product(s.products_dir / "thumbnails", "stray.png", when=old),
        "orphan_csv": _product(s.products_dir / "photometry", "2025-06-01T00:00:00.csv", when=old),
        "orphan_rebased": _product(
            s.products_dir / "caltables" / "rebased", "a_on_b.bcal", when=old, table=True
        ),
        "young": _product(images, "2025-06-01T00:00:00-y-image.fits", when=NOW - 60),
        "in_flight": _product(s.output_dir, f".{OLD_2}.ms.staging-{os.getpid()}-ab12", when=old),
        "wsclean_work": _product(images, f".wsclean-{OLD_2}-1-ab", when=old),
    }


ORPHANS = ("orphan_ms", "orphan_image", "orphan_thumbnail", "orphan_csv", "orphan_rebased")
KEPT = ("image", "dirty", "thumbnail", "flagversions", "photometry", "young", "in_flight")


def test_orphans_are_quarantined_then_removed_after_the_grace(landed: Landed, products, tmp_path):
    raw_before = _tree(landed.settings.input_dir)
    db_before = landed.settings.db_path.stat().st_ino
    report = collect_garbage(landed.settings, landed.registry, now=NOW, grace_days=7)
    assert report.problems == []
    moved = dict(report.quarantined)
    assert sorted(moved) == sorted(products[k] for k in ORPHANS)
    day = landed.settings.products_dir / QUARANTINE / "2026-03-01"
    for key in ORPHANS:
        assert not products[key].exists()
        relative = products[key].relative_to(landed.settings.products_dir)
        assert moved[products[key]] == day / relative and (day / relative).exists()
    for key in (*KEPT, "wsclean_work"):
        assert products[key].exists(), key
    assert products["young"] in report.young
    assert (day / "ms" / "2025-06-01T00:00:00.ms" / "table.f0").read_bytes() == b"data"
    assert (landed.settings.products_dir / "caltables" / "rebased").is_dir()  # a container

    # Re-running is safe: nothing new, nothing removed before the grace is over.
    again = collect_garbage(landed.settings, landed.registry, now=NOW, grace_days=7)
    assert (again.quarantined, again.removed, again.problems) == ([], [], [])
    week = collect_garbage(landed.settings, landed.registry, now=NOW + 7 * DAY, grace_days=7)
    assert week.removed == [] and day.is_dir()
    later_day = landed.settings.products_dir / QUARANTINE / "2026-03-08"
    assert week.quarantined == [  # the young one is old enough by now
        (products["young"], later_day / "images" / products["young"].name)
    ]
    gone = collect_garbage(landed.settings, landed.registry, now=NOW + 8 * DAY, grace_days=7)
    assert gone.removed == [day] and not day.exists() and later_day.is_dir()
    assert gone.quarantined == []
    assert _tree(landed.settings.input_dir) == raw_before  # raw files never touched
    assert landed.settings.db_path.stat().st_ino == db_before


def test_the_young_orphan_goes_once_old_enough(landed: Landed, products):
    collect_garbage(landed.settings, landed.registry, now=NOW)
    later = collect_garbage(landed.settings, landed.registry, now=NOW + 2 * DAY)
    assert [a for a, _ in later.quarantined] == [products["young"]]


def test_rows_whose_file_is_gone_are_marked_and_cleared(landed: Landed, products):
    products["image"].unlink()
    dry = collect_garbage(landed.settings, landed.registry, now=NOW, dry_run=True)
    assert [r.path for r in dry.missing] == [str(products["image"])] and dry.newly_missing == 1

    def since() -> float | None:
        return landed.registry.query(
            "SELECT missing_since FROM images WHERE path = ?", (str(products["image"]),)
        )[0][0]

    assert since() is None  # the dry run marked nothing
    first = collect_garbage(landed.settings, landed.registry, now=NOW)
    assert first.newly_missing == 1 and since() == NOW
    second = collect_garbage(landed.settings, landed.registry, now=NOW + DAY)
    assert second.newly_missing == 0 and since() == NOW  # the first sighting is kept
    assert [(r.table, r.missing_since) for r in second.missing] == [("images", NOW)]
    products["image"].write_bytes(b"restored")
    back = collect_garbage(landed.settings, landed.registry, now=NOW + 2 * DAY)
    assert back.found_again == 1 and back.missing == [] and since() is None


def test_a_gc_dry_run_changes_nothing(landed: Landed, products, tmp_path: Path):
    before = _tree(tmp_path)
    with Registry(landed.settings.db_path, readonly=True) as readonly:
        report = collect_garbage(landed.settings, readonly, now=NOW + 30 * DAY, dry_run=True)
    assert len(report.quarantined) == len(ORPHANS) + 1  # the young one is old by then
    assert _tree(tmp_path) == before


def test_rows_written_through_another_name_of_the_tier_are_not_orphans(
    landed: Landed, products, tmp_path: Path
):
    """The registry spelled the products folder through a symlink: its files are known."""
    alias = tmp_path / "alias"
    alias.symlink_to(landed.settings.products_dir, target_is_directory=True)
    s, old = landed.settings, NOW - 10 * DAY
    # A thumbnail is known only by its row's path (no group-id or partition naming rule).
    aliased = _product(s.products_dir / "thumbnails", "aliased.png", when=old)
    row = {
        "path": str(alias / "images" / f"{OLD_2}-meridian_icrs_t0-image.fits"),
        "group_id": OLD_2,
        "image_type": "image",
        "created_at": old,
        "thumbnail_path": str(alias / "thumbnails" / aliased.name),
    }
    with landed.registry.transaction():
        upsert(landed.registry, "images", [row])
    report = collect_garbage(landed.settings, landed.registry, now=NOW)
    assert aliased.exists() and aliased not in dict(report.quarantined)
    assert sorted(dict(report.quarantined)) == sorted(products[k] for k in ORPHANS)


def test_a_products_folder_on_the_input_tier_is_refused(landed: Landed, tmp_path: Path):
    env = {**tier_env(tmp_path), "PIPELINE_OUTPUT_DIR": str(landed.settings.input_dir)}
    settings = Settings.from_env(env, root=tmp_path)
    before = _tree(settings.input_dir)
    report = collect_garbage(settings, landed.registry, now=NOW + 30 * DAY)
    assert [p for p, _ in report.problems] == [settings.input_dir]
    assert "overlaps the hdd_input tier" in report.problems[0][1]
    assert _tree(settings.input_dir) == before


# --- usage, alerts, stale staging ------------------------------------------------------------


def test_tier_usage_counts_the_pipelines_bytes(tmp_path: Path):
    settings = Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
    (settings.input_dir / "a_sb00.hdf5").write_bytes(b"x" * 100_000)
    (settings.products_dir / "images" / "i.fits").write_bytes(b"x" * 50_000)
    (settings.staging_dir / ".g.ms.staging-1-ab").mkdir()
    (settings.staging_dir / ".g.ms.staging-1-ab" / "table.f0").write_bytes(b"x" * 30_000)
    (settings.tmpfs_dir / ".g.ms.staging-2-cd").write_bytes(b"x" * 20_000)
    (settings.tmpfs_dir / "someone-elses-file").write_bytes(b"x" * 200_000)
    by_tier = {u.tier: u for u in tier_usage(settings)}
    assert set(by_tier) == {
        "hdd_input", "tmpfs", "ssd_scratch", "ssd_products", "hdd_state", "cold_archive"
    }  # fmt: skip
    assert 100_000 <= by_tier["hdd_input"].used_bytes < 120_000
    assert 50_000 <= by_tier["ssd_products"].used_bytes < 60_000  # scratch not counted twice
    assert 30_000 <= by_tier["ssd_scratch"].used_bytes < 40_000
    assert 20_000 <= by_tier["tmpfs"].used_bytes < 30_000  # only the pipeline's staging
    for usage in by_tier.values():
        assert usage.total_bytes > 0 and 0 <= usage.fraction_full <= 1
    missing = Settings.from_env(
        {**tier_env(tmp_path), "PIPELINE_ARCHIVE_DIR": str(tmp_path / "not" / "yet")}, root=tmp_path
    )
    assert {u.tier: u for u in tier_usage(missing)}["cold_archive"].used_bytes == 0


def _usage(tier: str, used: int, fraction: float = 0.5) -> TierUsage:
    return TierUsage(tier, f"/{tier}", used, 1000, int(1000 * (1 - fraction)), fraction)


def test_tier_alerts_follow_the_thresholds():
    defaults = UsageThresholds()
    assert (defaults.staging_warning_bytes, defaults.staging_critical_bytes) == (10**10, 3 * 10**10)
    assert defaults.critical_fraction == 0.9
    small = UsageThresholds(staging_warning_bytes=100, staging_critical_bytes=300)
    usages = [
        _usage("tmpfs", 50),  # fine
        _usage("ssd_scratch", 150),  # warning
        _usage("ssd_products", 10**6),  # not a staging tier: size alone is fine
        _usage("hdd_input", 0, fraction=0.95),  # critical: over 90% full
    ]
    alerts = tier_alerts(usages, small)
    assert [(a.tier, a.level) for a in alerts] == [
        ("hdd_input", "critical"),
        ("ssd_scratch", "warning"),
    ]
    assert "95% full" in alerts[0].reason and "investigate" in alerts[1].reason
    critical = tier_alerts([_usage("tmpfs", 301)], small)
    assert [(a.tier, a.level) for a in critical] == [("tmpfs", "critical")]
    assert tier_alerts(usages) == [a for a in alerts if a.tier == "hdd_input"]
    for bad in (
        {"staging_warning_bytes": -1},
        {"critical_fraction": float("nan")},
        {"critical_fraction": 1.5},
        {"staging_warning_bytes": 10, "staging_critical_bytes": 5},
    ):
        with pytest.raises(ValueError, match="UsageThresholds"):
            UsageThresholds(**bad)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_staging_of_a_dead_process_is_removed_and_a_live_one_kept(tmp_path: Path):
    settings = Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
    dead = settings.tmpfs_dir / f".{OLD}.ms.staging-{_dead_pid()}-ab12"
    dead.mkdir()
    (dead / "table.f0").write_bytes(b"x" * 10_000)
    dead_ssd = settings.staging_dir / f".{OLD_2}.ms.staging-{_dead_pid()}-cd34"
    dead_ssd.mkdir()
    live = settings.tmpfs_dir / f".{YOUNG}.ms.staging-{os.getpid()}-ef56"
    live.mkdir()
    foreign = settings.tmpfs_dir / "pulse-shm-1234"
    foreign.write_bytes(b"not ours")
    dry = clean_stale_staging(settings, dry_run=True)
    assert sorted(e.path for e in dry.stale) == sorted([dead, dead_ssd]) and dead.exists()
    report = clean_stale_staging(settings)
    assert sorted(e.path for e in report.stale) == sorted([dead, dead_ssd])
    assert [e.path for e in report.live] == [live]
    assert report.stale_bytes >= 10_000 and "removed 2 entries" in report.summary()
    assert not dead.exists() and not dead_ssd.exists() and live.exists() and foreign.exists()
    assert clean_stale_staging(settings).stale == []


# --- the command -----------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsa110_assets", "storage", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["archive", "--older-than", "nan"], "argument --older-than: 'nan' is not"),
        (["archive", "--older-than", "-1"], "out of range"),
        (["archive", "--older-than", "1_000"], "argument --older-than"),
        (["gc", "--grace-days", "1.5"], "argument --grace-days: '1.5' is not an integer"),
        (["gc", "--grace-days", "inf"], "argument --grace-days"),
    ],
)
def test_bad_numbers_are_refused_in_one_line(tmp_path: Path, args, message):
    result = _cli(args, tier_env(tmp_path))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_commands_exit_codes(landed: Landed, tmp_path: Path):
    env = tier_env(tmp_path)
    # Without a registry: one line, exit 1.
    other = tmp_path / "empty"
    lonely = _cli(["archive"], tier_env(other))
    assert lonely.returncode == 1 and "does not exist" in lonely.stderr
    # The command reads the wall clock: the February 2026 groups are older than the default
    # 7 days and younger than a century on any clock after mid-February 2026.
    none = _cli(["archive", "--older-than", "36500"], env)
    assert none.returncode == 0, none.stderr
    assert "archived 0 files" in none.stdout
    dry = _cli(["archive", "--dry-run", "--json"], env)
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert {f["group_id"] for f in listed["archived"]} >= {OLD, OLD_2}
    assert all(Path(p).exists() for p in landed.digests)  # nothing moved
    landed.files[OLD][0].unlink()  # a registered file gone: reported, exit 1
    broken = _cli(["archive"], env)
    assert broken.returncode == 1
    assert "raw files left in place" in broken.stderr and "missing" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    assert landed.paths(OLD_2)[0].startswith(str(landed.settings.archive_dir))
    gc = _cli(["gc", "--dry-run"], env)
    assert gc.returncode == 0 and "would quarantine" in gc.stdout, gc.stderr
    report = _cli(["report", "--json"], env)
    assert report.returncode == 0, report.stderr
    tiers = {t["tier"]: t for t in json.loads(report.stdout)["tiers"]}
    assert tiers["cold_archive"]["used_bytes"] > 0
    text = _cli(["report"], env)
    assert text.returncode == 0 and "cold_archive" in text.stdout and "stale staging" in text.stdout


# --- the Dagster shell -----------------------------------------------------------------------


def test_the_daily_job_and_the_tier_checks_on_a_real_instance(landed: Landed, products, tmp_path):
    from dsa110_assets.definitions import build_definitions
    from dsa110_assets.defs.storage.assets import TIER_CHECKS
    from resources.pipeline import PipelineResource

    pipeline = PipelineResource(**tier_folders(tmp_path))
    stale = landed.settings.staging_dir / f".{OLD}.ms.staging-{_dead_pid()}-ab12"
    stale.mkdir()
    (stale / "table.f0").write_bytes(b"x" * 5000)
    defs = build_definitions(pipeline, clock=lambda: NOW)
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_job_def("storage_lifecycle")
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "archive_raw_files": {"config": {"older_than_days": 7.0}},
                    "collect_orphans": {"config": {"grace_days": 7}},
                }
            },
        )
        assert result.success
        assert not stale.exists()
        assert all(not p.exists() for p in landed.files[OLD] + landed.files[OLD_2])
        assert all(p.exists() for p in landed.files[YOUNG] + landed.files[FAILED])
        assert not products["orphan_ms"].exists() and products["image"].exists()
        archive_meta = result.output_for_node("archive_raw_files")
        assert archive_meta == {"groups": [OLD, OLD_2]}

        # A problem fails its op with the reason, after the pass; the others still run.
        landed.files[YOUNG][0].unlink()
        failing = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"archive_raw_files": {"config": {"older_than_days": 0.25}}}},
            raise_on_error=False,
        )
        assert not failing.success
        (failure,) = [e for e in failing.all_events if e.is_step_failure]
        assert failure.step_key == "archive_raw_files"
        assert "missing" in failure.step_failure_data.user_failure_data.description
        assert failing.is_node_success("collect_orphans")
        refused = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"collect_orphans": {"config": {"grace_days": -1}}}},
            raise_on_error=False,
        )
        (bad,) = [e for e in refused.all_events if e.is_step_failure]
        assert bad.step_key == "collect_orphans"
        assert "grace_days: -1 is out of range" in str(bad.step_failure_data.error.cause)

        # The tier checks: staging above the (tiny) warning size warns, above critical errors.
        (landed.settings.staging_dir / f".{OLD}.ms.staging-{os.getpid()}-ff").write_bytes(
            b"x" * 50_000
        )
        usage_job = defs.resolve_job_def("storage_usage_job")
        for critical_gb, severity in (
            (1.0, dg.AssetCheckSeverity.WARN),
            (1e-5, dg.AssetCheckSeverity.ERROR),
        ):
            run = usage_job.execute_in_process(
                instance=instance,
                run_config={
                    "ops": {
                        "storage_usage": {
                            "config": {
                                "staging_warning_gb": 1e-6,
                                "staging_critical_gb": critical_gb,
                            }
                        }
                    }
                },
            )
            assert run.success
            checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
            assert set(checks) == set(TIER_CHECKS.values())
            scratch = checks[TIER_CHECKS["ssd_scratch"]]
            assert not scratch.passed and scratch.severity == severity
            assert checks[TIER_CHECKS["cold_archive"]].passed
        (mat,) = run.asset_materializations_for_node("storage_usage")
        assert mat.metadata["ssd_scratch_used_bytes"].value >= 50_000
