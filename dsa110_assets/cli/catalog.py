"""``dsa110 catalog``: survey catalogs (ingest, cone search) and the VLA calibrator list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsa110_assets.catalogs.survey import DEFAULT_STRIP_WIDTH_DEG, MIN_STRIP_WIDTH_DEG, SURVEYS
from dsa110_assets.cli.arguments import (
    DEC_RULE,
    FLUX_RULE,
    LIMIT_RULE,
    RA_RULE,
    RADIUS_RULE,
    add_actions,
    add_command,
    add_json,
    add_number,
)
from dsa110_assets.cli.common import tier_settings
from dsa110_assets.cli.display import display_name, print_json
from dsa110_assets.settings import NumberRule, Settings

STRIP_WIDTH_RULE = NumberRule(float, MIN_STRIP_WIDTH_DEG, 180.0)


def add_catalog_parser(sub: Any) -> None:
    """Add ``catalog`` with ``ingest``, ``calibrators`` and ``cone`` to ``sub``."""
    catalog = add_command(sub, "catalog", None, help="survey catalogs and the VLA calibrator list")
    actions = add_actions(catalog, "catalog_command", "ACTION")
    _add_ingest(actions)
    cals = add_command(
        actions,
        "calibrators",
        cmd_catalog_calibrators,
        help="build and list the VLA calibrator database",
        description="List the VLA calibrators in STATE/catalogs/vla_calibrators.sqlite3, "
        "building it from the packaged list if missing or out of date.",
    )
    cals.add_argument("--build", action="store_true", help="rebuild the database first")
    add_json(cals, "print the list as JSON")
    _add_cone(actions)


def _add_survey(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--survey", required=True, choices=SURVEYS, help="which survey")


def _add_ingest(actions: Any) -> None:
    ingest = add_command(
        actions,
        "ingest",
        cmd_catalog_ingest,
        help="load a survey catalog file into declination strips",
        description="Load an NVSS, FIRST or VLASS catalog (FITS or CSV) into "
        "STATE/catalogs/{survey}_dec{+XX.X}.sqlite3 strips, replacing the survey's previous "
        "strips.",
    )
    _add_survey(ingest)
    ingest.add_argument("file", metavar="FILE", help="catalog file (.fits or .csv)")
    add_number(
        ingest,
        "--strip-width",
        STRIP_WIDTH_RULE,
        f"declination strip width in degrees (default {DEFAULT_STRIP_WIDTH_DEG:g})",
        default=DEFAULT_STRIP_WIDTH_DEG,
        metavar="DEG",
    )
    add_json(ingest, "print the report as JSON")


def _add_cone(actions: Any) -> None:
    cone = add_command(
        actions,
        "cone",
        cmd_catalog_cone,
        help="sources of a survey around a position",
        description="Cone search an ingested survey; sources brightest first.",
    )
    _add_survey(cone)
    add_number(cone, "ra", RA_RULE, "right ascension (deg, J2000, 0..360)", metavar="RA")
    add_number(cone, "dec", DEC_RULE, "declination (deg, J2000)", metavar="DEC")
    add_number(cone, "radius", RADIUS_RULE, "radius (deg, (0, 180])", metavar="RADIUS")
    add_number(cone, "--min-flux", FLUX_RULE, "in Jy", default=0.0, metavar="JY")
    add_number(cone, "--limit", LIMIT_RULE, "show at most N (>= 0) sources", metavar="N")
    add_json(cone, "print the sources as JSON")


def cmd_catalog_ingest(args: argparse.Namespace) -> int:
    """Ingest one survey file into declination strips and print the report; return 0."""
    from dsa110_assets.catalogs import ingest_survey

    settings = tier_settings()
    report = ingest_survey(
        args.survey, Path(args.file), settings.catalogs_dir, strip_width_deg=args.strip_width
    )
    if args.json:
        print_json(
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
    """List the VLA calibrators by RA, building their database first if needed; return 0."""
    from dsa110_assets.catalogs import build_calibrator_db, ensure_calibrator_db, load_calibrators
    from dsa110_assets.catalogs.vla import DB_FILENAME

    settings = tier_settings()
    if args.build:
        path = build_calibrator_db(settings.catalogs_dir / DB_FILENAME)
    else:
        path = ensure_calibrator_db(settings.catalogs_dir)
    calibrators = sorted(load_calibrators(path), key=lambda c: c.ra_deg)
    if args.json:
        print_json(
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
    """Print the survey's sources within the radius, brightest first; return 0."""
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
        print_json(
            {
                "survey": args.survey,
                "ra_deg": args.ra,
                "dec_deg": args.dec,
                "radius_deg": args.radius,
                "count": len(sources),
                "sources": [_source_row(s) for s in shown],
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


def _source_row(s: Any) -> dict[str, Any]:
    """Return one cone-search source as its JSON object."""
    return {
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
