"""Open and validate one DSA-110 correlator subband file (old UVH5 layout) with h5py.

The converter trusts nothing it has not checked: a file that cannot be opened, lacks a dataset,
has shapes that disagree with its own header, is not time-major, or disagrees with the other
subbands of its group raises :class:`InvalidSubbandFile` naming the file and the problem, before
anything is written. Reading is split so a whole group can be validated cheaply first: this
module's :func:`read_header` (metadata and the small per-baseline-time arrays, validated) and
:func:`check_same_observation`; then :mod:`.visibility_reader` (where the big ``Data`` arrays'
chunks lie, and reading them into reusable buffers while a converter writes).

Every open goes through :func:`open_subband`: ``O_NOFOLLOW`` (a subband swapped for a symlink
after ingest is refused, never followed, so root cannot be tricked into reading
``/etc/shadow``), regular files only (a FIFO or device cannot block or feed the reader), and
h5py then opens that very descriptor (``/proc/self/fd/N``), not the name again, so the file
checked is the file read. Its identity (device, inode, size, mtime) is kept in the header and
the read plan; a file replaced between validation and reading is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from dsa110_assets.errors import PipelineError

# Tolerances for "the same observation" across the subbands of a group.
TIME_TOLERANCE_S = 0.05  # integration centres (0.05 s of Earth rotation is < 1 cm of uvw)
POSITION_TOLERANCE_M = 1e-3
ANGLE_TOLERANCE_RAD = 1e-9
# Integration centres of one time step must agree to this (a time-major file).
_SAME_TIME_TOLERANCE_DAYS = 1e-3 / 86400.0
# AIPS memo 117 polarization codes the converter can carry into an MS.
KNOWN_POLARIZATIONS = frozenset({1, 2, 3, 4, -1, -2, -3, -4, -5, -6, -7, -8})


class InvalidSubbandFile(PipelineError, ValueError):
    """A subband file that cannot be converted; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[InvalidSubbandFile], tuple[Path, str]]:
        # Picklable with its two arguments: it crosses from the MS writer process.
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named when it was opened: compared before every later read."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """Return the identity of the file ``st`` describes (from ``fstat`` of an open one)."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


@contextmanager
def open_subband(
    path: Path, expected_size: int | None = None
) -> Iterator[tuple[int, FileIdentity]]:
    """Open ``path`` read-only without following a symlink; yield ``(fd, identity)``.

    ``O_NONBLOCK`` keeps a FIFO put in a file's place from blocking the open; the file must
    then be a regular file, and, when ``expected_size`` is given (the size recorded when the
    file was registered), exactly that size: otherwise it is not the file that was registered.

    Raises
    ------
    InvalidSubbandFile
        Missing, a symlink, not a regular file, or not the registered size.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise InvalidSubbandFile(path, "does not exist") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InvalidSubbandFile(
                path, "is a symbolic link (refused: inputs are never followed through links)"
            ) from None
        raise InvalidSubbandFile(path, f"cannot be opened: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise InvalidSubbandFile(path, "is not a regular file")
        if expected_size is not None and st.st_size != expected_size:
            raise InvalidSubbandFile(
                path,
                f"is not the file that was registered: {st.st_size} bytes, registered with "
                f"{expected_size}",
            )
        yield fd, FileIdentity.of(st)
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """Return a name for the open file ``fd`` itself (not for whatever its path names now)."""
    return f"/proc/self/fd/{fd}"


def _check_identity(path: Path, fd: int, expected: FileIdentity) -> None:
    if FileIdentity.of(os.fstat(fd)) != expected:
        raise InvalidSubbandFile(path, "changed or was replaced since the group was validated")


@dataclass(frozen=True, slots=True)
class SubbandHeader:
    """What one subband file says about itself, validated.

    Per-baseline arrays (``ant_1``, ``ant_2``, ``uvw_m``) are those of the first integration;
    the file was checked to repeat the same baselines in the same order at every integration.
    ``freqs_hz`` is in file order (descending for DSA-110).
    """

    path: Path
    n_times: int
    n_bls: int
    n_freqs: int
    n_pols: int
    vis_shape: tuple[int, ...]
    times_jd: np.ndarray  # (n_times,) integration centres, UTC
    integration_s: np.ndarray  # (n_times,)
    ant_1: np.ndarray  # (n_bls,) antenna numbers
    ant_2: np.ndarray  # (n_bls,)
    uvw_m: np.ndarray  # (n_bls, 3) as written (toward the fringe-stop centre)
    freqs_hz: np.ndarray  # (n_freqs,)
    channel_width_hz: float
    polarizations: tuple[int, ...]
    antenna_numbers: np.ndarray  # (n_ant_telescope,)
    antenna_names: tuple[str, ...]
    antenna_offsets_m: np.ndarray  # (n_ant_telescope, 3) ECEF offsets from the location
    antenna_diameters_m: np.ndarray  # (n_ant_telescope,)
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    telescope_name: str
    instrument: str
    phase_center_dec_rad: float
    n_ants_data: int
    history: str
    identity: FileIdentity | None = None  # the file validated (device, inode, size, mtime)

    @property
    def n_blts(self) -> int:
        """Rows of baseline-time in the file (``Nblts``)."""
        return self.n_times * self.n_bls

    @property
    def ascending(self) -> bool:
        """Whether the file's channels run upward in frequency."""
        return self.n_freqs == 1 or bool(self.freqs_hz[1] > self.freqs_hz[0])


def _text(value: object) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace").strip()
    return str(value).strip()


class _HeaderReader:
    """Typed access to ``Header`` datasets that raises :class:`InvalidSubbandFile`."""

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self.f = f

    def fail(self, problem: str) -> InvalidSubbandFile:
        return InvalidSubbandFile(self.path, problem)

    def dataset(self, name: str) -> h5py.Dataset:
        try:
            obj = self.f[name]
        except KeyError:
            raise self.fail(f"missing dataset {name}") from None
        except (OSError, RuntimeError) as err:
            raise self.fail(f"cannot read {name}: {err}") from None
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(f"{name} is not a dataset")
        return obj

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        dset = self.dataset(name)
        try:
            value = np.asarray(dset[()])
        except (OSError, RuntimeError, ValueError) as err:
            raise self.fail(f"cannot read {name}: {err}") from None
        if shape is not None and value.shape != shape:
            raise self.fail(f"{name} has shape {value.shape}, expected {shape} from the header")
        return value

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.array(name)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise self.fail(f"{name} should be an integer scalar, got {value!r}")
        number = int(value.reshape(()))
        if number < minimum:
            raise self.fail(f"{name} = {number} is below {minimum}")
        return number

    def real(self, name: str) -> float:
        value = self.array(name)
        if value.size != 1 or not np.issubdtype(value.dtype, np.number):
            raise self.fail(f"{name} should be a numeric scalar, got {value!r}")
        number = float(value.reshape(()))
        if not math.isfinite(number):
            raise self.fail(f"{name} is not finite ({number})")
        return number

    def text(self, name: str, default: str | None = None) -> str:
        if default is not None and name not in self.f:
            return default
        return _text(self.array(name))


def read_header(path: Path, expected_size: int | None = None) -> SubbandHeader:
    """Open ``path`` and validate its header and per-baseline-time arrays.

    The file is opened as :func:`open_subband` does, and checked to be the same file after.

    Raises
    ------
    InvalidSubbandFile
        The file is missing, a symlink, not a regular file, not the registered size,
        unreadable (truncated, not HDF5), or internally inconsistent.
    """
    path = Path(path)
    with open_subband(path, expected_size) as (fd, identity):
        try:
            f = h5py.File(fd_path(fd), "r")
        except (OSError, RuntimeError) as err:
            raise InvalidSubbandFile(
                path, f"cannot be opened as HDF5 (truncated or not an HDF5 file): {err}"
            ) from None
        with f:
            header = _parse_header(_HeaderReader(path, f))
        _check_identity(path, fd, identity)
    return dataclasses.replace(header, identity=identity)


def _parse_header(h: _HeaderReader) -> SubbandHeader:
    """Validate one file's header, part by part, into a :class:`SubbandHeader`."""
    dims = _dimensions(h)
    dec0 = _fringe_stop_dec(h)
    rows = _rows(h, dims)
    freqs, channel_width = _band(h, dims.n_freqs)
    pols = _polarizations(h, dims.n_pols)
    used = np.union1d(rows.ant_1, rows.ant_2)
    antennas = _antennas(h, dims.n_ant_tel, used)
    vis_shape = _data_shape(h, dims.n_blts, dims.n_freqs, dims.n_pols)
    n_ants_data = (
        h.integer("Header/Nants_data", 1) if "Header/Nants_data" in h.f else int(used.size)
    )
    return SubbandHeader(
        path=h.path,
        n_times=dims.n_times,
        n_bls=dims.n_bls,
        n_freqs=dims.n_freqs,
        n_pols=dims.n_pols,
        vis_shape=vis_shape,
        **rows._asdict(),
        freqs_hz=freqs,
        channel_width_hz=channel_width,
        polarizations=pols,
        **antennas._asdict(),
        latitude_deg=h.real("Header/latitude"),
        longitude_deg=h.real("Header/longitude"),
        altitude_m=h.real("Header/altitude"),
        telescope_name=h.text("Header/telescope_name", default=""),
        instrument=h.text("Header/instrument", default=""),
        phase_center_dec_rad=dec0,
        n_ants_data=n_ants_data,
        history=h.text("Header/history", default=""),
    )


class _Dimensions(NamedTuple):
    """The header's counts, each at least 1, with ``n_blts == n_bls * n_times``."""

    n_bls: int
    n_times: int
    n_blts: int
    n_freqs: int
    n_pols: int
    n_ant_tel: int


def _dimensions(h: _HeaderReader) -> _Dimensions:
    """Read the counts (``Nbls`` ...) and check they describe one window of whole integrations."""
    dims = _Dimensions(
        n_bls=h.integer("Header/Nbls", 1),
        n_times=h.integer("Header/Ntimes", 1),
        n_blts=h.integer("Header/Nblts", 1),
        n_freqs=h.integer("Header/Nfreqs", 1),
        n_pols=h.integer("Header/Npols", 1),
        n_ant_tel=h.integer("Header/Nants_telescope", 1),
    )
    if "Header/Nspws" in h.f and h.integer("Header/Nspws", 1) != 1:
        raise h.fail("Nspws must be 1 (one spectral window per subband file)")
    if dims.n_blts != dims.n_bls * dims.n_times:
        raise h.fail(f"Nblts = {dims.n_blts} but Nbls x Ntimes = {dims.n_bls} x {dims.n_times}")
    return dims


def _fringe_stop_dec(h: _HeaderReader) -> float:
    """Return the fringe-stop declination (rad) of a meridian drift-scan file.

    Raises
    ------
    InvalidSubbandFile
        The file is not phased the way the converter assumes: drift scan, fringe-stopped
        at hour angle 0 in HADEC.
    """
    phase_type = h.text("Header/phase_type", default="drift").lower()
    if phase_type != "drift":
        raise h.fail(f"phase_type is {phase_type!r}; only meridian drift-scan files are supported")
    extra = "Header/extra_keywords"
    if f"{extra}/phase_center_dec" not in h.f:
        raise h.fail(f"missing {extra}/phase_center_dec (the fringe-stop declination)")
    dec0 = h.real(f"{extra}/phase_center_dec")
    if not -math.pi / 2 <= dec0 <= math.pi / 2:
        raise h.fail(f"phase_center_dec = {dec0} rad is not a declination")
    if f"{extra}/ha_phase_center" in h.f and abs(h.real(f"{extra}/ha_phase_center")) > 1e-12:
        raise h.fail("ha_phase_center is not 0: only meridian fringe stopping is supported")
    epoch = h.text(f"{extra}/phase_center_epoch", default="HADEC").upper()
    if epoch != "HADEC":
        raise h.fail(f"phase_center_epoch is {epoch!r}, expected 'HADEC'")
    return dec0


class _Rows(NamedTuple):
    """Per-integration times and the first integration's baselines (``SubbandHeader`` fields)."""

    times_jd: np.ndarray
    integration_s: np.ndarray
    ant_1: np.ndarray
    ant_2: np.ndarray
    uvw_m: np.ndarray


def _rows(h: _HeaderReader, dims: _Dimensions) -> _Rows:
    """Read the baseline-time arrays and check the file is time-major with fixed baselines."""
    n_blts, n_times, n_bls = dims.n_blts, dims.n_times, dims.n_bls
    times = h.array("Header/time_array", (n_blts,)).astype(np.float64)
    ant_1 = h.array("Header/ant_1_array", (n_blts,)).astype(np.int64)
    ant_2 = h.array("Header/ant_2_array", (n_blts,)).astype(np.int64)
    integration = h.array("Header/integration_time", (n_blts,)).astype(np.float64)
    uvw = h.array("Header/uvw_array", (n_blts, 3)).astype(np.float64)
    times_tb = times.reshape(n_times, n_bls)
    if not np.all(np.isfinite(times)):
        raise h.fail("time_array has non-finite values")
    if np.ptp(times_tb, axis=1).max() > _SAME_TIME_TOLERANCE_DAYS:
        raise h.fail("baseline-times are not time-major (one time per block of Nbls rows)")
    times_jd = times_tb[:, 0].copy()
    if n_times > 1 and not np.all(np.diff(times_jd) > 0):
        raise h.fail("integration times are not strictly increasing")
    a1, a2 = ant_1.reshape(n_times, n_bls), ant_2.reshape(n_times, n_bls)
    if not (np.array_equal(a1, np.broadcast_to(a1[0], a1.shape))) or not np.array_equal(
        a2, np.broadcast_to(a2[0], a2.shape)
    ):
        raise h.fail("the baseline order differs between integrations")
    integration_s = integration.reshape(n_times, n_bls)[:, 0].copy()
    if not np.all(np.isfinite(integration_s) & (integration_s > 0)):
        raise h.fail("integration_time has non-positive or non-finite values")
    if not np.all(np.isfinite(uvw)):
        raise h.fail("uvw_array has non-finite values")
    return _Rows(times_jd, integration_s, a1[0].copy(), a2[0].copy(), uvw[:n_bls].copy())


def _band(h: _HeaderReader, n_freqs: int) -> tuple[np.ndarray, float]:
    """Return the channel frequencies (file order) and the one channel width, checked."""
    freqs = h.array("Header/freq_array").astype(np.float64).reshape(-1)
    if freqs.shape != (n_freqs,):
        raise h.fail(f"freq_array holds {freqs.size} channels, Nfreqs = {n_freqs}")
    width = np.abs(h.array("Header/channel_width").astype(np.float64).reshape(-1))
    if width.size not in (1, n_freqs) or not np.all(np.isfinite(width)) or np.any(width <= 0):
        raise h.fail(f"channel_width must be positive, one value or one per channel: {width}")
    if np.ptp(width) > 1e-9 * width.max():
        raise h.fail("channel_width varies across the subband")
    channel_width = float(width[0])
    if not np.all(np.isfinite(freqs)) or np.any(freqs <= 0):
        raise h.fail("freq_array has non-positive or non-finite values")
    if n_freqs > 1:
        steps = np.diff(freqs)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise h.fail("freq_array is not monotonic")
        if np.abs(np.abs(steps) - channel_width).max() > 1e-6 * channel_width:
            raise h.fail("channel spacing differs from channel_width")
    return freqs, channel_width


def _polarizations(h: _HeaderReader, n_pols: int) -> tuple[int, ...]:
    """Return the AIPS polarization codes, each one the converter can carry, none twice."""
    pols = tuple(int(p) for p in h.array("Header/polarization_array", (n_pols,)).reshape(-1))
    unknown = [p for p in pols if p not in KNOWN_POLARIZATIONS] + (
        ["duplicate"] if len(set(pols)) != len(pols) else []
    )
    if unknown:
        raise h.fail(f"polarization_array {list(pols)} has unsupported entries {unknown}")
    return pols


class _Antennas(NamedTuple):
    """The telescope's antennas (``SubbandHeader`` fields)."""

    antenna_numbers: np.ndarray
    antenna_names: tuple[str, ...]
    antenna_offsets_m: np.ndarray
    antenna_diameters_m: np.ndarray


def _antennas(h: _HeaderReader, n_ant_tel: int, used: np.ndarray) -> _Antennas:
    """Read the antenna table and check that it has every antenna of the baselines ``used``."""
    numbers = h.array("Header/antenna_numbers", (n_ant_tel,)).astype(np.int64)
    names = tuple(_text(n) for n in h.array("Header/antenna_names", (n_ant_tel,)))
    offsets = h.array("Header/antenna_positions", (n_ant_tel, 3)).astype(np.float64)
    diameters = _diameters(h, n_ant_tel)
    if len(set(numbers.tolist())) != n_ant_tel or numbers.min() < 0:
        raise h.fail("antenna_numbers are not unique non-negative integers")
    if not np.all(np.isfinite(offsets)):
        raise h.fail("antenna_positions has non-finite values")
    missing = np.setdiff1d(used, numbers)
    if missing.size:
        raise h.fail(f"baselines use antennas {missing.tolist()} not in antenna_numbers")
    return _Antennas(numbers, names, offsets, diameters)


def _diameters(h: _HeaderReader, n_ant_tel: int) -> np.ndarray:
    """Return the dish diameters: one per antenna, one for all, or zeros when absent."""
    if "Header/antenna_diameters" not in h.f:
        return np.zeros(n_ant_tel)
    diameters = h.array("Header/antenna_diameters").astype(np.float64).reshape(-1)
    if diameters.size == 1:
        diameters = np.full(n_ant_tel, diameters[0])
    if diameters.shape != (n_ant_tel,):
        raise h.fail(f"antenna_diameters has {diameters.size} entries, expected {n_ant_tel}")
    return diameters


def _data_shape(h: _HeaderReader, n_blts: int, n_freqs: int, n_pols: int) -> tuple[int, ...]:
    """Check the ``Data`` arrays: (Nblts, 1, Nfreqs, Npols), or without the spw axis."""
    accepted = ((n_blts, 1, n_freqs, n_pols), (n_blts, n_freqs, n_pols))
    shapes = {}
    for name, kinds in (("visdata", "c"), ("flags", "b"), ("nsamples", "fiu")):
        dset = h.dataset(f"Data/{name}")
        if dset.shape not in accepted:
            raise h.fail(
                f"Data/{name} has shape {dset.shape}, expected {accepted[0]} from the header"
            )
        if dset.dtype.kind not in kinds:
            raise h.fail(f"Data/{name} has dtype {dset.dtype}, expected kind {kinds!r}")
        shapes[name] = dset.shape
    if len(set(shapes.values())) != 1:
        raise h.fail(f"Data arrays disagree in shape: {shapes}")
    return shapes["visdata"]


def check_same_observation(reference: SubbandHeader, other: SubbandHeader) -> None:
    """Raise unless ``other`` describes the same observation and layout as ``reference``.

    Subbands of one group must share times, baselines, channel count and width,
    polarizations, array geometry and fringe-stop declination; only the frequencies differ.

    Raises
    ------
    InvalidSubbandFile
        Naming ``other`` and the first field that differs, with both values.
    """
    name = reference.path.name

    def fail(problem: str) -> InvalidSubbandFile:
        return InvalidSubbandFile(other.path, f"{problem} (compared with {name} of the same group)")

    def differs(what: str, mine: object, theirs: object) -> InvalidSubbandFile:
        return fail(f"{what} is {theirs} instead of {mine}")

    for attr in ("n_times", "n_bls", "n_freqs", "n_pols", "polarizations", "vis_shape"):
        mine, theirs = getattr(reference, attr), getattr(other, attr)
        if mine != theirs:
            raise differs(attr, mine, theirs)
    dt_s = float(np.abs(reference.times_jd - other.times_jd).max()) * 86400.0
    if dt_s > TIME_TOLERANCE_S:
        raise fail(
            f"time_array differs by up to {dt_s:.3f} s (tolerance {TIME_TOLERANCE_S} s): "
            "not the same observation"
        )
    if not (
        np.array_equal(reference.ant_1, other.ant_1)
        and np.array_equal(reference.ant_2, other.ant_2)
    ):
        raise fail("the baseline order (ant_1_array, ant_2_array) differs")
    if abs(reference.channel_width_hz - other.channel_width_hz) > 1e-9 * reference.channel_width_hz:
        raise differs("channel_width", reference.channel_width_hz, other.channel_width_hz)
    if not np.array_equal(reference.antenna_numbers, other.antenna_numbers):
        raise fail("antenna_numbers differ")
    moved = float(np.abs(reference.antenna_offsets_m - other.antenna_offsets_m).max())
    if moved > POSITION_TOLERANCE_M:
        raise fail(f"antenna_positions differ by up to {moved:.4f} m")
    for attr in ("latitude_deg", "longitude_deg"):
        mine, theirs = getattr(reference, attr), getattr(other, attr)
        if abs(mine - theirs) > math.degrees(ANGLE_TOLERANCE_RAD):
            raise differs(attr, mine, theirs)
    if abs(reference.altitude_m - other.altitude_m) > POSITION_TOLERANCE_M:
        raise differs("altitude", reference.altitude_m, other.altitude_m)
    if abs(reference.phase_center_dec_rad - other.phase_center_dec_rad) > ANGLE_TOLERANCE_RAD:
        raise differs(
            "phase_center_dec", reference.phase_center_dec_rad, other.phase_center_dec_rad
        )
