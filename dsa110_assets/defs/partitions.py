"""Partitions: one per observation, keyed by the canonical group_id."""

import os

import dagster as dg

group_id_partitions = dg.DynamicPartitionsDefinition(name="group_id")

#: First date of the daily products (mosaics, photometry, light curves); a deployment sets
#: ``PIPELINE_DAILY_START`` (YYYY-MM-DD) to its first observing day.
DAILY_START = os.environ.get("PIPELINE_DAILY_START", "2026-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=DAILY_START, timezone="UTC")
