"""Name the FIELD of a calibrator group's closest approach after its calibrator.

Why: CASA tasks look calibrators up by field name. ``setjy(field='3C286')`` selects the FIELD
rows whose NAME is ``3C286`` (MS selection matches names exactly unless given a wildcard), and
its flux standards (Perley-Butler 2017 and earlier) recognise a field as 3C286 when its upper-
cased NAME contains one of ``3C286``, ``1328+307``, ``1331+305``, ``J1331+3030``. The converter
names the per-integration fields ``meridian_icrs_t{i}`` (as the existing DSA-110 pipeline
does), which neither matches. The existing pipeline's ``rename_calibrator_field`` renames the
calibrator's field to ``{name}_t{i}``; that is found by the flux standards but not by
``field='3C286'``, so here the field gets the calibrator's bare catalog name (``3C286``, the
name CASA's standards use for the VLA primary calibrators; the packaged catalog uses the same
spelling). Only the NAME cell changes: every per-integration FIELD row keeps its phase centre
and its index, so FIELD_ID of the main table, calibration tables and rephasing are unaffected.

The field renamed is the one whose phase centre is nearest the calibrator: integration ``i``'s
centre is the meridian at the pointing declination at time ``t_i``, so that is the integration
of the calibrator's closest approach to the pointing in the group (its transit when the transit
is inside the group, else the integration at the nearer edge).

A re-run is idempotent: what was renamed is recorded in the FIELD table keyword
:data:`FIELD_KEYWORD` (field row, new and original name), and a later call first puts the
original name back before naming the nearest field again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.errors import PipelineError

FIELD_KEYWORD = "DSA110_CALIBRATOR_FIELD"
_SECONDS_PER_DAY = 86400.0


class FieldNamingError(PipelineError, RuntimeError):
    """The MS has no FIELD rows to name, or cannot be opened for writing."""


@dataclass(frozen=True, slots=True)
class CalibratorField:
    """The FIELD row that now carries the calibrator's name."""

    field_id: int
    name: str  # the new NAME (the calibrator's)
    original_name: str  # its NAME before (``meridian_icrs_t{i}``)
    separation_deg: float  # from the calibrator to that field's phase centre
    time_mjd: float  # the field's TIME (the integration's centre), UTC MJD
    changed: bool  # False when the MS already had exactly this naming


def _separation_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Return the great-circle angle (Vincenty form, stable at small and large angles), degrees."""
    dra = ra - ra0
    num = np.hypot(
        np.cos(dec) * np.sin(dra),
        np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(dra),
    )
    den = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def _undo_previous(names: list[str], previous: object) -> None:
    """Give the field an earlier call named its original name back (in ``names``).

    Naming again (another calibrator, or a nearer field) must leave one named field, and
    a field renamed since by someone else is left alone.
    """
    if isinstance(previous, dict) and 0 <= int(previous.get("field_id", -1)) < len(names):
        old = int(previous["field_id"])
        if names[old] == previous.get("name"):
            names[old] = str(previous["original_name"])


def name_calibrator_field(
    ms_path: str | Path, calibrator: str, ra_deg: float, dec_deg: float
) -> CalibratorField:
    """Rename the FIELD nearest ``(ra_deg, dec_deg)`` (ICRS) to ``calibrator``.

    Parameters
    ----------
    ms_path
        The group's Measurement Set (one FIELD per integration).
    calibrator
        The catalog name, written as the FIELD NAME (e.g. ``3C286``).
    ra_deg, dec_deg
        The calibrator's ICRS position, compared with each field's PHASE_DIR.

    Returns
    -------
    CalibratorField
        Which row was named, its old name, how far its centre is from the calibrator.

    Raises
    ------
    FieldNamingError
        The MS cannot be opened or its FIELD table is empty.
    ValueError
        ``calibrator`` is empty.
    """
    if not calibrator.strip():
        raise ValueError("the calibrator name is empty")
    ms = Path(ms_path)
    try:
        field = pt.table(f"{ms}::FIELD", readonly=False, ack=False)
    except RuntimeError as exc:
        raise FieldNamingError(f"{ms}: cannot open the FIELD table: {exc}") from None
    with field:
        names = list(field.getcol("NAME"))
        if not names:
            raise FieldNamingError(f"{ms}: the FIELD table is empty")
        before = list(names)
        previous = field.getkeywords().get(FIELD_KEYWORD)
        _undo_previous(names, previous)
        dirs = field.getcol("PHASE_DIR")[:, 0, :]
        times = field.getcol("TIME")
        sep = _separation_deg(
            dirs[:, 0], dirs[:, 1], float(np.radians(ra_deg)), float(np.radians(dec_deg))
        )
        target = int(np.argmin(sep))
        original = names[target]
        names[target] = calibrator
        changed = names != before
        if changed:
            field.putcol("NAME", names)
        record = {"field_id": target, "name": calibrator, "original_name": original}
        if previous != record:
            field.putkeyword(FIELD_KEYWORD, record)
    return CalibratorField(
        field_id=target,
        name=calibrator,
        original_name=original,
        separation_deg=float(sep[target]),
        time_mjd=float(times[target]) / _SECONDS_PER_DAY,
        changed=changed,
    )
