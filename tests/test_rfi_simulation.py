"""The simulator's interference, checked against pyuvdata's reading of the files it writes.

The same sky is simulated twice with one seed, once with interference: pyuvdata reads both
groups' subband files, and their difference is exactly what was injected. It must be non-zero
exactly where the simulator's record says (and :func:`ms_rfi_mask` maps the same record onto a
converted Measurement Set by time, frequency and antenna name), transmitters must have their
recorded amplitude and one phase per baseline, and the broken receiver must be visible in its
autocorrelation. The record survives a round trip through the truth file; bad settings are
refused with the setting's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import simulate_into
from pyuvdata import UVData

from dsa110_assets.conversion.convert import convert_group
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation.rfi import (
    RFIConfig,
    RFIRecord,
    RFIRecordError,
    load_rfi_record,
    ms_rfi_mask,
)

SIM = dict(n_antennas=12, n_channels=4, n_groups=2, seed=5, n_background_sources=3)


def _simulate(root: Path, rfi: RFIConfig | None):
    return simulate_into(root, rfi=rfi, **SIM)


class _Group:
    """One group as pyuvdata reads it: every subband side by side in ascending frequency."""

    def __init__(self, paths: list[Path]) -> None:
        parts = []
        for path in sorted(paths):
            uvd = UVData.from_file(str(path), file_type="uvh5", run_check=False)
            uvd.reorder_blts(order="time", minor_order="baseline", run_check=False)
            parts.append(uvd)
        first = parts[0]
        freqs = np.concatenate([u.freq_array for u in parts])
        data = np.concatenate([u.data_array for u in parts], axis=1)
        order = np.argsort(freqs)
        self.freq_array, self.data_array = freqs[order], data[:, order]
        self.time_array, self.Nblts, self.Ntimes = first.time_array, first.Nblts, first.Ntimes
        self.ant_1_array, self.ant_2_array = first.ant_1_array, first.ant_2_array
        tel = first.telescope
        self.antenna_numbers, self.antenna_names = tel.antenna_numbers, tel.antenna_names
        self.Nfreqs = len(freqs)


def _read(paths: list[Path]) -> _Group:
    """Read one group's subbands with pyuvdata."""
    return _Group(paths)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Simulate the same two groups with and without interference."""
    root = tmp_path_factory.mktemp("rfi-sim")
    noisy = _simulate(root / "with", RFIConfig())
    clean = _simulate(root / "without", None)
    return noisy, clean


def _group_files(result, group: int) -> list[Path]:
    return list(result.groups[group].files)


def _station_names(uvd: _Group) -> dict[int, str]:
    """Antenna number -> station name: the files' ``"1"`` is ``DSA-001`` (instrument facts)."""
    return {
        int(n): f"DSA-{int(name):03d}"
        for n, name in zip(uvd.antenna_numbers, uvd.antenna_names, strict=True)
    }


def _record_mask(record: RFIRecord, uvd: _Group, group: int) -> np.ndarray:
    """Return the record's samples in pyuvdata's (blt, freq) order, by name and frequency."""
    names = _station_names(uvd)
    index = {name: k for k, name in enumerate(record.antenna_names)}
    a1 = np.array([index[names[a]] for a in uvd.ant_1_array])
    a2 = np.array([index[names[a]] for a in uvd.ant_2_array])
    times = np.asarray(record.times_jd[group])
    t = np.argmin(np.abs(uvd.time_array[:, None] - times[None, :]), axis=1)
    band = np.asarray(record.band_freqs_hz)
    chan = np.argmin(np.abs(uvd.freq_array[:, None] - band[None, :]), axis=1)
    out = np.zeros((uvd.Nblts, uvd.Nfreqs), dtype=bool)
    for k in range(uvd.Nblts):
        full = record.mask(group, a1[k : k + 1], a2[k : k + 1])[t[k], 0]
        out[k] = full[chan]
    return out


@pytest.mark.parametrize("group", [0, 1])
def test_injected_samples_are_exactly_the_record(pair, group: int) -> None:
    """The difference pyuvdata reads between the simulations is exactly the record."""
    noisy, clean = pair
    record = load_rfi_record(noisy.truth_path)
    with_rfi, without = _read(_group_files(noisy, group)), _read(_group_files(clean, group))
    diff = np.abs(with_rfi.data_array - without.data_array).max(axis=2)  # (blt, freq)
    expected = _record_mask(record, with_rfi, group)
    assert expected.any() and not expected.all()
    assert np.array_equal(diff > 0, expected), (
        f"{int(((diff > 0) & ~expected).sum())} unrecorded, "
        f"{int((expected & ~(diff > 0)).sum())} recorded but not injected"
    )
    # Everything the record does not cover is bit-identical: interference has its own stream.
    assert np.array_equal(with_rfi.data_array[~expected], without.data_array[~expected])


def test_transmitters_have_their_flux_and_a_stable_phase(pair) -> None:
    """Each transmitter adds its recorded amplitude with one phase per baseline over time."""
    noisy, clean = pair
    record = load_rfi_record(noisy.truth_path)
    with_rfi, without = _read(_group_files(noisy, 0)), _read(_group_files(clean, 0))
    band = np.asarray(record.band_freqs_hz)
    cross = with_rfi.ant_1_array != with_rfi.ant_2_array
    names = _station_names(with_rfi)
    broken = record.broken_antenna_name
    working = np.array(
        [
            names[a] != broken and names[b] != broken
            for a, b in zip(with_rfi.ant_1_array, with_rfi.ant_2_array, strict=True)
        ]
    )
    bursts = np.isin(
        np.argmin(np.abs(with_rfi.time_array[:, None] - np.asarray(record.times_jd[0])), axis=1),
        record.bursts[0],
    )
    rows = cross & working & ~bursts
    assert record.transmitters
    for tx in record.transmitters:
        for c in tx.channels:
            f = int(np.argmin(np.abs(with_rfi.freq_array - band[c])))
            added = (with_rfi.data_array - without.data_array)[rows, f, 0]
            np.testing.assert_allclose(np.abs(added), tx.flux_jy, rtol=1e-4)
            n_times = len(np.unique(with_rfi.time_array[rows]))
            per_baseline = added.reshape(n_times, -1)  # time-major, baseline-minor
            np.testing.assert_allclose(
                per_baseline, np.broadcast_to(per_baseline[0], per_baseline.shape), rtol=1e-4
            )


def test_broken_receiver_raises_its_autocorrelation(pair) -> None:
    """The noisy receiver's autocorrelation is the factor times the clean one's."""
    noisy, clean = pair
    record = load_rfi_record(noisy.truth_path)
    with_rfi, without = _read(_group_files(noisy, 0)), _read(_group_files(clean, 0))
    number = {v: k for k, v in _station_names(with_rfi).items()}[record.broken_antenna_name]
    auto = (with_rfi.ant_1_array == number) & (with_rfi.ant_2_array == number)
    ratio = np.abs(with_rfi.data_array[auto]) / np.abs(without.data_array[auto])
    clean_channels = ~record.bad_channels()[
        np.argmin(np.abs(with_rfi.freq_array[:, None] - np.asarray(record.band_freqs_hz)), axis=1)
    ]
    assert np.median(ratio[:, clean_channels]) == pytest.approx(RFIConfig().broken_noise_factor)


def test_record_maps_onto_the_converted_measurement_set(pair, tmp_path) -> None:
    """``ms_rfi_mask`` of the converted group equals the pyuvdata-side mask, row by row."""
    noisy, _ = pair
    record = load_rfi_record(noisy.truth_path)
    files = _group_files(noisy, 0)
    ms = tmp_path / "g0.ms"
    by_subband = {parse_subband_filename(p.name).subband: p for p in files}
    convert_group(by_subband, ms, tmpfs_dir=None, scratch_dir=tmp_path / "s", durable=False)
    mask = ms_rfi_mask(record, 0, ms)
    from casacore import tables as pt

    with pt.table(str(ms), ack=False) as t:
        data = t.getcol("DATA")
    uvd = _read(files)
    expected = _record_mask(record, uvd, 0)
    # Same count of flagged samples either way (rows and channels are only reordered).
    assert int(mask.sum()) == int(expected.sum())
    assert data.shape[:2] == mask.shape
    # The bad channel's samples are where the MS data are largest.
    assert np.median(np.abs(data[mask][:, 0])) > 10 * np.median(np.abs(data[~mask][:, 0]))


def test_record_round_trips_and_is_deterministic(pair, tmp_path) -> None:
    """The truth file's record reads back equal, and the same seed draws the same RFI."""
    noisy, _ = pair
    record = load_rfi_record(noisy.truth_path)
    assert RFIRecord.from_json(record.to_json()) == record
    again = _simulate(tmp_path, RFIConfig())
    assert load_rfi_record(again.truth_path) == record


def test_a_simulation_without_interference_says_so(pair) -> None:
    """Loading the record of a clean simulation is a clear error, not an empty record."""
    _, clean = pair
    with pytest.raises(RFIRecordError, match="no interference"):
        load_rfi_record(clean.truth_path)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("n_transmitters", -1),
        ("transmitter_max_channels", 0),
        ("transmitter_flux_jy", (10.0, 1.0)),
        ("burst_flux_jy", 0.0),
        ("broken_antenna", "melted"),
        ("broken_noise_factor", 1.0),
    ],
)
def test_bad_settings_are_refused_by_name(setting: str, value) -> None:
    """Each out-of-range setting raises a ValueError naming it."""
    with pytest.raises(ValueError, match=setting):
        RFIConfig(**{setting: value})
