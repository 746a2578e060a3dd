"""What the image asset checks measure, as plain functions tests can call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from casacore import tables as pt

from dsa110_assets.catalogs.vla import ensure_calibrator_db, load_calibrators
from dsa110_assets.imaging.image_stats import find_peak, image_statistics
from dsa110_assets.imaging.primary_beam import primary_beam_at
from dsa110_assets.registry import Registry
from dsa110_assets.registry.products import cal_state, group_calibrator
from dsa110_assets.settings import Settings
from dsa110_assets.storage.products import image_product


@dataclass(frozen=True)
class CalibratorRecovery:
    """The calibrator as measured in a group's image, against its catalog flux and position."""

    name: str
    measured_jy: float  # peak after dividing by the effective primary beam
    expected_jy: float  # catalog spectrum averaged over the imaged channels
    offset_arcsec: float
    beam_arcsec: float
    calibrated: bool


def image_content_problems(path: Path) -> list[str]:
    """Return what is wrong with the image's pixels: NaNs, all zeros (empty when neither)."""
    with fits.open(path, memmap=False) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
    problems = []
    n_nan = int(np.count_nonzero(~np.isfinite(data)))
    if n_nan:
        problems.append(f"{n_nan} non-finite pixels")
    if not np.any(data[np.isfinite(data)]):
        problems.append("all pixels are zero")
    return problems


def noise_ratio(image: Path, expected_jy: float | None) -> tuple[float, float]:
    """Return (residual image noise, radiometer expectation), both Jy/beam."""
    measured = image_statistics(image_product(image, "residual")).noise_jy
    return float(measured), float(expected_jy or 0.0)


def _imaged_frequencies(ms_path: Path) -> np.ndarray:
    """Return the channel frequencies of the windows holding data (missing subbands flagged)."""
    with pt.table(f"{ms_path}/SPECTRAL_WINDOW", ack=False) as spw:
        freqs = np.asarray(spw.getcol("CHAN_FREQ"), dtype=np.float64)
    with pt.table(str(ms_path), ack=False) as t:
        keywords = t.getkeywords()
    missing = set(np.atleast_1d(keywords.get("DSA110_MISSING_SUBBANDS", [])).tolist())
    subbands = np.atleast_1d(keywords.get("DSA110_SPW_SUBBANDS", np.arange(len(freqs))))
    keep = [i for i, sb in enumerate(subbands.tolist()) if sb not in missing]
    return freqs[keep].ravel()


def calibrator_recovery(
    settings: Settings, registry: Registry, group_id: str, image_row: dict
) -> CalibratorRecovery | None:
    """Measure the group's calibrator in its image; None on groups without one."""
    name = group_calibrator(registry, group_id)
    if name is None:
        return None
    calibrators = {c.name: c for c in load_calibrators(ensure_calibrator_db(settings.catalogs_dir))}
    cal = calibrators[name]
    image = Path(image_row["path"])
    ms_path = Path(image_row["ms_path"])
    beam = float(image_row["beam_major_arcsec"] or 0.0)
    ra, dec, peak, offset = find_peak(image, cal.ra_deg, cal.dec_deg, max(3 * beam, 60.0))
    pb = primary_beam_at(ms_path, cal.ra_deg, cal.dec_deg)
    freqs = _imaged_frequencies(ms_path)
    expected = float(np.mean(cal.flux_jy(freqs)))
    return CalibratorRecovery(
        name=name,
        measured_jy=float(peak) / float(pb),
        expected_jy=expected,
        offset_arcsec=float(offset),
        beam_arcsec=beam,
        calibrated=cal_state(registry, ms_path).applied,
    )
