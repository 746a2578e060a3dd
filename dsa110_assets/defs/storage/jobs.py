"""The daily storage lifecycle job and the schedules of the storage group.

``storage_lifecycle`` runs three independent ops over the plain-Python lifecycle: the stale
staging of dead conversions removed (:mod:`dsa110_assets.storage.stale_staging`), finished
groups' raw files archived (:mod:`dsa110_assets.storage.retention`) and orphan products
collected (:mod:`dsa110_assets.storage.orphans`). Each is configurable (age, grace, dry run;
numbers held to the CLI's rules) and reads "now" from the ``clock`` resource. A file left in
place or an orphan not moved fails its op, with the one-line summary and the first problem,
after the rest of the pass is done. ``storage_lifecycle_schedule`` runs it daily,
``storage_usage_schedule`` materializes ``storage_usage`` (and its checks) hourly.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import dagster as dg
from pydantic import field_validator

from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.defs.storage.assets import storage_usage
from dsa110_assets.errors import PipelineError
from dsa110_assets.registry.connection import Registry
from dsa110_assets.settings import Settings
from dsa110_assets.storage.lifecycle_rules import (
    DEFAULT_GRACE_DAYS,
    DEFAULT_OLDER_THAN_DAYS,
    GRACE_DAYS_RULE,
    OLDER_THAN_DAYS_RULE,
)
from dsa110_assets.storage.orphans import collect_garbage
from dsa110_assets.storage.retention import archive_raw
from dsa110_assets.storage.stale_staging import clean_stale_staging
from resources.clock import Clock
from resources.pipeline import PipelineResource

#: When the lifecycle runs (UTC): 03:17, away from the top of the hour other jobs like.
LIFECYCLE_CRON = "17 3 * * *"
USAGE_CRON = "7 * * * *"


class LifecycleProblems(PipelineError, RuntimeError):
    """Some files were left in place by a lifecycle pass; the message says how many and why."""


class ArchiveConfig(dg.Config):
    """Raw retention: the age of the groups archived, and whether only to report."""

    older_than_days: float = DEFAULT_OLDER_THAN_DAYS
    dry_run: bool = False

    @field_validator("older_than_days")
    @classmethod
    def _age_in_range(cls, value: float) -> float:
        """Refuse an age that is not finite or out of range, by name."""
        return OLDER_THAN_DAYS_RULE.check(value, name="older_than_days")


class GcConfig(dg.Config):
    """Orphan collection: the quarantine's grace in days, and whether only to report."""

    grace_days: int = DEFAULT_GRACE_DAYS
    dry_run: bool = False

    @field_validator("grace_days")
    @classmethod
    def _grace_in_range(cls, value: int) -> int:
        """Refuse a grace that is negative or absurd, by name."""
        return int(GRACE_DAYS_RULE.check(value, name="grace_days"))


class StagingConfig(dg.Config):
    """Stale staging: whether only to report."""

    dry_run: bool = False


class _PassReport(Protocol):
    """What a lifecycle pass reports: a one-line summary and the files it left in place."""

    problems: list[tuple[Path, str]]

    def summary(self) -> str: ...


_R = TypeVar("_R", bound=_PassReport)


def _registry_pass(
    context: dg.OpExecutionContext,
    pipeline: PipelineResource,
    run: Callable[[Settings, Registry], _R],
) -> _R:
    """Run one pass over the registry, log it, and fail the op after it if it left problems.

    Raises
    ------
    LifecycleProblems
        Naming how many files were left and the first reason (the pass itself is complete).
    """
    with reported_failures(), pipeline.registry() as registry:
        report = run(pipeline.settings(), registry)
        context.log.info(report.summary())
        for path, reason in report.problems:
            context.log.error("%s: %s", path, reason)
        if report.problems:
            path, reason = report.problems[0]
            raise LifecycleProblems(f"{report.summary()} (first: {path}: {reason})")
    return report


@dg.op(description="Remove the tmpfs/SSD staging of conversions whose process is gone.")
def clean_staging(
    context: dg.OpExecutionContext, config: StagingConfig, pipeline: PipelineResource
) -> dg.Output[dict]:
    """Remove stale staging; output what was removed."""
    report = clean_stale_staging(pipeline.settings(), dry_run=config.dry_run)
    context.log.info(report.summary())
    return dg.Output(
        {"removed": [str(e.path) for e in report.stale]},
        metadata={
            "removed": len(report.stale),
            "bytes": report.stale_bytes,
            "in_progress": len(report.live),
        },
    )


@dg.op(description="Move finished groups' raw subbands to the archive tier, checksum verified.")
def archive_raw_files(
    context: dg.OpExecutionContext,
    config: ArchiveConfig,
    pipeline: PipelineResource,
    clock: dg.ResourceParam[Clock],
) -> dg.Output[dict]:
    """Archive raw files older than ``older_than_days``; fail after the pass on a problem."""
    report = _registry_pass(
        context,
        pipeline,
        lambda settings, registry: archive_raw(
            settings,
            registry,
            now=clock(),
            older_than_days=config.older_than_days,
            dry_run=config.dry_run,
        ),
    )
    return dg.Output(
        {"groups": report.groups},
        metadata={
            "files": len(report.archived),
            "groups": len(report.groups),
            "bytes": report.bytes,
            "finished_interrupted": len(report.finished),
            "horizon": report.horizon,
            "dry_run": report.dry_run,
        },
    )


@dg.op(description="Quarantine orphan products, purge expired quarantine, mark missing rows.")
def collect_orphans(
    context: dg.OpExecutionContext,
    config: GcConfig,
    pipeline: PipelineResource,
    clock: dg.ResourceParam[Clock],
) -> dg.Output[dict]:
    """Collect garbage on the products tier; fail after the pass on a problem."""
    report = _registry_pass(
        context,
        pipeline,
        lambda settings, registry: collect_garbage(
            settings, registry, now=clock(), grace_days=config.grace_days, dry_run=config.dry_run
        ),
    )
    return dg.Output(
        {"quarantined": [str(a) for a, _ in report.quarantined]},
        metadata={
            "quarantined": len(report.quarantined),
            "quarantine_days_removed": len(report.removed),
            "rows_missing": len(report.missing),
            "newly_missing": report.newly_missing,
            "found_again": report.found_again,
            "too_young": len(report.young),
            "dry_run": report.dry_run,
        },
    )


@dg.job(
    description="The lifecycle of the bytes, daily: stale staging removed, finished groups' "
    "raw files archived (default after 7 days), orphan products quarantined (removed after "
    "7 days), rows whose file is gone marked.",
)
def storage_lifecycle() -> None:
    """Run the three passes; none depends on another."""
    clean_staging()
    archive_raw_files()
    collect_orphans()


storage_usage_job = dg.define_asset_job(
    "storage_usage_job",
    selection=dg.AssetSelection.assets(storage_usage),
    description="Measure every tier and run the tier checks.",
)

storage_lifecycle_schedule = dg.ScheduleDefinition(
    name="storage_lifecycle_schedule",
    job=storage_lifecycle,
    cron_schedule=LIFECYCLE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

storage_usage_schedule = dg.ScheduleDefinition(
    name="storage_usage_schedule",
    job=storage_usage_job,
    cron_schedule=USAGE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
