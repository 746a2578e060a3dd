"""Numbered schema migrations for ``pipeline.sqlite3``.

Each migration is a list of statements applied in one transaction; ``schema_version`` records
which have run, so an existing database upgrades in place and re-opening is a no-op. Never
edit a released migration: append a new one.

Migration 1 is the storage architecture's schema (``processing_queue``, ``subband_files``,
``ms_index`` exactly as documented, plus ``images``, ``calibration_tables``, ``photometry`` and
``mosaics`` designed from it and the instrument facts). Migration 2 adds ingest bookkeeping,
3 the missing subbands of partial groups, 4 calibration/imaging bookkeeping and the outcome of
every stage after conversion (``stage_status``), 5 the beam response each calibration table was
solved at (so the apply step can take the bandpass from the best-placed calibrator group; rows
of older databases are filled from ``processing_queue.calibrators``) and the FIELD named after
the calibrator in a calibrator group's MS, 6 each group's observation start (ingest groups
files by their content time) and ``ingest_rejects`` (files ingest refused: unreadable, content
of another observation than the name, or a per-file error), one row per path, 7 how each
group was calibrated over a day, 8 the flagging summary of each group's flagging steps and
the self-calibration rounds of its image, 9 when a product row's file was found missing
(``missing_since``, set and cleared by ``dsa110 storage gc``).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema change: its version, name and SQL, applied once in order."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "storage architecture core tables",
        (
            """
            CREATE TABLE processing_queue (
                group_id TEXT PRIMARY KEY,
                state TEXT NOT NULL CHECK (state IN
                    ('collecting', 'pending', 'in_progress', 'completed', 'failed')),
                received_at REAL NOT NULL,        -- Unix time of first subband
                last_update REAL NOT NULL,        -- Unix time of last update
                expected_subbands INTEGER,        -- usually 16
                retry_count INTEGER DEFAULT 0,    -- retry attempts (max 3)
                error TEXT,                       -- error type if failed
                error_message TEXT,               -- full error message
                processing_stage TEXT,            -- current pipeline stage
                has_calibrator INTEGER,           -- 1 if calibrator detected
                calibrators TEXT                  -- JSON list of calibrator names
            )
            """,
            """
            CREATE TABLE subband_files (
                group_id TEXT NOT NULL,
                subband_idx INTEGER NOT NULL CHECK (subband_idx BETWEEN 0 AND 15),
                path TEXT NOT NULL UNIQUE,
                PRIMARY KEY (group_id, subband_idx),
                FOREIGN KEY (group_id) REFERENCES processing_queue(group_id)
            )
            """,
            """
            CREATE TABLE ms_index (
                path TEXT PRIMARY KEY,            -- full path to .ms directory
                group_id TEXT REFERENCES processing_queue(group_id),
                start_mjd REAL,
                end_mjd REAL,
                mid_mjd REAL,
                status TEXT,
                stage TEXT,
                cal_applied INTEGER DEFAULT 0,
                field_name TEXT,
                pointing_ra_deg REAL,
                pointing_dec_deg REAL,
                created_at REAL
            )
            """,
            "CREATE INDEX ms_index_group ON ms_index(group_id)",
            """
            CREATE TABLE images (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                path TEXT NOT NULL UNIQUE,        -- FITS file
                ms_path TEXT REFERENCES ms_index(path),
                group_id TEXT REFERENCES processing_queue(group_id),
                image_type TEXT NOT NULL,         -- image/residual/model/psf/dirty/pb/pbcor
                field_name TEXT,
                center_ra_deg REAL,
                center_dec_deg REAL,
                freq_hz REAL,                     -- reference frequency
                bandwidth_hz REAL,
                beam_major_arcsec REAL,           -- restoring beam FWHM
                beam_minor_arcsec REAL,
                beam_pa_deg REAL,
                noise_jy REAL,                    -- robust rms, Jy/beam
                peak_jy REAL,
                dynamic_range REAL,               -- peak / noise
                image_size INTEGER,               -- pixels per side
                cell_arcsec REAL,
                cal_applied INTEGER DEFAULT 0,
                thumbnail_path TEXT,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX images_ms ON images(ms_path)",
            "CREATE INDEX images_group ON images(group_id)",
            """
            CREATE TABLE calibration_tables (
                path TEXT PRIMARY KEY,            -- CASA calibration table directory
                group_id TEXT REFERENCES processing_queue(group_id),
                table_type TEXT NOT NULL CHECK (table_type IN ('bandpass', 'gain')),
                calibrator TEXT,                  -- calibrator the solution was made on
                refant TEXT,                      -- reference antenna
                valid_start_mjd REAL NOT NULL,    -- validity window
                valid_end_mjd REAL NOT NULL,
                solution_interval_s REAL,
                n_antennas INTEGER,
                flagged_fraction REAL,            -- fraction of failed solutions
                status TEXT NOT NULL DEFAULT 'valid',
                created_at REAL NOT NULL,
                CHECK (valid_end_mjd >= valid_start_mjd)
            )
            """,
            """
            CREATE INDEX calibration_tables_validity
                ON calibration_tables(table_type, valid_start_mjd, valid_end_mjd)
            """,
            """
            CREATE TABLE photometry (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                source_id TEXT NOT NULL,          -- catalog source name
                catalog TEXT,                     -- nvss/first/vlass
                ra_deg REAL NOT NULL,
                dec_deg REAL NOT NULL,
                image_path TEXT NOT NULL,         -- image or mosaic measured
                group_id TEXT,
                mjd REAL,                         -- epoch of the image
                peak_flux_jy REAL,
                peak_flux_err_jy REAL,
                flux_jy REAL,                     -- forced-fit flux density
                flux_err_jy REAL,
                local_rms_jy REAL,                -- annulus rms
                catalog_flux_jy REAL,
                chi2 REAL,
                pb_response REAL,                 -- primary beam at the source
                created_at REAL NOT NULL,
                UNIQUE (source_id, image_path)
            )
            """,
            "CREATE INDEX photometry_source ON photometry(source_id, mjd)",
            "CREATE INDEX photometry_image ON photometry(image_path)",
            """
            CREATE TABLE mosaics (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                path TEXT NOT NULL UNIQUE,
                weights_path TEXT,
                date TEXT,                        -- YYYY-MM-DD (UTC) of a daily mosaic
                start_mjd REAL,
                end_mjd REAL,
                dec_strip_deg REAL,
                n_images INTEGER,                 -- image count
                images TEXT,                      -- JSON list of image paths used
                effective_noise_jy REAL,          -- EFFNOISE
                method TEXT,
                thumbnail_path TEXT,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX mosaics_date ON mosaics(date)",
        ),
    ),
    Migration(
        2,
        "ingest bookkeeping: file sizes, original names, conflicts",
        (
            "ALTER TABLE subband_files ADD COLUMN original_name TEXT",
            "ALTER TABLE subband_files ADD COLUMN size_bytes INTEGER",
            "ALTER TABLE subband_files ADD COLUMN registered_at REAL",
            "CREATE INDEX processing_queue_state ON processing_queue(state, last_update)",
            """
            CREATE TABLE ingest_conflicts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                path TEXT NOT NULL,               -- the file left alone
                group_id TEXT,
                subband_idx INTEGER,
                existing_path TEXT,               -- the file already holding the slot
                reason TEXT NOT NULL,
                detected_at REAL NOT NULL,
                UNIQUE (path, existing_path)
            )
            """,
        ),
    ),
    Migration(
        3,
        "partial groups: which subbands were missing when a group stopped waiting",
        ("ALTER TABLE processing_queue ADD COLUMN missing_subbands TEXT",),  # JSON list
    ),
    Migration(
        4,
        "calibration and imaging: what was applied to each MS, and each stage's outcome",
        (
            "ALTER TABLE ms_index ADD COLUMN cal_status TEXT",  # applied/uncalibrated
            "ALTER TABLE ms_index ADD COLUMN bandpass_table TEXT",
            "ALTER TABLE ms_index ADD COLUMN gain_table TEXT",
            "ALTER TABLE ms_index ADD COLUMN phased_field TEXT",  # field all rows are phased to
            "ALTER TABLE images ADD COLUMN expected_noise_jy REAL",  # radiometer equation
            """
            CREATE TABLE stage_status (
                group_id TEXT NOT NULL REFERENCES processing_queue(group_id),
                stage TEXT NOT NULL,              -- calibrate/apply/image/thumbnail/...
                status TEXT NOT NULL CHECK (status IN
                    ('running', 'done', 'waiting', 'skipped', 'failed')),
                detail TEXT,                      -- what happened, or the error message
                error TEXT,                       -- error type when failed
                updated_at REAL NOT NULL,
                PRIMARY KEY (group_id, stage)
            )
            """,
        ),
    ),
    Migration(
        5,
        "calibrator beam response of each calibration table; the MS field named after it",
        (
            # Airy power beam at the calibrator's closest approach to the pointing in the group
            "ALTER TABLE calibration_tables ADD COLUMN beam_response REAL",
            # Tables registered before: the response detection recorded for that calibrator.
            """
            UPDATE calibration_tables SET beam_response = (
                SELECT json_extract(c.value, '$.beam_response')
                FROM processing_queue q, json_each(
                    CASE WHEN json_valid(q.calibrators) THEN q.calibrators ELSE '[]' END
                ) c
                WHERE q.group_id = calibration_tables.group_id
                  AND json_extract(c.value, '$.name') = calibration_tables.calibrator
            )
            WHERE beam_response IS NULL
            """,
            "ALTER TABLE ms_index ADD COLUMN calibrator_field TEXT",  # FIELD NAME, e.g. 3C286
            "ALTER TABLE ms_index ADD COLUMN calibrator_field_id INTEGER",  # its FIELD row
        ),
    ),
    Migration(
        6,
        "ingest: each group's observation start (content time); files ingest refused",
        (
            # Unix seconds, UTC: the first integration's start in the files' time_array;
            # groups cluster on it (NULL for groups registered before: read from a file).
            "ALTER TABLE processing_queue ADD COLUMN obs_start REAL",
            """
            CREATE TABLE ingest_rejects (
                path TEXT PRIMARY KEY,            -- the file left alone, where it was seen
                subband_idx INTEGER,
                kind TEXT NOT NULL CHECK (kind IN ('unreadable', 'mismatch', 'error')),
                reason TEXT NOT NULL,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        7,
        "calibration over a day: how each group was calibrated, and field-model solutions",
        (
            # calibrator / interpolated / nearest / field-model / uncalibrated (quick look)
            "ALTER TABLE ms_index ADD COLUMN cal_method TEXT",
            # hours between the group and the gain solution applied (nearest one if two)
            "ALTER TABLE ms_index ADD COLUMN cal_age_h REAL",
            # JSON: tables, solves, ages and bandpass origin of the choice
            "ALTER TABLE ms_index ADD COLUMN cal_choice TEXT",
            # what a solution was solved against: 'calibrator' (usable by every group in its
            # window) or 'field-model' (the group's own catalog sky; that group only)
            "ALTER TABLE calibration_tables ADD COLUMN solved_against TEXT"
            " NOT NULL DEFAULT 'calibrator'",
            "UPDATE ms_index SET cal_method = CASE WHEN cal_applied = 1 THEN 'calibrator'"
            " ELSE 'uncalibrated' END WHERE cal_status IS NOT NULL AND cal_method IS NULL",
        ),
    ),
    Migration(
        8,
        "flagging and self-calibration: what each flagging step flagged, each self-cal round",
        (
            # fraction of visibility samples flagged after the group's flagging asset
            "ALTER TABLE ms_index ADD COLUMN flagged_fraction REAL",
            """
            CREATE TABLE flag_summary (
                group_id TEXT NOT NULL REFERENCES processing_queue(group_id),
                step TEXT NOT NULL,               -- quality/aoflagger/calibration/...
                version_before TEXT,              -- flag version saved before the step
                fraction_before REAL NOT NULL,    -- of all visibility samples
                fraction_after REAL NOT NULL,
                per_spw TEXT,                     -- JSON: fraction flagged per window
                per_antenna TEXT,                 -- JSON: {antenna name: fraction}
                per_integration TEXT,             -- JSON: fraction per integration
                detail TEXT,                      -- JSON: what the step found
                duration_s REAL,
                created_at REAL NOT NULL,
                PRIMARY KEY (group_id, step)
            )
            """,
            # 1 when the image registered for the group is the self-calibrated one
            "ALTER TABLE images ADD COLUMN selfcal_applied INTEGER DEFAULT 0",
            """
            CREATE TABLE selfcal_rounds (
                group_id TEXT NOT NULL REFERENCES processing_queue(group_id),
                round INTEGER NOT NULL,           -- 1, 2, ...
                mode TEXT NOT NULL CHECK (mode IN ('phase', 'amplitude+phase')),
                solint_s REAL NOT NULL,           -- solution interval
                noise_before_jy REAL,             -- residual robust rms before the round
                noise_after_jy REAL,
                dynamic_range_before REAL,
                dynamic_range_after REAL,
                accepted INTEGER NOT NULL,        -- 1: the round's image was kept
                reason TEXT,                      -- why accepted, rejected or stopped
                solutions TEXT,                   -- JSON: per-antenna phase/amplitude summary
                created_at REAL NOT NULL,
                PRIMARY KEY (group_id, round)
            )
            """,
        ),
    ),
    Migration(
        9,
        "storage lifecycle: when each product row's file was found missing",
        # Unix time the garbage collection first found the row's file gone (NULL: present);
        # the row is kept, so the product's history stays.
        tuple(
            f"ALTER TABLE {table} ADD COLUMN missing_since REAL"
            for table in ("ms_index", "images", "calibration_tables", "mosaics")
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: sqlite3.Connection) -> int:
    """Return the highest applied migration, 0 for an empty database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


class SchemaTooNew(sqlite3.DatabaseError):
    """The database was migrated by newer code than this; using it could corrupt it."""


def check_version(conn: sqlite3.Connection, where: object = "the registry") -> int:
    """Return the database's schema version, refusing one newer than :data:`LATEST_VERSION`.

    Newer code may have changed tables, constraints or meanings this code knows nothing of:
    reading could misreport and writing could break the newer code's invariants, so the only
    safe answer is to stop and say which versions meet.

    Raises
    ------
    SchemaTooNew
        Naming ``where``, its version and the newest version this code knows.
    """
    version = current_version(conn)
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{where} has schema version {version}, newer than this code's {LATEST_VERSION}:"
            " refusing to open it (upgrade dsa110_assets)"
        )
    return version


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> list[int]:
    """Apply pending migrations up to ``target`` in one write transaction each.

    The connection must be in autocommit mode (``isolation_level=None``). Returns the versions
    applied. Safe when several processes open the database at once: the version is re-read
    under the write lock.
    """
    check_version(conn)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            if current_version(conn) >= migration.version:
                conn.execute("COMMIT")
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
