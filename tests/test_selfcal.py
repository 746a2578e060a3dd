"""Self-calibration recovers a slowly drifting phase per antenna, judged by WSClean's images.

A simulated group without gain errors is converted and phased to its central field; its
calibrated data are corrupted with a known phase per antenna that drifts linearly through
the 5 minutes (what the atmosphere does hours after the calibrator transit). WSClean images
the clean and the corrupted data; self-calibration against the corrupted image's clean model
must bring every bright source (all four quadrants) back within 5% of its flux in the clean
image, raise the dynamic range, and find the injected phases. The rules are checked too: a
round that does not improve the image is rejected and leaves the calibrated data untouched,
and a calibrator's MODEL_DATA survives the rounds.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from casacore import tables as pt
from helpers import first_group_files, simulate_into

from dsa110_assets.calibration.selfcal import (
    SELFCAL_COLUMN,
    SelfcalError,
    solve_selfcal,
    write_selfcal_column,
)
from dsa110_assets.calibration.selfcal_policy import SelfcalPolicy, SelfcalPolicyError, judge_round
from dsa110_assets.conversion.convert import convert_group
from dsa110_assets.imaging.image_stats import find_peak, image_statistics
from dsa110_assets.imaging.rephase import phase_to_common_centre
from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry, run_wsclean
from dsa110_assets.processing.selfcal_step import (
    MODEL_COLUMN,
    RoundImage,
    measure,
    model_column_set_aside,
    self_calibrate,
    selfcal_table,
)
from dsa110_assets.simulation.ms_corruption import apply_antenna_phases, drift_phases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean is not installed"),
    pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
]

SIM = dict(
    n_antennas=48,
    n_channels=4,
    n_groups=1,
    seed=11,
    calibrator=None,
    n_background_sources=6,
    noise=True,
    corruptions=False,
)
PHASE_OFFSET_DEG = 40.0  # the largest constant phase error of an antenna
PHASE_DRIFT_DEG = 60.0  # the largest drift over the group


def _params(ms: Path) -> WSCleanParams:
    geometry = choose_image_geometry(ms, max_size=1536, pixels_per_beam=2.5)
    return WSCleanParams(
        size=geometry.size, scale_arcsec=geometry.scale_arcsec, threads=2, niter=1000,
        save_model_to_ms=True,
    )  # fmt: skip


def _bright_sources(image: Path, catalog: Path, noise: float) -> dict[str, tuple[float, float]]:
    """Return name -> (ra, dec) of catalog sources at S/N >= 20 in ``image``."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(image) as hdul:
        header = hdul[0].header
    wcs = WCS(header).celestial
    cell = abs(float(header["CDELT2"])) * 3600
    out = {}
    with catalog.open() as fh:
        for src in csv.DictReader(fh):
            ra, dec = float(src["ra_deg"]), float(src["dec_deg"])
            x, y = wcs.world_to_pixel_values(ra, dec)
            if not (20 <= x < header["NAXIS1"] - 20 and 20 <= y < header["NAXIS2"] - 20):
                continue
            _, _, peak, _ = find_peak(image, ra, dec, 5 * cell)
            if peak >= 20 * noise:
                out[src["name"]] = (ra, dec)
    return out


def _fluxes(image: Path, sources: dict[str, tuple[float, float]]) -> dict[str, float]:
    from astropy.io import fits

    with fits.open(image) as hdul:
        cell = abs(float(hdul[0].header["CDELT2"])) * 3600
    return {name: find_peak(image, ra, dec, 5 * cell)[2] for name, (ra, dec) in sources.items()}


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """One converted, phased group: its clean image, and a copy with drifting phases."""
    root = tmp_path_factory.mktemp("selfcal")
    sim = simulate_into(root, **SIM)
    files = first_group_files(sim)
    clean = root / "clean.ms"
    convert_group(files, clean, tmpfs_dir=None, scratch_dir=root / "s", durable=False)
    phase_to_common_centre(clean)
    with pt.table(str(clean / "ANTENNA"), ack=False) as t:
        names = list(t.getcol("NAME"))
    with pt.table(str(clean), ack=False) as t:
        times = np.unique(t.getcol("TIME"))
    phases = drift_phases(
        len(names), times, offset_deg=PHASE_OFFSET_DEG, drift_deg=PHASE_DRIFT_DEG, seed=3
    )
    corrupted = root / "corrupted.ms"
    shutil.copytree(clean, corrupted)  # before the clean image writes its MODEL_DATA
    apply_antenna_phases(corrupted, phases)
    params = _params(clean)
    reference = run_wsclean(clean, root / "images", "clean", params)
    noise = image_statistics(reference.residual).noise_jy
    sources = _bright_sources(reference.image, sim.catalog_path, noise)
    return dict(
        root=root, clean=clean, corrupted=corrupted, params=params, reference=reference,
        phases=phases, names=names, sources=sources,
    )  # fmt: skip


def _imager(ms: Path, folder: Path, name: str, params: WSCleanParams):
    def image(column: str, suffix: str):
        from dataclasses import replace

        result = run_wsclean(ms, folder, f"{name}-{suffix}", replace(params, data_column=column))
        return measure(result, column)

    return image


def test_selfcal_recovers_fluxes_and_dynamic_range(group, tmp_path: Path) -> None:
    """Every bright source back within 5% of the clean image; the dynamic range rises."""
    ms = tmp_path / "work.ms"
    shutil.copytree(group["corrupted"], ms)
    folder = tmp_path / "images"
    params = group["params"]
    policy = SelfcalPolicy(phase_solint_s=0.0, amplitude=False, max_rounds=6)
    with model_column_set_aside(ms):
        first = measure(run_wsclean(ms, folder, "g", params), "CORRECTED_DATA")
        outcome = self_calibrate(
            ms, first, _imager(ms, folder, "g", params), policy, lambda r: None
        )
    reference = measure(group["reference"], "CORRECTED_DATA")
    sources = group["sources"]
    assert len(sources) >= 4, sources
    truth = _fluxes(reference.result.image, sources)
    before = _fluxes(first.result.image, sources)
    after = _fluxes(outcome.final.result.image, sources)
    print("rounds:", [(r.round, r.accepted, r.reason) for r in outcome.rounds])
    print("DR clean / corrupted / self-cal:", reference.dynamic_range, first.dynamic_range,
          outcome.final.dynamic_range)  # fmt: skip
    print("flux ratios before:", {k: round(before[k] / truth[k], 3) for k in truth})
    print("flux ratios after:", {k: round(after[k] / truth[k], 3) for k in truth})
    assert outcome.applied and outcome.rounds[0].accepted
    assert min(before[k] / truth[k] for k in truth) < 0.9  # the corruption does matter
    for name in truth:
        assert after[name] == pytest.approx(truth[name], rel=0.05), name
    assert outcome.final.dynamic_range > 1.5 * first.dynamic_range
    assert outcome.final.noise_jy < first.noise_jy
    with pt.table(str(ms), ack=False) as t:
        assert SELFCAL_COLUMN in t.colnames() and MODEL_COLUMN not in t.colnames()


def test_solved_phases_match_the_injected_drift(group) -> None:
    """Against the clean image's model, the solutions are the injected phases (relative)."""
    ms = group["root"] / "solve.ms"
    if not ms.exists():
        shutil.copytree(group["corrupted"], ms)
        # The clean image's model is the sky without errors: copy it into this MS.
        with (
            pt.table(str(group["clean"]), ack=False) as src,
            pt.table(str(ms), readonly=False, ack=False) as dst,
        ):
            from dsa110_assets.calibration.model import _add_visibility_column

            _add_visibility_column(dst, MODEL_COLUMN)
            dst.putcol(MODEL_COLUMN, src.getcol(MODEL_COLUMN))
    gains = solve_selfcal(ms, mode="phase", solint_s=0.0, min_snr=3.0)
    phases = group["phases"]
    solved = gains.solved[..., 0]
    found = np.angle(gains.gains[..., 0])
    # Both are defined up to one phase per integration: compare baselines-like differences.
    ref = int(np.argmax(solved.sum(axis=0)))
    injected = phases - phases[:, [ref]]
    recovered = found - found[:, [ref]]
    error = np.degrees(np.angle(np.exp(1j * (recovered - injected))))[solved]
    print(f"phase error: rms {np.sqrt(np.mean(error**2)):.2f} deg, max {np.abs(error).max():.2f}")
    present = solved.any(axis=0)  # the ANTENNA table lists all 117 stations
    assert present.sum() == SIM["n_antennas"]
    assert solved[:, present].mean() > 0.9
    assert np.sqrt(np.mean(error**2)) < 5.0


def test_amplitude_and_phase_solutions_keep_the_flux_scale(group, tmp_path: Path) -> None:
    """Known amplitude errors (+-15%) are found relative to their mean, which stays 1.

    The model is the error-free data themselves, so this tests the solver and its
    normalisation; against a clean model of a 5-minute drift (the primary beam changes
    through it, the clean is bounded) the same errors come out biased by up to 6% on the
    outer antennas, which is why amplitudes are solved only on a bright field and the round
    is judged by its image.
    """
    ms = tmp_path / "amp.ms"
    shutil.copytree(group["clean"], ms)
    n_ant = len(group["names"])
    rng = np.random.default_rng(8)
    amp = rng.uniform(0.85, 1.15, n_ant)
    with pt.table(str(ms), readonly=False, ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        data = t.getcol("CORRECTED_DATA")
        t.putcol(MODEL_COLUMN, data)
        t.putcol("CORRECTED_DATA", data * (amp[a1] * amp[a2]).astype(np.float32)[:, None, None])
    gains = solve_selfcal(ms, mode="amplitude+phase", solint_s=float("inf"), min_snr=3.0)
    assert gains.gains.shape[0] == 1  # one solution for the whole group
    solved = gains.solved[0, :, 0]
    found = np.abs(gains.gains[0, :, 0])[solved]
    both = np.abs(gains.gains[0])[gains.solved[0]]  # normalised over both hands
    assert np.mean(both) == pytest.approx(1.0, abs=1e-6)  # so the flux scale is kept
    expected = amp[solved] / np.mean(amp[solved])
    print(f"amplitude error: max {np.max(np.abs(found / expected - 1)):.4f}")
    np.testing.assert_allclose(found, expected, rtol=0.01)
    write_selfcal_column(ms, gains)
    with pt.table(str(ms), ack=False) as t:
        corrected = t.getcol(SELFCAL_COLUMN)
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    with pt.table(str(group["clean"]), ack=False) as t:
        truth = t.getcol("CORRECTED_DATA")
    scale = np.mean(amp[solved]) ** 2  # what a normalised solution cannot know
    ratio = np.abs(corrected[cross]).sum() / (scale * np.abs(truth[cross]).sum())
    assert ratio == pytest.approx(1.0, rel=0.01)


def test_a_round_that_does_not_help_is_rejected(group, tmp_path: Path) -> None:
    """On error-free data a round cannot lower the noise enough: the first image is kept."""
    ms = tmp_path / "clean.ms"
    shutil.copytree(group["clean"], ms)
    with pt.table(str(ms), ack=False) as t:
        before = t.getcol("CORRECTED_DATA")
    folder = tmp_path / "images"
    params = group["params"]
    policy = SelfcalPolicy(phase_solint_s=0.0, amplitude=False, stop_improvement=0.5)
    discarded = []
    with model_column_set_aside(ms):
        first = measure(run_wsclean(ms, folder, "g", params), "CORRECTED_DATA")
        outcome = self_calibrate(
            ms, first, _imager(ms, folder, "g", params), policy, discarded.append
        )
    print("rounds:", [(r.round, r.accepted, r.reason) for r in outcome.rounds])
    (round1, *rest) = outcome.rounds
    assert not rest
    if round1.accepted:  # kept (a little better) but too little to go on
        assert "too little" in round1.reason
    else:
        assert not outcome.applied and discarded
        with pt.table(str(ms), ack=False) as t:
            assert SELFCAL_COLUMN not in t.colnames()
    with pt.table(str(ms), ack=False) as t:
        np.testing.assert_array_equal(t.getcol("CORRECTED_DATA"), before)


def test_calibrator_model_column_survives(group, tmp_path: Path) -> None:
    """MODEL_DATA set aside is back after the rounds, also after a dead attempt's."""
    ms = tmp_path / "cal.ms"
    shutil.copytree(group["clean"], ms)  # it has WSClean's MODEL_DATA: stand-in for the cal's
    with pt.table(str(ms), ack=False) as t:
        model = t.getcol(MODEL_COLUMN)
    with pytest.raises(RuntimeError, match="dead"), model_column_set_aside(ms):
        with pt.table(str(ms), readonly=False, ack=False) as t:
            from dsa110_assets.calibration.model import _add_visibility_column

            _add_visibility_column(t, MODEL_COLUMN)  # WSClean's
        raise RuntimeError("dead attempt")
    with pt.table(str(ms), ack=False) as t:
        np.testing.assert_array_equal(t.getcol(MODEL_COLUMN), model)
        assert "DSA110_CAL_MODEL" not in t.colnames()


def test_selfcal_errors_are_clear(group, tmp_path: Path) -> None:
    """No model column, a bad mode, or no data: a SelfcalError that says which."""
    ms = tmp_path / "nomodel.ms"
    shutil.copytree(group["corrupted"], ms)
    with pytest.raises(SelfcalError, match="no MODEL_DATA column"):
        solve_selfcal(ms)
    with pytest.raises(SelfcalError, match="mode"):
        solve_selfcal(ms, mode="amplitude")
    with pytest.raises(SelfcalError, match="solint"):
        solve_selfcal(ms, solint_s=-1.0)
    gains = solve_selfcal(group["clean"], mode="phase")
    with pytest.raises(SelfcalError, match="no CORRECTED_DATA"):
        write_selfcal_column(ms, gains, source_column="CORRECTED_DATA_X")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_rounds", 0),
        ("phase_solint_s", -1.0),
        ("amplitude_min_peak_snr", 0.0),
        ("min_snr", float("nan")),
        ("min_baselines", 0),
        ("stop_improvement", 1.0),
        ("min_noise_over_thermal", -0.5),
        ("min_noise_over_thermal", float("inf")),
    ],
)
def test_bad_policy_settings_are_refused_by_name(setting: str, value) -> None:
    """Each out-of-range setting raises naming it."""
    with pytest.raises(SelfcalPolicyError, match=setting):
        SelfcalPolicy(**{setting: value})


def test_judge_keeps_only_rounds_better_on_both_counts() -> None:
    """Lower noise and higher dynamic range: kept; either one worse: rejected."""
    p = SelfcalPolicy()
    assert judge_round(p, 1.0, 0.8, 100, 150).accepted
    assert judge_round(p, 1.0, 0.8, 100, 150).carry_on
    assert not judge_round(p, 1.0, 1.1, 100, 150).accepted
    assert not judge_round(p, 1.0, 0.8, 100, 90).accepted
    small = judge_round(p, 1.0, 0.99, 100, 101)
    assert small.accepted and not small.carry_on


def test_policy_skips_calibrator_groups_and_quick_looks_before_imaging() -> None:
    """A calibrator's own group, an uncalibrated group, a disabled policy: no rounds."""
    p = SelfcalPolicy()
    assert p.skip_before_imaging(True, "nearest") is None
    assert p.skip_before_imaging(True, "interpolated") is None
    assert "calibrator's own group" in p.skip_before_imaging(True, "calibrator")
    assert "not calibrated" in p.skip_before_imaging(False, "uncalibrated")
    assert SelfcalPolicy(enabled=False).skip_before_imaging(True, "nearest") == "disabled"
    assert SelfcalPolicy(on_calibrator_groups=True).skip_before_imaging(True, "calibrator") is None


def test_policy_skips_a_thermal_limited_first_image() -> None:
    """Rounds only when the residual noise is well above the radiometer noise."""
    p = SelfcalPolicy(min_noise_over_thermal=1.2)
    assert "thermal-limited" in p.skip_after_first_image(1.1e-3, 1.0e-3)
    assert "1.10x" in p.skip_after_first_image(1.1e-3, 1.0e-3)
    assert p.skip_after_first_image(1.3e-3, 1.0e-3) is None
    assert p.skip_after_first_image(1.1e-3, None) is None  # no figure: the rounds decide
    assert p.skip_after_first_image(1.1e-3, 0.0) is None
    assert SelfcalPolicy(min_noise_over_thermal=0.0).skip_after_first_image(1e-9, 1.0) is None


def test_a_thermal_limited_first_image_is_kept_without_imaging_again(tmp_path: Path) -> None:
    """self_calibrate returns the first image, says why, and never calls the imager."""
    from dsa110_assets.imaging.wsclean import WSCleanResult

    result = WSCleanResult(
        image=tmp_path / "g-image.fits", residual=None, model=None, psf=None, dirty=None,
        products=(), command=(), duration_s=0.0, log_tail="",
    )  # fmt: skip
    first = RoundImage(result, "CORRECTED_DATA", noise_jy=1.05e-3, peak_jy=1.0)

    def imager(column: str, suffix: str):
        raise AssertionError("a thermal-limited image must not be re-imaged")

    outcome = self_calibrate(
        tmp_path / "none.ms", first, imager, SelfcalPolicy(), lambda r: None,
        thermal_noise_jy=1.0e-3,
    )  # fmt: skip
    assert outcome.final is first and not outcome.applied and not outcome.rounds
    assert "thermal-limited" in outcome.skipped
    assert "thermal-limited" in selfcal_table(outcome.rounds, outcome.skipped)


def test_rounds_reuse_the_first_images_psf(group, tmp_path: Path) -> None:
    """The image step's rounds load the first PSF: WSClean is told so, and it is the same.

    Self-calibration changes the data, never the uv coverage, weights or flags, so the PSF a
    round would grid is the first image's; WSClean (real, its calls only recorded) must get
    ``-reuse-psf`` with the first run's prefix and publish that PSF unchanged.
    """
    from astropy.io import fits

    from dsa110_assets.processing.image_step import _image_self_calibrated
    from dsa110_assets.timing import Timings

    ms = tmp_path / "work.ms"
    shutil.copytree(group["corrupted"], ms)
    folder = tmp_path / "images"
    calls = []

    def wsclean(params: WSCleanParams, name: str):
        calls.append(params.extra_args)
        result = run_wsclean(ms, folder, name, params)
        if len(calls) == 1:  # the first image's products go once a round is kept
            shutil.copy(result.psf, tmp_path / "first-psf.fits")
        return result

    policy = SelfcalPolicy(phase_solint_s=0.0, amplitude=False, max_rounds=1)
    with model_column_set_aside(ms):
        kept, outcome = _image_self_calibrated(
            ms, group["params"], "g", wsclean, policy, Timings(), thermal_noise_jy=None
        )
    assert outcome.applied and len(calls) == 2
    assert calls[0] == () and calls[1] == ("-reuse-psf", str(folder / "g"))
    first_psf = fits.getdata(tmp_path / "first-psf.fits")
    np.testing.assert_array_equal(fits.getdata(kept.psf), first_psf)
