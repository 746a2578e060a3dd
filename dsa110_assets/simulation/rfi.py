"""Radio-frequency interference for the simulator, and the record of where it went.

What real DSA-110 data carry and a flagger must remove, each kind recorded so tests can score
flags sample by sample:

- persistent narrowband transmitters: a few channels at thousands of Jy in every integration,
  each baseline with its own stable phase (the transmitter is not where the array points, so
  fringe stopping leaves it a fixed phase per baseline);
- broadband bursts: one or two integrations across the whole band, random phase per sample;
- one channel that is always bad (a spur of the digital system): junk hundreds of times the
  noise in every baseline and integration;
- one antenna with a broken receiver: ``"noisy"`` (its system temperature, hence its
  autocorrelation and the noise of its baselines, several times the others') or ``"zero"``
  (its correlator input gives nothing).

Everything is drawn before the first file, from its own random stream of the simulation seed,
and kept in :class:`RFIRecord` (stored as JSON in the truth file), so the same seed gives the
same interference and :func:`ms_rfi_mask` can map it onto the rows of a Measurement Set by
time, frequency and antenna name, without the flagger's reading of the MS layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

BROKEN_MODES = ("noisy", "zero", "none")
RFI_ATTRIBUTE = "rfi"  # attribute of the truth file holding the record (JSON)
_STREAM_RFI = 5  # SeedSequence stream of the simulator (see simulate.py's streams)
_MJD_OFFSET = 2400000.5


class RFIRecordError(ValueError):
    """A truth file without an interference record, or a Measurement Set it cannot describe."""


@dataclass(frozen=True)
class RFIConfig:
    """What interference to inject; the defaults are what the demo and flagging tests use.

    Attributes
    ----------
    n_transmitters
        Persistent narrowband transmitters, each ``1..transmitter_max_channels`` adjacent
        channels wide, with an amplitude drawn from ``transmitter_flux_jy`` (low, high).
    n_bursts, burst_max_integrations, burst_flux_jy
        Broadband bursts per group, each lasting 1..``burst_max_integrations`` integrations.
    bad_channel, bad_channel_flux_jy
        One channel always carrying junk of this rms (per real/imaginary part).
    broken_antenna, broken_noise_factor
        ``"noisy"``: the antenna's system temperature times the factor; ``"zero"``: its input
        is dead; ``"none"``: every receiver works.
    """

    n_transmitters: int = 3
    transmitter_max_channels: int = 3
    transmitter_flux_jy: tuple[float, float] = (2000.0, 8000.0)
    n_bursts: int = 2
    burst_max_integrations: int = 2
    burst_flux_jy: float = 300.0
    bad_channel: bool = True
    bad_channel_flux_jy: float = 1000.0
    broken_antenna: str = "noisy"
    broken_noise_factor: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "transmitter_flux_jy", tuple(map(float, self.transmitter_flux_jy)))
        for name in ("n_transmitters", "n_bursts"):
            if getattr(self, name) < 0:
                raise ValueError(f"RFIConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("transmitter_max_channels", "burst_max_integrations"):
            if getattr(self, name) < 1:
                raise ValueError(f"RFIConfig.{name} must be >= 1, got {getattr(self, name)}")
        low, high = self.transmitter_flux_jy
        if not 0.0 < low <= high:
            raise ValueError(
                f"RFIConfig.transmitter_flux_jy must be 0 < low <= high, got {low, high}"
            )
        for name in ("burst_flux_jy", "bad_channel_flux_jy"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"RFIConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.broken_antenna not in BROKEN_MODES:
            raise ValueError(
                f"RFIConfig.broken_antenna must be one of {BROKEN_MODES}, "
                f"got {self.broken_antenna!r}"
            )
        if not self.broken_noise_factor > 1.0:
            raise ValueError(
                f"RFIConfig.broken_noise_factor must be > 1, got {self.broken_noise_factor}"
            )


@dataclass(frozen=True)
class Transmitter:
    """One narrowband transmitter: band channel indices (file order) and amplitude in Jy."""

    channels: tuple[int, ...]
    flux_jy: float


@dataclass(frozen=True)
class RFIRecord:
    """Where the interference is: enough to rebuild every injected sample's position.

    Attributes
    ----------
    antenna_names
        The data antennas in simulation order (as in the truth file).
    times_jd
        Integration centres of every group, (n_groups, n_times).
    band_freqs_hz
        Channel centres over the band in file order (sb00 first, descending).
    transmitters, bursts, bad_channel, broken_antenna, broken_mode
        The injected interference: ``bursts[g]`` lists the integrations (within group ``g``)
        hit by a burst; ``bad_channel`` is a band channel index or -1; ``broken_antenna`` an
        index into ``antenna_names`` or -1.
    """

    antenna_names: tuple[str, ...]
    times_jd: tuple[tuple[float, ...], ...]
    band_freqs_hz: tuple[float, ...]
    transmitters: tuple[Transmitter, ...]
    bursts: tuple[tuple[int, ...], ...]
    bad_channel: int
    broken_antenna: int
    broken_mode: str

    @property
    def broken_antenna_name(self) -> str | None:
        """Name of the antenna with the broken receiver (None when all work)."""
        return None if self.broken_antenna < 0 else self.antenna_names[self.broken_antenna]

    def bad_channels(self) -> np.ndarray:
        """Band channels hit in every integration (transmitters and the bad channel), bool."""
        bad = np.zeros(len(self.band_freqs_hz), dtype=bool)
        for tx in self.transmitters:
            bad[list(tx.channels)] = True
        if self.bad_channel >= 0:
            bad[self.bad_channel] = True
        return bad

    def mask(self, group: int, ant1: np.ndarray, ant2: np.ndarray) -> np.ndarray:
        """Injected samples of group ``group``: (n_times, n_baselines, n_band_channels) bool.

        ``ant1``/``ant2`` are indices into :attr:`antenna_names`; autocorrelations are
        included (interference raises them too).
        """
        n_t = len(self.times_jd[group])
        out = np.zeros((n_t, len(ant1), len(self.band_freqs_hz)), dtype=bool)
        out[:, :, self.bad_channels()] = True
        out[list(self.bursts[group])] = True
        if self.broken_antenna >= 0 and self.broken_mode != "none":
            hit = (np.asarray(ant1) == self.broken_antenna) | (
                np.asarray(ant2) == self.broken_antenna
            )
            out[:, hit] = True
        return out

    def to_json(self) -> str:
        """Serialise (for the truth file)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RFIRecord:
        """Read back what :meth:`to_json` wrote."""
        v = json.loads(text)
        return cls(
            antenna_names=tuple(v["antenna_names"]),
            times_jd=tuple(tuple(t) for t in v["times_jd"]),
            band_freqs_hz=tuple(v["band_freqs_hz"]),
            transmitters=tuple(
                Transmitter(tuple(t["channels"]), float(t["flux_jy"])) for t in v["transmitters"]
            ),
            bursts=tuple(tuple(b) for b in v["bursts"]),
            bad_channel=int(v["bad_channel"]),
            broken_antenna=int(v["broken_antenna"]),
            broken_mode=str(v["broken_mode"]),
        )


def draw_rfi(
    cfg: RFIConfig,
    seed: int,
    antenna_names: list[str],
    times_jd: np.ndarray,
    band_freqs_hz: np.ndarray,
) -> RFIRecord:
    """Decide where the interference goes, from the simulation seed's RFI stream.

    ``times_jd`` is (n_groups, n_times). Transmitters and the bad channel avoid each other
    and the band's first and last two channels (which band-edge flagging would take anyway,
    so a score would not test the RFI flagger there); the broken antenna is never the first
    (the usual reference antenna).
    """
    rng = np.random.default_rng([seed, _STREAM_RFI])
    n_chan = len(band_freqs_hz)
    free = np.ones(n_chan, dtype=bool)
    free[:2] = free[-2:] = False
    transmitters = []
    for _ in range(cfg.n_transmitters):
        width = int(rng.integers(1, cfg.transmitter_max_channels, endpoint=True))
        starts = [c for c in range(n_chan - width + 1) if free[c : c + width].all()]
        if not starts:
            break
        first = int(rng.choice(starts))
        free[max(0, first - 1) : first + width + 1] = False
        low, high = cfg.transmitter_flux_jy
        transmitters.append(
            Transmitter(tuple(range(first, first + width)), float(rng.uniform(low, high)))
        )
    bad_channel = -1
    if cfg.bad_channel and free.any():
        bad_channel = int(rng.choice(np.flatnonzero(free)))
    n_times = times_jd.shape[1]
    bursts = []
    for _ in range(times_jd.shape[0]):
        hit: set[int] = set()
        for _ in range(cfg.n_bursts):
            length = int(rng.integers(1, cfg.burst_max_integrations, endpoint=True))
            first = int(rng.integers(0, max(1, n_times - length + 1)))
            hit.update(range(first, min(n_times, first + length)))
        bursts.append(tuple(sorted(hit)))
    broken = -1
    if cfg.broken_antenna != "none" and len(antenna_names) > 2:
        broken = int(rng.integers(1, len(antenna_names)))
    return RFIRecord(
        antenna_names=tuple(antenna_names),
        times_jd=tuple(tuple(map(float, row)) for row in times_jd),
        band_freqs_hz=tuple(map(float, band_freqs_hz)),
        transmitters=tuple(transmitters),
        bursts=tuple(bursts),
        bad_channel=bad_channel,
        broken_antenna=broken,
        broken_mode=cfg.broken_antenna,
    )


class RFIInjector:
    """Adds a record's interference to one integration of one subband file at a time.

    Parameters
    ----------
    cfg, record, seed
        The configuration, what :func:`draw_rfi` decided and the simulation seed.
    ant1, ant2
        Baselines in file order as indices into the data antennas.
    n_channels
        Channels per subband.
    noise_sigma_jy
        The radiometer noise per real/imaginary part of a cross-correlation (the broken
        receiver's excess is relative to it, with or without simulated noise).
    """

    def __init__(
        self,
        cfg: RFIConfig,
        record: RFIRecord,
        seed: int,
        ant1: np.ndarray,
        ant2: np.ndarray,
        n_channels: int,
        noise_sigma_jy: float,
    ) -> None:
        self.cfg, self.record, self.seed = cfg, record, seed
        self.n_channels = n_channels
        self.noise_sigma_jy = float(noise_sigma_jy)
        self.is_auto = ant1 == ant2
        self._autos = np.flatnonzero(self.is_auto)
        self._broken_bls = np.flatnonzero(
            (ant1 == record.broken_antenna) | (ant2 == record.broken_antenna)
        )
        self._broken_cross = np.flatnonzero(
            ((ant1 == record.broken_antenna) | (ant2 == record.broken_antenna)) & ~self.is_auto
        )
        self._broken_auto = np.flatnonzero((ant1 == record.broken_antenna) & self.is_auto)
        phase_rng = np.random.default_rng([seed, _STREAM_RFI, 1])
        # One stable phase per transmitter and baseline; autocorrelations see power only.
        phases = phase_rng.uniform(0, 2 * np.pi, (len(record.transmitters), len(ant1)))
        phases[:, self._autos] = 0.0
        self._tx_phasors = np.exp(1j * phases).astype(np.complex64)

    def apply(self, block: np.ndarray, group: int, subband: int, t: int) -> None:
        """Add the interference to ``block`` (1, n_baselines, n_channels, n_pol) in place.

        ``t`` is the integration within ``group``; draws come from a generator of (seed,
        group, subband, t), so the result does not depend on thread scheduling.
        """
        rng = np.random.default_rng([self.seed, _STREAM_RFI, 2, group, subband, t])
        first = subband * self.n_channels
        local = range(first, first + self.n_channels)
        for k, tx in enumerate(self.record.transmitters):
            for c in tx.channels:
                if c in local:
                    block[0, :, c - first, :] += (tx.flux_jy * self._tx_phasors[k])[:, None]
        bad = self.record.bad_channel
        if bad in local:
            self._add_junk(block[0, :, bad - first], rng, self.cfg.bad_channel_flux_jy)
        if t in self.record.bursts[group]:
            self._add_burst(block[0], rng)
        self._break_receiver(block[0], rng)

    def _add_junk(self, chan: np.ndarray, rng: np.random.Generator, rms: float) -> None:
        """Random complex junk of ``rms`` per part on (n_baselines, n_pol); power on autos."""
        draws = rng.standard_normal((*chan.shape, 2), dtype=np.float32) * np.float32(rms)
        junk = draws.view(np.complex64)[..., 0]
        junk[self._autos] = np.float32(rms)
        chan += junk

    def _add_burst(self, sample: np.ndarray, rng: np.random.Generator) -> None:
        """Add a broadband burst over every channel of (n_baselines, n_channels, n_pol)."""
        phases = rng.uniform(0, 2 * np.pi, sample.shape[:2]).astype(np.float32)
        burst = (self.cfg.burst_flux_jy * np.exp(1j * phases)).astype(np.complex64)
        burst[self._autos] = np.float32(self.cfg.burst_flux_jy)
        sample += burst[..., None]

    def _break_receiver(self, sample: np.ndarray, rng: np.random.Generator) -> None:
        """Zero the broken antenna's baselines, or raise its system temperature."""
        if self.record.broken_antenna < 0 or self.record.broken_mode == "none":
            return
        if self.record.broken_mode == "zero":
            sample[self._broken_bls] = 0
            return
        factor = self.cfg.broken_noise_factor
        # Cross-correlation noise goes as sqrt(T_a T_b): sqrt(factor) times the radiometer's.
        extra = self.noise_sigma_jy * np.sqrt(max(factor - 1.0, 0.0))
        shape = (len(self._broken_cross), *sample.shape[1:], 2)
        draws = rng.standard_normal(shape, dtype=np.float32) * np.float32(extra)
        sample[self._broken_cross] += draws.view(np.complex64)[..., 0]
        sample[self._broken_auto] *= np.float32(factor)


def write_rfi_record(truth: h5py.File, record: RFIRecord) -> None:
    """Keep ``record`` in an open truth file (an attribute, JSON)."""
    truth.attrs[RFI_ATTRIBUTE] = record.to_json()


def load_rfi_record(truth_path: Path | str) -> RFIRecord:
    """Read the interference record of a simulation's truth file.

    Raises
    ------
    RFIRecordError
        The simulation injected no interference.
    """
    with h5py.File(truth_path, "r") as f:
        text = f.attrs.get(RFI_ATTRIBUTE)
    if text is None:
        raise RFIRecordError(f"{truth_path} records no interference (simulated without rfi)")
    return RFIRecord.from_json(text if isinstance(text, str) else text.decode())


def ms_rfi_mask(record: RFIRecord, group: int, ms_path: Path | str) -> np.ndarray:
    """Return which samples of an MS carry injected interference: (n_rows, n_chan) bool.

    Rows are matched by the MS's own TIME, antenna NAMEs and each row's spectral window
    CHAN_FREQ, so the mapping shares nothing with the flagger's reading of the layout.

    Raises
    ------
    RFIRecordError
        A row whose time, antenna or channel the record does not know.
    """
    from casacore import tables as pt

    ms = str(ms_path)
    with pt.table(ms, ack=False) as t:
        time_s = t.getcol("TIME")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        ddid = t.getcol("DATA_DESC_ID")
    with pt.table(f"{ms}/ANTENNA", ack=False) as t:
        ms_names = list(t.getcol("NAME"))
    with pt.table(f"{ms}/DATA_DESCRIPTION", ack=False) as t:
        dd_spw = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        chan_freqs = t.getcol("CHAN_FREQ")
    index = {name: k for k, name in enumerate(record.antenna_names)}
    missing = sorted({ms_names[a] for a in np.unique(np.concatenate([a1, a2]))} - set(index))
    if missing:
        raise RFIRecordError(f"{ms}: antennas {missing[:5]} are not in the simulation")
    to_sim = np.array([index.get(name, -1) for name in ms_names])
    s1, s2 = to_sim[a1], to_sim[a2]
    rows_t = _match(
        time_s, (np.asarray(record.times_jd[group]) - _MJD_OFFSET) * 86400.0, "TIME", ms
    )
    band = np.asarray(record.band_freqs_hz)
    spw_chan = {
        spw: _match(chan_freqs[spw], band, "CHAN_FREQ", ms) for spw in np.unique(dd_spw[ddid])
    }
    bad_chan = record.bad_channels()
    broken = record.broken_antenna
    out = np.zeros((len(time_s), chan_freqs.shape[1]), dtype=bool)
    bursts = np.isin(rows_t, record.bursts[group])
    if broken >= 0 and record.broken_mode != "none":
        bursts |= (s1 == broken) | (s2 == broken)
    out[bursts] = True
    for spw, chans in spw_chan.items():
        rows = dd_spw[ddid] == spw
        out[np.ix_(rows, bad_chan[chans])] = True
    return out


def _match(values: np.ndarray, reference: np.ndarray, what: str, ms: str) -> np.ndarray:
    """Index of the nearest reference value for each value, within half a spacing."""
    reference = np.asarray(reference, dtype=np.float64)
    order = np.argsort(reference)
    ordered = reference[order]
    pos = np.clip(np.searchsorted(ordered, values), 1, len(ordered) - 1) if len(ordered) > 1 else 0
    if len(ordered) > 1:
        left, right = ordered[pos - 1], ordered[pos]
        pos = np.where(np.abs(values - left) <= np.abs(values - right), pos - 1, pos)
        tolerance = 0.5 * np.min(np.diff(ordered))
    else:
        pos = np.zeros(len(values), dtype=int)
        tolerance = np.inf
    far = np.abs(values - ordered[pos]) > tolerance
    if np.any(far):
        raise RFIRecordError(f"{ms}: {int(far.sum())} {what} value(s) the simulation does not know")
    return order[pos]
