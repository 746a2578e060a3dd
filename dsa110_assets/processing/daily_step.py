"""A day's products: which images belong to it, when it is complete, its mosaic and metrics.

A day is a UTC date; its images are those of the group_ids starting with that date (the
group_id is the observation's UTC start), found through the registry. A day is complete when
it is over (plus a margin, default 1 h, for late files) and none of its groups is still on the
way: every group is ``failed``, or ``completed`` with its image stage settled (done, skipped or
failed). The daily sensor requests a day's products then, and again whenever the number of
finished images of a past day changes (a re-run or a late group), so products stay current.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from dsa110_assets.imaging.thumbnail import make_thumbnail
from dsa110_assets.mosaics.combine import MosaicError, MosaicResult, build_mosaic
from dsa110_assets.photometry.variability import flag_candidates, metrics_for_all
from dsa110_assets.registry import Registry, days
from dsa110_assets.registry.products import register_mosaic
from dsa110_assets.safe_fs import atomic_output
from dsa110_assets.settings import Settings
from dsa110_assets.storage import product_path
from dsa110_assets.storage.products import mosaic_thumbnail_path

DAY_MARGIN_H = 1.0


@dataclass(frozen=True)
class DayImage:
    """One of a day's images, as the registry knows it."""

    path: Path
    group_id: str
    mjd: float | None
    noise_jy: float | None
    ra_deg: float | None = None  # image centre, from the registry


@dataclass(frozen=True)
class DayStatus:
    """How far a day's groups are, and whether its products can be made."""

    day: str
    groups: int
    unsettled: int  # groups still collecting, converting or imaging
    images: int
    over: bool
    #: Changes whenever any of the day's images is made again (a quick look replaced by its
    #: calibrated image, a late group): the daily sensor's run key carries it.
    version: str = ""

    @property
    def complete(self) -> bool:
        """Whether the day is over and every one of its groups is settled."""
        return self.over and self.unsettled == 0 and self.groups > 0


def day_bounds(day: str) -> tuple[datetime, datetime]:
    """Return the UTC start and end of ``day``."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_images(registry: Registry, day: str) -> list[DayImage]:
    """Return the 'image' products of the day's groups, oldest first."""
    return images_between(registry, day, _next_day(day))


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def day_status(
    registry: Registry, day: str, *, now: float | None = None, margin_h: float = DAY_MARGIN_H
) -> DayStatus:
    """How far the day's groups are (see the module docstring for 'complete')."""
    now = time.time() if now is None else now
    groups, unsettled = days.group_counts(registry, day, _next_day(day))
    _, end = day_bounds(day)
    return DayStatus(
        day=day,
        groups=groups,
        unsettled=unsettled,
        images=len(day_images(registry, day)),
        over=now >= (end + timedelta(hours=margin_h)).timestamp(),
        version=_images_version(registry, day),
    )


def _images_version(registry: Registry, day: str) -> str:
    """Return a short digest of when each of the day's images was last made."""
    rows = days.image_stage_times(registry, day, _next_day(day))
    text = ";".join(f"{r[0]}@{r[1]!r}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


TILE_DEG = 15.0  # hourly RA tiles: one TAN grid cannot hold 24 h of a strip


def tile_name(day: str, tile: int) -> str:
    """Return the name of ``day``'s mosaic of RA tile ``tile`` (hours)."""
    return f"{day}_ra{tile:02d}h"


def ra_tiles(images: list[DayImage]) -> dict[int, list[DayImage]]:
    """Return the day's images by hourly RA tile of their centre.

    Tiles are fixed on the sky, so a tile keeps its name every day; images of unknown centre
    join the first tile, where they are read (or skipped with the reason) like any other.
    """
    known = [i for i in images if i.ra_deg is not None]
    tiles: dict[int, list[DayImage]] = {}
    for image in known:
        tiles.setdefault(int((image.ra_deg % 360.0) // TILE_DEG), []).append(image)
    unknown = [i for i in images if i.ra_deg is None]
    if unknown:
        first = min(tiles) if tiles else 0
        tiles.setdefault(first, []).extend(unknown)
    return dict(sorted(tiles.items()))


@dataclass
class DailyMosaicOutcome:
    """One mosaic made: the result, its preview and the images skipped (with why)."""

    day: str
    result: MosaicResult
    thumbnail: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)


def images_between(registry: Registry, start: str, end: str) -> list[DayImage]:
    """Return the 'image' products of groups whose group_id (UTC start) is in [start, end)."""
    rows = days.image_rows(registry, start, end)
    return [DayImage(Path(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def build_daily_mosaic(
    settings: Settings, registry: Registry, day: str, *, pb_cutoff: float = 0.2
) -> list[DailyMosaicOutcome]:
    """Mosaic every image of ``day``, one mosaic per hourly RA tile.

    Each is ``{products}/mosaics/{day}_ra{HH}h.fits``, registered (a re-run replaces file and
    row). Images whose FITS is missing or unreadable are skipped with the reason (recorded in
    the ``mosaics`` row's ``images`` JSON under ``skipped``); a tile with no usable image
    raises MosaicError.
    """
    images = day_images(registry, day)
    if not images:
        raise MosaicError(f"no images registered for {day}")
    outcomes = []
    for tile, members in ra_tiles(images).items():
        out = product_path(settings, "mosaics", tile_name(day, tile), ".fits")
        outcomes.append(_mosaic_and_register(settings, registry, members, out, day, pb_cutoff))
    return outcomes


def day_mosaics(registry: Registry, day: str) -> list[tuple[Path, float | None]]:
    """Return the registered mosaics of ``day``: (path, mid MJD)."""
    rows = days.mosaic_rows(registry, day)
    return [
        (Path(r[0]), (r[1] + r[2]) / 2 if r[1] is not None and r[2] is not None else None)
        for r in rows
    ]


def build_range_mosaic(
    settings: Settings, registry: Registry, start: str, end: str, *, pb_cutoff: float = 0.2
) -> DailyMosaicOutcome:
    """Mosaic the images of any time range on demand (``dsa110 mosaic create``)."""
    start_t, end_t = (datetime.fromisoformat(t).replace(tzinfo=None) for t in (start, end))
    if end_t <= start_t:
        raise MosaicError(f"--end {end} is not after --start {start}")
    lo, hi = (t.isoformat(timespec="seconds") for t in (start_t, end_t))
    images = images_between(registry, lo, hi)
    if not images:
        raise MosaicError(f"no images registered between {lo} and {hi}")
    out = product_path(settings, "mosaics", f"{lo}_{hi}", ".fits")
    return _mosaic_and_register(settings, registry, images, out, None, pb_cutoff)


def _mosaic_and_register(
    settings: Settings,
    registry: Registry,
    images: list[DayImage],
    out: Path,
    day: str | None,
    pb_cutoff: float,
) -> DailyMosaicOutcome:
    out.parent.mkdir(parents=True, exist_ok=True)
    noise = {str(i.path): i.noise_jy for i in images if i.noise_jy}
    result = build_mosaic([i.path for i in images], out, pb_cutoff=pb_cutoff, noise_jy=noise)
    thumb = mosaic_thumbnail_path(settings, out)
    thumb.parent.mkdir(parents=True, exist_ok=True)
    make_thumbnail(result.path, thumb)
    skipped = [(str(p), reason) for p, reason in result.skipped]
    listed = {"used": [str(p) for p in result.images], "skipped": dict(skipped)}
    register_mosaic(
        registry,
        {
            "path": str(result.path),
            "weights_path": str(result.weights_path),
            "date": day,
            "start_mjd": result.start_mjd,
            "end_mjd": result.end_mjd,
            "dec_strip_deg": round(result.centre_dec_deg, 1),
            "n_images": result.n_images,
            "images": json.dumps(listed),
            "effective_noise_jy": result.effective_noise_jy,
            "method": result.method,
            "thumbnail_path": str(thumb),
        },
    )
    return DailyMosaicOutcome(day=day or out.stem, result=result, thumbnail=thumb, skipped=skipped)


@dataclass
class LightCurveOutcome:
    """The day's light-curve table: where, how many sources, which are candidates."""

    path: Path
    sources: int
    candidates: list[str]
    thresholds: dict[str, float]


def write_variability(
    settings: Settings,
    registry: Registry,
    day: str,
    *,
    min_epochs: int = 3,
    thresholds: dict[str, float | None] | None = None,
) -> LightCurveOutcome:
    """Write the variability metrics of every source's light curve up to the end of ``day``.

    Metrics (Mooley et al. 2016) of the per-group images, candidates flagged, as
    ``lightcurves/{day}.csv``.
    """
    _, end = day_bounds(day)
    metrics = metrics_for_all(
        registry,
        min_epochs=min_epochs,
        until_mjd=end.timestamp() / 86400.0 + 40587.0,
        per_group_only=True,
    )
    selection = flag_candidates(metrics, **(thresholds or {})) if metrics else None
    candidates = set(selection.source_ids) if selection else set()
    path = product_path(settings, "lightcurves", day, ".csv")
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["source_id", "n_epochs", "mean_flux_jy", "eta", "v", "vs_max", "m", "candidate"]
        )
        for sm in metrics:
            m = sm.metrics
            writer.writerow(
                [
                    sm.source_id,
                    m.n_epochs,
                    _fmt(m.mean_flux_jy),
                    _fmt(m.eta),
                    _fmt(m.v),
                    _fmt(m.vs_max),
                    _fmt(m.m),
                    int(sm.source_id in candidates),
                ]
            )
    thresholds = {}
    if selection is not None:
        thresholds = {
            "eta": selection.eta_threshold,
            "v": selection.v_threshold,
            "vs": selection.vs_threshold,
            "m": selection.m_threshold,
        }
    return LightCurveOutcome(path, len(metrics), sorted(candidates), thresholds)


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"
