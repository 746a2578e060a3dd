"""The flagging core: layout, reading, data-quality flags and AOFlagger, on a real MS.

Independent checks: rows are found by casacore's own TaQL selection (ANTENNA1, ANTENNA2,
DATA_DESC_ID, TIME), not by the layout arithmetic under test; AOFlagger is the real binding;
the injected faults are written into a real converted MS.
"""

from __future__ import annotations

import shutil
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
from dsa110_assets.conversion.convert import convert_group
from dsa110_assets.flagging.aoflag import BaselineFlagger
from dsa110_assets.flagging.baseline_blocks import or_flags, read_all_flags, read_baselines
from dsa110_assets.flagging.find import find_flags, write_step_flags
from dsa110_assets.flagging.ms_layout import FlagLayout, MSLayoutError
from dsa110_assets.flagging.policy import DEFAULT_STRATEGY, FlaggingPolicy, FlaggingPolicyError
from dsa110_assets.flagging.quality import band_edge_channels, judge_antennas
from dsa110_assets.flagging.summary import flag_fractions, flag_waterfall_png
from dsa110_assets.simulation.sky import get_calibrator, read_catalog

SIM = dict(n_antennas=16, n_channels=16, n_groups=1, seed=7)


@pytest.fixture(scope="module")
def ms(root: Path, files: dict[int, Path]) -> Path:
    """Return the group converted by the pipeline's converter (pristine: tests copy it)."""
    out = root / "group.ms"
    convert_group(files, out, tmpfs_dir=None, scratch_dir=root / "scratch", durable=False)
    return out


@pytest.fixture
def ms_copy(ms: Path, tmp_path: Path) -> Path:
    """Return a copy of the MS that a test may change."""
    target = tmp_path / ms.name
    shutil.copytree(ms, target)
    return target


def _taql_rows(ms: Path, ant1: int, ant2: int, spw: int) -> np.ndarray:
    """Row numbers of one baseline in one window, by TIME, found by casacore's TaQL."""
    with pt.table(str(ms), ack=False) as t:
        sel = t.query(
            f"ANTENNA1=={ant1} && ANTENNA2=={ant2} && DATA_DESC_ID=={spw}", sortlist="TIME"
        )
        rows = sel.rownumbers()
        sel.close()
    return np.asarray(rows)


def _spw_freqs(ms: Path) -> np.ndarray:
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        return np.array([t.getcell("CHAN_FREQ", i) for i in range(t.nrows())])


def test_layout_matches_casacore_selection(ms: Path) -> None:
    layout = FlagLayout.from_ms(ms)
    assert layout.n_times == 24 and layout.n_blocks == 16 and layout.n_chan == 16
    assert layout.n_baselines == 16 * 17 // 2
    freqs = _spw_freqs(ms)
    assert np.all(np.diff(layout.band_freqs_hz) > 0)  # band order is ascending frequency
    for b in (0, 5, layout.n_baselines - 1):
        a1, a2 = int(layout.antenna1[b]), int(layout.antenna2[b])
        for block in (0, 7, 15):
            rows = _taql_rows(ms, a1, a2, block)
            expected = [layout.first_row(block, t, b) for t in range(layout.n_times)]
            assert rows.tolist() == expected
    assert np.allclose(layout.freqs_hz, freqs)


def test_layout_refuses_a_reordered_ms(ms: Path, tmp_path: Path) -> None:
    with pt.table(str(ms), ack=False) as t:
        sorted_copy = t.sort("ANTENNA1, ANTENNA2, DATA_DESC_ID, TIME")
        sorted_copy.copy(str(tmp_path / "sorted.ms"), deep=True)
        sorted_copy.close()
    with pytest.raises(MSLayoutError, match="spectral window|time-major"):
        FlagLayout.from_ms(tmp_path / "sorted.ms")


def test_read_baselines_equals_taql_reads(ms: Path) -> None:
    layout = FlagLayout.from_ms(ms)
    b0, b1 = 10, 30
    with pt.table(str(ms), ack=False) as main:
        data, flags = read_baselines(main, layout, b0, b1)
        for b in (b0, 17, b1 - 1):
            a1, a2 = int(layout.antenna1[b]), int(layout.antenna2[b])
            for position, block in enumerate(layout.band_order):
                rows = _taql_rows(ms, a1, a2, int(block))
                direct = np.array([main.getcell("DATA", int(r)) for r in rows])
                channels = slice(position * layout.n_chan, (position + 1) * layout.n_chan)
                assert np.array_equal(data[b - b0, :, channels], direct)
    assert flags.shape == data.shape and not flags.any()


def test_or_flags_sets_exactly_the_samples_asked(ms_copy: Path) -> None:
    layout = FlagLayout.from_ms(ms_copy)
    mask = np.zeros((layout.n_times, layout.n_baselines, layout.n_band_chan), dtype=bool)
    t, b, channel = 3, 20, 37  # band channel 37 = window at band position 2, channel 5
    mask[t, b, channel] = True
    with pt.table(str(ms_copy), readonly=False, ack=False) as main:
        assert or_flags(main, layout, mask) == layout.n_corr
    block = int(layout.band_order[channel // layout.n_chan])
    row = _taql_rows(ms_copy, int(layout.antenna1[b]), int(layout.antenna2[b]), block)[t]
    with pt.table(str(ms_copy), ack=False) as main:
        flag = main.getcol("FLAG")
        assert flag[row, channel % layout.n_chan].all()
        assert np.count_nonzero(flag) == layout.n_corr
    assert np.array_equal(read_all_flags(str(ms_copy), layout), mask)


def test_aoflagger_finds_a_transmitter_and_a_burst_where_they_are() -> None:
    """The binding's images are (channel, time): a transposition would flag the wrong axis."""
    rng = np.random.default_rng(3)
    n_t, n_f = 24, 256
    flagger = BaselineFlagger(DEFAULT_STRATEGY, n_t, n_f)
    vis = rng.normal(size=(n_t, n_f)) + 1j * rng.normal(size=(n_t, n_f)) + 5.0
    vis[:, 100] += 500.0  # a transmitter in one channel
    vis[9, :] += 80.0 * np.exp(1j * rng.uniform(0, 2 * np.pi, n_f))  # a burst
    given = np.zeros((n_t, n_f), dtype=bool)
    given[:, 200:216] = True  # a missing window stays flagged
    flags = flagger.flag(np.abs(vis), given)
    assert flags[:, 100].all() and flags[9, :].all() and flags[:, 200:216].all()
    clean = np.ones_like(flags)
    clean[:, 100] = clean[9, :] = False
    clean[:, 200:216] = False
    assert flags[clean].mean() < 0.02


def test_quality_flags_zeros_non_finite_dead_and_noisy_antennas(ms_copy: Path) -> None:
    layout = FlagLayout.from_ms(ms_copy)
    dead = int(layout.antenna1[40])
    antennas = np.unique(layout.antenna1)
    noisy = int(antennas[antennas != dead][3])
    rng = np.random.default_rng(5)
    with pt.table(str(ms_copy), readonly=False, ack=False) as main:
        data = main.getcol("DATA")
        a1, a2 = main.getcol("ANTENNA1"), main.getcol("ANTENNA2")
        data[(a1 == dead) | (a2 == dead)] = 0.0
        mine = ((a1 == noisy) | (a2 == noisy)) & (a1 != a2)
        sigma = np.std(np.diff(data[~mine & (a1 != a2)], axis=1).real) / np.sqrt(2)
        shape = data[mine].shape
        data[mine] += 30 * sigma * (rng.normal(size=shape) + 1j * rng.normal(size=shape))
        data[7, 3, 0] = np.nan  # one bad sample in one correlation
        main.putcol("DATA", data)
    findings = find_flags(ms_copy, FlaggingPolicy(workers=1, aoflagger=False))
    assert findings.antennas.dead == (dead,)
    assert findings.antennas.noisy == (noisy,)
    rows = np.isin(layout.antenna1, [dead, noisy]) | np.isin(layout.antenna2, [dead, noisy])
    expected = np.zeros((layout.n_times, layout.n_baselines, layout.n_band_chan), dtype=bool)
    expected[:, rows] = True
    expected[..., band_edge_channels(layout.band_freqs_hz, 0.5)] = True
    position = list(layout.band_order).index(0)  # row 7: window 0, integration 0, baseline 7
    expected[0, 7, position * layout.n_chan + 3] = True
    assert np.array_equal(findings.step_mask("quality"), expected)


def test_judge_antennas_on_levels() -> None:
    antennas = np.arange(6)
    levels = {0: 100.0, 1: 101.0, 2: 99.0, 3: 0.0, 4: 1000.0, 5: 2.0}
    a1, a2 = np.triu_indices(6, k=1)
    noise = np.ones(a1.size)
    verdict = judge_antennas(
        antennas, levels, noise, a1, a2, dead_fraction=0.05, auto_factor=3.0, noise_factor=3.0
    )
    assert verdict.dead == (3, 5) and verdict.out_of_range == (4,) and verdict.noisy == ()


def test_flagging_is_parallel_and_deterministic(ms_copy: Path) -> None:
    one = find_flags(ms_copy, FlaggingPolicy(workers=1, baselines_per_chunk=50))
    two = find_flags(ms_copy, FlaggingPolicy(workers=2, baselines_per_chunk=50))
    assert np.array_equal(one.bits, two.bits)
    assert one.antennas == two.antennas


def test_clean_data_is_barely_flagged_and_written(ms_copy: Path) -> None:
    findings = find_flags(ms_copy, FlaggingPolicy(workers=1))
    for step in ("quality", "aoflagger"):
        write_step_flags(ms_copy, findings, step)
    layout = findings.layout
    final = read_all_flags(str(ms_copy), layout)
    fractions = flag_fractions(layout, final)
    assert fractions.total < 0.05
    assert set(fractions.per_spw) == {f"spw{k:02d}" for k in range(16)}
    assert len(fractions.per_integration) == 24 and len(fractions.per_antenna) == 16
    assert flag_waterfall_png(layout, final).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kwargs",
    [dict(workers=0), dict(baselines_per_chunk=0), dict(band_edge_mhz=-1), dict(strategy="/nope")],
)
def test_policy_refuses_bad_settings(kwargs: dict) -> None:
    with pytest.raises(FlaggingPolicyError):
        FlaggingPolicy(**kwargs)


def test_antenna_flagged_on_the_calibrator_is_flagged_where_its_solution_is_applied(
    ms: Path, sim, tmp_path: Path
) -> None:
    """A dead antenna in the calibrator group: flagged, no solution, flagged in the target."""
    calibrator_ms, target_ms = tmp_path / "cal.ms", tmp_path / "target.ms"
    shutil.copytree(ms, calibrator_ms)
    shutil.copytree(ms, target_ms)
    layout = FlagLayout.from_ms(calibrator_ms)
    dead = int(layout.antenna2[3])
    with pt.table(str(calibrator_ms), readonly=False, ack=False) as main:
        data = main.getcol("DATA")
        rows = (main.getcol("ANTENNA1") == dead) | (main.getcol("ANTENNA2") == dead)
        data[rows] = 0.0
        main.putcol("DATA", data)
    findings = find_flags(calibrator_ms, FlaggingPolicy(workers=1))
    assert dead in findings.antennas.dead
    for step in ("quality", "aoflagger"):
        write_step_flags(calibrator_ms, findings, step)
    field = [s for s in read_catalog(sim.catalog_path) if s.name != "3C286"]
    solution = solve_calibrator(calibrator_ms, get_calibrator("3C286"), field_sources=field)
    bandpass = write_bandpass_table(tmp_path / "cal.B", solution, calibrator_ms)
    gain = write_gain_table(tmp_path / "cal.G", solution, calibrator_ms)
    apply_calibration(target_ms, bandpass, gain)
    with pt.table(str(target_ms), ack=False) as main:
        flag = main.getcol("FLAG")
        mine = (main.getcol("ANTENNA1") == dead) | (main.getcol("ANTENNA2") == dead)
    assert flag[mine].all()
    assert flag[~mine].mean() < 0.05
