"""The pipeline registry, ``pipeline.sqlite3``: schema, connection and queue states."""

from dsa110_assets.registry.connection import (
    ReadOnlyRegistryError,
    Registry,
    RegistryUnreadable,
    connect_readonly,
)
from dsa110_assets.registry.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    SchemaTooNew,
    check_version,
    migrate,
)
from dsa110_assets.registry.queue import (
    MAX_RETRIES,
    GroupStatus,
    IllegalTransition,
    QueueState,
    RetriesExhausted,
    StaleGroups,
    UnknownGroup,
    count_by_state,
    expire_stale_groups,
    get_status,
    promote_complete_groups,
    transition,
)
from dsa110_assets.registry.stages import StageOutcome, StageStatus, get_stage, record_stage

__all__ = [
    "LATEST_VERSION",
    "MAX_RETRIES",
    "MIGRATIONS",
    "GroupStatus",
    "IllegalTransition",
    "QueueState",
    "ReadOnlyRegistryError",
    "RegistryUnreadable",
    "Registry",
    "RetriesExhausted",
    "SchemaTooNew",
    "UnknownGroup",
    "StaleGroups",
    "StageOutcome",
    "StageStatus",
    "check_version",
    "connect_readonly",
    "get_stage",
    "record_stage",
    "count_by_state",
    "expire_stale_groups",
    "get_status",
    "migrate",
    "promote_complete_groups",
    "transition",
]
