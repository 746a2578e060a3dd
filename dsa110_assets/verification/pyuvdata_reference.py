"""The existing DSA-110 pipeline's conversion path, pyuvdata alone.

It is the reference our converter must reproduce.

dsa110-contimg reads each subband with ``UVData.read``, gives each integration a meridian phase
centre, recomputes ``uvw_array`` with pyuvdata's ``calc_uvw``, leaves ``data_array`` untouched
and calls ``UVData.write_ms`` (``dsa110-instrument.md``). This module does exactly that with
pyuvdata's public calls, so tests (``tests/test_pyuvdata_oracle.py``) and ``bench/convert.py``
(the baseline) run the same reference. Nothing here uses the platform's own geometry.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.time import Time
from pyuvdata import UVData
from pyuvdata.utils.phasing import calc_uvw

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)


def meridian_uvdata(path: Path | str) -> UVData:
    """One subband as dsa110-contimg converts it, ready for ``UVData.write_ms``.

    Per-integration ICRS meridian phase centres (``meridian_icrs_t{i}``: HA 0 at the file's
    ``phase_center_dec``, through astropy's HADec frame), UVW recomputed with ``calc_uvw``
    from apparent coordinates and the frame position angle, ``data_array`` untouched,
    channels in ascending frequency. The read needs ``run_check=False`` and a float64 cast of
    ``uvw_array``, as real DSA-110 files do (their uvw is float32).
    """
    uv = UVData.from_file(str(path), file_type="uvh5", run_check=False)
    uv.uvw_array = uv.uvw_array.astype(np.float64)
    dec0 = float(uv.extra_keywords["phase_center_dec"])
    location = uv.telescope.location
    uv.phase_center_catalog = {}
    for i, when in enumerate(np.unique(uv.time_array)):
        meridian = SkyCoord(
            ha=0 * u.hourangle,
            dec=dec0 * u.rad,
            frame="hadec",
            obstime=Time(when, format="jd"),
            location=location,
        ).transform_to("icrs")
        cat_id = uv._add_phase_center(
            cat_name=f"meridian_icrs_t{i}",
            cat_type="sidereal",
            cat_lon=meridian.ra.rad,
            cat_lat=meridian.dec.rad,
            cat_frame="icrs",
            cat_epoch=2000.0,
        )
        uv.phase_center_id_array[uv.time_array == when] = cat_id
    uv._set_app_coords_helper()
    lat, lon, _ = uv.telescope.location_lat_lon_alt
    uv.uvw_array = calc_uvw(
        app_ra=uv.phase_center_app_ra,
        app_dec=uv.phase_center_app_dec,
        frame_pa=uv.phase_center_frame_pa,
        lst_array=uv.lst_array,
        use_ant_pos=True,
        antenna_positions=uv.telescope.antenna_positions,
        antenna_numbers=uv.telescope.antenna_numbers,
        ant_1_array=uv.ant_1_array,
        ant_2_array=uv.ant_2_array,
        telescope_lat=lat,
        telescope_lon=lon,
    )
    uv.reorder_freqs(channel_order="freq", run_check=False)
    return uv


def write_ms(uv: UVData, path: Path) -> Path:
    """Write ``uv`` with pyuvdata's own MS writer (``flip_conj``: UVW negated, DATA conjugated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "units of the data are uncalib", clobbering
        uv.write_ms(str(path), clobber=True)
    return path
