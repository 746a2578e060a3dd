from __future__ import annotations

import sqlite3

import pytest

from dsa110_assets.registry import (
    LATEST_VERSION,
    MAX_RETRIES,
    IllegalTransition,
    QueueState,
    Registry,
    RetriesExhausted,
    UnknownGroup,
    count_by_state,
    get_status,
    migrate,
    promote_complete_groups,
    transition,
)

GID = "2025-01-15T12:00:00"


def add_group(registry: Registry, gid: str = GID, subbands: int = 0, state: str = "collecting"):
    registry.execute(
        "INSERT INTO processing_queue(group_id, state, received_at, last_update,"
        " expected_subbands) VALUES (?, ?, 1.0, 1.0, 16)",
        (gid, state),
    )
    for sb in range(subbands):
        registry.execute(
            "INSERT INTO subband_files(group_id, subband_idx, path) VALUES (?, ?, ?)",
            (gid, sb, f"/data/incoming/{gid}_sb{sb:02d}.hdf5"),
        )


def test_new_database_is_current_wal_with_foreign_keys(registry):
    assert registry.schema_version == LATEST_VERSION
    assert registry.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert registry.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    tables = {r[0] for r in registry.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "processing_queue",
        "subband_files",
        "ms_index",
        "images",
        "calibration_tables",
        "photometry",
        "mosaics",
        "schema_version",
        "ingest_conflicts",
    } <= tables


def test_documented_columns_present(registry):
    def columns(table):
        return {r[1] for r in registry.query(f"PRAGMA table_info({table})")}

    assert columns("processing_queue") >= {
        "group_id", "state", "received_at", "last_update", "expected_subbands", "retry_count",
        "error", "error_message", "processing_stage", "has_calibrator", "calibrators",
    }  # fmt: skip
    assert columns("subband_files") >= {"group_id", "subband_idx", "path"}
    assert columns("ms_index") >= {
        "path", "group_id", "start_mjd", "end_mjd", "mid_mjd", "status", "stage",
        "cal_applied", "field_name", "pointing_ra_deg", "pointing_dec_deg", "created_at",
    }  # fmt: skip
    assert columns("images") >= {
        "image_type", "beam_major_arcsec", "beam_minor_arcsec", "noise_jy", "dynamic_range",
    }  # fmt: skip
    assert columns("calibration_tables") >= {
        "table_type", "valid_start_mjd", "valid_end_mjd", "refant",
    }  # fmt: skip
    assert columns("photometry") >= {"flux_jy", "flux_err_jy", "local_rms_jy", "catalog_flux_jy"}
    assert columns("mosaics") >= {"effective_noise_jy", "n_images", "date"}


def test_primary_keys_as_documented(registry):
    def pk(table):
        rows = registry.query(f"PRAGMA table_info({table})")
        return [r[1] for r in sorted(rows, key=lambda r: r[5]) if r[5]]

    assert pk("processing_queue") == ["group_id"]
    assert pk("subband_files") == ["group_id", "subband_idx"]
    assert pk("ms_index") == ["path"]
    assert pk("calibration_tables") == ["path"]
    assert pk("images") == pk("photometry") == pk("mosaics") == ["id"]


def test_foreign_keys_enforced(registry):
    with pytest.raises(sqlite3.IntegrityError):
        registry.execute(
            "INSERT INTO subband_files(group_id, subband_idx, path) VALUES ('nope', 0, '/x')"
        )


def test_existing_database_upgrades_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == [1]
    conn.execute(
        "INSERT INTO processing_queue(group_id, state, received_at, last_update)"
        " VALUES (?, 'collecting', 1, 1)",
        (GID,),
    )
    conn.execute(
        "INSERT INTO subband_files(group_id, subband_idx, path) VALUES (?, 0, '/a')", (GID,)
    )
    conn.close()

    with Registry(path) as registry:
        assert registry.schema_version == LATEST_VERSION
        row = registry.execute("SELECT path, original_name FROM subband_files").fetchone()
        assert tuple(row) == ("/a", None)
        versions = [r[0] for r in registry.query("SELECT version FROM schema_version")]
        assert versions == list(range(1, LATEST_VERSION + 1))
    # Re-opening applies nothing.
    with Registry(path) as registry:
        assert migrate(registry.conn) == []


def test_happy_path_state_machine(registry):
    add_group(registry)
    for state in ("pending", "in_progress", "completed"):
        status = transition(registry, GID, state, stage="convert")
        assert status.state == QueueState(state)
    assert status.processing_stage == "convert"
    assert status.retry_count == 0


@pytest.mark.parametrize(
    "path",
    [
        ["completed"],
        ["in_progress"],
        ["pending", "collecting"],
        ["pending", "completed"],
        ["pending", "in_progress", "pending"],
        ["pending", "in_progress", "completed", "pending"],
        ["pending", "in_progress", "completed", "failed"],
    ],
)
def test_illegal_transitions_raise(registry, path):
    add_group(registry)
    *legal, illegal = path
    for state in legal:
        transition(registry, GID, state)
    before = get_status(registry, GID)
    with pytest.raises(IllegalTransition):
        transition(registry, GID, illegal, error="E", error_message="m")
    assert get_status(registry, GID) == before


def test_failure_needs_a_reason_and_retries_are_bounded(registry):
    add_group(registry)
    transition(registry, GID, "pending")
    transition(registry, GID, "in_progress")
    with pytest.raises(ValueError, match="error_message"):
        transition(registry, GID, "failed")
    for attempt in range(1, MAX_RETRIES + 1):
        failed = transition(registry, GID, "failed", error="OSError", error_message="disk full")
        assert failed.error == "OSError" and failed.error_message == "disk full"
        retried = transition(registry, GID, "in_progress")
        assert retried.retry_count == attempt
    transition(registry, GID, "failed", error="OSError", error_message="disk full again")
    with pytest.raises(RetriesExhausted):
        transition(registry, GID, "pending")
    assert get_status(registry, GID).state is QueueState.FAILED


def test_completion_clears_the_error(registry):
    add_group(registry)
    transition(registry, GID, "pending")
    transition(registry, GID, "failed", error="ValueError", error_message="bad header")
    transition(registry, GID, "in_progress")
    done = transition(registry, GID, "completed")
    assert done.error is None and done.error_message is None and done.retry_count == 1


def test_unknown_group(registry):
    with pytest.raises(UnknownGroup):
        transition(registry, "2000-01-01T00:00:00", "pending")


def test_promote_complete_groups(registry):
    add_group(registry, GID, subbands=16)
    add_group(registry, "2025-01-15T12:05:09", subbands=15)
    add_group(registry, "2025-01-15T12:10:18", subbands=16, state="failed")
    assert promote_complete_groups(registry, []) == []
    assert promote_complete_groups(registry, ["2025-01-15T12:05:09"]) == []
    assert promote_complete_groups(registry) == [GID]
    assert count_by_state(registry) == {
        "collecting": 1, "pending": 1, "in_progress": 0, "completed": 0, "failed": 1,
    }  # fmt: skip


def test_documented_example_queries_run_unchanged(registry):
    """The storage architecture document's queries, verbatim."""
    add_group(registry, subbands=16)
    transition(registry, GID, "pending")
    transition(registry, GID, "in_progress")
    transition(registry, GID, "completed")
    ms = f"/stage/dsa110-contimg/ms/{GID}.ms"
    registry.execute(
        "INSERT INTO ms_index(path, group_id, status) VALUES (?, ?, 'completed')", (ms, GID)
    )
    image = f"/stage/dsa110-contimg/images/{GID}-3C286_t17-image.fits"
    registry.execute(
        "INSERT INTO images(path, ms_path, image_type, created_at) VALUES (?, ?, 'image', 1)",
        (image, ms),
    )

    count = registry.query("SELECT state, COUNT(*) FROM processing_queue GROUP BY state;")
    assert [tuple(r) for r in count] == [("completed", 1)]

    recent = registry.query(
        """SELECT group_id, datetime(last_update, 'unixepoch')
   FROM processing_queue
   WHERE state='completed'
   ORDER BY last_update DESC LIMIT 10;"""
    )
    assert recent[0][0] == GID

    chain = registry.query(
        """
SELECT
    q.group_id,
    q.state AS queue_state,
    COUNT(sf.subband_idx) AS subbands,
    m.path AS ms_path,
    m.status AS ms_status,
    i.path AS image_path
FROM processing_queue q
LEFT JOIN subband_files sf ON sf.group_id = q.group_id
LEFT JOIN ms_index m ON m.group_id = q.group_id
LEFT JOIN images i ON i.ms_path = m.path
WHERE q.group_id = '2025-01-15T12:00:00'
GROUP BY q.group_id;
"""
    )
    assert [tuple(r) for r in chain] == [(GID, "completed", 16, ms, "completed", image)]

    products = registry.query(
        """SELECT m.path, i.path
   FROM ms_index m
   LEFT JOIN images i ON i.ms_path = m.path
   WHERE m.group_id = '2025-01-15T12:00:00';"""
    )
    assert [tuple(r) for r in products] == [(ms, image)]


def test_round_trips_are_counted(registry):
    before = registry.round_trips
    registry.execute("SELECT 1")
    add_group(registry)
    registry.conn.executemany(
        "UPDATE processing_queue SET last_update = ? WHERE group_id = ?", [(2.0, GID)] * 5
    )
    assert registry.round_trips == before + 3  # a batch is one round trip
