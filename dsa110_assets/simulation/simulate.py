"""Simulate DSA-110 correlator output: groups of 16 subband UVH5 files plus the truth behind them.

The public entry point is :func:`simulate_observations`. It builds the sky (a real VLA
calibrator plus random background sources), computes meridian fringe-stopped visibilities for
the data antennas (:mod:`.visibilities`), corrupts them with known gains and bandpasses and adds
thermal noise (:mod:`.corruptions`), and writes each subband file exactly as the correlator does
(:mod:`.uvh5_writer`). The sky catalog and the true corruptions go to ``truth_dir`` before any
data file appears, so a consumer watching ``output_dir`` can always find the truth.

Randomness is split into independent streams derived from ``seed`` (sky, corruptions, file
name jitter, and noise per group and subband), so a file's content does not depend on which
other subbands were requested or on whether corruptions are on, and the same seed gives
byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
from astropy.coordinates import ICRS, TETE, HADec, SkyCoord
from astropy.time import Time, TimeDelta

from dsa110_assets.instrument import (
    ARRAY_HEIGHT_M,
    ARRAY_LAT_DEG,
    ARRAY_LON_DEG,
    BAND_BOTTOM_HZ,
    BAND_TOP_HZ,
    FILE_DURATION_S,
    INTEGRATION_S,
    INTEGRATIONS_PER_FILE,
    N_STATIONS,
    N_SUBBANDS,
    POLARIZATIONS,
    SEFD_JY,
    Stations,
    array_location,
    band_frequencies,
    channel_width_hz,
    data_antennas,
    load_stations,
    subband_frequencies,
)
from dsa110_assets.naming import GROUP_ID_FORMAT, subband_filename
from dsa110_assets.simulation.corruptions import (
    CONVENTION,
    Corruptions,
    add_thermal_noise,
    apply_corruptions,
    baseline_bandpass,
    baseline_gains,
    cross_noise_sigma,
    draw_corruptions,
)
from dsa110_assets.simulation.rfi import (
    RFIConfig,
    RFIInjector,
    RFIRecord,
    draw_rfi,
    write_rfi_record,
)
from dsa110_assets.simulation.sky import (
    BACKGROUND_MARGIN_DEG,
    PointSource,
    get_calibrator,
    quadrant_sources,
    random_background_sources,
    write_catalog,
    write_nvss_catalog,
)
from dsa110_assets.simulation.uvh5_writer import CorrelatorHeader, write_correlator_file
from dsa110_assets.simulation.visibilities import (
    MeridianFrame,
    itrs_directions,
    predict_visibilities,
    sources_in_beam,
    visible_sources,
)

DEFAULT_DATE = date(2026, 1, 15)
CATALOG_FILENAME = "sky_catalog.csv"
NVSS_CATALOG_FILENAME = "sky_catalog_nvss.csv"
TRUTH_FILENAME = "simulation_truth.h5"
PRESETS: dict[str, dict[str, int]] = {
    "full": dict(n_antennas=96, n_channels=48),
    "small": dict(n_antennas=12, n_channels=4),
}

# Independent random streams: SeedSequence entropy is (seed, stream, ...).
_STREAM_SKY, _STREAM_CORRUPTIONS, _STREAM_JITTER, _STREAM_NOISE = 1, 2, 3, 4
_SIDEREAL_DEG_PER_DAY = 360.98564736629
# Integrations computed in parallel (numpy releases the GIL in its array loops).
_N_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
_N_THREADS = max(1, min(4, _N_CPUS or 1))

GroupCallback = Callable[[int, list[Path]], None]


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Paths may be given as strings; naive datetimes are taken as UTC.

    ``start`` None: group ``calibrator_groups[0]`` is centred on the calibrator's transit on
    :data:`DEFAULT_DATE` (without a calibrator: midnight UTC of that date). ``dec_deg`` is the
    pointing (and fringe-stop) declination of date; None takes the calibrator's declination
    (without a calibrator: the zenith, i.e. the array latitude). Groups are always contiguous:
    only ``calibrator_groups[0]`` places the start, and each result group's
    ``has_calibrator`` comes from the geometry (a calibrator transits once a day).
    """

    output_dir: Path
    truth_dir: Path
    n_groups: int = 1
    start: datetime | None = None
    dec_deg: float | None = None
    n_antennas: int = 96
    n_channels: int = 48
    subbands: tuple[int, ...] = tuple(range(N_SUBBANDS))
    seed: int = 42
    calibrator: str | None = "3C286"
    calibrator_groups: tuple[int, ...] = (0,)
    n_background_sources: int = 20
    field_sources: bool = True  # the quadrant pattern (sky.FIELD_PATTERN) around each pointing
    extra_sources: tuple[PointSource, ...] = ()  # added to the sky as given
    noise: bool = True
    corruptions: bool = True
    jitter_s: int = 2
    rfi: RFIConfig | None = None  # interference (simulation.rfi); None: a clean spectrum

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "truth_dir", Path(self.truth_dir))
        object.__setattr__(self, "subbands", tuple(int(sb) for sb in self.subbands))
        object.__setattr__(self, "calibrator_groups", tuple(int(g) for g in self.calibrator_groups))
        object.__setattr__(self, "extra_sources", tuple(self.extra_sources))
        if self.n_groups < 1:
            raise ValueError(f"n_groups must be at least 1, got {self.n_groups}")
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be at least 1, got {self.n_channels}")
        if not self.subbands:
            raise ValueError("subbands must name at least one subband")
        if len(set(self.subbands)) != len(self.subbands):
            raise ValueError(f"subbands has duplicates: {self.subbands}")
        bad = [sb for sb in self.subbands if not 0 <= sb < N_SUBBANDS]
        if bad:
            raise ValueError(f"subbands {bad} are outside 0..{N_SUBBANDS - 1}")
        if self.jitter_s < 0:
            raise ValueError(f"jitter_s must be >= 0, got {self.jitter_s}")
        if self.n_background_sources < 0:
            raise ValueError(f"n_background_sources must be >= 0, got {self.n_background_sources}")
        if self.dec_deg is not None and not -90.0 <= self.dec_deg <= 90.0:
            raise ValueError(f"dec_deg must be within -90..90, got {self.dec_deg}")
        bad = [g for g in self.calibrator_groups if not 0 <= g < self.n_groups]
        if bad:
            raise ValueError(f"calibrator_groups {bad} are outside 0..{self.n_groups - 1}")
        if self.calibrator is not None and self.start is None and not self.calibrator_groups:
            raise ValueError("calibrator_groups must name a group to centre on the transit")
        if self.output_dir.resolve() == self.truth_dir.resolve():
            raise ValueError("truth_dir must differ from output_dir (the correlator's folder)")
        data_antennas(self.n_antennas)  # validates the antenna count
        if self.calibrator is not None:
            get_calibrator(self.calibrator)  # raises ValueError for an unknown name

    def to_json(self) -> str:
        """Serialise the configuration as JSON (recorded in the truth file)."""
        values = asdict(self)
        values["output_dir"] = str(self.output_dir)
        values["truth_dir"] = str(self.truth_dir)
        values["start"] = None if self.start is None else _as_utc(self.start).isoformat()
        values["extra_sources"] = [asdict(src) for src in self.extra_sources]
        return json.dumps(values, sort_keys=True)


@dataclass(frozen=True, slots=True)
class SimulationGroup:
    """One observation (up to 16 subband files sharing a start time)."""

    index: int
    start: datetime  # UTC (timezone-aware): start of the first integration
    files: list[Path]
    has_calibrator: bool  # calibrator within the half-power beam at some integration


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Everything written: data files (group by group) and the truth files."""

    files: list[Path]
    groups: list[SimulationGroup]
    catalog_path: Path
    truth_path: Path
    start: datetime
    dec_deg: float
    sources: list[PointSource] = field(default_factory=list)
    nvss_catalog_path: Path | None = None  # the same sky as an NVSS-format CSV


def simulate_observations(
    cfg: SimulationConfig, on_group_written: GroupCallback | None = None
) -> SimulationResult:
    """Simulate ``cfg.n_groups`` contiguous groups and write them to ``cfg.output_dir``.

    ``on_group_written(group_index, paths)`` is called after each group's files are all in
    place (renamed to their final names), so a demo can feed a watcher a group at a time.

    Work is done one subband at a time (memory stays at a few hundred MB for the full array);
    within a subband the integrations are computed in parallel threads, and each file is
    written by a background thread while the next subband is computed.

    Raises
    ------
    ValueError
        An invalid configuration (for example an unknown calibrator name).
    FileExistsError
        A data file to be written already exists; checked for all groups before anything is
        written, and never overwritten.
    """
    plan = _Plan.build(cfg)
    existing = [p for paths in plan.file_plan for p in paths if p.exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} simulated file(s) already exist in {cfg.output_dir}, "
            f"e.g. {existing[0].name}; refusing to overwrite correlator files"
        )
    names = [plan.stations.names[a] for a in plan.antennas]
    rfi, injector = None, None
    if cfg.rfi is not None:
        times = plan.times_jd.reshape(cfg.n_groups, INTEGRATIONS_PER_FILE)
        rfi = draw_rfi(cfg.rfi, cfg.seed, names, times, plan.freqs_band)
        sigma = cross_noise_sigma(SEFD_JY, channel_width_hz(cfg.n_channels), INTEGRATION_S)
        injector = RFIInjector(
            cfg.rfi, rfi, cfg.seed, plan.array.ant1, plan.array.ant2, cfg.n_channels, sigma
        )
    corruptions = None
    if cfg.corruptions:
        rng = np.random.default_rng([cfg.seed, _STREAM_CORRUPTIONS])
        corruptions = draw_corruptions(rng, len(plan.antennas), plan.times_jd, plan.freqs_band)

    cfg.truth_dir.mkdir(parents=True, exist_ok=True)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    catalog_path = write_catalog(cfg.truth_dir / CATALOG_FILENAME, plan.sources)
    nvss_catalog_path = write_nvss_catalog(cfg.truth_dir / NVSS_CATALOG_FILENAME, plan.sources)
    truth_path = _write_truth(
        cfg.truth_dir / TRUTH_FILENAME,
        cfg=cfg,
        antennas=plan.antennas,
        names=names,
        times_jd=plan.times_jd,
        freqs_hz=plan.freqs_band,
        corruptions=corruptions,
        file_plan=plan.file_plan,
        group_starts=plan.group_starts,
        cal_in_beam=plan.cal_in_beam,
        dec_deg=plan.dec_deg,
        rfi=rfi,
    )
    groups = _write_groups(cfg, plan, corruptions, injector, on_group_written)
    return SimulationResult(
        files=[path for group in groups for path in group.files],
        groups=groups,
        catalog_path=catalog_path,
        truth_path=truth_path,
        start=plan.start,
        dec_deg=plan.dec_deg,
        sources=plan.sources,
        nvss_catalog_path=nvss_catalog_path,
    )


@dataclass(frozen=True)
class _Plan:
    """Everything fixed before the first file: array, pointing, times, sky and file names."""

    stations: Stations
    antenna_positions: np.ndarray  # ECEF offsets from the array centre
    antennas: np.ndarray
    dec_deg: float
    frame: MeridianFrame
    array: _ArrayLayout
    start: datetime
    times: Time  # every integration centre of every group
    times_jd: np.ndarray
    group_starts: list[datetime]
    sources: list[PointSource]
    cal_in_beam: np.ndarray
    file_plan: list[list[Path]]
    freqs_band: np.ndarray

    @classmethod
    def build(cls, cfg: SimulationConfig) -> _Plan:
        """Work out the observation ``cfg`` describes (no file is touched)."""
        stations = load_stations()
        antennas = data_antennas(cfg.n_antennas)
        calibrator = get_calibrator(cfg.calibrator) if cfg.calibrator is not None else None
        dec_deg = _pointing_dec(cfg, calibrator)
        frame = MeridianFrame(math.radians(ARRAY_LON_DEG), math.radians(dec_deg))
        array = _ArrayLayout.build(stations.itrf_m, antennas, frame)
        start = _start_time(cfg, calibrator)
        start_time = Time(start)
        offsets_s = (np.arange(cfg.n_groups * INTEGRATIONS_PER_FILE) + 0.5) * INTEGRATION_S
        times = start_time + TimeDelta(offsets_s, format="sec")
        sources = _sky_model(cfg, calibrator, dec_deg, start_time)
        return cls(
            stations=stations,
            antenna_positions=stations.ecef_offsets_m(),
            antennas=antennas,
            dec_deg=dec_deg,
            frame=frame,
            array=array,
            start=start,
            times=times,
            times_jd=times.jd1 + times.jd2,
            group_starts=[
                start + timedelta(seconds=k * FILE_DURATION_S) for k in range(cfg.n_groups)
            ],
            sources=sources,
            cal_in_beam=_calibrator_in_beam(cfg, calibrator, frame, times),
            file_plan=_plan_files(cfg, start),
            freqs_band=band_frequencies(cfg.n_channels),
        )


def _write_groups(
    cfg: SimulationConfig,
    plan: _Plan,
    corruptions: Corruptions | None,
    injector: RFIInjector | None,
    on_group_written: GroupCallback | None,
) -> list[SimulationGroup]:
    """Compute and write every group's subband files, one file in flight at a time."""
    location = array_location()
    ra = np.array([src.ra_deg for src in plan.sources])
    dec = np.array([src.dec_deg for src in plan.sources])
    groups: list[SimulationGroup] = []
    with (
        ThreadPoolExecutor(_N_THREADS, thread_name_prefix="sim") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="sim-writer") as writer,
    ):
        pending: Future[Path] | None = None
        for g in range(cfg.n_groups):
            tslice = slice(g * INTEGRATIONS_PER_FILE, (g + 1) * INTEGRATIONS_PER_FILE)
            directions = itrs_directions(ra, dec, plan.times[tslice], location)
            keep = visible_sources(plan.frame, directions, plan.freqs_band)
            group_sky = _GroupSky([plan.sources[k] for k in np.flatnonzero(keep)], directions[keep])
            gain_term = None
            if corruptions is not None:
                gain_term = baseline_gains(corruptions.gains[tslice], plan.array.ant1,
                                           plan.array.ant2)  # fmt: skip
            futures: list[Future[Path]] = []
            for sb, path in zip(cfg.subbands, plan.file_plan[g], strict=True):
                freqs = subband_frequencies(sb, cfg.n_channels)
                band_term = None
                if corruptions is not None:
                    fslice = slice(sb * cfg.n_channels, (sb + 1) * cfg.n_channels)
                    band = corruptions.bandpass[:, fslice]
                    band_term = baseline_bandpass(band, plan.array.ant1, plan.array.ant2)
                vis = _subband_visibilities(
                    cfg, g, sb, freqs, plan.frame, plan.array, group_sky, gain_term, band_term,
                    injector, pool,
                )  # fmt: skip
                header = _header(cfg, plan, g, sb, freqs, tslice)
                if pending is not None:
                    pending.result()  # at most one file in flight: bounded memory
                pending = writer.submit(write_correlator_file, path, header, vis)
                futures.append(pending)
                del vis
            written = [f.result() for f in futures]
            groups.append(SimulationGroup(g, plan.group_starts[g], written,
                                          bool(plan.cal_in_beam[g])))  # fmt: skip
            if on_group_written is not None:
                on_group_written(g, list(written))
    return groups


def _header(
    cfg: SimulationConfig, plan: _Plan, g: int, sb: int, freqs: np.ndarray, tslice: slice
) -> CorrelatorHeader:
    """Describe group ``g``, subband ``sb`` in its correlator header."""
    return CorrelatorHeader(
        latitude_deg=ARRAY_LAT_DEG,
        longitude_deg=ARRAY_LON_DEG,
        altitude_m=ARRAY_HEIGHT_M,
        antenna_positions_m=plan.antenna_positions,
        nants_data=len(plan.antennas),
        ant_1_array=plan.array.ant_1_array,
        ant_2_array=plan.array.ant_2_array,
        uvw_m=plan.array.uvw_m,
        times_jd=plan.times_jd[tslice],
        freqs_hz=freqs,
        channel_width_hz=channel_width_hz(cfg.n_channels),
        phase_center_dec_rad=math.radians(plan.dec_deg),
        applied_delays_ns=np.zeros((N_STATIONS, len(POLARIZATIONS)), dtype=np.int64),
        history=_history(cfg, g, sb),
    )


@dataclass(frozen=True, slots=True)
class _ArrayLayout:
    """Baselines of the data antennas in file order (``i <= j``, baseline-major)."""

    ant1: np.ndarray  # position in the data-antenna list
    ant2: np.ndarray
    ant_1_array: np.ndarray  # station index (= antenna number in the file)
    ant_2_array: np.ndarray
    baselines_m: np.ndarray  # x(ant2) - x(ant1), ITRF
    uvw_m: np.ndarray
    is_auto: np.ndarray

    @classmethod
    def build(cls, itrf_m: np.ndarray, antennas: np.ndarray, frame: MeridianFrame) -> _ArrayLayout:
        ant1, ant2 = np.triu_indices(len(antennas))
        baselines = itrf_m[antennas[ant2]] - itrf_m[antennas[ant1]]
        return cls(
            ant1=ant1,
            ant2=ant2,
            ant_1_array=antennas[ant1],
            ant_2_array=antennas[ant2],
            baselines_m=baselines,
            uvw_m=frame.uvw(baselines),
            is_auto=ant1 == ant2,
        )


@dataclass(frozen=True, slots=True)
class _GroupSky:
    """The sources that contribute to a group and their directions at its integrations."""

    sources: list[PointSource]
    directions: np.ndarray  # (Nsources, Ntimes, 3)


def _subband_visibilities(
    cfg: SimulationConfig,
    group: int,
    subband: int,
    freqs: np.ndarray,
    frame: MeridianFrame,
    array: _ArrayLayout,
    sky: _GroupSky,
    gain_term: np.ndarray | None,
    band_term: np.ndarray | None,
    injector: RFIInjector | None,
    pool: ThreadPoolExecutor,
) -> np.ndarray:
    """One file's visibilities (Ntimes, Nbls, Nfreqs, 2), one integration per task.

    Each integration has its own noise generator (seed, group, subband, integration), so the
    result does not depend on thread scheduling or on which other subbands are simulated.
    """
    n_t = sky.directions.shape[1]
    vis = np.empty((n_t, len(array.ant1), len(freqs), len(POLARIZATIONS)), dtype=np.complex64)
    autos = np.flatnonzero(array.is_auto)
    chan_width = channel_width_hz(cfg.n_channels)

    def integration(t: int) -> None:
        block = vis[t : t + 1]
        model = predict_visibilities(
            sky.sources, sky.directions[:, t : t + 1], frame, array.baselines_m, freqs
        )
        block[...] = model[..., None]
        block[:, autos] += np.float32(SEFD_JY)
        if gain_term is not None and band_term is not None:
            apply_corruptions(block, gain_term[t : t + 1], band_term, array.is_auto)
        if cfg.noise:
            rng = np.random.default_rng([cfg.seed, _STREAM_NOISE, group, subband, t])
            add_thermal_noise(block, rng, array.is_auto, SEFD_JY, chan_width, INTEGRATION_S)
        if injector is not None:
            injector.apply(block, group, subband, t)

    for future in [pool.submit(integration, t) for t in range(n_t)]:
        future.result()
    return vis


def _history(cfg: SimulationConfig, group: int, subband: int) -> str:
    """Deterministic history text (no wall clock, so files are byte-reproducible)."""
    parts = ["point-source sky"]
    parts.append("gains and bandpasses" if cfg.corruptions else "no corruptions")
    parts.append("thermal noise" if cfg.noise else "no noise")
    if cfg.rfi is not None:
        parts.append("interference")
    return (
        f"written by dsa110_assets simulator seed={cfg.seed} group={group} "
        f"subband={subband:02d}: {', '.join(parts)}"
    )


def calibrator_transit(calibrator: PointSource, day: date = DEFAULT_DATE) -> datetime:
    """UTC time on ``day`` when the local apparent sidereal time equals the apparent RA.

    The apparent RA is in the true equator and equinox of date (TETE); a few Newton steps at
    the sidereal rate converge to well below a millisecond.
    """
    coord = SkyCoord(ra=calibrator.ra_deg * u.deg, dec=calibrator.dec_deg * u.deg, frame="icrs")
    midnight = Time(datetime.combine(day, time(0), tzinfo=UTC))

    def hour_angle_deg(t: Time) -> float:
        last = t.sidereal_time("apparent", longitude=ARRAY_LON_DEG * u.deg).deg
        ra_app = coord.transform_to(TETE(obstime=t)).ra.deg
        return float((last - ra_app + 180.0) % 360.0 - 180.0)

    ha0 = hour_angle_deg(midnight)
    t = midnight + TimeDelta(((-ha0) % 360.0) / _SIDEREAL_DEG_PER_DAY, format="jd")
    for _ in range(3):
        t = t - TimeDelta(hour_angle_deg(t) / _SIDEREAL_DEG_PER_DAY, format="jd")
    return t.to_datetime(timezone=UTC)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pointing_dec(cfg: SimulationConfig, calibrator: PointSource | None) -> float:
    if cfg.dec_deg is not None:
        return float(cfg.dec_deg)
    return calibrator.dec_deg if calibrator is not None else ARRAY_LAT_DEG


def _start_time(cfg: SimulationConfig, calibrator: PointSource | None) -> datetime:
    """Choose the first integration's start (UTC): given, or placed on the calibrator's transit."""
    if cfg.start is not None:
        return _as_utc(cfg.start)
    if calibrator is None:
        return datetime.combine(DEFAULT_DATE, time(0), tzinfo=UTC)
    transit = calibrator_transit(calibrator, DEFAULT_DATE)
    centre_offset = (cfg.calibrator_groups[0] + 0.5) * FILE_DURATION_S
    return transit - timedelta(seconds=centre_offset)


def _sky_model(
    cfg: SimulationConfig, calibrator: PointSource | None, dec_deg: float, start: Time
) -> list[PointSource]:
    """Build the sky: calibrator, field pattern, extra and background sources.

    The calibrator (if any), the field pattern around each group's pointing, the extra
    sources and background sources over the strip the scan drifts through.
    """
    sources = [calibrator] if calibrator is not None else []
    ra_start = _meridian_icrs_deg(start, dec_deg)[0]
    if cfg.field_sources:
        for g in range(cfg.n_groups):
            mid = start + TimeDelta((g + 0.5) * FILE_DURATION_S, format="sec")
            ra, dec = _meridian_icrs_deg(mid, dec_deg)
            sources += quadrant_sources(ra, dec, prefix=f"FLD{g}_")
    sources += list(cfg.extra_sources)
    if cfg.n_background_sources == 0:
        return sources
    duration_days = cfg.n_groups * FILE_DURATION_S / 86400.0
    span = duration_days * _SIDEREAL_DEG_PER_DAY + 2.0 * BACKGROUND_MARGIN_DEG
    ra_lo = ra_start - BACKGROUND_MARGIN_DEG
    ra_range = (0.0, 360.0) if span >= 360.0 else (ra_lo, ra_lo + span)
    rng = np.random.default_rng([cfg.seed, _STREAM_SKY])
    background = random_background_sources(rng, cfg.n_background_sources, ra_range, dec_deg)
    return sources + background


def _meridian_icrs_deg(when: Time, dec_deg: float) -> tuple[float, float]:
    """ICRS position of the meridian point (HA 0, ``dec_deg`` of date) at ``when``."""
    meridian = SkyCoord(
        ha=0.0 * u.deg,
        dec=dec_deg * u.deg,
        frame=HADec(obstime=when, location=array_location(), pressure=0.0 * u.hPa),
    )
    icrs = meridian.transform_to(ICRS())
    return float(icrs.ra.deg), float(icrs.dec.deg)


def _calibrator_in_beam(
    cfg: SimulationConfig, calibrator: PointSource | None, frame: MeridianFrame, times: Time
) -> np.ndarray:
    """Per group: calibrator within the half-power beam (at mid-band) at any integration."""
    if calibrator is None:
        return np.zeros(cfg.n_groups, dtype=bool)
    ra, dec = np.array([calibrator.ra_deg]), np.array([calibrator.dec_deg])
    directions = itrs_directions(ra, dec, times, array_location())[0]
    per_group = directions.reshape(cfg.n_groups, INTEGRATIONS_PER_FILE, 3)
    mid_band = 0.5 * (BAND_TOP_HZ + BAND_BOTTOM_HZ)
    return sources_in_beam(frame, per_group, mid_band)


def _plan_files(cfg: SimulationConfig, start: datetime) -> list[list[Path]]:
    """Name the files of each group: group start (whole second) plus a per-subband jitter."""
    plan: list[list[Path]] = []
    for g in range(cfg.n_groups):
        group_start = start + timedelta(seconds=g * FILE_DURATION_S)
        stamp_base = group_start.replace(microsecond=0)
        paths = []
        for sb in cfg.subbands:
            rng = np.random.default_rng([cfg.seed, _STREAM_JITTER, g, sb])
            jitter = int(rng.integers(0, cfg.jitter_s, endpoint=True)) if cfg.jitter_s else 0
            stamp = (stamp_base + timedelta(seconds=jitter)).strftime(GROUP_ID_FORMAT)
            paths.append(cfg.output_dir / subband_filename(stamp, sb))
        plan.append(paths)
    return plan


def _write_truth(
    path: Path,
    *,
    cfg: SimulationConfig,
    antennas: np.ndarray,
    names: Sequence[str],
    times_jd: np.ndarray,
    freqs_hz: np.ndarray,
    corruptions: Corruptions | None,
    file_plan: list[list[Path]],
    group_starts: list[datetime],
    cal_in_beam: np.ndarray,
    dec_deg: float,
    rfi: RFIRecord | None = None,
) -> Path:
    """Write the true instrument state, atomically (tmp + rename) and reproducibly.

    Without corruptions the gains and bandpasses are stored as exactly 1 so consumers need not
    special-case it.
    """
    n_ant = len(antennas)
    if corruptions is None:
        gains = np.ones((len(times_jd), n_ant, 2), dtype=np.complex64)
        bandpass = np.ones((n_ant, len(freqs_hz), 2), dtype=np.complex64)
        delays = np.zeros((n_ant, 2))
    else:
        gains, bandpass, delays = corruptions.gains, corruptions.bandpass, corruptions.delays_ns
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", track_order=False) as f:
        f.attrs["convention"] = CONVENTION
        f.attrs["config"] = cfg.to_json()
        f.attrs["seed"] = cfg.seed
        f.attrs["corruptions"] = cfg.corruptions
        f.attrs["noise"] = cfg.noise
        f.attrs["sefd_jy"] = SEFD_JY
        f.attrs["pointing_dec_deg"] = dec_deg
        f.attrs["polarizations"] = np.array(POLARIZATIONS)
        f.attrs["calibrator"] = cfg.calibrator or ""
        if rfi is not None:
            write_rfi_record(f, rfi)

        def put(name: str, data: np.ndarray, **kwargs: object) -> None:
            f.create_dataset(name, data=data, track_times=False, **kwargs)

        put("antenna_indices", antennas.astype(np.int64))
        put("antenna_names", np.array(names, dtype="S8"))
        put("times_jd", np.asarray(times_jd, dtype=np.float64))
        put("freqs_hz", np.asarray(freqs_hz, dtype=np.float64))
        put("gains", gains.astype(np.complex64))
        put("bandpass", bandpass.astype(np.complex64))
        put("delays_ns", np.asarray(delays, dtype=np.float64))
        if corruptions is not None:
            put("gain_amplitude", corruptions.gain_amplitude)
            put("gain_phase0_deg", corruptions.gain_phase0_deg)
            put("gain_phase_rate_deg_per_hour", corruptions.gain_phase_rate_deg_per_hour)
        grp = f.create_group("groups", track_order=False)
        for g, paths in enumerate(file_plan):
            entry = grp.create_group(f"{g:04d}", track_order=False)
            entry.attrs["start"] = group_starts[g].isoformat()
            entry.attrs["has_calibrator"] = bool(cal_in_beam[g])
            entry.create_dataset(
                "files", data=np.array([p.name for p in paths], dtype="S64"), track_times=False
            )
    tmp.replace(path)
    return path
