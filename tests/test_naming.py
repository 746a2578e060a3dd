from __future__ import annotations

import pytest

from dsa110_assets.naming import (
    InvalidSubbandName,
    epoch_to_group_id,
    group_id_to_epoch,
    is_incomplete_name,
    parse_subband_filename,
    subband_filename,
    validate_group_id,
)


def test_parse_valid_name():
    parsed = parse_subband_filename("2025-01-15T12:00:02_sb05.hdf5")
    assert parsed.timestamp == "2025-01-15T12:00:02"
    assert parsed.subband == 5
    assert parsed.filename == "2025-01-15T12:00:02_sb05.hdf5"
    assert epoch_to_group_id(parsed.epoch_s) == parsed.timestamp


@pytest.mark.parametrize("sb", range(16))
def test_every_subband_round_trips(sb):
    name = subband_filename("2025-01-15T12:00:00", sb)
    assert parse_subband_filename(name).subband == sb


@pytest.mark.parametrize(
    "name, why",
    [
        ("2025-01-15T12:00:00_sb16.hdf5", "outside sb00..sb15"),
        ("2025-01-15T12:00:00_sb5.hdf5", "does not match"),
        ("2025-01-15 12:00:00_sb05.hdf5", "does not match"),
        ("2025-01-15T12:00:00_sb05.h5", "does not match"),
        ("2025-13-15T12:00:00_sb05.hdf5", "not a valid UTC time"),
        ("2025-02-30T12:00:00_sb05.hdf5", "not a valid UTC time"),
        ("2025-01-15T25:00:00_sb05.hdf5", "not a valid UTC time"),
        ("2025-01-15T12:00:00_sb05_incomplete.hdf5", "does not match"),
        ("x2025-01-15T12:00:00_sb05.hdf5", "does not match"),
    ],
)
def test_bad_names_raise_with_reason(name, why):
    with pytest.raises(InvalidSubbandName, match=why):
        parse_subband_filename(name)


def test_incomplete_names():
    assert is_incomplete_name("2025-01-15T12:00:00_sb05_incomplete.hdf5")
    assert not is_incomplete_name("2025-01-15T12:00:00_sb05.hdf5")


def test_group_id_helpers():
    assert validate_group_id("2025-01-15T12:00:00") == "2025-01-15T12:00:00"
    with pytest.raises(ValueError):
        validate_group_id("2025-01-15T12:00")
    assert group_id_to_epoch("1970-01-01T00:01:00") == 60
    with pytest.raises(ValueError):
        subband_filename("2025-01-15T12:00:00", 16)
