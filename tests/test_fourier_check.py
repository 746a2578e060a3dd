"""The direct Fourier check after calibration: CORRECTED_DATA holds the catalog sky.

A calibrator group with antenna gains, bandpasses and noise (3C286 plus the eight-source field
pattern in all four quadrants) is converted, solved and applied with our own code. The check
(:mod:`dsa110_assets.verification.fourier`, textbook geometry only) then measures every source
in CORRECTED_DATA at its catalog position: within 5% of its beam-attenuated flux, while the
same measurement on the uncorrected DATA is off by the gains and the sky reflected through the
phase centre reads ~0. (The convention itself is proved against pyuvdata and WSClean in
``tests/test_pyuvdata_oracle.py``; this one shows calibration keeps it.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from casacore import tables as pt

from dsa110_assets.calibration import (
    apply_calibration,
    solve_calibrator,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.conversion import convert_group
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import PointSource, SimulationConfig, simulate_observations
from dsa110_assets.simulation.sky import get_calibrator
from dsa110_assets.verification import FourierCheckError, direct_fourier_fluxes

SIM = dict(
    n_groups=1,
    n_antennas=48,
    n_channels=2,
    seed=11,
    calibrator="3C286",
    n_background_sources=0,
    noise=True,
    corruptions=True,
)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fourier")
    sim = simulate_observations(
        SimulationConfig(output_dir=root / "in", truth_dir=root / "truth", **SIM)
    )
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    ms = root / "group.ms"
    convert_group(files, ms, tmpfs_dir=None, scratch_dir=root / "scratch", durable=False)
    calibrator = get_calibrator("3C286")
    field = [s for s in sim.sources if s.name != calibrator.name]
    solution = solve_calibrator(ms, calibrator, field_sources=field)
    bandpass = write_bandpass_table(root / "cal.B", solution, ms)
    gains = write_gain_table(root / "cal.G", solution, ms)
    apply_calibration(ms, bandpass, gains)
    return ms, sim


def test_corrected_data_hold_every_source_at_its_catalog_flux(calibrated) -> None:
    ms, sim = calibrated
    fluxes = direct_fourier_fluxes(ms, sim.sources, column="CORRECTED_DATA")
    ratios = np.array([f.ratio for f in fluxes])
    expected = np.array([f.expected_jy for f in fluxes])
    assert len(fluxes) == 9 and expected.min() > 0.2  # all in the beam, high S/N
    np.testing.assert_allclose(ratios, 1.0, atol=0.05)
    raw = np.array([f.ratio for f in direct_fourier_fluxes(ms, sim.sources, column="DATA")])
    assert np.abs(raw - 1).max() > 0.05  # the gains were real: the check sees them
    print(f"CORRECTED_DATA ratios {np.round(ratios, 4)}; DATA {np.round(raw, 3)}")


def test_a_mirrored_sky_reads_nothing(calibrated) -> None:
    ms, sim = calibrated
    with pt.table(f"{ms}/FIELD", ack=False) as f:
        ra0, dec0 = np.degrees(f.getcol("PHASE_DIR")[12, 0])
    mirrored = [
        PointSource(f"{s.name}_mirror", 2 * ra0 - s.ra_deg, 2 * dec0 - s.dec_deg, 1.0, 0.0)
        for s in sim.sources
        if s.name != "3C286"  # 3C286 sits 0.1 deg from the centre: its mirror is on its wing
    ]
    both = direct_fourier_fluxes(ms, [*sim.sources, *mirrored], column="CORRECTED_DATA")
    ghosts = np.array([f.measured_jy for f in both[len(sim.sources) :]])
    assert np.abs(ghosts).max() < 0.02, ghosts  # Jy, against 0.2-2 Jy sources


def test_bad_requests_get_a_clear_error(calibrated, tmp_path: Path) -> None:
    ms, sim = calibrated
    with pytest.raises(FourierCheckError, match="no MODEL_DATA_X column"):
        direct_fourier_fluxes(ms, sim.sources, column="MODEL_DATA_X")
    with pytest.raises(FourierCheckError, match="cannot open"):
        direct_fourier_fluxes(tmp_path / "missing.ms", sim.sources)
