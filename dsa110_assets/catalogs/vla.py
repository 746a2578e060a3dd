"""The VLA calibrators the pipeline may find in the DSA-110 beam, and their SQLite database.

Why a shipped list: calibrator selection must work offline and give the same answer on every
node, so the list travels with the package (``data/vla_calibrators.csv``, columns
``name,ra_deg,dec_deg,flux_1400_jy,spectral_index``) and is copied into
``{state}/catalogs/vla_calibrators.sqlite3`` for the pipeline to query.

Provenance of ``vla_calibrators.csv``:

* Positions are J2000 (ICRS). For the compact (flat-spectrum) sources they are the VLBI
  positions of the ICRF3 / VLA Calibrator Manual (J2000 entries, accurate to milliarcseconds);
  for the resolved flux-scale sources (3C48, 3C138, 3C147, 3C196, 3C286, 3C295, 3C123, 3C119,
  3C216, 3C298, 3C309.1, 3C380, 3C418) the VLA Calibrator Manual / VLBI core positions, good
  to well under 1 arcsec.
* Flux densities are at 1.4 GHz (L band). For the flux-scale calibrators (3C48, 3C138, 3C147,
  3C196, 3C286, 3C295, 3C123, 3C380) they follow Perley & Butler 2017 (ApJS 230, 7) and the VLA
  Calibrator Manual's 20 cm column, with the spectral index the local slope of their spectra
  near 1.4 GHz. The other entries are blazars and compact quasars whose L-band flux density
  varies by tens of percent over months (3C84, 3C273, 3C279, 3C345, 3C454.3, BL Lac, OJ287,
  CTA102, PKS 1510-089, J1924-2914, ...): their values are typical L-band levels from the VLA
  Calibrator Manual and single-dish monitoring, good for choosing a calibrator and predicting
  its apparent flux to ~30 %, not for setting a flux scale.
* The first seven rows (3C48, 3C138, 3C147, 3C196, 0834+555, 3C286, 3C295) are the ones the
  simulator uses; they must stay byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np

from dsa110_assets.catalogs.base import CatalogError

REFERENCE_FREQ_HZ = 1.4e9
DB_FILENAME = "vla_calibrators.sqlite3"
CSV_COLUMNS = ("name", "ra_deg", "dec_deg", "flux_1400_jy", "spectral_index")
_PACKAGED_CSV = "vla_calibrators.csv"


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A VLA calibrator: J2000 position (deg) and a power-law spectrum anchored at 1.4 GHz."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_1400_jy: float
    spectral_index: float

    def flux_jy(self, freq_hz: np.ndarray | float) -> np.ndarray | float:
        """Flux density ``S_1400 (nu / 1.4 GHz) ** alpha`` at ``freq_hz`` (same shape)."""
        ratio = np.asarray(freq_hz, dtype=np.float64) / REFERENCE_FREQ_HZ
        flux = self.flux_1400_jy * ratio**self.spectral_index
        return float(flux) if np.ndim(flux) == 0 else flux


def _packaged_text() -> str:
    return resources.files("dsa110_assets").joinpath("data", _PACKAGED_CSV).read_text("utf-8")


def parse_calibrator_csv(text: str, origin: str = _PACKAGED_CSV) -> list[Calibrator]:
    """Calibrators from CSV text, validated (columns, numbers, ranges, unique names).

    Raises
    ------
    CatalogError
        Naming ``origin`` and the offending row.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise CatalogError(f"{origin}: missing columns {missing}")
    calibrators: list[Calibrator] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        try:
            cal = Calibrator(
                row["name"].strip(),
                float(row["ra_deg"]),
                float(row["dec_deg"]),
                float(row["flux_1400_jy"]),
                float(row["spectral_index"]),
            )
        except (TypeError, ValueError) as exc:
            raise CatalogError(f"{origin} line {line}: {exc}") from None
        values = (cal.ra_deg, cal.dec_deg, cal.flux_1400_jy, cal.spectral_index)
        if not cal.name or not all(math.isfinite(v) for v in values):
            raise CatalogError(f"{origin} line {line}: empty name or non-finite value")
        if not (0.0 <= cal.ra_deg < 360.0 and -90.0 <= cal.dec_deg <= 90.0):
            raise CatalogError(f"{origin} line {line}: position out of range")
        if cal.flux_1400_jy <= 0.0:
            raise CatalogError(f"{origin} line {line}: flux must be positive")
        if cal.name in seen:
            raise CatalogError(f"{origin} line {line}: duplicate name {cal.name!r}")
        seen.add(cal.name)
        calibrators.append(cal)
    return calibrators


def packaged_calibrators() -> list[Calibrator]:
    """Return the calibrators shipped in ``dsa110_assets/data/vla_calibrators.csv``."""
    return parse_calibrator_csv(_packaged_text())


def _packaged_digest() -> str:
    return hashlib.sha256(_packaged_text().encode("utf-8")).hexdigest()


def _db_path(path: Path) -> Path:
    path = Path(path)
    return path / DB_FILENAME if path.is_dir() else path


def build_calibrator_db(path: Path, calibrators: Sequence[Calibrator] | None = None) -> Path:
    """Write the calibrator database (the packaged list unless ``calibrators`` is given).

    ``path`` is the database file, or a folder to hold ``vla_calibrators.sqlite3``. The file is
    built under a temporary name and renamed into place, so readers never see half of it and
    re-running simply replaces it. Table ``calibrators`` (indexed on ``dec_deg``, the column
    transit searches select on) and table ``meta`` (count, source digest, build time).
    """
    target = _db_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cals = list(packaged_calibrators() if calibrators is None else calibrators)
    digest = _packaged_digest() if calibrators is None else "custom"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        with con:
            con.execute(
                "CREATE TABLE calibrators (name TEXT PRIMARY KEY, ra_deg REAL NOT NULL,"
                " dec_deg REAL NOT NULL, flux_1400_jy REAL NOT NULL,"
                " spectral_index REAL NOT NULL)"
            )
            con.executemany(
                "INSERT INTO calibrators VALUES (?, ?, ?, ?, ?)",
                [(c.name, c.ra_deg, c.dec_deg, c.flux_1400_jy, c.spectral_index) for c in cals],
            )
            con.execute("CREATE INDEX calibrators_dec ON calibrators (dec_deg)")
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = {
                "source": _PACKAGED_CSV if calibrators is None else "custom list",
                "source_sha256": digest,
                "count": str(len(cals)),
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    finally:
        con.close()
    os.replace(tmp, target)
    return target


def load_calibrators(db_path: Path) -> list[Calibrator]:
    """All calibrators in a database built by :func:`build_calibrator_db`, by name.

    Raises
    ------
    CatalogError
        The database is missing, not SQLite, or lacks the ``calibrators`` table.
    """
    path = _db_path(db_path)
    if not path.is_file():
        raise CatalogError(
            f"calibrator database {path} does not exist (run 'dsa110 catalog calibrators --build')"
        )
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT name, ra_deg, dec_deg, flux_1400_jy, spectral_index FROM calibrators"
                " ORDER BY name"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"calibrator database {path} is unreadable: {exc}") from None
    return [Calibrator(str(r[0]), *(float(x) for x in r[1:])) for r in rows]


def _stored_digest(path: Path) -> str | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'source_sha256'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else str(row[0])


def ensure_calibrator_db(catalogs_dir: Path) -> Path:
    """Return the calibrator database at ``catalogs_dir``, rebuilt when missing or stale.

    Stale means built from a different packaged CSV (its SHA-256 is recorded in ``meta``), so
    a package upgrade with new calibrators reaches the pipeline without a manual step.
    """
    path = Path(catalogs_dir) / DB_FILENAME
    if not path.is_file() or _stored_digest(path) != _packaged_digest():
        build_calibrator_db(path)
    return path
