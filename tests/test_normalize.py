"""Filename normalization and registration: the rules and every kind of bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest
from helpers import names

from dsa110_assets.ingest import (
    normalize_directory,
    normalize_subband_on_ingest,
    normalize_subband_path,
)
from dsa110_assets.ingest.content import ContentTime, UnreadableSubband, read_content_time
from dsa110_assets.ingest.decision import (
    UNREADABLE_RETRY_S,
    Decision,
    SlotBook,
    SlotState,
    decide_content,
    decide_known,
    decide_slot,
)
from dsa110_assets.ingest.outcomes import ACTIONS, Action, FileOutcome
from dsa110_assets.ingest.placement import carry_out_rename
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.ingest.scan import Candidate, check_name, classify
from dsa110_assets.naming import (
    InvalidSubbandName,
    epoch_to_group_id,
    group_id_to_epoch,
    parse_subband_filename,
    subband_filename,
)
from dsa110_assets.registry import QueueState, Registry, get_status

GID = "2025-01-15T12:00:00"
T0 = group_id_to_epoch(GID)


def touch(
    folder: Path,
    name: str,
    *,
    age_s: float = 600.0,
    start_s: float | None = None,
    content: bytes | None = None,
) -> Path:
    """Write a file modified ``age_s`` ago, a subband or not.

    A header-only subband file whose content starts at the time in its name (or
    ``start_s``), or ``content`` bytes (a file that is no subband).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    mtime = time.time() - age_s
    if content is None:
        try:
            stamp = parse_subband_filename(name).epoch_s if start_s is None else start_s
        except InvalidSubbandName:
            content = name.encode()
        else:
            return write_header_only_subband(path, stamp, mtime=mtime)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def start_of(path: Path) -> float:
    return read_content_time(path).start_s


def drifting_group(folder: Path, start_s: int = 0, age_s: float = 600.0) -> None:
    """16 subbands of one observation named 0-2 s apart, as the correlator's nodes write them."""
    t0 = group_id_to_epoch(GID) + start_s
    for sb in range(16):
        stamp = epoch_to_group_id(t0 + (sb * 7) % 3)
        touch(folder, subband_filename(stamp, sb), age_s=age_s - sb * 0.01, start_s=t0)


def test_documented_example(tmp_path):
    for name, age in [
        ("2025-01-15T12:00:00_sb00.hdf5", 40),
        ("2025-01-15T12:00:01_sb01.hdf5", 39),
        ("2025-01-15T12:00:00_sb02.hdf5", 38),
        ("2025-01-15T12:00:02_sb03.hdf5", 37),
    ]:
        touch(tmp_path, name, age_s=age)
    stats = normalize_directory(tmp_path, cluster_tolerance_s=60.0, dry_run=False)
    assert names(tmp_path) == [f"{GID}_sb0{i}.hdf5" for i in range(4)]
    assert stats["files_scanned"] == 4 and stats["files_renamed"] == 2
    assert stats["groups"] == 1 and stats["conflicts"] == 0 and stats["skipped"] == 0


def test_first_arrival_defines_the_group(tmp_path):
    touch(tmp_path, "2025-01-15T12:00:02_sb03.hdf5", age_s=50, start_s=T0)  # arrives first
    touch(tmp_path, "2025-01-15T12:00:00_sb00.hdf5", age_s=40, start_s=T0)
    normalize_directory(tmp_path)
    assert names(tmp_path) == ["2025-01-15T12:00:02_sb00.hdf5", "2025-01-15T12:00:02_sb03.hdf5"]


def test_contents_follow_the_rename(tmp_path):
    touch(tmp_path, "2025-01-15T12:00:00_sb00.hdf5", age_s=50, start_s=T0)
    one = touch(tmp_path, "2025-01-15T12:00:01_sb01.hdf5", age_s=40, start_s=T0 + 0.5)
    inode = one.stat().st_ino
    normalize_directory(tmp_path)
    assert (tmp_path / f"{GID}_sb01.hdf5").stat().st_ino == inode
    assert start_of(tmp_path / f"{GID}_sb01.hdf5") == pytest.approx(T0 + 0.5)


def test_dry_run_changes_nothing(tmp_path, registry):
    drifting_group(tmp_path)
    before = names(tmp_path)
    stats = normalize_directory(tmp_path, dry_run=True, registry=registry)
    assert stats["dry_run"] and stats["files_renamed"] > 0
    assert names(tmp_path) == before
    assert registry.query("SELECT COUNT(*) FROM processing_queue")[0][0] == 0


def test_tolerance_is_configurable(tmp_path):
    # Contents 45 s apart: one observation within 60 s, two within 30 s.
    touch(tmp_path, "2025-01-15T12:00:00_sb00.hdf5", age_s=50)
    touch(tmp_path, "2025-01-15T12:00:45_sb01.hdf5", age_s=40)
    assert normalize_directory(tmp_path, cluster_tolerance_s=30, dry_run=True)["groups"] == 2
    assert normalize_directory(tmp_path, cluster_tolerance_s=60, dry_run=True)["groups"] == 1


def test_registration_and_completion(tmp_path, registry):
    drifting_group(tmp_path)
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["files_registered"] == 16 and stats["groups_completed"] == 1
    assert get_status(registry, GID).state is QueueState.PENDING
    rows = registry.query("SELECT subband_idx, path, original_name FROM subband_files")
    assert len(rows) == 16
    assert all(Path(r["path"]).name == f"{GID}_sb{r['subband_idx']:02d}.hdf5" for r in rows)
    assert all(Path(r["path"]).exists() for r in rows)
    # Idempotent: nothing renamed, nothing registered twice.
    again = normalize_directory(tmp_path, registry=registry)
    assert again["files_renamed"] == 0 and again["files_registered"] == 0
    assert registry.query("SELECT COUNT(*) FROM subband_files")[0][0] == 16


def test_unmatched_names_are_left_alone_and_reported(tmp_path, registry):
    for bad in ["notes.txt", "2025-01-15T12:00:00_sb16.hdf5", "2025-01-15T12:00:00.hdf5"]:
        touch(tmp_path, bad)
    stats = normalize_directory(tmp_path, registry=registry, details=True)
    assert stats["unmatched"] == 3 and stats["skipped"] == 3
    assert names(tmp_path) == sorted(
        ["notes.txt", "2025-01-15T12:00:00_sb16.hdf5", "2025-01-15T12:00:00.hdf5"]
    )
    reasons = {f["name"]: f["reason"] for f in stats["files"]}
    assert "outside sb00..sb15" in reasons["2025-01-15T12:00:00_sb16.hdf5"]


def test_duplicate_subband_is_a_conflict_never_an_overwrite(tmp_path, registry):
    first = touch(tmp_path, "2025-01-15T12:00:00_sb05.hdf5", age_s=50, start_s=T0)
    second = touch(tmp_path, "2025-01-15T12:00:01_sb05.hdf5", age_s=40, start_s=T0 + 0.25)
    inodes = first.stat().st_ino, second.stat().st_ino
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["conflicts"] == 1
    assert (first.stat().st_ino, second.stat().st_ino) == inodes
    assert start_of(second) == pytest.approx(T0 + 0.25)
    conflict = registry.query("SELECT path, existing_path, reason FROM ingest_conflicts")
    assert len(conflict) == 1
    assert conflict[0]["path"].endswith("12:00:01_sb05.hdf5")
    assert conflict[0]["existing_path"].endswith("12:00:00_sb05.hdf5")
    # Reported again on re-run, recorded once.
    assert normalize_directory(tmp_path, registry=registry)["conflicts"] == 1
    assert len(registry.query("SELECT * FROM ingest_conflicts")) == 1


def test_conflict_without_registry(tmp_path):
    first = touch(tmp_path, "2025-01-15T12:00:00_sb05.hdf5", age_s=40, start_s=T0)
    touch(tmp_path, "2025-01-15T12:00:01_sb05.hdf5", age_s=50, start_s=T0)
    inode = first.stat().st_ino
    stats = normalize_directory(tmp_path)
    assert stats["conflicts"] == 1
    assert first.stat().st_ino == inode


def test_incomplete_and_still_writing_files_wait(tmp_path, registry):
    write_header_only_subband(tmp_path / "2025-01-15T12:00:00_sb00_incomplete.hdf5", T0)
    touch(tmp_path, "2025-01-15T12:00:01_sb01.hdf5", age_s=1, start_s=T0)  # just written
    stats = normalize_directory(tmp_path, registry=registry, settle_s=5)
    assert stats["incomplete"] == 1 and stats["still_writing"] == 1
    assert stats["files_registered"] == 0
    # The correlator finishes: rename, and time passes.
    os.rename(
        tmp_path / "2025-01-15T12:00:00_sb00_incomplete.hdf5",
        tmp_path / "2025-01-15T12:00:00_sb00.hdf5",
    )
    for p in tmp_path.iterdir():
        os.utime(p, (0, os.path.getmtime(p) - 60))
    stats = normalize_directory(tmp_path, registry=registry, settle_s=5)
    assert stats["files_registered"] == 2 and stats["skipped"] == 0


def test_symlinks_are_refused(tmp_path, registry):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    target = touch(outside, "secret.hdf5", content=b"keep")
    (tmp_path / "2025-01-15T12:00:01_sb00.hdf5").symlink_to(target)
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["refused"] == 1 and stats["files_registered"] == 0
    assert (tmp_path / "2025-01-15T12:00:01_sb00.hdf5").is_symlink()
    assert target.read_bytes() == b"keep"


def test_paths_outside_the_input_folder_are_refused(tmp_path, registry):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    victim = touch(other, "2025-01-15T12:00:01_sb00.hdf5")
    sneaky = incoming / ".." / "other" / victim.name
    outcome = normalize_subband_on_ingest(sneaky, registry, input_dir=incoming)
    assert outcome.action == "refused"
    assert victim.exists()
    link = incoming / "2025-01-15T12:00:01_sb01.hdf5"
    link.symlink_to(victim)
    assert normalize_subband_on_ingest(link, registry, input_dir=incoming).action == "refused"


def test_streaming_arrivals_build_one_group(tmp_path, registry):
    order = [5, 0, 15, 3, 1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    outcomes = []
    for i, sb in enumerate(order):
        name = f"2025-01-15T12:00:{(sb * 7) % 3 + 1:02d}_sb{sb:02d}.hdf5"
        path = touch(tmp_path, name, age_s=100 - i, start_s=T0)
        outcomes.append(normalize_subband_on_ingest(path, registry, input_dir=tmp_path))
    first_gid = outcomes[0].group_id
    assert {o.group_id for o in outcomes} == {first_gid}
    assert first_gid == "2025-01-15T12:00:03"  # sb05 arrived first, named :03
    assert names(tmp_path) == [f"{first_gid}_sb{sb:02d}.hdf5" for sb in range(16)]
    assert get_status(registry, first_gid).state is QueueState.PENDING


def test_registry_groups_take_part_in_clustering(tmp_path, registry):
    touch(tmp_path, "2025-01-15T12:00:00_sb00.hdf5", age_s=100)
    normalize_directory(tmp_path, registry=registry)
    # A later file with an earlier timestamp must join the existing group, not start one.
    touch(tmp_path, "2025-01-15T11:59:59_sb01.hdf5", age_s=10, start_s=T0)
    stats = normalize_directory(tmp_path, registry=registry)
    assert stats["groups_created"] == 0
    assert names(tmp_path) == [f"{GID}_sb00.hdf5", f"{GID}_sb01.hdf5"]


def test_interrupted_link_fallback_is_completed(tmp_path):
    src = touch(tmp_path, "2025-01-15T12:00:01_sb01.hdf5", content=b"data")  # rename only
    os.link(src, tmp_path / f"{GID}_sb01.hdf5")  # a crash after link, before unlink
    result = normalize_subband_path(src, GID)
    assert result.name == f"{GID}_sb01.hdf5" and names(tmp_path) == [result.name]
    assert result.read_bytes() == b"data"


def test_normalize_subband_path_never_replaces(tmp_path):
    src = touch(tmp_path, "2025-01-15T12:00:01_sb01.hdf5", content=b"new")
    touch(tmp_path, f"{GID}_sb01.hdf5", content=b"old")
    with pytest.raises(FileExistsError):
        normalize_subband_path(src, GID)
    assert (tmp_path / f"{GID}_sb01.hdf5").read_bytes() == b"old"
    assert src.read_bytes() == b"new"


def _worker(folder: str, db: str, queue) -> None:
    with Registry(db) as registry:
        queue.put(json.dumps(normalize_directory(folder, registry=registry)))


def test_two_normalizers_at_once_lose_nothing(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for k in range(20):
        drifting_group(folder, start_s=k * 309, age_s=5000 - k * 20)
    before = {p.stat().st_ino for p in folder.iterdir()}
    db = str(tmp_path / "pipeline.sqlite3")
    Registry(db).close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(folder), db, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [json.loads(queue.get(timeout=60)) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    after = list(folder.iterdir())
    assert len(after) == 320 and {p.stat().st_ino for p in after} == before
    assert sum(r["files_registered"] for r in results) == 320
    assert sum(r["conflicts"] for r in results) == 0
    with Registry(db) as registry:
        assert registry.query("SELECT COUNT(*) FROM subband_files")[0][0] == 320
        assert registry.query("SELECT COUNT(*) FROM processing_queue")[0][0] == 20
        paths = {r[0] for r in registry.query("SELECT path FROM subband_files")}
    assert paths == {str(p) for p in after}


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="does not exist"):
        normalize_directory(tmp_path / "nope")


# --- the decision, step by step: every action is reachable ---------------------------------

ARRIVAL = "2025-01-15T12:00:01_sb03.hdf5"  # a node stamped it one second late
CANONICAL = f"{GID}_sb03.hdf5"
NOW = T0 + 10_000.0
REG = stat.S_IFREG | 0o644
SETTLED = Candidate(ARRIVAL, T0 + 1, 3, mtime=NOW - 600.0, size=10)


def lstat_of(mode: int, *, age_s: float = 600.0) -> os.stat_result:
    mtime = NOW - age_s
    return os.stat_result((mode, 1, 1, 1, 0, 0, 10, mtime, mtime, mtime))


def book_with(path: str | None = None, *, claimed: bool = False) -> SlotBook:
    book = SlotBook()
    if path is not None:
        book.add_registered((GID, 3), path, ARRIVAL)
    if claimed:
        book.claimed[(GID, 3)] = f"/in/{CANONICAL}"
    return book


def slot(state: SlotState, holder: str | None = None, *, registry: bool = True) -> Decision:
    return decide_slot(SETTLED, GID, CANONICAL, state, holder, with_registry=registry)


ENTRY_CASES = [
    ("separator in name", lambda: check_name("../x_sb00.hdf5"), Action.REFUSED),
    ("correlator writing", lambda: check_name(f"{GID}_sb00_incomplete.hdf5"), Action.INCOMPLETE),
    ("gone before lstat", lambda: classify(ARRIVAL, None, 0.0, NOW), Action.VANISHED),
    ("symlink", lambda: classify(ARRIVAL, lstat_of(stat.S_IFLNK | 0o777), 0.0, NOW), "refused"),
    ("a fifo", lambda: classify(ARRIVAL, lstat_of(stat.S_IFIFO | 0o644), 0.0, NOW), "refused"),
    ("no subband name", lambda: classify("notes.txt", lstat_of(REG), 0.0, NOW), "unmatched"),
    ("sb16", lambda: classify(f"{GID}_sb16.hdf5", lstat_of(REG), 0.0, NOW), "unmatched"),
    (
        "modified 5 s ago",
        lambda: classify(ARRIVAL, lstat_of(REG, age_s=5.0), 30.0, NOW),
        Action.STILL_WRITING,
    ),
]

DECISION_CASES = [
    ("registered before", lambda: decide_known(SETTLED, "/in/a", book_with("/in/a")), "unchanged"),
    ("empty file, just written", lambda: young_unreadable(NOW - 60.0), Action.UNREADABLE),
    ("empty file, long ago", lambda: young_unreadable(NOW - 5000.0), Action.UNREADABLE),
    (
        "another observation",
        lambda: decide_content(SETTLED, ContentTime(T0 + 309.2, 12.88), NOW),
        Action.MISMATCH,
    ),
    ("slot held", lambda: slot(SlotState.HELD, f"/in/{CANONICAL}"), Action.CONFLICT),
    ("slot free, drifted name", lambda: slot(SlotState.FREE), Action.RENAMED),
    ("earlier pass stopped before renaming", lambda: slot(SlotState.OWN), Action.RENAMED),
    ("name blocked, registry", lambda: slot(SlotState.NAME_BLOCKED), Action.REGISTERED),
    (
        "name blocked, no registry",
        lambda: slot(SlotState.NAME_BLOCKED, registry=False),
        Action.UNCHANGED,
    ),
]


def young_unreadable(mtime: float) -> Decision | None:
    candidate = Candidate(ARRIVAL, T0 + 1, 3, mtime=mtime, size=0)
    return decide_content(candidate, UnreadableSubband("empty (0 bytes)"), NOW)


@pytest.mark.parametrize(("case", "decide", "action"), ENTRY_CASES + DECISION_CASES)
def test_each_rule_gives_its_action(case, decide, action):
    result = decide()
    assert result is not None and result.action == action, case


def test_rules_that_let_a_file_go_on():
    assert check_name(ARRIVAL) is None
    assert classify(ARRIVAL, lstat_of(REG), 30.0, NOW) == Candidate(
        ARRIVAL, T0 + 1, 3, NOW - 600.0, 10
    )
    # A path registered before, whose slot this pass gave to another file, is decided anew.
    assert decide_known(SETTLED, "/in/a", book_with("/in/a", claimed=True)) is None
    assert decide_content(SETTLED, ContentTime(T0 + 0.5, 12.88), NOW) is None


def test_unreadable_files_are_looked_at_again_only_while_young():
    assert young_unreadable(NOW - 60.0).retry is True
    assert young_unreadable(NOW - UNREADABLE_RETRY_S - 1).retry is False


def test_decisions_name_their_slot():
    held = slot(SlotState.HELD, f"/in/{CANONICAL}")
    assert (held.group_id, held.target, held.holder) == (GID, CANONICAL, f"/in/{CANONICAL}")
    assert slot(SlotState.FREE).target == CANONICAL
    assert slot(SlotState.NAME_BLOCKED).target == ARRIVAL  # registers under its own name
    known = decide_known(SETTLED, f"/in/{CANONICAL}", book_with(f"/in/{CANONICAL}"))
    assert known.outcome(SETTLED).new_name == CANONICAL


def test_slot_book_says_who_holds_a_slot():
    assert book_with().state_of((GID, 3), f"/in/{CANONICAL}", ARRIVAL) == (SlotState.FREE, None)
    own = book_with(f"/in/{CANONICAL}")
    assert own.state_of((GID, 3), f"/in/{CANONICAL}", ARRIVAL) == (SlotState.OWN, None)
    other = book_with("/in/other.hdf5")
    assert other.state_of((GID, 3), f"/in/{CANONICAL}", ARRIVAL) == (
        SlotState.HELD,
        "/in/other.hdf5",
    )
    claimed = book_with(claimed=True)
    assert claimed.state_of((GID, 3), f"/in/{CANONICAL}", ARRIVAL)[0] is SlotState.HELD


def test_a_rename_race_is_a_conflict_or_vanished(tmp_path):
    touch(tmp_path, ARRIVAL)
    touch(tmp_path, CANONICAL)  # appeared after the decision
    raced = FileOutcome(ARRIVAL, Action.RENAMED, GID, 3, CANONICAL)
    carry_out_rename(raced, f"{tmp_path}/{ARRIVAL}", str(tmp_path), None)
    assert raced.action == Action.CONFLICT and "appeared while renaming" in raced.reason
    gone = FileOutcome("2025-01-15T12:00:02_sb04.hdf5", Action.RENAMED, GID, 4, f"{GID}_sb04.hdf5")
    carry_out_rename(gone, f"{tmp_path}/{gone.name}", str(tmp_path), None)
    assert gone.action == Action.VANISHED


def test_a_failing_reader_is_that_files_error(tmp_path):
    touch(tmp_path, ARRIVAL)

    def broken(path: str) -> ContentTime:
        raise RuntimeError("disk on fire")

    stats = normalize_directory(tmp_path, details=True, content_reader=broken)
    assert [f["action"] for f in stats["files"]] == ["error"]
    assert stats["files"][0]["reason"] == "RuntimeError: disk on fire"


def test_every_action_is_reachable():
    reached = {action for _, _, action in ENTRY_CASES + DECISION_CASES}
    reached |= {Action.CONFLICT, Action.VANISHED, Action.ERROR}  # the two tests above
    assert reached == set(ACTIONS)
    assert [str(a) for a in ACTIONS] == [a.value for a in ACTIONS]  # printed as plain names
