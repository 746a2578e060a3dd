"""Pipeline steps: a science function plus its registry bookkeeping, callable without Dagster."""
