"""The thermal noise an image of an MS should reach: the radiometer equation for its data.

A cross-correlation sample of bandwidth ``dnu`` and integration ``tau`` has noise
``sigma = SEFD / sqrt(2 dnu tau)`` in each of its real and imaginary parts (the simulator adds
exactly this, :func:`dsa110_assets.simulation.corruptions.cross_noise_sigma`). Stokes I is
``(XX + YY) / 2``, and a naturally weighted image pixel is the inverse-variance weighted mean
of the real parts of the (phase-rotated) samples. Summing over the unflagged cross-correlation
samples ``k`` (one per row, channel and polarization):

    sigma_I = SEFD / sqrt(2 * sum_k dnu_k tau_k)

With ``N`` unflagged (baseline, time, channel) samples in both polarizations of equal
``dnu, tau`` this is ``SEFD / sqrt(n_pol * 2 N dnu tau)`` with ``n_pol = 2``, the textbook
``SEFD / sqrt(n_pol N_ant (N_ant - 1) dnu_total t_total)``. Autocorrelations are left out (the
imager ignores them); ``tau`` is the row's EXPOSURE, ``dnu`` the channel's EFFECTIVE_BW.

That is the natural-weighting figure, the lowest noise any weighting can reach. Briggs and
uniform weighting give up sensitivity for resolution; for them the weights are computed the
way the imager does (gridded uv density on the image's own uv cell, Briggs' formula with
robust ``R``) and the noise is raised by the exact factor those weights imply:

    sigma_w / sigma_nat = sqrt(sum w_k^2 / n_k * sum n_k) / sum w_k

(``n_k`` the natural weights). For DSA-110 snapshots with Briggs 0.5 the factor is ~1.1-1.3.
It is still a lower bound on a real image: confusion, deconvolution errors and calibration
errors only add.

On an imaging copy with channels averaged (:mod:`.imaging_ms`, keyword
``DSA110_CHANNELS_AVERAGED``) a bin's samples were not all used when some were flagged: its
``dnu`` is ``EFFECTIVE_BW x WEIGHT_SPECTRUM / WEIGHT`` (the unflagged fraction the copy
records), so the sum above, and the natural-weighting figure, are exactly those of the MS it
was made from, and the Briggs factor is that of the visibilities the imager grids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.errors import PipelineError
from dsa110_assets.imaging.imaging_ms import AVERAGED_KEYWORD
from dsa110_assets.instrument import SEFD_JY, SPEED_OF_LIGHT_M_S

_ROW_CHUNK = 1 << 16


class RadiometerError(PipelineError, ValueError):
    """The MS has no data to image, or the request makes no sense for it."""


def _parse_weighting(weighting: str) -> float | None:
    """None for natural; the Briggs robust parameter otherwise (uniform = robust -inf)."""
    parts = weighting.split()
    if parts == ["natural"]:
        return None
    if parts == ["uniform"]:
        return float("-inf")
    if len(parts) == 2 and parts[0] == "briggs":
        try:
            return float(parts[1])
        except ValueError:
            pass
    raise ValueError(f"weighting must be 'natural', 'uniform' or 'briggs <robust>': {weighting!r}")


def expected_image_noise(
    ms_path: str | Path,
    *,
    data_column: str = "CORRECTED_DATA",
    sefd_jy: float = SEFD_JY,
    weighting: str = "briggs 0.5",
    image_size: int | None = None,
    scale_arcsec: float | None = None,
) -> float:
    """Return the expected Stokes-I image noise (Jy/beam) of the unflagged cross-correlations.

    For Briggs or uniform weighting the uv grid of the image is needed: give ``image_size`` and
    ``scale_arcsec`` (the WSClean ``-size``/``-scale``), else the geometry
    :func:`.wsclean.choose_image_geometry` picks for the MS is used.

    Raises
    ------
    RadiometerError
        The MS (or ``data_column``) is missing, or nothing unflagged remains.
    """
    robust = _parse_weighting(weighting)
    if not sefd_jy > 0:
        raise ValueError(f"sefd_jy must be positive, got {sefd_jy}")
    ms = Path(ms_path)
    if not (ms / "table.dat").is_file():
        raise RadiometerError(f"{ms}: not a Measurement Set (no table.dat)")
    bw, freqs = _channels_by_ddid(ms)
    grid = None if robust is None else _image_uv_grid(ms, image_size, scale_arcsec)

    total = 0.0  # sum over unflagged samples of dnu * tau
    with pt.table(str(ms), ack=False) as t:
        if data_column not in t.colnames():
            raise RadiometerError(f"{ms}: no {data_column} column")
        n_rows = t.nrows()
        passes = 1 if grid is None else 2
        averaged = AVERAGED_KEYWORD in t.getkeywords() and "WEIGHT_SPECTRUM" in t.colnames()
        for sweep in range(passes):
            for start in range(0, n_rows, _ROW_CHUNK):
                count = min(_ROW_CHUNK, n_rows - start)
                natural, ddid = _natural_weights(t, start, count, bw, averaged=averaged)
                if sweep == 0:
                    total += float(natural.sum())
                if grid is not None:
                    _grid_rows(t, start, count, freqs[ddid], natural, grid, robust, sweep)
    if total <= 0:
        raise RadiometerError(f"{ms}: no unflagged cross-correlation samples")
    sigma_natural = sefd_jy / np.sqrt(2.0 * total)
    if grid is None:
        return float(sigma_natural)
    return float(sigma_natural * grid.noise_factor())


def _channels_by_ddid(ms: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return EFFECTIVE_BW and CHAN_FREQ (n_ddid, n_chan), indexed by DATA_DESC_ID."""
    with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of_ddid = t.getcol("SPECTRAL_WINDOW_ID")
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        bw = t.getcol("EFFECTIVE_BW")[spw_of_ddid]  # (n_ddid, n_chan)
        freqs = t.getcol("CHAN_FREQ")[spw_of_ddid]
    return bw, freqs


def _image_uv_grid(ms: Path, image_size: int | None, scale_arcsec: float | None) -> _UVGrid:
    """Return the empty uv grid of the image (WSClean's geometry for the MS if not given).

    Briggs and uniform weights depend on the gridded density, so the image's own cell
    size matters: 1 / field of view, on the u >= 0 half plane (Hermitian symmetry).
    """
    if image_size is None or scale_arcsec is None:
        from dsa110_assets.imaging.wsclean import choose_image_geometry

        geometry = choose_image_geometry(ms)
        image_size, scale_arcsec = geometry.size, geometry.scale_arcsec
    cell_lambda = 1.0 / (image_size * np.radians(scale_arcsec / 3600.0))
    return _UVGrid(image_size, cell_lambda)


def _natural_weights(
    t: pt.table, start: int, count: int, bw: np.ndarray, *, averaged: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``dnu * tau`` per sample of rows ``start:start+count`` (0 where unusable).

    Unusable: flagged (or the row), zero weight, or an autocorrelation. ``averaged`` (an
    imaging copy): each bin's ``dnu`` scaled by its unflagged fraction,
    ``WEIGHT_SPECTRUM / WEIGHT``. The rows' DATA_DESC_ID is returned too, for their channel
    frequencies.
    """
    cross = t.getcol("ANTENNA1", start, count) != t.getcol("ANTENNA2", start, count)
    weight = t.getcol("WEIGHT", start, count)  # (rows, corr)
    flag = t.getcol("FLAG", start, count)  # (rows, chan, corr)
    flag |= t.getcol("FLAG_ROW", start, count)[:, None, None]
    flag |= ~(weight > 0)[:, None, :]
    flag[~cross] = True
    ddid = t.getcol("DATA_DESC_ID", start, count)
    tau = t.getcol("EXPOSURE", start, count)
    natural = (~flag) * (bw[ddid] * tau[:, None])[:, :, None]
    if averaged:
        used = t.getcol("WEIGHT_SPECTRUM", start, count)
        natural *= used / np.where(weight > 0, weight, 1.0)[:, None, :]
    return natural, ddid


def _grid_rows(
    t: pt.table,
    start: int,
    count: int,
    freqs: np.ndarray,
    natural: np.ndarray,
    grid: _UVGrid,
    robust: float,
    sweep: int,
) -> None:
    """Grid the rows' natural weights (sweep 0), or add their weighted noise (sweep 1)."""
    uvw = t.getcol("UVW", start, count)
    lam = freqs / SPEED_OF_LIGHT_M_S  # (rows, chan) 1/wavelength
    u = uvw[:, 0, None] * lam
    v = uvw[:, 1, None] * lam
    w_nat = natural.sum(axis=2)  # Stokes I: both polarizations together
    if sweep == 0:
        grid.add(u, v, w_nat)
    else:
        grid.accumulate_noise(u, v, w_nat, robust)


class _UVGrid:
    """Gridded natural-weight density, then the Briggs weights' noise penalty."""

    def __init__(self, size: int, cell_lambda: float) -> None:
        self.size = int(size)
        self.cell = float(cell_lambda)
        self.density = np.zeros(self.size * self.size)
        self._sum_w = self._sum_w2_over_n = self._sum_n = 0.0
        self._f2: float | None = None

    def _index(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flip = u < 0
        u = np.where(flip, -u, u)
        v = np.where(flip, -v, v)
        iu = np.floor(u / self.cell + 0.5).astype(np.int64)
        iv = np.floor(v / self.cell + 0.5).astype(np.int64) + self.size // 2
        ok = (iu < self.size) & (iv >= 0) & (iv < self.size)
        return iv * self.size + iu, ok

    def add(self, u: np.ndarray, v: np.ndarray, weight: np.ndarray) -> None:
        index, ok = self._index(u, v)
        keep = ok & (weight > 0)
        self.density += np.bincount(index[keep], weight[keep], minlength=self.density.size)

    def accumulate_noise(
        self, u: np.ndarray, v: np.ndarray, natural: np.ndarray, robust: float
    ) -> None:
        if self._f2 is None:
            total = self.density.sum()
            mean_density = (self.density**2).sum() / total
            self._f2 = 0.0 if robust == float("-inf") else (5.0 * 10.0 ** (-robust)) ** 2
            self._f2 /= mean_density
        index, ok = self._index(u, v)
        keep = ok & (natural > 0)
        n = natural[keep]
        d = self.density[index[keep]]
        w = n / d if self._f2 == 0.0 else n / (1.0 + d * self._f2)  # uniform / Briggs
        self._sum_w += float(w.sum())
        self._sum_w2_over_n += float((w * w / n).sum())
        self._sum_n += float(n.sum())

    def noise_factor(self) -> float:
        if self._sum_w <= 0:
            return 1.0
        return float(np.sqrt(self._sum_w2_over_n * self._sum_n) / self._sum_w)
