from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa110_assets.naming import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    InvalidSubbandName,
    clamp_epoch,
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


# --- issue 10, item 14 (parsing) and item 2 (names whose arithmetic overflows) -----------


@pytest.mark.parametrize(
    "name",
    [
        "2025-01-15T12:00:00_sb05.hdf5\n",  # `$` would match before a trailing newline
        "2025-01-15T12:00:00_sb05.hdf5\r",
        "2025-01-15T12:00:00_sb\uff10\uff17.hdf5",  # fullwidth digits
        "\u0662025-01-15T12:00:00_sb05.hdf5",  # Arabic-Indic digit
        "2025-01-15T12:00:00_sb0\u0665.hdf5",
        " 2025-01-15T12:00:00_sb05.hdf5",
        "2025-01-15T12:00:00_sb05.hdf5\x00",
    ],
)
def test_only_whole_ascii_names_parse(name):
    with pytest.raises(InvalidSubbandName, match="does not match"):
        parse_subband_filename(name)


@pytest.mark.parametrize(
    "name",
    [
        "9999-12-31T23:59:30_sb00.hdf5",
        "0001-01-01T00:00:00_sb00.hdf5",
        "1969-12-31T23:59:59_sb00.hdf5",
        "2200-01-01T00:00:00_sb00.hdf5",
    ],
)
def test_times_outside_the_supported_range_are_bad_names(name):
    with pytest.raises(InvalidSubbandName, match="outside the supported range"):
        parse_subband_filename(name)


def test_range_edges_parse_and_survive_tolerance_arithmetic():
    for stamp in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP):
        epoch = parse_subband_filename(f"{stamp}_sb00.hdf5").epoch_s
        for shift in (-86400 * 365, 86400 * 365):
            epoch_to_group_id(clamp_epoch(epoch + shift))
    with pytest.raises(ValueError, match="not a representable"):
        epoch_to_group_id(1e20)
    with pytest.raises(ValueError):
        validate_group_id("9999-12-31T23:59:59")


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_the_documented_error(text):
    try:
        parsed = parse_subband_filename(text)
    except InvalidSubbandName:
        return
    assert parsed.filename == text and text.isascii()
    assert EARLIEST_TIMESTAMP <= parsed.timestamp <= LATEST_TIMESTAMP


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31, 23, 59, 59)),
    st.integers(0, 15),
)
def test_every_supported_time_round_trips(moment, sb):
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    parsed = parse_subband_filename(subband_filename(stamp, sb))
    assert (parsed.timestamp, parsed.subband) == (stamp, sb)
    assert epoch_to_group_id(parsed.epoch_s) == stamp


@given(st.text(alphabet=st.characters(), min_size=1, max_size=3), st.integers(0, 29))
def test_any_insertion_into_a_good_name_is_refused_or_still_a_good_name(junk, where):
    good = "2025-01-15T12:00:00_sb05.hdf5"
    name = good[:where] + junk + good[where:]
    try:
        parsed = parse_subband_filename(name)
    except InvalidSubbandName:
        return
    assert parsed.filename == name  # only another valid ASCII name can parse
