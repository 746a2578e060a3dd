"""Catalogs: the packaged VLA calibrators, survey strips and cone search, calibrator transits."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import HADec, SkyCoord
from astropy.table import Table
from astropy.time import Time

from dsa110_assets import cli, instrument
from dsa110_assets.catalogs import (
    SURVEYS,
    Calibrator,
    CatalogError,
    build_calibrator_db,
    calibrators_in_beam,
    cone_search,
    ensure_calibrator_db,
    ingest_survey,
    load_calibrators,
    nearest_transit_mjd,
    packaged_calibrators,
    vla,
)
from dsa110_assets.catalogs import survey as survey_mod
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.simulation.simulate import DEFAULT_DATE, FILE_DURATION_S, calibrator_transit
from dsa110_assets.simulation.sky import FIELD_PATTERN, get_calibrator, read_catalog

SIMULATOR_ROWS = """\
name,ra_deg,dec_deg,flux_1400_jy,spectral_index
3C48,24.4220808,33.1597592,16.0,-0.75
3C138,80.2911917,16.6394586,8.4,-0.5
3C147,85.6505746,49.8520094,22.5,-0.7
3C196,123.4002337,48.2173989,14.0,-0.8
0834+555,128.7287667,55.5725197,8.3,-0.6
3C286,202.7845337,30.5091553,14.9,-0.46
3C295,212.8354958,52.2027694,22.2,-0.7
"""


def _csv_text() -> str:
    return (Path(vla.__file__).parents[1] / "data" / "vla_calibrators.csv").read_text()


# 1. the packaged calibrator list -------------------------------------------------------------


def test_packaged_list_keeps_the_simulator_rows_byte_identical() -> None:
    assert _csv_text().startswith(SIMULATOR_ROWS)


def test_packaged_calibrators_are_valid_and_cover_the_sky() -> None:
    cals = packaged_calibrators()
    assert 35 <= len(cals) <= 60
    names = [c.name for c in cals]
    assert len(set(names)) == len(names)
    ra = np.array([c.ra_deg for c in cals])
    dec = np.array([c.dec_deg for c in cals])
    flux = np.array([c.flux_1400_jy for c in cals])
    alpha = np.array([c.spectral_index for c in cals])
    assert np.all((ra >= 0) & (ra < 360)) and np.all((dec >= -30) & (dec <= 90))
    assert np.all((flux > 0.5) & (flux < 100)) and np.all((alpha > -1.5) & (alpha < 1.0))
    # no duplicates under another name: every pair more than 1 arcmin apart (astropy decides)
    coords = SkyCoord(ra * u.deg, dec * u.deg)
    sep = coords[:, None].separation(coords[None, :]).arcmin
    np.fill_diagonal(sep, np.inf)
    assert sep.min() > 1.0
    # the whole sky the DSA-110 sees: south to -29 deg, north past +75 deg, every 3 h of RA
    assert dec.min() < -25 and dec.max() > 75
    bright = ra[flux >= 2.0]
    assert np.all(np.bincount((bright // 45).astype(int), minlength=8) > 0)


@pytest.mark.parametrize(
    "name, position",
    [
        ("3C286", "13:31:08.2881 +30:30:32.959"),
        ("3C48", "01:37:41.2994 +33:09:35.133"),
        ("3C84", "03:19:48.1601 +41:30:42.103"),
        ("3C273", "12:29:06.6997 +02:03:08.598"),
        ("3C380", "18:29:31.7809 +48:44:46.161"),
        ("3C446", "22:25:47.2593 -04:57:01.391"),
        ("CTA102", "22:32:36.4089 +11:43:50.904"),
        ("J1924-2914", "19:24:51.0560 -29:14:30.121"),
        ("J0006-0623", "00:06:13.8929 -06:23:35.335"),
    ],
)
def test_calibrator_positions_are_sub_arcsecond(name: str, position: str) -> None:
    cal = {c.name: c for c in packaged_calibrators()}[name]
    ref = SkyCoord(position, unit=(u.hourangle, u.deg))
    assert SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg).separation(ref).arcsec < 0.5


def test_j2000_names_match_positions() -> None:
    for cal in packaged_calibrators():
        if not cal.name.startswith("J"):
            continue
        c = SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg)
        ra_h, ra_m = int(c.ra.hms.h), int(c.ra.hms.m)
        dms = c.dec.signed_dms
        expected = f"J{ra_h:02d}{ra_m:02d}{'-' if dms.sign < 0 else '+'}"
        expected += f"{int(dms.d):02d}{int(dms.m):02d}"
        assert cal.name == expected


def test_flux_follows_the_power_law() -> None:
    cal = Calibrator("X", 10.0, 20.0, 10.0, -0.7)
    assert cal.flux_jy(1.4e9) == pytest.approx(10.0)
    assert cal.flux_jy(2.8e9) == pytest.approx(10.0 * 2**-0.7)
    np.testing.assert_allclose(cal.flux_jy(np.array([0.7e9, 1.4e9])), [10.0 * 0.5**-0.7, 10.0])


def test_bad_calibrator_csv_is_refused() -> None:
    with pytest.raises(CatalogError, match="x.csv line 3: duplicate name 'A'"):
        header = SIMULATOR_ROWS.splitlines()[0]
        vla.parse_calibrator_csv(header + "\nA,1,2,3,0\nA,2,3,4,0\n", "x.csv")
    with pytest.raises(CatalogError, match="missing columns"):
        vla.parse_calibrator_csv("name,ra_deg\nA,1\n", "x.csv")


# 2. the calibrator database ------------------------------------------------------------------


def test_calibrator_db_round_trip_and_idempotent(tmp_path: Path) -> None:
    path = build_calibrator_db(tmp_path)
    assert path == tmp_path / "vla_calibrators.sqlite3"
    loaded = load_calibrators(path)
    assert sorted(loaded, key=lambda c: c.name) == sorted(
        packaged_calibrators(), key=lambda c: c.name
    )
    with sqlite3.connect(path) as con:
        indexes = con.execute(
            "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='calibrators'"
            " AND sql IS NOT NULL"
        ).fetchall()
        count = con.execute("SELECT value FROM meta WHERE key='count'").fetchone()[0]
    assert any("dec_deg" in sql for (sql,) in indexes)
    assert int(count) == len(loaded)
    assert build_calibrator_db(path) == path  # again: replaced in place, nothing left over
    assert load_calibrators(path) == loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vla_calibrators.sqlite3"]


def test_calibrator_db_errors_and_ensure(tmp_path: Path) -> None:
    path = tmp_path / "vla_calibrators.sqlite3"
    with pytest.raises(CatalogError, match=r"vla_calibrators.sqlite3 does not exist"):
        load_calibrators(path)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="is unreadable"):
        load_calibrators(path)
    assert ensure_calibrator_db(tmp_path) == path  # rebuilt from the package
    assert len(load_calibrators(path)) == len(packaged_calibrators())
    mtime = path.stat().st_mtime_ns
    ensure_calibrator_db(tmp_path)
    assert path.stat().st_mtime_ns == mtime  # current: left alone
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value='old' WHERE key='source_sha256'")
        con.execute("DELETE FROM calibrators WHERE name='3C286'")
    ensure_calibrator_db(tmp_path)  # stale: rebuilt
    assert "3C286" in {c.name for c in load_calibrators(path)}


# 3. survey ingest and cone search ------------------------------------------------------------


def _sexagesimal_nvss(path: Path, n: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Write an NVSS-like VizieR CSV with sexagesimal positions; return what astropy reads.

    Sources are spread over the whole sky plus clusters at RA 0/360, near both poles and on
    strip boundaries, where strip and wrap-around bugs live.
    """
    rng = np.random.default_rng(seed)
    ra = np.concatenate(
        [rng.uniform(0, 360, n), rng.uniform(-2, 2, 200) % 360, rng.uniform(0, 360, 200)]
        + [rng.uniform(0, 360, 200), rng.uniform(0, 360, 100)]
    )
    dec = np.concatenate(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-21, -19, 200)]
        + [rng.uniform(86, 90, 200), rng.uniform(-90, -87, 200), rng.integers(-40, 40, 100) * 2.0]
    )
    flux_mjy = np.round(np.exp(rng.uniform(np.log(2.5), np.log(5000), len(ra))), 1)
    coords = SkyCoord(ra * u.deg, dec * u.deg)
    ra_text = coords.ra.to_string(unit=u.hourangle, sep=" ", precision=3, pad=True)
    dec_text = coords.dec.to_string(unit=u.deg, sep=" ", precision=2, alwayssign=True, pad=True)
    with path.open("w", newline="") as fh:
        fh.write("# VizieR VIII/65 extract\n")
        writer = csv.writer(fh)
        writer.writerow(["NVSS", "RAJ2000", "DEJ2000", "S1.4", "e_S1.4", "MajAxis", "MinAxis"])
        for k in range(len(ra)):
            writer.writerow([f"N{k:05d}", ra_text[k], dec_text[k], flux_mjy[k], 0.5, "", ""])
    parsed = SkyCoord(ra_text, dec_text, unit=(u.hourangle, u.deg))
    return parsed.ra.deg, parsed.dec.deg, flux_mjy / 1e3


@pytest.fixture(scope="module")
def nvss(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple, object]:
    root = tmp_path_factory.mktemp("nvss")
    file = root / "nvss.csv"
    truth = _sexagesimal_nvss(file, 4000)
    report = ingest_survey("nvss", file, root / "catalogs", strip_width_deg=2.0)
    return root / "catalogs", file, truth, report


def test_ingest_writes_named_strips_with_meta_and_index(nvss) -> None:
    catalogs, file, (ra, dec, flux), report = nvss
    assert report.n_rows == report.n_sources == len(ra) and report.n_skipped == 0
    # strips of 2 deg aligned on multiples of 2: dec 37.2 -> [36, 38) -> nvss_dec+37.0
    k = np.minimum(np.floor(dec / 2.0), 44).astype(int)
    expected = {f"nvss_dec{(2 * i + 1):+05.1f}.sqlite3" for i in k}
    assert {p.name for p in report.strips} == expected
    (generation,) = (catalogs / "nvss").iterdir()  # one published generation folder
    assert {p.name for p in generation.glob("nvss_dec*.sqlite3")} == expected
    assert {p.parent for p in report.strips} == {generation}
    assert "nvss_dec-89.0.sqlite3" in expected and "nvss_dec+89.0.sqlite3" in expected
    total = 0
    for strip in report.strips:
        with sqlite3.connect(strip) as con:
            meta = dict(con.execute("SELECT key, value FROM meta"))
            lo, hi = float(meta["dec_min"]), float(meta["dec_max"])
            got = np.array(con.execute("SELECT dec_deg FROM sources").fetchall())[:, 0]
            plan = con.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM sources WHERE dec_deg BETWEEN ? AND ?", (1, 2)
            ).fetchall()
        assert meta["survey"] == "nvss" and meta["ingested_file"] == str(file.resolve())
        assert int(meta["count"]) == len(got) and hi - lo == pytest.approx(2.0)
        assert np.all((got >= lo) & ((got < hi) | (hi == 90.0)))
        assert f"dec{0.5 * (lo + hi):+05.1f}" in strip.name
        assert any("sources_dec_ra" in str(row) for row in plan)
        total += len(got)
    assert total == len(ra)
    manifest = json.loads((catalogs / "nvss_strips.json").read_text())
    assert manifest["n_sources"] == len(ra) and manifest["strip_width_deg"] == 2.0


def test_ingest_stores_exact_values_in_jy(nvss) -> None:
    catalogs, _, (ra, dec, flux), _ = nvss
    rows = []
    for strip in catalogs.glob("nvss/*/nvss_dec*.sqlite3"):
        with sqlite3.connect(strip) as con:
            rows += con.execute("SELECT * FROM sources").fetchall()
    rows.sort()
    idx = np.array([int(r[0][1:]) for r in rows])
    np.testing.assert_allclose([r[1] for r in rows], ra[idx], rtol=0, atol=1e-9)
    np.testing.assert_allclose([r[2] for r in rows], dec[idx], rtol=0, atol=1e-9)
    np.testing.assert_allclose([r[3] for r in rows], flux[idx], rtol=1e-12)
    assert {r[4] for r in rows} == {0.0005} and {r[5] for r in rows} == {None}


@pytest.mark.parametrize(
    "ra0, dec0, radius",
    [
        (0.3, 10.0, 4.0),  # crosses RA 0
        (359.5, -20.0, 3.0),  # crosses RA 360 and a strip boundary
        (123.0, 88.0, 3.0),  # contains the north pole
        (200.0, -88.5, 2.0),  # contains the south pole
        (45.0, 0.0, 12.0),  # many strips
        (180.0, 60.0, 6.0),
    ],
)
def test_cone_search_matches_brute_force(nvss, ra0: float, dec0: float, radius: float) -> None:
    catalogs, _, (ra, dec, flux), _ = nvss
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg
    inside = np.flatnonzero(sep <= radius)
    found = cone_search(catalogs, "nvss", ra0, dec0, radius)
    assert len(inside) > 3
    assert sorted(int(s.source_id[1:]) for s in found) == sorted(inside.tolist())
    fluxes = [s.flux_jy for s in found]
    assert fluxes == sorted(fluxes, reverse=True)
    for s in found:
        assert s.separation_deg == pytest.approx(sep[int(s.source_id[1:])], abs=1e-9)
    bright = cone_search(catalogs, "nvss", ra0, dec0, radius, min_flux_jy=0.1)
    assert [s.source_id for s in bright] == [s.source_id for s in found if s.flux_jy >= 0.1]


def test_reingest_replaces_strips_without_duplicates(tmp_path: Path) -> None:
    file = tmp_path / "nvss.csv"
    ra, dec, _ = _sexagesimal_nvss(file, 300, seed=3)
    catalogs = tmp_path / "catalogs"
    first = ingest_survey("nvss", file, catalogs)
    again = ingest_survey("nvss", file, catalogs)
    assert [p.name for p in again.strips] == [p.name for p in first.strips]
    assert len(cone_search(catalogs, "nvss", 0, 0, 180)) == len(ra)
    wider = ingest_survey("nvss", file, catalogs, strip_width_deg=5.0)
    assert {p.name for p in wider.removed_strips} == {p.name for p in first.strips} - {
        p.name for p in wider.strips
    }
    visible = sorted(p.name for p in catalogs.iterdir() if not p.name.startswith("."))
    assert visible == ["nvss", "nvss_strips.json"]
    (generation,) = (catalogs / "nvss").iterdir()  # the older generations are gone
    assert sorted(p.name for p in generation.iterdir()) == sorted(p.name for p in wider.strips)
    assert len(cone_search(catalogs, "nvss", 0, 0, 180)) == len(ra)
    assert "nvss_dec+37.5.sqlite3" in {p.name for p in wider.strips}  # [35, 40)


def test_first_fits_with_units_and_vlass_flags(tmp_path: Path) -> None:
    first = Table(
        {
            "FIRST": ["J100000.0+300000", "J100100.0+300100", "bad"],
            "RAJ2000": [150.0, 150.25, np.nan],
            "DEJ2000": [30.0, 30.0167, 30.0],
            "Fpeak": [10.0, 2.0, 1.0],
            "Fint": [12.5, 2.2, 1.0],
            "Rms": [0.15, 0.14, 0.1],
            "Maj": [3.2, 0.0, 0.0],
            "Min": [1.0, 0.0, 0.0],
            "PA": [45.0, 0.0, 0.0],
        }
    )
    first["Fint"].unit = first["Fpeak"].unit = first["Rms"].unit = u.mJy
    first["Maj"].unit = first["Min"].unit = u.arcsec
    first.write(tmp_path / "first.fits")
    report = ingest_survey("first", tmp_path / "first.fits", tmp_path / "cat")
    assert (report.n_sources, report.n_skipped) == (2, 1)
    found = cone_search(tmp_path / "cat", "first", 150.1, 30.0, 1.0)
    assert [s.source_id for s in found] == ["J100000.0+300000", "J100100.0+300100"]
    assert found[0].flux_jy == pytest.approx(0.0125) and found[0].flux_err_jy == 0.00015
    assert (found[0].major_arcsec, found[0].minor_arcsec, found[0].pa_deg) == (3.2, 1.0, 45.0)

    # FITS units win over the survey's usual mJy; degrees given in arcmin are converted
    nvss = Table({"NVSS": ["a"], "RAJ2000": [10.0], "DEJ2000": [-5.0], "S1.4": [1.5]})
    nvss["S1.4"].unit = u.Jy
    nvss["MajAxis"] = [0.5] * u.arcmin
    nvss.write(tmp_path / "nvss.fits")
    ingest_survey("nvss", tmp_path / "nvss.fits", tmp_path / "cat")
    (src,) = cone_search(tmp_path / "cat", "nvss", 10.0, -5.0, 0.1)
    assert (src.flux_jy, src.major_arcsec) == (1.5, 30.0)

    vlass = tmp_path / "vlass.csv"
    vlass.write_text(
        "Component_name,RA,DEC,Total_flux,E_Total_flux,Peak_flux,Duplicate_flag,Quality_flag\n"
        "VLASS1QLCIR J000001.00+000000.0,0.004167,0.0,5.0,0.2,4.0,0,0\n"
        "dup,0.01,0.0,5.0,0.2,4.0,2,0\n"
        "bad quality,0.02,0.0,5.0,0.2,4.0,1,1\n"
        "ok quality 4,0.03,0.0,7.0,0.3,4.0,1,4\n"
    )
    report = ingest_survey("vlass", vlass, tmp_path / "cat")
    assert (report.n_sources, report.n_skipped) == (2, 2)
    found = cone_search(tmp_path / "cat", "vlass", 0.0, 0.0, 1.0)
    assert [(s.source_id, s.flux_jy) for s in found] == [
        ("ok quality 4", 0.007),
        ("VLASS1QLCIR J000001.00+000000.0", 0.005),
    ]


def test_generic_columns(tmp_path: Path) -> None:
    file = tmp_path / "generic.csv"
    file.write_text("name,ra,dec,flux_jy\nsrc1,10:00:00,+30:00:00,0.25\nsrc2,150.5,30.1,1.0\n")
    ingest_survey("vlass", file, tmp_path)
    found = cone_search(tmp_path, "vlass", 150.2, 30.0, 1.0)
    assert [(s.source_id, s.ra_deg, s.flux_jy) for s in found] == [
        ("src2", 150.5, 1.0),
        ("src1", 150.0, 0.25),
    ]


def test_bad_input_names_the_file_and_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("NVSS,RAJ2000,DEJ2000,S1.4\na,1,2,3\n")
    with pytest.raises(CatalogError, match="unknown survey 'sumss'"):
        ingest_survey("sumss", good, tmp_path / "cat")
    with pytest.raises(CatalogError, match="nothere.csv: no such catalog file"):
        ingest_survey("nvss", tmp_path / "nothere.csv", tmp_path / "cat")
    no_flux = tmp_path / "noflux.csv"
    no_flux.write_text("NVSS,RAJ2000,DEJ2000,Fint\na,1,2,3\n")
    with pytest.raises(CatalogError, match=r"noflux.csv: no flux column .*S1\.4"):
        ingest_survey("nvss", no_flux, tmp_path / "cat")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"\x00\x01 not FITS at all" * 300)
    with pytest.raises(CatalogError, match="garbage.fits: cannot read"):
        ingest_survey("first", garbage, tmp_path / "cat")
    bad_value = tmp_path / "badvalue.csv"
    bad_value.write_text("NVSS,RAJ2000,DEJ2000,S1.4\na,1,2,lots\n")
    with pytest.raises(CatalogError, match=r"badvalue.csv: none of the 1 rows .*'S1.4' .*'lots'"):
        ingest_survey("nvss", bad_value, tmp_path / "cat")
    bad_pos = tmp_path / "badpos.csv"
    bad_pos.write_text("NVSS,RAJ2000,DEJ2000,S1.4\na,12h3x,2,3\n")
    with pytest.raises(CatalogError, match="badpos.csv: .*column 'RAJ2000' not a position .*row 1"):
        ingest_survey("nvss", bad_pos, tmp_path / "cat")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("NVSS,RAJ2000,DEJ2000,S1.4\na,1,2\n")
    with pytest.raises(CatalogError, match="ragged.csv: data row 1 has 3 fields"):
        ingest_survey("nvss", ragged, tmp_path / "cat")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CatalogError, match="empty.csv: the file is empty"):
        ingest_survey("nvss", empty, tmp_path / "cat")
    with pytest.raises(CatalogError, match="strip width"):
        ingest_survey("nvss", good, tmp_path / "cat", strip_width_deg=0.05)
    assert not (tmp_path / "cat").exists()  # nothing created for a refused file
    with pytest.raises(CatalogError, match="has not been ingested"):
        cone_search(tmp_path / "cat", "nvss", 1, 2, 1)
    ingest_survey("nvss", good, tmp_path / "cat")
    (strip,) = (tmp_path / "cat" / "nvss").glob("*/nvss_dec+02.5.sqlite3")
    strip.write_bytes(b"garbage" * 1000)
    with pytest.raises(CatalogError, match=r"nvss_dec\+02.5.sqlite3: unreadable strip"):
        cone_search(tmp_path / "cat", "nvss", 1, 2, 1)
    with pytest.raises(CatalogError, match="radius"):
        cone_search(tmp_path / "cat", "nvss", 1, 2, 0)


# 4. the simulator's sky through the NVSS path, and calibrator transits ------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory):
    """3C286 centred in group 0, and the same sky one hour later (1 subband, tiny array)."""
    root = tmp_path_factory.mktemp("sim")
    common = dict(
        n_antennas=4,
        n_channels=1,
        subbands=(0,),
        n_background_sources=25,
        noise=False,
        corruptions=False,
        calibrator="3C286",
    )
    on = simulate_observations(
        SimulationConfig(output_dir=root / "in1", truth_dir=root / "truth1", **common)
    )
    later = simulate_observations(
        SimulationConfig(
            output_dir=root / "in2",
            truth_dir=root / "truth2",
            start=on.start + timedelta(hours=1),
            **common,
        )
    )
    return on, later


def _window_mjd(result) -> tuple[float, float]:
    start = Time(result.start).mjd
    return start, start + FILE_DURATION_S / 86400.0


def test_simulated_sky_loads_as_nvss(sim, tmp_path: Path) -> None:
    on, _ = sim
    assert on.nvss_catalog_path == on.catalog_path.with_name("sky_catalog_nvss.csv")
    truth = {s.name: s for s in read_catalog(on.catalog_path)}
    report = ingest_survey("nvss", on.nvss_catalog_path, tmp_path)
    assert report.n_sources == len(truth) == 1 + len(FIELD_PATTERN) + 25  # 3C286, field, background
    cal = get_calibrator("3C286")
    found = cone_search(tmp_path, "nvss", cal.ra_deg, on.dec_deg, 6.0)
    assert {s.source_id for s in found} == set(truth)
    for s in found:
        t = truth[s.source_id]
        assert (s.ra_deg, s.dec_deg) == (t.ra_deg, t.dec_deg)
        assert s.flux_jy == pytest.approx(t.flux_1400_jy, rel=1e-12)
    assert found[0].source_id == "3C286" and found[0].flux_jy == pytest.approx(14.9)
    faint_cut = cone_search(tmp_path, "nvss", cal.ra_deg, on.dec_deg, 6.0, min_flux_jy=0.5)
    bright = {name for name, t in truth.items() if t.flux_1400_jy >= 0.5}
    assert {s.source_id for s in faint_cut} == bright


def test_calibrator_group_is_detected_and_an_hour_later_is_not(sim) -> None:
    on, later = sim
    cals = packaged_calibrators()
    start, end = _window_mjd(on)
    found = calibrators_in_beam(start, end, on.dec_deg, cals)
    assert on.groups[0].has_calibrator and [t.name for t in found] == ["3C286"]
    hit = found[0]
    assert hit.in_window and hit.closest_mjd == hit.transit_mjd
    assert hit.beam_response > 0.9
    assert hit.apparent_flux_jy == pytest.approx(14.9 * hit.beam_response)
    expected = calibrator_transit(get_calibrator("3C286"), DEFAULT_DATE)
    assert abs(hit.transit_mjd - Time(expected).mjd) * 86400 < 1.0
    # the simulator centred the group on the transit
    assert abs(hit.transit_mjd - 0.5 * (start + end)) * 86400 < 1.0

    start, end = _window_mjd(later)
    assert not later.groups[0].has_calibrator
    assert calibrators_in_beam(start, end, later.dec_deg, cals) == []
    (faint,) = [
        t
        for t in calibrators_in_beam(start, end, later.dec_deg, cals, min_response=0)
        if t.name == "3C286"
    ]
    assert not faint.in_window and faint.closest_mjd == start  # nearest edge to the transit
    assert faint.beam_response < 0.01
    assert faint.transit_mjd == pytest.approx(hit.transit_mjd, abs=1e-6)


def test_transit_and_beam_against_an_independent_hadec_computation() -> None:
    cal = get_calibrator("3C286")
    t = nearest_transit_mjd(cal.ra_deg, cal.dec_deg, 61055.3)[0]
    frame = HADec(obstime=Time(t, format="mjd"), location=instrument.array_location())
    hadec = SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg).transform_to(frame)
    assert abs(hadec.ha.wrap_at(180 * u.deg).deg) * 240 < 0.1  # seconds of time
    assert nearest_transit_mjd(cal.ra_deg, cal.dec_deg, t + 0.45)[0] == pytest.approx(t, abs=1e-8)
    assert nearest_transit_mjd(cal.ra_deg, cal.dec_deg, t + 0.55)[0] == pytest.approx(
        t + 0.99727, abs=1e-4
    )  # the next transit, one sidereal day on

    # 3 minutes after transit, 1 degree south of the pointing: beam from astropy's geometry
    probe = t + 3 / 1440
    (hit,) = calibrators_in_beam(probe, probe + 1e-4, cal.dec_deg + 1.0, [cal], min_response=0)
    ha_dec = SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg).transform_to(
        HADec(obstime=Time(probe, format="mjd"), location=instrument.array_location())
    )
    pointing = SkyCoord(0 * u.deg, (cal.dec_deg + 1.0) * u.deg)
    sep = SkyCoord(ha_dec.ha.deg * u.deg, ha_dec.dec.deg * u.deg).separation(pointing).deg
    assert hit.separation_deg == pytest.approx(sep, abs=1e-7)
    assert hit.beam_response == pytest.approx(
        float(instrument.airy_power_beam(np.radians(sep), 1.4e9)), rel=1e-9
    )
    assert 0.3 < hit.beam_response < 0.9


def test_two_calibrators_in_one_window_sorted_by_apparent_flux() -> None:
    cals = {c.name: c for c in packaged_calibrators()}
    t84 = nearest_transit_mjd(cals["3C84"].ra_deg, cals["3C84"].dec_deg, 61055.0)[0]
    found = calibrators_in_beam(t84 - 0.01, t84 + 0.1, 41.5, list(cals.values()))
    assert [t.name for t in found] == ["3C84", "3C119"]
    assert all(t.in_window and t.beam_response > 0.9 for t in found)
    assert found[0].apparent_flux_jy > found[1].apparent_flux_jy
    at_2ghz = calibrators_in_beam(t84 - 0.01, t84 + 0.1, 41.5, list(cals.values()), freq_hz=2e9)
    assert at_2ghz[1].flux_jy == pytest.approx(8.4 * (2.0 / 1.4) ** -0.6)
    with pytest.raises(ValueError, match="before it starts"):
        calibrators_in_beam(t84, t84 - 0.1, 41.5, list(cals.values()))
    with pytest.raises(ValueError, match="min_response"):
        calibrators_in_beam(t84, t84, 41.5, list(cals.values()), min_response=2)


def test_cli_keeps_the_survey_names_of_the_library() -> None:
    assert cli.SURVEYS == SURVEYS
    assert cli.DEFAULT_STRIP_WIDTH_DEG == survey_mod.DEFAULT_STRIP_WIDTH_DEG


def test_a_window_ending_before_the_crossing_still_sees_the_calibrator() -> None:
    """Issue 9: 3C286 1.3 minutes before its crossing is at ~0.95 response and counts."""
    cal = get_calibrator("3C286")
    transit = nearest_transit_mjd(cal.ra_deg, cal.dec_deg, 61055.5)[0]
    end = transit - 1.3 / 1440
    start = end - FILE_DURATION_S / 86400.0
    (hit,) = calibrators_in_beam(start, end, cal.dec_deg, packaged_calibrators())
    assert hit.name == "3C286" and not hit.in_window
    assert hit.closest_mjd == end and 0.9 < hit.beam_response < 0.99
    far = calibrators_in_beam(start + 0.05, end + 0.05, cal.dec_deg, packaged_calibrators())
    assert far == []  # 72 minutes later nothing is near the beam
