"""Dagster definitions of the storage lifecycle: tier usage with its checks, the daily job."""
