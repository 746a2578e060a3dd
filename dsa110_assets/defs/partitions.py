"""Partitions: one per observation, keyed by the canonical group_id."""

import dagster as dg

group_id_partitions = dg.DynamicPartitionsDefinition(name="group_id")
