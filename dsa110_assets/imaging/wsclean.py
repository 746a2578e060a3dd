"""Run WSClean on one Measurement Set and publish its FITS products atomically.

Two pieces: :func:`choose_image_geometry` picks the cell and image size from the MS itself
(longest projected baseline at the highest frequency; primary beam at the lowest), and
:func:`run_wsclean` runs the imager in a hidden temporary folder inside the destination folder
(same filesystem), so the products replace earlier ones of the same name only by ``rename``
and only once the run has succeeded. A failed, timed-out or killed run leaves nothing in the
destination but the products of the previous successful run; leftovers of a killed process are
swept by the next run of the same name.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.rephase import PHASED_KEYWORD
from dsa110_assets.instrument import DISH_DIAMETER_M, SPEED_OF_LIGHT_M_S
from dsa110_assets.safe_fs import sweep_dead
from dsa110_assets.timing import Stopwatch

AIRY_FWHM_FACTOR = 1.029  # FWHM of the Airy power pattern in units of lambda / D
PRODUCT_KINDS = ("image", "residual", "model", "psf", "dirty")
_TAIL_LINES = 40
_TEMP_PREFIX = ".wsclean-"


class WSCleanError(PipelineError, RuntimeError):
    """WSClean could not be run or failed; ``log_tail`` holds the end of its output."""

    def __init__(self, message: str, *, returncode: int | None = None, log_tail: str = "") -> None:
        text = message if not log_tail else f"{message}\n--- wsclean output (tail) ---\n{log_tail}"
        super().__init__(text)
        self.returncode = returncode
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class ImageGeometry:
    """Cell and size chosen for an MS, and the figures they came from."""

    size: int  # pixels per side (even, FFT-friendly)
    scale_arcsec: float  # cell size
    resolution_arcsec: float  # lambda_min / longest projected baseline
    primary_beam_fwhm_deg: float  # Airy FWHM at the lowest frequency
    fov_deg: float  # size * scale: what the image actually covers
    capped: bool  # the wanted field of view did not fit in max_size pixels
    max_baseline_m: float
    freq_min_hz: float
    freq_max_hz: float


@dataclass(frozen=True, slots=True)
class WSCleanParams:
    """The imaging settings the pipeline varies; anything else goes in ``extra_args``.

    ``field`` None images the field the MS was rephased to (keyword ``DSA110_PHASED_TO_FIELD``,
    see :mod:`.rephase`), or WSClean's default (field 0) if it was not. ``save_model_to_ms``
    False passes ``-no-update-model-required`` (no MODEL_DATA writes: faster, MS untouched).
    ``niter`` is bounded because cleaning a 5-minute drift snapshot much deeper than a dynamic
    range of ~500 around a bright source diverges (the source's flux changes as it drifts
    through the beam, so it is not PSF-shaped); 2000 stays on the converging side in tests.
    """

    size: int
    scale_arcsec: float
    weight: str = "briggs 0.5"
    niter: int = 2000
    mgain: float = 0.8
    auto_mask: float | None = 3.0
    auto_threshold: float | None = 1.0
    data_column: str = "CORRECTED_DATA"
    threads: int | None = None
    abs_mem_gb: float | None = None
    save_model_to_ms: bool = False
    field: int | str | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 2 or self.size % 2:
            raise ValueError(f"size must be an even number of pixels >= 2, got {self.size}")
        if not self.scale_arcsec > 0:
            raise ValueError(f"scale_arcsec must be positive, got {self.scale_arcsec}")
        if self.niter < 0:
            raise ValueError(f"niter must be >= 0, got {self.niter}")
        weight_args(self.weight)  # validates
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))


@dataclass(frozen=True, slots=True)
class WSCleanResult:
    """Published products (None where WSClean made none) and how the run went."""

    image: Path
    residual: Path | None
    model: Path | None
    psf: Path | None
    dirty: Path | None
    products: tuple[Path, ...]  # every file published, including per-channel ones
    command: tuple[str, ...]
    duration_s: float
    log_tail: str


def weight_args(weight: str) -> list[str]:
    """``"briggs 0.5"`` -> ``["briggs", "0.5"]``; ``"natural"``/``"uniform"`` as they are."""
    parts = weight.split()
    if parts == ["natural"] or parts == ["uniform"]:
        return parts
    if len(parts) == 2 and parts[0] == "briggs":
        try:
            float(parts[1])
        except ValueError:
            pass
        else:
            return parts
    raise ValueError(f"weight must be 'natural', 'uniform' or 'briggs <robust>', got {weight!r}")


def fft_friendly_size(n: int) -> int:
    """Smallest even integer >= ``n`` whose prime factors are all 2, 3 or 5."""
    k = max(2, int(np.ceil(n)))
    k += k % 2
    while True:
        m = k
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return k
        k += 2


def _largest_friendly_at_most(n: int) -> int:
    k = n - n % 2
    while k > 2 and fft_friendly_size(k) != k:
        k -= 2
    return max(k, 2)


def choose_image_geometry(
    ms_path: str | Path,
    *,
    pixels_per_beam: float = 4.0,
    fov_deg: float | None = None,
    fov_fwhm_factor: float = 2.0,
    max_size: int = 4096,
) -> ImageGeometry:
    """Cell from the longest projected baseline at the highest frequency; size from the beam.

    The cell samples the finest fringe ``lambda_min / max|(u, v)|`` with ``pixels_per_beam``
    pixels (rounded down to 0.1 arcsec so products of different groups share cells). The image
    covers ``fov_deg``, by default ``fov_fwhm_factor`` times the Airy FWHM at the lowest
    frequency (the widest primary beam), rounded up to an FFT-friendly even size and capped at
    ``max_size`` pixels (then ``capped`` is set and the field of view shrinks, not the cell).
    Flagged rows (e.g. missing subbands) do not count.
    """
    ms = Path(ms_path)
    if not (ms / "table.dat").is_file():
        raise FileNotFoundError(f"{ms}: not a Measurement Set (no table.dat)")
    if not pixels_per_beam > 0 or not fov_fwhm_factor > 0 or max_size < 2:
        raise ValueError("pixels_per_beam, fov_fwhm_factor must be > 0 and max_size >= 2")
    with pt.table(str(ms), ack=False) as t:
        uvw = t.getcol("UVW")
        flag_row = t.getcol("FLAG_ROW")
        ddid = t.getcol("DATA_DESC_ID")
    with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of_ddid = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        chan_freq = t.getcol("CHAN_FREQ")
    used = ~flag_row
    if not used.any():
        raise ValueError(f"{ms}: every row is flagged; nothing to image")
    freqs = chan_freq[np.unique(spw_of_ddid[ddid[used]])]
    f_min, f_max = float(freqs.min()), float(freqs.max())
    max_uv = float(np.sqrt(uvw[used, 0] ** 2 + uvw[used, 1] ** 2).max())
    if max_uv <= 0:
        raise ValueError(f"{ms}: all baselines have zero length")
    resolution = np.degrees(SPEED_OF_LIGHT_M_S / f_max / max_uv) * 3600.0
    scale = max(0.1, np.floor(resolution / pixels_per_beam * 10.0) / 10.0)
    fwhm_deg = float(np.degrees(AIRY_FWHM_FACTOR * SPEED_OF_LIGHT_M_S / f_min / DISH_DIAMETER_M))
    want_deg = fov_deg if fov_deg is not None else fov_fwhm_factor * fwhm_deg
    size = fft_friendly_size(want_deg * 3600.0 / scale)
    cap = _largest_friendly_at_most(max_size)
    capped = size > cap
    size = min(size, cap)
    return ImageGeometry(
        size=size,
        scale_arcsec=float(scale),
        resolution_arcsec=float(resolution),
        primary_beam_fwhm_deg=fwhm_deg,
        fov_deg=float(size * scale / 3600.0),
        capped=capped,
        max_baseline_m=max_uv,
        freq_min_hz=f_min,
        freq_max_hz=f_max,
    )


def _phased_field(ms: Path) -> int | None:
    try:
        with pt.table(str(ms), ack=False) as t:
            keywords = t.getkeywords()
    except RuntimeError:
        return None  # WSClean will report the unreadable MS itself
    value = keywords.get(PHASED_KEYWORD)
    return None if value is None else int(value)


def wsclean_command(
    ms_path: Path, prefix: Path, temp_dir: Path, params: WSCleanParams, wsclean_bin: str
) -> list[str]:
    """Return the WSClean command line for ``params`` (output names start with ``prefix``)."""
    cmd = [
        wsclean_bin,
        "-name", str(prefix),
        "-temp-dir", str(temp_dir),
        "-size", str(params.size), str(params.size),
        "-scale", f"{params.scale_arcsec:g}asec",
        "-weight", *weight_args(params.weight),
        "-niter", str(params.niter),
        "-mgain", f"{params.mgain:g}",
        "-data-column", params.data_column,
    ]  # fmt: skip
    if params.auto_mask is not None:
        cmd += ["-auto-mask", f"{params.auto_mask:g}"]
    if params.auto_threshold is not None:
        cmd += ["-auto-threshold", f"{params.auto_threshold:g}"]
    if params.threads is not None:
        cmd += ["-j", str(params.threads)]
    if params.abs_mem_gb is not None:
        cmd += ["-abs-mem", f"{params.abs_mem_gb:g}"]
    if not params.save_model_to_ms:
        cmd.append("-no-update-model-required")
    field_id = params.field if params.field is not None else _phased_field(ms_path)
    if field_id is not None:
        cmd += ["-field", str(field_id)]
    cmd += [*params.extra_args, str(ms_path)]
    return cmd


def _tail(text: str, n: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _sweep_dead_runs(images_dir: Path, name: str) -> None:
    """Remove temporary folders of runs of ``name`` whose process is gone (killed runs)."""
    sweep_dead(images_dir, f"{_TEMP_PREFIX}{name}-", _run_owner)


def _run_owner(rest: str) -> tuple[int, str] | None:
    """Return ``(pid, rest)`` of a ``{pid}-{hex}`` run folder name, None for other names."""
    pid = rest.split("-")[0]
    return (int(pid), rest) if pid.isdigit() else None


def run_wsclean(
    ms_path: str | Path,
    images_dir: str | Path,
    name: str,
    params: WSCleanParams,
    *,
    wsclean_bin: str = "wsclean",
    timeout_s: float | None = None,
) -> WSCleanResult:
    """Image ``ms_path`` into ``images_dir/{name}-image.fits`` (and residual, model, psf ...).

    WSClean runs in a private temporary folder inside ``images_dir``; its products are
    moved into place only once it has succeeded, so a failed or killed run never leaves
    half-written images under the published names.

    Raises
    ------
    WSCleanError
        The binary is missing, WSClean exited non-zero, timed out, or made no image; the
        message holds the return code and the last lines of its output. Nothing new is left in
        ``images_dir``.
    """
    ms = Path(ms_path)
    out_dir = Path(images_dir)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain, non-hidden file name prefix, got {name!r}")
    binary = shutil.which(wsclean_bin)
    if binary is None:
        raise WSCleanError(f"WSClean executable {wsclean_bin!r} not found on PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    _sweep_dead_runs(out_dir, name)
    work = out_dir / f"{_TEMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        cmd = wsclean_command(ms, work / name, work, params, binary)
        tail, duration = _execute(cmd, ms, work, timeout_s)
        names, published = _publish(work, out_dir, name, ms, tail)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def product(kind: str) -> Path | None:
        for candidate in (f"{name}-{kind}.fits", f"{name}-MFS-{kind}.fits"):
            if candidate in names:
                return out_dir / candidate
        return None

    return WSCleanResult(
        image=product("image"),
        residual=product("residual"),
        model=product("model"),
        psf=product("psf"),
        dirty=product("dirty"),
        products=published,
        command=tuple(cmd),
        duration_s=duration,
        log_tail=tail,
    )


def _execute(cmd: list[str], ms: Path, work: Path, timeout_s: float | None) -> tuple[str, float]:
    """Run WSClean in ``work``; return the tail of its output and the seconds it took.

    Raises
    ------
    WSCleanError
        WSClean timed out or exited non-zero (with the tail of its output).
    """
    watch = Stopwatch()
    try:
        run = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            cwd=work,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        output = err.output if isinstance(err.output, str) else (err.output or b"").decode()
        raise WSCleanError(
            f"WSClean on {ms} timed out after {timeout_s} s", log_tail=_tail(output)
        ) from None
    duration = watch.elapsed_s
    tail = _tail(run.stdout)
    if run.returncode != 0:
        raise WSCleanError(
            f"WSClean on {ms} failed with return code {run.returncode}",
            returncode=run.returncode,
            log_tail=tail,
        )
    return tail, duration


def _publish(
    work: Path, out_dir: Path, name: str, ms: Path, tail: str
) -> tuple[set[str], tuple[Path, ...]]:
    """Move the FITS products of a run from ``work`` into ``out_dir``.

    Single-image products of an earlier run that this run did not remake are removed, so
    ``out_dir`` never mixes two runs. Returns the product file names and their new paths.

    Raises
    ------
    WSCleanError
        WSClean exited 0 but wrote no image (nothing is published then).
    """
    made = sorted(p for p in work.iterdir() if p.is_file() and p.name.startswith(f"{name}-"))
    made = [p for p in made if p.suffix == ".fits"]
    names = {p.name for p in made}
    if not names & {f"{name}-image.fits", f"{name}-MFS-image.fits"}:
        raise WSCleanError(
            f"WSClean on {ms} exited 0 but wrote no {name}-image.fits",
            returncode=0,
            log_tail=tail,
        )
    published = []
    for path in made:
        target = out_dir / path.name
        os.replace(path, target)
        published.append(target)
    for kind in PRODUCT_KINDS:  # drop single-image products of an earlier run not remade
        stale = out_dir / f"{name}-{kind}.fits"
        if stale.name not in names and stale.exists():
            stale.unlink()
    return names, tuple(published)
