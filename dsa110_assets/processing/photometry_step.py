"""Forced photometry of catalog sources on a group's image or a day's mosaic, registered.

Positions come from the first ingested survey (NVSS, then FIRST, then VLASS) in a cone that
covers the image; measurements replace the image's earlier rows in ``photometry`` (a re-run
updates, never duplicates) and are also written as a CSV next to the other products, so a
group's or a day's numbers can be read without the registry.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from dsa110_assets.catalogs.base import SURVEYS, CatalogError
from dsa110_assets.catalogs.cone import cone_search
from dsa110_assets.imaging.image_stats import image_statistics
from dsa110_assets.photometry.forced import Measurement, SourcePositions, forced_photometry
from dsa110_assets.photometry.register import record_measurements
from dsa110_assets.registry import Registry
from dsa110_assets.safe_fs import atomic_output
from dsa110_assets.timing import Stopwatch

CSV_COLUMNS = (
    "source_id",
    "ra_deg",
    "dec_deg",
    "catalog_flux_jy",
    "flux_jy",
    "flux_err_jy",
    "peak_flux_jy",
    "peak_flux_err_jy",
    "local_rms_jy",
    "chi2",
    "pb_response",
    "skip_reason",
)


@dataclass
class PhotometryOutcome:
    """What forced photometry measured on one image (for the asset's metadata)."""

    image: Path
    catalog: str | None
    measured: int = 0
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    csv_path: Path | None = None


def catalog_positions(
    catalogs_dir: Path, ra_deg: float, dec_deg: float, radius_deg: float
) -> tuple[str | None, SourcePositions | None]:
    """Return the sources of the first ingested survey within ``radius_deg``."""
    for survey in SURVEYS:
        try:
            found = cone_search(catalogs_dir, survey, ra_deg, dec_deg, radius_deg)
        except CatalogError:
            continue
        return survey, SourcePositions.from_sources(found)
    return None, None


def image_radius_deg(image: Path) -> float:
    """Return half the diagonal of the image: a cone that covers all of it."""
    stats = image_statistics(image)
    return math.hypot(stats.nx, stats.ny) * stats.cell_arcsec / 3600.0 / 2.0


def write_measurements_csv(path: Path, measurements: list[Measurement]) -> Path:
    """Write the measurements as CSV, atomically (temporary name, then rename)."""
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for m in measurements:
            writer.writerow([getattr(m, c) for c in CSV_COLUMNS])
    return path


def measure_and_register(
    registry: Registry,
    catalogs_dir: Path,
    image: Path,
    csv_path: Path,
    *,
    pb_fits: Path | None,
    group_id: str | None,
    mjd: float | None,
    pb_cutoff: float = 0.2,
) -> PhotometryOutcome:
    """Measure the catalog sources on ``image``; record them in the registry and a CSV."""
    watch = Stopwatch()
    stats = image_statistics(image)
    survey, positions = catalog_positions(
        catalogs_dir, stats.centre_ra_deg, stats.centre_dec_deg, image_radius_deg(image)
    )
    outcome = PhotometryOutcome(image=image, catalog=survey)
    measurements: list[Measurement] = []
    if positions is not None and positions.source_ids:
        measurements = forced_photometry(
            image, positions, pb_fits=pb_fits if pb_fits and pb_fits.exists() else None,
            pb_cutoff=pb_cutoff,
        )  # fmt: skip
    ok = [m for m in measurements if m.ok]
    record_measurements(registry, ok, image_path=image, group_id=group_id, mjd=mjd, catalog=survey)
    outcome.csv_path = write_measurements_csv(csv_path, measurements)
    outcome.measured = len(ok)
    outcome.skipped = len(measurements) - len(ok)
    for m in measurements:
        if not m.ok:
            reason = str(m.skip_reason).split(":")[0]
            outcome.skip_reasons[reason] = outcome.skip_reasons.get(reason, 0) + 1
    outcome.duration_s = watch.elapsed_s
    return outcome


def concatenate_csv(parts: list[Path], out: Path) -> Path:
    """Concatenate CSVs with the same header into ``out`` (atomically), removing the parts."""
    with atomic_output(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for part in parts:
            with part.open(newline="") as src:
                rows = csv.reader(src)
                next(rows, None)
                writer.writerows(rows)
    for part in parts:
        part.unlink(missing_ok=True)
    return out
