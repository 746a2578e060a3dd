"""Partitions: one per recent observation, keyed by the canonical group_id; one per day."""

import os
import re
from datetime import date

import dagster as dg

from dsa110_assets.partition_retirement import RetentionPolicy

#: One key per observation. Only recent groups keep theirs (:data:`RETENTION`): a year of
#: groups is ~102,000 keys, past what Dagster advises per asset (100,000) and what its UI
#: shows quickly; older finished groups are retired by ``partition_retirement_sensor``.
group_id_partitions = dg.DynamicPartitionsDefinition(name="group_id")

#: How long groups keep their partition: ``PIPELINE_PARTITION_RETAIN_DAYS`` (default 14),
#: validated when the code location loads (see :mod:`dsa110_assets.partition_retirement`).
RETENTION = RetentionPolicy.from_env(os.environ)

#: First date of the daily products (mosaics, photometry, light curves); a deployment sets
#: ``PIPELINE_DAILY_START`` (YYYY-MM-DD) to its first observing day.
DAILY_START_DEFAULT = "2026-01-01"


def parse_daily_start(text: str) -> str:
    """``PIPELINE_DAILY_START`` as a real calendar date ``YYYY-MM-DD`` (ASCII digits only).

    Refused with a message naming the variable, so a typo fails when the code location loads
    instead of as a Dagster error about partitions.
    """
    raw = text.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw, flags=re.ASCII):
        raise ValueError(f"PIPELINE_DAILY_START: {text!r} is not a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"PIPELINE_DAILY_START: {text!r} is not a date: {exc}") from None
    if not 2000 <= day.year <= 2200:
        raise ValueError(f"PIPELINE_DAILY_START: {text!r} is outside 2000-2200")
    return raw


DAILY_START = parse_daily_start(os.environ.get("PIPELINE_DAILY_START", DAILY_START_DEFAULT))

daily_partitions = dg.DailyPartitionsDefinition(start_date=DAILY_START, timezone="UTC")
