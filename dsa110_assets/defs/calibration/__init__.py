"""Dagster definitions of the calibration stage (assets and checks)."""
