"""The ``dsa110`` command (also ``python -m dsa110_assets``).

Each subcommand is a thin shell over the library: parse arguments, call one function, print.
Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

from dsa110_assets.errors import PipelineError
from dsa110_assets.settings import (
    CLUSTER_TOLERANCE_RULE,
    SETTLE_RULE,
    NumberRule,
    Settings,
    parse_number,
)

EXIT_ERROR = 1


class CommandError(PipelineError):
    """An expected failure with a message for the user."""


def _settings() -> Settings:
    return Settings.from_env().ensure_dirs()


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


# --- what the command prints ----------------------------------------------------------------

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def display_name(text: object) -> str:
    """``text`` (a file name, path, source id, message) made safe to show on a terminal.

    File names are bytes chosen by whoever wrote the file: a newline in one forges extra lines
    in ``normalize -v`` output, an escape sequence reaches the terminal. Every control or
    non-printable character (C0/C1 controls, DEL, bidirectional overrides, line separators,
    zero-width characters) is shown as a Python-style escape (``\\n``, ``\\x1b``,
    ``\\u202e``); bytes that are not UTF-8 (kept by ``os.fsdecode`` as lone surrogates) are
    shown as ``\\xNN``; a backslash is doubled so the escaped form is unambiguous. Printable
    text, including non-ASCII letters, is unchanged.
    """
    value = os.fspath(text) if isinstance(text, os.PathLike) else text
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    value = str(value)
    if value.isprintable() and "\\" not in value:
        return value
    out: list[str] = []
    for ch in value:
        code = ord(ch)
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


class _QuietStdout:
    """``sys.stdout`` that stops writing, silently, once the reader has gone.

    ``dsa110 db info | head -1``: ``head`` exits after one line and the next write (often
    Python's final flush) fails with ``EPIPE``. A reader that has seen enough is not an error:
    further output is dropped (stdout is pointed at ``/dev/null`` so the interpreter's own
    flush at exit cannot fail either) and the command finishes its work and exits normally,
    rather than aborting half way (``simulate`` prints while it writes files).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop_output()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop_output()

    def _drop_output(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# --- validated arguments --------------------------------------------------------------------
#
# Every number and time the command takes goes through one of these argparse types, so a bad
# value is a one-line usage error before anything runs (numbers: settings.parse_number).


def number_arg(rule: NumberRule) -> Callable[[str], int | float]:
    """An argparse ``type`` accepting only what ``rule`` allows (finite, in range, ASCII)."""

    def parse(text: str) -> int | float:
        try:
            return parse_number(text, rule)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "integer" if rule.kind is int else "number"
    return parse


def iso_time_arg(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime: an offset is honoured (converted to UTC),
    a time without one is UTC. Non-ASCII digits and times outside years 1..9999 are refused.
    """
    try:
        if not text.isascii():
            raise ValueError
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time (YYYY-MM-DDTHH:MM:SS, optionally with Z or +HH:MM)"
        ) from None


def iso_date_arg(text: str) -> date:
    """An ISO calendar date, ``YYYY-MM-DD`` (ASCII digits)."""
    try:
        if not text.isascii():
            raise ValueError
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _utc_naive_iso(moment: datetime) -> str:
    """The UTC wall time of ``moment`` without an offset, as group ids and the registry use."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def int_list_arg(rule: NumberRule) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type`` for a comma-separated list of integers, each held to ``rule``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(parse_number(p, rule)) for p in text.split(",") if p.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"in {text!r}: {exc}") from None

    parse.__name__ = "integer list"
    return parse


# Ranges of the options that are not settings (those use the settings' own rules). The
# antenna limit is instrument.N_DATA_ANTENNAS, not imported (numpy at start; a test checks).
N_DATA_ANTENNAS = 96
GROUPS_RULE = NumberRule(int, 1, 10_000)
DEC_RULE = NumberRule(float, -90.0, 90.0)
RA_RULE = NumberRule(float, 0.0, 360.0)
INTERVAL_RULE = NumberRule(float, 0.0, 86_400.0)
ANTENNAS_RULE = NumberRule(int, 2, N_DATA_ANTENNAS)
CHANNELS_RULE = NumberRule(int, 1, 4096)
SEED_RULE = NumberRule(int, 0, 2**32 - 1)
SOURCES_RULE = NumberRule(int, 0, 100_000)
GROUP_INDEX_RULE = NumberRule(int, 0, 9_999)
PB_CUTOFF_RULE = NumberRule(float, 0.0, 1.0, low_open=True, high_open=True)
RADIUS_RULE = NumberRule(float, 0.0, 180.0, low_open=True)
FLUX_RULE = NumberRule(float, 0.0)
LIMIT_RULE = NumberRule(int, 0)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away), names escaped."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {display_name(message)} (see {self.prog} --help)\n")


# --- simulate -----------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from dsa110_assets.simulation import PRESETS, SimulationConfig, simulate_observations

    settings = _settings()
    output_dir = Path(args.output) if args.output else settings.input_dir
    start = args.start
    if args.continue_ and start is None:
        start = _after_latest_group(settings, output_dir)
        if start is not None:
            print(f"continuing after the latest group: start {start:%Y-%m-%dT%H:%M:%S}")
    if any(k >= args.groups for k in args.calibrator_groups):
        raise CommandError(
            f"--calibrator-groups {','.join(map(str, args.calibrator_groups))}: every index "
            f"must be below --groups {args.groups}"
        )
    size = dict(PRESETS[args.preset])
    if args.antennas is not None:
        size["n_antennas"] = args.antennas
    if args.channels is not None:
        size["n_channels"] = args.channels
    config = SimulationConfig(
        output_dir=output_dir,
        truth_dir=Path(args.truth_dir) if args.truth_dir else settings.catalogs_dir / "simulation",
        n_groups=args.groups,
        start=start,
        dec_deg=args.dec,
        seed=args.seed,
        calibrator=None if args.calibrator.lower() == "none" else args.calibrator,
        calibrator_groups=args.calibrator_groups,
        n_background_sources=args.sources,
        field_sources=not args.no_field_sources,
        noise=not args.no_noise,
        corruptions=not args.no_corruptions,
        **size,
    )

    written_bytes: list[int] = []

    def progress(index: int, paths: list[Path]) -> None:
        # Sizes are taken now: once the group is out, ingest may rename its files.
        total = sum(p.stat().st_size for p in paths if p.exists())
        written_bytes.append(total)
        if not args.json:
            print(f"group {index}: wrote {len(paths)} files, {total / 1e6:.1f} MB", flush=True)
        if args.interval and index < args.groups - 1:
            time.sleep(args.interval)  # as the correlator does, one group at a time

    result = simulate_observations(config, on_group_written=progress)
    summary = {
        "output_dir": str(config.output_dir),
        "files": len(result.files),
        "bytes": sum(written_bytes),
        "groups": [
            {
                "index": g.index,
                "start": g.start.isoformat(),
                "files": len(g.files),
                "has_calibrator": g.has_calibrator,
            }
            for g in result.groups
        ],
        "catalog": str(result.catalog_path),
        "truth": str(result.truth_path),
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"simulated {summary['files']} files ({summary['bytes'] / 1e6:.1f} MB) in "
            f"{len(result.groups)} groups into {display_name(config.output_dir)}"
        )
        print(f"sky catalog: {display_name(result.catalog_path)}")
        print(f"truth:       {display_name(result.truth_path)}")
    return 0


def _after_latest_group(settings: Settings, output_dir: Path) -> datetime | None:
    """Start time just after the newest group in the registry or the folder, if any."""
    from dsa110_assets.naming import (
        InvalidSubbandName,
        group_id_to_datetime,
        parse_subband_filename,
    )
    from dsa110_assets.registry import Registry

    latest: list[str] = []
    if settings.db_path.is_file():
        with Registry(settings.db_path, readonly=True) as registry:
            row = registry.execute("SELECT MAX(group_id) FROM processing_queue").fetchone()
            if row[0]:
                latest.append(row[0])
    for path in output_dir.glob("*.hdf5"):
        try:
            latest.append(parse_subband_filename(path.name).timestamp)
        except InvalidSubbandName:
            continue
    if not latest:
        return None
    # One group lasts 24 x 12.884902 s = 309.2 s; leave the next whole minute after it.
    newest = group_id_to_datetime(max(latest)).timestamp() + 309.2 + 60
    return datetime.fromtimestamp(newest - newest % 60, UTC)


# --- normalize ----------------------------------------------------------------------------


def cmd_normalize(args: argparse.Namespace) -> int:
    from dsa110_assets.ingest import normalize_directory
    from dsa110_assets.registry import Registry

    settings = Settings.from_env()
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a folder")
    tolerance = settings.cluster_tolerance_s if args.tolerance is None else args.tolerance
    settle = settings.settle_s if args.settle is None else args.settle
    registry = None
    if args.register:
        settings.ensure_dirs()
        registry = Registry(settings.db_path)
    try:
        stats = normalize_directory(
            directory,
            cluster_tolerance_s=tolerance,
            dry_run=args.dry_run,
            registry=registry,
            settle_s=settle,
            details=args.verbose or args.json,
            expected_subbands=settings.expected_subbands,
        )
    finally:
        if registry is not None:
            registry.close()
    if args.json:
        _print_json(stats)
        return 0
    if args.verbose:
        for f in stats["files"]:
            if f["action"] == "renamed":
                print(
                    f"{'would rename' if args.dry_run else 'renamed'}: {display_name(f['name'])}"
                    f" -> {display_name(f['new_name'])}"
                )
            elif f["action"] not in ("unchanged", "registered"):
                print(
                    f"{display_name(f['action'])}: {display_name(f['name'])}: "
                    f"{display_name(f.get('reason', ''))}"
                )
    verb = "would rename" if args.dry_run else "renamed"
    print(
        f"{stats['files_scanned']} files scanned, {verb} {stats['files_renamed']}, "
        f"{stats['files_unchanged']} already canonical, {stats['groups']} groups "
        f"({stats['groups_created']} new, {stats['groups_completed']} complete), "
        f"{stats['conflicts']} conflicts, {stats['skipped']} skipped"
        + (
            f", {stats['files_registered']} registered in {display_name(settings.db_path)}"
            if registry
            else ""
        )
    )
    return 0


# --- db -----------------------------------------------------------------------------------


def cmd_db_init(args: argparse.Namespace) -> int:
    from dsa110_assets.registry import Registry

    settings = _settings()
    with Registry(settings.db_path) as registry:
        print(
            f"registry {display_name(settings.db_path)} at schema version {registry.schema_version}"
        )
    return 0


def _quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier: double-quoted, inner quotes doubled (never pasted raw)."""
    if "\x00" in name:
        raise CommandError(f"table name {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def _journal_mode(registry: Any) -> str:
    """The registry's journal mode; from the file header when opened ``immutable`` (SQLite
    then reports "delete" whatever the file says).
    """
    if getattr(registry.conn, "immutable", False) and registry.path is not None:
        with open(registry.path, "rb") as fh:
            header = fh.read(20)
        return "wal" if len(header) == 20 and header[18] == 2 else "delete"
    return str(registry.execute("PRAGMA journal_mode").fetchone()[0])


def cmd_db_info(args: argparse.Namespace) -> int:
    from dsa110_assets.registry import LATEST_VERSION, Registry

    settings = Settings.from_env()
    if not settings.db_path.is_file():
        raise CommandError(f"registry {settings.db_path} does not exist (run 'dsa110 db init')")
    # Read-only: works on a registry this user may not write, and cannot change it.
    with Registry(settings.db_path, readonly=True) as registry:
        tables = [
            row[0]
            for row in registry.query(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            )
        ]
        info = {
            "path": str(settings.db_path),
            "bytes": settings.db_path.stat().st_size,
            "schema_version": registry.schema_version,
            "latest_version": LATEST_VERSION,
            "journal_mode": _journal_mode(registry),
            "rows": {
                t: registry.execute(f"SELECT COUNT(*) FROM {_quote_identifier(t)}").fetchone()[0]
                for t in tables
            },
            "settings": dict(settings.as_table()),
        }
    if args.json:
        _print_json(info)
        return 0
    print(
        f"registry:       {display_name(info['path'])} ({info['bytes']} bytes, "
        f"{info['journal_mode']})"
    )
    print(f"schema version: {info['schema_version']} (latest {info['latest_version']})")
    for table, rows in info["rows"].items():
        print(f"  {display_name(table):<20} {rows:>10} rows")
    return 0


# --- query --------------------------------------------------------------------------------


def cmd_query_lightcurve(args: argparse.Namespace) -> int:
    from dsa110_assets.analytics import light_curve

    points = light_curve(Settings.from_env().db_path, args.source)
    if args.json:
        import dataclasses

        _print_json([dataclasses.asdict(p) for p in points])
        return 0
    if not points:
        raise CommandError(f"no photometry for source {args.source!r}")
    print(f"{display_name(args.source)}: {len(points)} epochs")
    for p in points:
        err = f" +/- {p.flux_err_jy * 1e3:.2f}" if p.flux_err_jy is not None else ""
        flux = f"{p.flux_jy * 1e3:9.2f}{err} mJy" if p.flux_jy is not None else "      n/a"
        print(f"  {p.mjd if p.mjd is not None else float('nan'):.5f}  {p.date}  {flux}"
              f"  {display_name(Path(p.image_path).name)}")  # fmt: skip
    return 0


def cmd_db_export(args: argparse.Namespace) -> int:
    from dsa110_assets.analytics import export_parquet

    settings = Settings.from_env()
    out = Path(args.out) if args.out else None
    report = export_parquet(settings, out_dir=out)
    if args.json:
        _print_json(
            {
                t.table: {"rows": t.rows, "bytes": t.bytes, "path": str(t.path)}
                for t in report.tables
            }
        )
        return 0
    print(f"exported to {display_name(report.out_dir)} (Parquet, zstd, Hive-partitioned by date)")
    for t in report.tables:
        print(f"  {t.table:<20} {t.rows:>9} rows {t.bytes / 1e6:>9.2f} MB  {len(t.dates)} dates")
    return 0


def cmd_mosaic_create(args: argparse.Namespace) -> int:
    from dsa110_assets.processing.daily_step import build_range_mosaic

    settings = Settings.from_env().ensure_dirs()
    from dsa110_assets.registry import Registry

    if args.end <= args.start:
        raise CommandError(
            f"--end {args.end.isoformat()} is not after --start {args.start.isoformat()} (UTC)"
        )
    with Registry(settings.db_path) as registry:
        outcome = build_range_mosaic(
            settings,
            registry,
            _utc_naive_iso(args.start),
            _utc_naive_iso(args.end),
            pb_cutoff=args.pb_cutoff,
        )
    r = outcome.result
    print(
        f"mosaic {display_name(r.path)}: {r.n_images} images ({len(r.skipped)} skipped), "
        f"{r.shape[1]}x{r.shape[0]} px, EFFNOISE {r.effective_noise_jy * 1e3:.3f} mJy/beam"
    )
    for path, reason in r.skipped:
        print(f"  skipped {display_name(path)}: {display_name(reason)}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """One daily_products run per date, recorded in the Dagster instance (DAGSTER_HOME) so
    they show in the UI like a backfill launched there; without DAGSTER_HOME an ephemeral
    instance is used.
    """
    import warnings
    from datetime import timedelta

    import dagster as dg

    with warnings.catch_warnings():  # preview/beta notices of the definitions, not news here
        warnings.simplefilter("ignore")
        from dsa110_assets.definitions import defs

    first, last = args.start, args.end
    if last < first:
        raise CommandError(f"--end {last} is before --start {first}")
    days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
    job = defs.resolve_job_def("daily_products")
    failed = []
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    with instance or dg.DagsterInstance.ephemeral() as inst:
        for day in days:
            result = job.execute_in_process(partition_key=day, instance=inst, raise_on_error=False)
            print(f"{day}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
            if not result.success:
                failed.append(day)
    if failed:
        raise CommandError(f"{len(failed)} of {len(days)} days failed: {', '.join(failed)}")
    return 0


def group_id_arg(text: str) -> str:
    """A canonical group_id, ``YYYY-MM-DDTHH:MM:SS`` (ASCII digits, a real time)."""
    from dsa110_assets.naming import validate_group_id

    try:
        return validate_group_id(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_reprocess(args: argparse.Namespace) -> int:
    """Re-run one group by its group_id, also one whose partition was retired.

    Why: only recent groups keep a ``group_id`` partition (partition_retirement_sensor), so
    an old group is not in the UI's partition list. Its registry rows and files stay; this
    re-adds its partition (its earlier runs and materializations show again) and runs
    ``process_group`` for it in the ``DAGSTER_HOME`` instance, so the run is recorded where
    the UI shows it. A completed conversion whose MS is in place is reused; the later stages
    run again and replace their products and rows. A failed group retries only while its
    queue retries last.
    """
    import warnings

    import dagster as dg

    from dsa110_assets.partition_retirement import group_record
    from dsa110_assets.registry import Registry

    settings = Settings.from_env()
    group_id = args.group_id
    if not settings.db_path.is_file():
        raise CommandError(f"registry {settings.db_path} does not exist (run 'dsa110 db init')")
    with Registry(settings.db_path, readonly=True) as registry:
        record = group_record(registry, group_id)
    if record is None:
        raise CommandError(f"{group_id} is not in the registry's processing_queue")
    print(
        f"{group_id}: {record.state} (retries {record.retry_count}), "
        f"{record.subband_files} subband files"
        + (f"; last error: {display_name(record.error_message)}" if record.error_message else "")
    )
    with warnings.catch_warnings():  # preview/beta notices of the definitions, not news here
        warnings.simplefilter("ignore")
        from dsa110_assets.definitions import PER_GROUP_GROUPS, defs
        from dsa110_assets.defs.partitions import group_id_partitions

    job = defs.resolve_job_def("process_group")
    selection = None
    if args.assets:
        known = {key.to_user_string(): key for key in job.asset_layer.executable_asset_keys}
        wanted = [name.strip() for name in args.assets.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in known]
        if unknown or not wanted:
            raise CommandError(
                f"--assets: {', '.join(unknown) or 'nothing given'} not in process_group "
                f"(choose from {', '.join(sorted(known))})"
            )
        selection = [known[name] for name in wanted]
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    if instance is None:
        print("DAGSTER_HOME is not set: an ephemeral instance; the UI will not show this run")
    with instance or dg.DagsterInstance.ephemeral() as inst:
        if inst.has_dynamic_partition(group_id_partitions.name, group_id):
            print(f"partition {group_id} exists")
        else:
            inst.add_dynamic_partitions(group_id_partitions.name, [group_id])
            print(f"partition {group_id} re-added")
        if args.partition_only:
            groups = " or ".join(f"group:{g}" for g in PER_GROUP_GROUPS)
            print(
                f"launch it from the UI (job process_group, partition {group_id}) or: "
                f"dagster asset materialize -m dsa110_assets.definitions --select "
                f"'{groups}' --partition {group_id}"
            )
            return 0
        result = job.execute_in_process(
            partition_key=group_id,
            instance=inst,
            asset_selection=selection,
            raise_on_error=False,
            tags={"group_id": group_id, "dsa110/reprocess": "cli"},
        )
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise CommandError(
            f"{group_id}: run {result.run_id} failed"
            + (f" in {', '.join(sorted(set(failed)))}" if failed else "")
        )
    materialized = sorted(
        {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    )
    print(f"{group_id}: ok (run {result.run_id}); materialized {', '.join(materialized)}")
    return 0


def cmd_query_stats(args: argparse.Namespace) -> int:
    from dsa110_assets.analytics import pipeline_stats

    stats = pipeline_stats(Settings.from_env())
    if args.json:
        _print_json(stats)
        return 0
    print(f"registry: {display_name(stats['registry'])}")
    print(
        "groups by state: "
        + (
            ", ".join(f"{display_name(k)}={v}" for k, v in stats["groups_by_state"].items())
            or "none"
        )
    )
    print("products: " + ", ".join(f"{k}={v}" for k, v in stats["products"].items()))
    for day in stats["per_day"]:
        print(
            f"  {day['date']}: {day['groups']} groups, {day['subband_files']} subband files,"
            f" {day['ms']} measurement sets"
        )
    for tier, usage in stats["bytes_per_tier"].items():
        print(
            f"  {tier:<13} {usage['bytes'] / 1e6:>10.1f} MB in {usage['files']:>6} files"
            f"  {display_name(usage['path'])}"
        )
    return 0


# --- catalog ------------------------------------------------------------------------------


def cmd_catalog_ingest(args: argparse.Namespace) -> int:
    from dsa110_assets.catalogs import ingest_survey

    settings = _settings()
    report = ingest_survey(
        args.survey, Path(args.file), settings.catalogs_dir, strip_width_deg=args.strip_width
    )
    if args.json:
        _print_json(
            {
                "survey": report.survey,
                "file": str(report.file),
                "rows": report.n_rows,
                "sources": report.n_sources,
                "skipped": report.n_skipped,
                "rejected": report.rejected,
                "duplicates": report.n_duplicates,
                "examples": report.examples,
                "strips": [str(p) for p in report.strips],
                "removed_strips": [str(p) for p in report.removed_strips],
                "strip_width_deg": report.strip_width_deg,
                "seconds": round(report.elapsed_s, 3),
            }
        )
        return 0
    print(
        f"ingested {report.n_sources} {report.survey} sources from {display_name(report.file)}"
        f" into {len(report.strips)} strips of {report.strip_width_deg:g} deg in "
        f"{display_name(settings.catalogs_dir)} ({report.n_skipped} rows skipped, "
        f"{report.elapsed_s:.1f} s)"
    )
    for reason, count in report.rejected.items():
        example = report.examples.get(reason)
        print(
            f"  skipped {count} rows: {display_name(reason)}"
            + (f" (first: {display_name(example)})" if example else "")
        )
    return 0


def cmd_catalog_calibrators(args: argparse.Namespace) -> int:
    from dsa110_assets.catalogs import build_calibrator_db, ensure_calibrator_db, load_calibrators
    from dsa110_assets.catalogs.vla import DB_FILENAME

    settings = _settings()
    if args.build:
        path = build_calibrator_db(settings.catalogs_dir / DB_FILENAME)
    else:
        path = ensure_calibrator_db(settings.catalogs_dir)
    calibrators = sorted(load_calibrators(path), key=lambda c: c.ra_deg)
    if args.json:
        _print_json(
            {
                "database": str(path),
                "calibrators": [
                    {
                        "name": c.name,
                        "ra_deg": c.ra_deg,
                        "dec_deg": c.dec_deg,
                        "flux_1400_jy": c.flux_1400_jy,
                        "spectral_index": c.spectral_index,
                    }
                    for c in calibrators
                ],
            }
        )
        return 0
    print(f"{len(calibrators)} VLA calibrators in {display_name(path)}")
    print(f"  {'name':<12} {'ra_deg':>11} {'dec_deg':>11} {'S1.4/Jy':>8} {'alpha':>6}")
    for c in calibrators:
        print(
            f"  {display_name(c.name):<12} {c.ra_deg:>11.6f} {c.dec_deg:>+11.6f}"
            f" {c.flux_1400_jy:>8.2f} {c.spectral_index:>6.2f}"
        )
    return 0


def cmd_catalog_cone(args: argparse.Namespace) -> int:
    from dsa110_assets.catalogs import cone_search

    settings = Settings.from_env()
    sources = cone_search(
        settings.catalogs_dir,
        args.survey,
        args.ra,
        args.dec,
        args.radius,
        min_flux_jy=args.min_flux,
    )
    shown = sources if args.limit is None else sources[: args.limit]
    if args.json:
        _print_json(
            {
                "survey": args.survey,
                "ra_deg": args.ra,
                "dec_deg": args.dec,
                "radius_deg": args.radius,
                "count": len(sources),
                "sources": [
                    {
                        "source_id": s.source_id,
                        "ra_deg": s.ra_deg,
                        "dec_deg": s.dec_deg,
                        "flux_jy": s.flux_jy,
                        "flux_err_jy": s.flux_err_jy,
                        "major_arcsec": s.major_arcsec,
                        "minor_arcsec": s.minor_arcsec,
                        "pa_deg": s.pa_deg,
                        "separation_deg": s.separation_deg,
                    }
                    for s in shown
                ],
            }
        )
        return 0
    print(
        f"{len(sources)} {args.survey} sources within {args.radius:g} deg of "
        f"RA {args.ra:g}, Dec {args.dec:+g}"
        + (f" (showing {len(shown)})" if shown != sources else "")
    )
    for s in shown:
        print(
            f"  {display_name(s.source_id):<24} {s.ra_deg:>11.6f} {s.dec_deg:>+11.6f}"
            f" {s.flux_jy * 1e3:>10.2f} mJy {s.separation_deg:>8.4f} deg"
        )
    return 0


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dsa110",
        description="DSA-110 continuum pipeline platform. Configuration comes from PIPELINE_* "
        "environment variables (see README); defaults live in the checkout.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser(
        "simulate",
        help="write simulated correlator UVH5 files",
        description="Simulate DSA-110 correlator output: 16 UVH5 subband files "
        "per ~5-minute group, with a sky catalog and the true corruptions.",
    )
    sim.add_argument(
        "--groups", type=number_arg(GROUPS_RULE), default=1, help="number of groups (default 1)"
    )
    sim.add_argument(
        "--start",
        type=iso_time_arg,
        help="start, ISO format; UTC unless it carries an offset (default: calibrator transit)",
    )
    sim.add_argument(
        "--dec",
        type=number_arg(DEC_RULE),
        help="pointing declination in degrees (default: the calibrator's)",
    )
    sim.add_argument(
        "--interval",
        type=number_arg(INTERVAL_RULE),
        default=0.0,
        metavar="S",
        help="seconds to wait between groups, to drip files in like the correlator",
    )
    sim.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="start after the newest group already registered or on disk",
    )
    sim.add_argument(
        "--preset",
        choices=("full", "small"),
        default="full",
        help="full: 96 antennas x 48 channels (~140 MB/file); small: tests/demos",
    )
    sim.add_argument(
        "--antennas",
        type=number_arg(ANTENNAS_RULE),
        help=f"number of antennas, 2..{N_DATA_ANTENNAS} (overrides the preset)",
    )
    sim.add_argument(
        "--channels",
        type=number_arg(CHANNELS_RULE),
        help="channels per subband (overrides the preset)",
    )
    sim.add_argument(
        "--seed",
        type=number_arg(SEED_RULE),
        default=42,
        help="random seed (same seed, same bytes)",
    )
    sim.add_argument(
        "--calibrator", default="3C286", help="VLA calibrator in the sky, or 'none' (default 3C286)"
    )
    sim.add_argument(
        "--calibrator-groups",
        type=int_list_arg(GROUP_INDEX_RULE),
        default=(0,),
        help="comma-separated group indices centred on the calibrator transit",
    )
    sim.add_argument(
        "--sources", type=number_arg(SOURCES_RULE), default=20, help="background point sources"
    )
    sim.add_argument(
        "--no-field-sources",
        action="store_true",
        help="leave out the eight sources placed in every quadrant around each pointing",
    )
    sim.add_argument("--no-noise", action="store_true", help="no thermal noise")
    sim.add_argument("--no-corruptions", action="store_true", help="no gain/bandpass errors")
    sim.add_argument("--output", help="output folder (default: PIPELINE_INPUT_DIR)")
    sim.add_argument("--truth-dir", help="catalog/truth folder (default: STATE/simulation)")
    sim.add_argument("--json", action="store_true", help="print a JSON summary")
    sim.set_defaults(func=cmd_simulate)

    norm = sub.add_parser(
        "normalize",
        help="rename subband files to their canonical group_id",
        description="Normalize subband file names in DIR to the canonical "
        "group_id and register them. Never overwrites or deletes a file.",
    )
    norm.add_argument("directory", metavar="DIR", help="input folder")
    norm.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    norm.add_argument("--verbose", "-v", action="store_true", help="list every file's outcome")
    norm.add_argument(
        "--tolerance",
        type=number_arg(CLUSTER_TOLERANCE_RULE),
        metavar="S",
        help="clustering tolerance in seconds, > 0 and <= 300 (default PIPELINE_CLUSTER_"
        "TOLERANCE_S, 60)",
    )
    norm.add_argument(
        "--settle",
        type=number_arg(SETTLE_RULE),
        metavar="S",
        help="skip files modified less than S seconds ago (default 5)",
    )
    norm.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="rename only; do not touch the registry",
    )
    norm.add_argument("--json", action="store_true", help="print the stats as JSON")
    norm.set_defaults(func=cmd_normalize)

    db = sub.add_parser("db", help="the pipeline.sqlite3 registry")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = db_sub.add_parser(
        "init",
        help="create or upgrade the registry",
        description="Create pipeline.sqlite3 or apply pending migrations.",
    )
    init.set_defaults(func=cmd_db_init)
    info = db_sub.add_parser(
        "info",
        help="schema version and row counts",
        description="Show the registry's path, schema version, rows.",
    )
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_db_info)

    query = sub.add_parser("query", help="analytics over the registry (DuckDB)")
    q_sub = query.add_subparsers(dest="query_command", required=True, metavar="QUERY")
    stats = q_sub.add_parser(
        "stats",
        help="counts by state, products per day, bytes per tier",
        description="Pipeline statistics read through DuckDB.",
    )
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_query_stats)
    lc = q_sub.add_parser(
        "lightcurve",
        help="one source's forced-photometry light curve",
        description="Every epoch of SOURCE (catalog source id) in the photometry table.",
    )
    lc.add_argument("source")
    lc.add_argument("--json", action="store_true")
    lc.set_defaults(func=cmd_query_lightcurve)

    export = db_sub.add_parser(
        "export",
        help="write the registry and photometry to Parquet in the archive tier",
        description="DuckDB COPY of the registry tables to ARCHIVE/parquet/{table}/date=.../ "
        "(zstd, Hive-partitioned by UTC date); each table is swapped in atomically.",
    )
    export.add_argument("--out", help="folder (default: ARCHIVE/parquet)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_db_export)

    backfill = sub.add_parser(
        "backfill",
        help="re-make the daily products (mosaic, photometry, light curves) for a date range",
        description="Runs the daily_products job once per UTC date from --start to --end "
        "(inclusive); re-running a day replaces its products and registry rows.",
    )
    backfill.add_argument(
        "--start", required=True, type=iso_date_arg, help="first date, YYYY-MM-DD"
    )
    backfill.add_argument(
        "--end", required=True, type=iso_date_arg, help="last date, YYYY-MM-DD (inclusive)"
    )
    backfill.set_defaults(func=cmd_backfill)

    reprocess = sub.add_parser(
        "reprocess",
        help="re-run one group by group_id (also one whose partition was retired)",
        description="Re-adds GROUP_ID's group_id partition if it was retired and runs "
        "process_group for it in DAGSTER_HOME's instance (so the UI shows the run). A "
        "completed conversion is reused, later stages run again; registry rows and files of "
        "the group are never removed.",
    )
    reprocess.add_argument("group_id", type=group_id_arg, metavar="GROUP_ID")
    reprocess.add_argument(
        "--assets",
        metavar="KEYS",
        help="comma-separated asset keys of process_group to run (default: all of them)",
    )
    reprocess.add_argument(
        "--partition-only",
        action="store_true",
        help="only re-add the partition (then launch from the UI or 'dagster asset materialize')",
    )
    reprocess.set_defaults(func=cmd_reprocess)

    mosaic = sub.add_parser("mosaic", help="mosaics on demand")
    m_sub = mosaic.add_subparsers(dest="mosaic_command", required=True, metavar="ACTION")
    create = m_sub.add_parser(
        "create",
        help="mosaic every image between two times",
        description="Primary-beam-weighted mosaic of the images whose group_id lies in "
        "[START, END), written to PRODUCTS/mosaics/{START}_{END}.fits and registered.",
    )
    create.add_argument(
        "--start",
        required=True,
        type=iso_time_arg,
        help="ISO time, e.g. 2026-01-15T00:00:00; UTC unless it carries an offset (+05:00, Z)",
    )
    create.add_argument(
        "--end", required=True, type=iso_time_arg, help="ISO time (exclusive), as --start"
    )
    create.add_argument(
        "--pb-cutoff",
        type=number_arg(PB_CUTOFF_RULE),
        default=0.2,
        help="primary-beam cutoff, in (0, 1) (default 0.2)",
    )
    create.set_defaults(func=cmd_mosaic_create)

    _add_catalog_parser(sub)
    return parser


# Same values as dsa110_assets.catalogs.survey.SURVEYS / DEFAULT_STRIP_WIDTH_DEG (a test checks);
# not imported here because the catalogs package needs numpy, 0.3 s on every command's start.
SURVEYS = ("nvss", "first", "vlass")
DEFAULT_STRIP_WIDTH_DEG = 1.0
MIN_STRIP_WIDTH_DEG = 0.2
STRIP_WIDTH_RULE = NumberRule(float, MIN_STRIP_WIDTH_DEG, 180.0)


def _add_catalog_parser(sub: Any) -> None:
    catalog = sub.add_parser("catalog", help="survey catalogs and the VLA calibrator list")
    c_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    ingest = c_sub.add_parser(
        "ingest",
        help="load a survey catalog file into declination strips",
        description="Load an NVSS, FIRST or VLASS catalog (FITS or CSV) into "
        "STATE/catalogs/{survey}_dec{+XX.X}.sqlite3 strips, replacing the survey's previous "
        "strips.",
    )
    ingest.add_argument("--survey", required=True, choices=SURVEYS, help="which survey")
    ingest.add_argument("file", metavar="FILE", help="catalog file (.fits or .csv)")
    ingest.add_argument(
        "--strip-width",
        type=number_arg(STRIP_WIDTH_RULE),
        default=DEFAULT_STRIP_WIDTH_DEG,
        metavar="DEG",
        help=f"declination strip width in degrees (default {DEFAULT_STRIP_WIDTH_DEG:g})",
    )
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.set_defaults(func=cmd_catalog_ingest)

    cals = c_sub.add_parser(
        "calibrators",
        help="build and list the VLA calibrator database",
        description="List the VLA calibrators in STATE/catalogs/vla_calibrators.sqlite3, "
        "building it from the packaged list if missing or out of date.",
    )
    cals.add_argument("--build", action="store_true", help="rebuild the database first")
    cals.add_argument("--json", action="store_true", help="print the list as JSON")
    cals.set_defaults(func=cmd_catalog_calibrators)

    cone = c_sub.add_parser(
        "cone",
        help="sources of a survey around a position",
        description="Cone search an ingested survey; sources brightest first.",
    )
    cone.add_argument("--survey", required=True, choices=SURVEYS, help="which survey")
    cone.add_argument(
        "ra", type=number_arg(RA_RULE), metavar="RA", help="right ascension (deg, J2000, 0..360)"
    )
    cone.add_argument(
        "dec", type=number_arg(DEC_RULE), metavar="DEC", help="declination (deg, J2000)"
    )
    cone.add_argument(
        "radius", type=number_arg(RADIUS_RULE), metavar="RADIUS", help="radius (deg, (0, 180])"
    )
    cone.add_argument(
        "--min-flux", type=number_arg(FLUX_RULE), default=0.0, metavar="JY", help="in Jy"
    )
    cone.add_argument(
        "--limit", type=number_arg(LIMIT_RULE), metavar="N", help="show at most N (>= 0) sources"
    )
    cone.add_argument("--json", action="store_true", help="print the sources as JSON")
    cone.set_defaults(func=cmd_catalog_cone)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout, quiet = sys.stdout, _QuietStdout(sys.stdout)
    sys.stdout = quiet
    try:
        status = int(args.func(args) or 0)
        quiet.flush()  # inside the guard: a reader that left early is not an error
        return status
    except KeyboardInterrupt:
        print(f"dsa110 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("DSA110_DEBUG"):
            raise
        expected = (PipelineError, ValueError, OSError, sqlite3.Error)
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, expected):
            message = f"{type(exc).__name__}: {message} (set DSA110_DEBUG=1 for a traceback)"
        # One line, whatever the message quotes (file names, catalog values).
        print(f"dsa110 {args.command}: error: {display_name(message)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    raise SystemExit(main())
