"""Forced photometry, the photometry registry table, and variability metrics.

Test images are built here independently of the code under test: each pixel's direction
cosines (l, m) about the phase centre come from astropy's WCS, and the restoring beam is an
elliptical Gaussian in (l, m) with its major axis at BPA east of north. Correlated noise is
white noise convolved with the beam at half its covariance, so its correlation function is the
restoring beam (the assumption the flux errors rest on).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from dsa110_assets.photometry import (
    SKIP_BELOW_PB,
    SKIP_EDGE,
    SKIP_MASKED,
    SKIP_OUTSIDE,
    Measurement,
    PhotometryError,
    SourcePositions,
    flag_candidates,
    forced_photometry,
    light_curve,
    metrics_for_all,
    record_measurements,
    variability_metrics,
)
from dsa110_assets.photometry.variability import VariabilityError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
CENTRE = (150.0, 55.0)


def make_header(n: int, cell_arcsec: float, beam: tuple[float, float, float], *,
                rotation_deg: float = 0.0, flip_x: bool = False) -> fits.Header:  # fmt: skip
    """Return a WSClean-like 4-axis SIN header; ``beam`` = (BMAJ, BMIN arcsec, BPA deg)."""
    h = fits.Header()
    c = cell_arcsec / 3600.0
    rot = math.radians(rotation_deg)
    h.update(
        NAXIS=4, NAXIS1=n, NAXIS2=n, NAXIS3=1, NAXIS4=1,
        CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CTYPE3="FREQ", CTYPE4="STOKES",
        CRVAL1=CENTRE[0], CRVAL2=CENTRE[1], CRVAL3=1.4e9, CRVAL4=1.0,
        CRPIX1=n / 2 + 1, CRPIX2=n / 2 + 1, CRPIX3=1.0, CRPIX4=1.0,
        CDELT1=c if flip_x else -c, CDELT2=c, CDELT3=2.5e8, CDELT4=1.0,
        CUNIT1="deg", CUNIT2="deg", CUNIT3="Hz",
        PC1_1=math.cos(rot), PC1_2=-math.sin(rot), PC2_1=math.sin(rot), PC2_2=math.cos(rot),
        BMAJ=beam[0] / 3600.0, BMIN=beam[1] / 3600.0, BPA=beam[2], BUNIT="JY/BEAM",
    )  # fmt: skip
    return h


def direction_cosines(ra_deg, dec_deg):
    """(l, m) about the phase centre: l east, m north."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    ra0, dec0 = np.radians(CENTRE[0]), np.radians(CENTRE[1])
    l_ = np.cos(dec) * np.sin(ra - ra0)
    m_ = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    return l_, m_


def beam_in_lm(dl, dm, beam):
    """Restoring beam (peak 1) at tangent-plane offsets in radians."""
    bmaj, bmin, bpa = beam
    pa = math.radians(bpa)
    along = dl * math.sin(pa) + dm * math.cos(pa)
    across = dl * math.cos(pa) - dm * math.sin(pa)
    s_maj = math.radians(bmaj / 3600.0) / FWHM_PER_SIGMA
    s_min = math.radians(bmin / 3600.0) / FWHM_PER_SIGMA
    return np.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2))


class Sky:
    """A test image geometry with pixel (l, m) precomputed."""

    def __init__(self, n: int, cell_arcsec: float, beam: tuple[float, float, float], **kw):
        self.n, self.beam = n, beam
        self.header = make_header(n, cell_arcsec, beam, **kw)
        self.wcs = WCS(self.header).celestial
        yy, xx = np.mgrid[0:n, 0:n]
        ra, dec = self.wcs.pixel_to_world_values(xx, yy)
        self.l, self.m = direction_cosines(ra, dec)
        self._kernel: np.ndarray | None = None

    def world(self, x, y):
        ra, dec = self.wcs.pixel_to_world_values(np.asarray(x), np.asarray(y))
        return np.asarray(ra), np.asarray(dec)

    def model(self, ra, dec, flux) -> np.ndarray:
        out = np.zeros((self.n, self.n))
        ls, ms = direction_cosines(np.asarray(ra), np.asarray(dec))
        for l0, m0, s in zip(np.atleast_1d(ls), np.atleast_1d(ms), np.atleast_1d(flux),
                             strict=True):  # fmt: skip
            out += s * beam_in_lm(self.l - l0, self.m - m0, self.beam)
        return out

    def noise(self, sigma: float, rng: np.random.Generator) -> np.ndarray:
        """Noise whose correlation function is the restoring beam, rms ``sigma``."""
        if self._kernel is None:
            c = self.n // 2
            h = 24
            dl = self.l[c - h : c + h + 1, c - h : c + h + 1] - self.l[c, c]
            dm = self.m[c - h : c + h + 1, c - h : c + h + 1] - self.m[c, c]
            half = (self.beam[0] / math.sqrt(2), self.beam[1] / math.sqrt(2), self.beam[2])
            k = beam_in_lm(dl, dm, half)
            self._kernel = k / np.sqrt((k**2).sum())
        white = rng.normal(0.0, sigma, (self.n + 60, self.n + 60))
        return fftconvolve(white, self._kernel, mode="same")[30:-30, 30:-30]

    def write(self, path: Path, data: np.ndarray, header: fits.Header | None = None) -> Path:
        fits.PrimaryHDU(data[None, None].astype(np.float32), header or self.header).writeto(
            path, overwrite=True
        )
        return path


def positions_grid(sky: Sky, spacing: int, margin: int, rng: np.random.Generator):
    """Place sources on a jittered grid (sub-pixel); return pixel and world coordinates."""
    g = np.arange(margin, sky.n - margin + 1, spacing, dtype=float)
    x, y = np.meshgrid(g, g)
    x = x.ravel() + rng.uniform(-0.5, 0.5, x.size)
    y = y.ravel() + rng.uniform(-0.5, 0.5, y.size)
    ra, dec = sky.world(x, y)
    return x, y, ra, dec


def by_id(results: list[Measurement]) -> dict[str, Measurement]:
    return {m.source_id: m for m in results}


# --- the beam model ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [{}, {"rotation_deg": 20.0}, {"flip_x": True}])
def test_elongated_rotated_beam_is_fitted_exactly(tmp_path: Path, frame: dict) -> None:
    """PA 30 deg, 2.5:1 beam: exact fluxes in any pixel frame; the wrong PA visibly fails."""
    rng = np.random.default_rng(1)
    sky = Sky(192, 4.0, (40.0, 16.0, 30.0), **frame)
    x, y, ra, dec = positions_grid(sky, 40, 36, rng)
    flux = rng.uniform(0.5, 2.0, x.size)
    data = sky.model(ra, dec, flux) + rng.normal(0.0, 1e-7, (sky.n, sky.n))  # rms > 0
    image = sky.write(tmp_path / "beam-image.fits", data)
    ids = [f"s{i}" for i in range(x.size)]
    res = forced_photometry(image, (ids, ra, dec, flux))
    assert all(m.ok for m in res)
    got = np.array([m.flux_jy for m in res])
    np.testing.assert_allclose(got, flux, rtol=2e-4)
    np.testing.assert_allclose([m.peak_flux_jy for m in res], flux, rtol=0.05)  # bilinear
    np.testing.assert_allclose([m.x_pix for m in res], x, atol=1e-6)
    # The same pixels with the PA mirrored in the header: the model no longer matches.
    wrong = sky.header.copy()
    wrong["BPA"] = -30.0
    bad = forced_photometry(sky.write(tmp_path / "wrong-image.fits", data, wrong),
                            (ids, ra, dec, flux))  # fmt: skip
    ratio = np.array([m.flux_jy for m in bad]) / flux
    assert np.all(ratio < 0.8)
    assert min(m.chi2 for m in bad) > 1e4 * max(m.chi2 for m in res)


@pytest.mark.skipif(shutil.which("wsclean") is None, reason="WSClean is not installed")
def test_beam_convention_matches_wsclean_restoring(tmp_path: Path) -> None:
    """WSClean itself restores a point at BPA 30 deg: the fit recovers it exactly."""
    sky = Sky(128, 5.0, (60.0, 20.0, 30.0))
    model = np.zeros((128, 128))
    model[64, 64] = 1.0
    model_path = sky.write(tmp_path / "model.fits", model)
    noise = np.random.default_rng(7).normal(0.0, 1e-6, (128, 128))
    residual = sky.write(tmp_path / "residual.fits", noise)
    out = tmp_path / "restored-image.fits"
    subprocess.run(
        ["wsclean", "-beam-shape", "60asec", "20asec", "30deg", "-restore", str(residual),
         str(model_path), str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    ra, dec = sky.world(np.array([64.0]), np.array([64.0]))
    (m,) = forced_photometry(out, (["p"], ra, dec))
    assert m.flux_jy == pytest.approx(1.0, rel=1e-3) and m.chi2 < 3.0
    header = fits.getheader(out)
    header["BPA"] = -30.0
    wrong = sky.write(tmp_path / "wrong-image.fits", fits.getdata(out)[0, 0], header)
    (w,) = forced_photometry(wrong, (["p"], ra, dec))
    assert w.flux_jy < 0.8 and w.chi2 > 1e3


# --- flux accuracy with a primary beam; skip reasons --------------------------------------------


def test_fluxes_after_primary_beam_and_skip_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sky = Sky(256, 5.0, (25.0, 20.0, -40.0))  # 5 px x 4 px FWHM
    sigma = 1e-3
    x, y, ra, dec = positions_grid(sky, 34, 26, rng)
    r = np.hypot(x - 128, y - 128)
    pb_map = np.exp(-0.5 * (np.hypot(*np.mgrid[-128:128, -128:128]) / 60.0) ** 2)
    pb_at = np.exp(-0.5 * (r / 60.0) ** 2)
    snr_apparent = rng.uniform(20.0, 300.0, x.size)
    true = snr_apparent * sigma / pb_at
    pb_nan = np.where(pb_map >= 0.1, pb_map, np.nan)  # as write_pb_products leaves it
    image = sky.write(tmp_path / "g-image.fits",
                      sky.model(ra, dec, true * pb_at) + sky.noise(sigma, rng))  # fmt: skip
    pb_path = sky.write(tmp_path / "g-pb.fits", pb_nan)
    # Extra positions: outside, at the edge, below the 0.2 cutoff (pb 0.15 but on the image).
    xe, ye = np.array([300.0, 2.0, 128.0]), np.array([128.0, 128.0, 18.0])  # pb 0.19
    ra_e, dec_e = sky.world(xe, ye)
    ids = [f"s{i}" for i in range(x.size)] + ["off", "edge", "lowpb"]
    pos = SourcePositions.from_arrays(ids, np.r_[ra, ra_e], np.r_[dec, dec_e])
    res = by_id(forced_photometry(image, pos, pb_fits=pb_path, pb_cutoff=0.2))
    assert res["off"].skip_reason == SKIP_OUTSIDE
    assert res["edge"].skip_reason == SKIP_EDGE
    assert res["lowpb"].skip_reason == SKIP_BELOW_PB and res["lowpb"].pb_response < 0.2
    assert math.isnan(res["edge"].flux_jy) and not res["edge"].ok
    measured = [res[f"s{i}"] for i in range(x.size) if res[f"s{i}"].ok]
    below = [res[f"s{i}"] for i in range(x.size) if not res[f"s{i}"].ok]
    assert {m.skip_reason for m in below} <= {SKIP_BELOW_PB}
    assert len(measured) >= 30
    idx = np.array([int(m.source_id[1:]) for m in measured])
    got = np.array([m.flux_jy for m in measured])
    err = np.array([m.flux_err_jy for m in measured])
    pbr = np.array([m.pb_response for m in measured])
    np.testing.assert_allclose(pbr, pb_at[idx], rtol=2e-3)
    snr = got / err
    assert np.all(snr > 20)
    ratio = got / true[idx]
    # SNR > 20 means a 1-sigma error up to 5%: within 5% on the whole, every one within 4 sigma,
    # and within 5% individually once the error is below 1.25%.
    assert abs(np.median(ratio) - 1.0) < 0.01
    assert np.all(np.abs(got - true[idx]) < 4.0 * err)
    assert np.all(np.abs(ratio[snr > 80] - 1.0) < 0.05)
    assert np.mean(np.abs(ratio - 1.0) < 0.05) > 0.8
    rms = np.array([m.local_rms_jy for m in measured])
    assert np.median(rms) == pytest.approx(sigma, rel=0.1)  # image rms, not divided by pb
    np.testing.assert_allclose([m.peak_flux_err_jy for m in measured], rms / pbr)


# --- errors against Monte Carlo ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "background"), [(10.0, False), (5.0, False), (7.5, True)],
    ids=["3px-per-fwhm", "6px-per-fwhm", "4px-with-background"],
)  # fmt: skip
def test_errors_match_noise_realisations(tmp_path: Path, cell: float, background: bool) -> None:
    """Scatter over realisations = the quoted error (within 15%); chi2 ~ 1; pixel size cancels."""
    rng = np.random.default_rng(3)
    fwhm = 30.0
    n = int(round(40 * fwhm / cell))  # the same sky area whatever the sampling
    sky = Sky(n, cell, (fwhm, fwhm * 0.7, 65.0))
    sigma, amp = 1e-3, 10e-3
    x, y, ra, dec = positions_grid(sky, int(round(6.5 * fwhm / cell)), int(round(4 * fwhm / cell)),
                                   rng)  # fmt: skip
    ids = [f"s{i}" for i in range(x.size)]
    clean = sky.model(ra, dec, np.full(x.size, amp))
    dev, err, chi2 = [], [], []
    for k in range(30):
        image = sky.write(tmp_path / f"mc{k}-image.fits", clean + sky.noise(sigma, rng))
        res = forced_photometry(image, (ids, ra, dec), fit_background=background)
        assert all(m.ok for m in res)
        dev += [m.flux_jy - amp for m in res]
        err += [m.flux_err_jy for m in res]
        chi2 += [m.chi2 for m in res]
    scatter, quoted = float(np.std(dev)), float(np.median(err))
    assert len(dev) >= 600
    assert abs(np.mean(dev)) < 3 * scatter / math.sqrt(len(dev)) + 1e-5  # unbiased
    assert quoted == pytest.approx(scatter, rel=0.15)
    assert np.mean((np.array(dev) / np.array(err)) ** 2) == pytest.approx(1.0, rel=0.2)
    assert np.mean(chi2) == pytest.approx(1.0, rel=0.15)
    if not background:
        # The well-sampled limit 2/sqrt(3) sigma, not sigma/sqrt(sum g^2) (which would be
        # 0.3 sigma at 6 px per FWHM).
        assert quoted == pytest.approx(2 / math.sqrt(3) * sigma, rel=0.1)


# --- NaN pixels ---------------------------------------------------------------------------------


def test_nan_pixels_are_left_out_or_skip_the_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    sky = Sky(160, 5.0, (20.0, 20.0, 0.0))
    xs, ys = np.array([50.3, 110.6, 80.0]), np.array([50.2, 110.4, 110.0])
    ra, dec = sky.world(xs, ys)
    data = sky.model(ra, dec, np.array([1.0, 1.0, 1.0])) + sky.noise(1e-3, rng)
    data[45:56, 52:60] = np.nan  # the right-hand flank of source a (its centre stays finite)
    data[110, 80] = np.nan  # the centre of source c
    data[:, 140:] = np.nan  # a blank strip, as after a pb cutoff
    image = sky.write(tmp_path / "nan-image.fits", data)
    res = by_id(forced_photometry(image, (["a", "b", "c"], ra, dec)))
    assert res["a"].ok and res["a"].flux_jy == pytest.approx(1.0, rel=0.02)
    assert 0 < res["a"].n_pixels < res["b"].n_pixels
    assert res["b"].ok and res["b"].flux_jy == pytest.approx(1.0, rel=0.02)
    assert res["c"].skip_reason == SKIP_MASKED and math.isnan(res["c"].flux_jy)
    assert all(np.isfinite([m.flux_err_jy, m.chi2, m.local_rms_jy]).all()
               for m in (res["a"], res["b"]))  # fmt: skip


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    sky = Sky(64, 5.0, (20.0, 20.0, 0.0))
    header = sky.header.copy()
    del header["BMAJ"]
    path = sky.write(tmp_path / "nobeam-image.fits", np.zeros((64, 64)), header)
    ra, dec = sky.world(np.array([32.0]), np.array([32.0]))
    with pytest.raises(PhotometryError, match="nobeam-image.fits.*BMAJ"):
        forced_photometry(path, (["a"], ra, dec))
    with pytest.raises(ValueError, match="differ in length"):
        SourcePositions.from_arrays(["a", "b"], ra, dec)
    good = sky.write(tmp_path / "ok-image.fits", np.zeros((64, 64)))
    with pytest.raises(PhotometryError, match="annulus"):
        forced_photometry(good, (["a"], ra, dec), annulus=(5.0, 2.0))


# --- registry -------------------------------------------------------------------------------------


def _measurement(source: str, flux: float, err: float = 0.01) -> Measurement:
    return Measurement(
        source_id=source, ra_deg=10.0, dec_deg=20.0, catalog_flux_jy=1.0, x_pix=1.0, y_pix=1.0,
        flux_jy=flux, flux_err_jy=err, peak_flux_jy=flux, peak_flux_err_jy=err,
        local_rms_jy=err, chi2=1.0, background_jy=float("nan"), pb_response=0.9, n_pixels=50,
    )  # fmt: skip


def test_record_measurements_is_idempotent_and_replaces_an_image(registry) -> None:
    first = [_measurement("a", 1.0), _measurement("b", 2.0), _measurement("c", 3.0)]
    for _ in range(2):
        n = record_measurements(registry, first, image_path="/img/e1.fits", group_id="g1",
                                mjd=60000.5, catalog="nvss")  # fmt: skip
        assert n == 3
    assert registry.query("SELECT COUNT(*) FROM photometry")[0][0] == 3
    record_measurements(registry, [_measurement("a", 1.5)], image_path="/img/e0.fits",
                        group_id="g0", mjd=60000.1, catalog="nvss")  # fmt: skip
    # Re-run e1: b now skipped, a's flux changed, c unchanged.
    rerun = [_measurement("a", 1.1), _measurement("c", 3.0)]
    rerun.append(dataclasses.replace(_measurement("b", float("nan")), skip_reason="edge"))
    record_measurements(registry, rerun, image_path="/img/e1.fits", group_id="g1",
                        mjd=60000.5, catalog="nvss")  # fmt: skip
    rows = registry.query("SELECT source_id, flux_jy FROM photometry WHERE image_path = ?"
                          " ORDER BY source_id", ("/img/e1.fits",))  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [("a", 1.1), ("c", 3.0)]
    assert registry.query("SELECT COUNT(*) FROM photometry")[0][0] == 3
    curve = light_curve(registry, "a")
    assert [r["mjd"] for r in curve] == [60000.1, 60000.5]
    assert [r["flux_jy"] for r in curve] == [1.5, 1.1]
    assert curve[0]["pb_response"] == 0.9 and curve[0]["catalog"] == "nvss"
    with pytest.raises(ValueError, match="twice"):
        record_measurements(registry, [_measurement("a", 1.0)] * 2, image_path="/img/x.fits",
                            group_id=None, mjd=None, catalog=None)  # fmt: skip
    assert registry.query("SELECT COUNT(*) FROM photometry")[0][0] == 3


# --- variability ---------------------------------------------------------------------------------


def test_metrics_by_hand() -> None:
    mt = variability_metrics([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert mt.n_epochs == 3 and mt.weighted_mean_flux_jy == pytest.approx(2.0)
    assert mt.eta == pytest.approx(1.0) and mt.v == pytest.approx(0.5)
    assert mt.vs_max == pytest.approx(-2 / math.sqrt(2)) and mt.m == pytest.approx(-1.0)
    assert mt.pair == (0, 2)
    # Weighted mean with unequal errors: w = 1, 4 -> (1*1 + 4*4) / 5 = 3.4.
    mt = variability_metrics([1.0, 4.0], [1.0, 0.5])
    assert mt.weighted_mean_flux_jy == pytest.approx(3.4)
    assert mt.eta == pytest.approx((2.4**2 + 4 * 0.6**2) / 1)
    assert mt.vs_max == pytest.approx(-3 / math.sqrt(1.25))
    with pytest.raises(VariabilityError, match="positive"):
        variability_metrics([1.0, 2.0], [1.0, 0.0])


def test_metrics_for_all_agrees_with_single_source(registry) -> None:
    rng = np.random.default_rng(5)
    expected = {}
    for s in range(12):
        n = int(rng.integers(1, 9))
        flux = rng.uniform(0.5, 1.5, n)
        err = rng.uniform(0.01, 0.05, n)
        for k in range(n):
            record_measurements(registry, [_measurement(f"src{s:02d}", flux[k], err[k])],
                                image_path=f"/img/{s}-{k}.fits", group_id=None,
                                mjd=60000.0 + k, catalog="nvss")  # fmt: skip
        if n >= 3:
            expected[f"src{s:02d}"] = variability_metrics(flux, err)
    got = {sm.source_id: sm.metrics for sm in metrics_for_all(registry, min_epochs=3)}
    assert got.keys() == expected.keys() and len(got) > 3
    for sid, mt in expected.items():
        g = got[sid]
        assert g.n_epochs == mt.n_epochs and g.pair == mt.pair
        np.testing.assert_allclose([g.eta, g.v, g.vs_max, g.m, g.weighted_mean_flux_jy],
                                   [mt.eta, mt.v, mt.vs_max, mt.m, mt.weighted_mean_flux_jy],
                                   rtol=1e-12)  # fmt: skip
    # Only the epochs before until_mjd (60000 + k for k = 0, 1, 2 here).
    early = {sm.source_id: sm.metrics for sm in metrics_for_all(registry, until_mjd=60002.5)}
    assert all(mt.n_epochs == 3 for mt in early.values())
    assert early.keys() == expected.keys()


def test_a_variable_source_is_flagged_and_steady_ones_are_not(tmp_path: Path, registry) -> None:
    """Ten epochs of images, 20 steady sources and one that flares, end to end."""
    rng = np.random.default_rng(6)
    sky = Sky(200, 5.0, (22.0, 18.0, 10.0))
    x, y, ra, dec = positions_grid(sky, 34, 30, rng)
    x, y, ra, dec = x[:21], y[:21], ra[:21], dec[:21]
    steady = rng.uniform(0.05, 0.5, 21)
    ids = [f"J{i:02d}" for i in range(21)]
    variable = 7
    sigma = 1e-3
    for epoch in range(10):
        flux = steady.copy()
        flux[variable] = 0.1 * (1.0 + 0.8 * math.sin(epoch))  # +-80% swings
        image = sky.write(tmp_path / f"e{epoch}-image.fits",
                          sky.model(ra, dec, flux) + sky.noise(sigma, rng))  # fmt: skip
        res = forced_photometry(image, (ids, ra, dec, steady))
        assert all(m.ok for m in res)
        record_measurements(registry, res, image_path=str(image), group_id=f"g{epoch}",
                            mjd=60000.0 + epoch * 0.9, catalog="nvss")  # fmt: skip
    table = metrics_for_all(registry, min_epochs=3)
    assert len(table) == 21 and all(sm.metrics.n_epochs == 10 for sm in table)
    selection = flag_candidates(table)
    assert selection.source_ids == [ids[variable]]
    assert set(selection.candidates[0].reasons) == {"eta_v", "two_epoch"}
    etas = {sm.source_id: sm.metrics.eta for sm in table}
    steady_eta = np.array([etas[i] for i in ids if i != ids[variable]])
    assert np.median(steady_eta) == pytest.approx(1.0, abs=0.5)  # honest errors
    assert etas[ids[variable]] > 100 * selection.eta_threshold / 10
    # Fixed thresholds are honoured.
    assert flag_candidates(table, eta_threshold=1e9, v_threshold=0.0).source_ids == [
        ids[variable]
    ]  # still a two-epoch candidate
    none = flag_candidates(table, eta_threshold=1e9, vs_threshold=1e9)
    assert none.candidates == []
