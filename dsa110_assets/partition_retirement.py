"""Which ``group_id`` partitions to retire: plain Python, no Dagster.

Why. One dynamic partition per observation is 288 a day, ~102,000 a year. Dagster advises at
most 100,000 partitions per asset, and its UI slows long before that (every partition key is
read for the asset page, the partition bar and the launchpad). So only recent groups stay as
partitions: those observed in the last ``retain_days`` days (default 14, ~4,000 keys), plus
any older group that is not finished or was touched by a run recently. An older group whose
``processing_queue`` state is ``completed`` or ``failed`` loses its partition; its registry
rows, its files and its daily partition stay, and Dagster keeps its runs and materialization
events (deleting a dynamic partition deletes only the key), so re-adding the key (``dsa110
reprocess GROUP_ID``) shows its history again and lets it run.

The incoming sensor cannot bring a retired key back by itself: it adds keys only for groups
``pending`` in the registry, and a retired group is ``completed`` or ``failed``; nothing moves
those back to ``pending`` except an operator.

A key is retired only when all hold:

* it is a canonical group_id (``YYYY-MM-DDTHH:MM:SS``; any other key is not ours to delete);
* its observation started before ``now - retain_days``;
* the registry says ``completed`` or ``failed`` (a group unknown to the registry is kept: a
  registry that is missing or misconfigured must not empty the partition list);
* no run of it is queued or in progress, and none ended within ``grace_s`` (so a group just
  re-run by hand stays visible for a day).

At most ``max_per_tick`` keys go per evaluation, oldest first, so a deployment that starts
with 100,000 keys drains over 100 ticks (17 h at one per 10 minutes) instead of one long
one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dsa110_assets.naming import epoch_to_group_id, looks_like_group_id
from dsa110_assets.registry import Registry
from dsa110_assets.registry.subbands import count_group_files, queue_entry, read_queue_states

__all__ = [
    "FINISHED_STATES",
    "GRACE_S_RULE",
    "MAX_PER_TICK_RULE",
    "RETAIN_DAYS_RULE",
    "GroupRecord",
    "RetentionPolicy",
    "RetirementPlan",
    "group_record",
    "old_keys",
    "plan_retirement",
    "read_queue_states",  # its SQL lives in registry.subbands; the sensor imports it here
]
from dsa110_assets.settings import NumberRule, parse_number

_DAY_S = 86400.0
#: Queue states after which nothing in the pipeline touches a group again by itself.
FINISHED_STATES = frozenset({"completed", "failed"})

#: Days of observations kept as partitions. The upper bound keeps 288 x days below Dagster's
#: advised 100,000 partitions per asset.
RETAIN_DAYS_RULE = NumberRule(float, 0.0, 300.0, low_open=True)
GRACE_S_RULE = NumberRule(float, 0.0, 30 * _DAY_S)
MAX_PER_TICK_RULE = NumberRule(int, 1, 100_000)


@dataclass(frozen=True)
class RetentionPolicy:
    """How many partitions stay.

    Parameters
    ----------
    retain_days
        Groups observed within this many days of now keep their partition whatever their
        state (default 14: ~4,000 partitions, well inside what the UI handles).
    grace_s
        A group whose last run ended less than this ago keeps its partition (default one day),
        so an old group re-run with ``dsa110 reprocess`` can be looked at.
    max_per_tick
        At most this many keys are retired per evaluation (oldest first). The daemon deletes
        keys one at a time (two statements each; 13-36 ms a key on SQLite in
        ``bench/partitions.py``), so 1,000 keep a tick's deletions well under a minute; the
        steady state is 288 a day, ~2 per 10-minute tick.
    """

    retain_days: float = 14.0
    grace_s: float = _DAY_S
    max_per_tick: int = 1000

    def __post_init__(self) -> None:
        for name, rule in (
            ("retain_days", RETAIN_DAYS_RULE),
            ("grace_s", GRACE_S_RULE),
            ("max_per_tick", MAX_PER_TICK_RULE),
        ):
            try:
                object.__setattr__(self, name, rule.check(getattr(self, name)))
            except ValueError as exc:
                raise ValueError(f"RetentionPolicy.{name}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RetentionPolicy:
        """Return the policy from ``PIPELINE_PARTITION_RETAIN_DAYS`` (default 14).

        Validated here so a typo fails when the code location loads, naming the variable.
        """
        text = environ.get("PIPELINE_PARTITION_RETAIN_DAYS")
        if text is None or not text.strip():
            return cls()
        try:
            return cls(retain_days=parse_number(text, RETAIN_DAYS_RULE))
        except ValueError as exc:
            raise ValueError(f"PIPELINE_PARTITION_RETAIN_DAYS: {exc}") from None

    def horizon_key(self, now: float) -> str:
        """Return the group_id of ``now - retain_days``: keys sorting below it are old.

        Canonical group_ids are fixed-width ISO times, so string order is time order.
        """
        return epoch_to_group_id(now - self.retain_days * _DAY_S)

    @property
    def expected_partitions(self) -> int:
        """Partitions kept in steady state: 288 groups a day for ``retain_days``."""
        return round(288 * self.retain_days)


def old_keys(partition_keys: Iterable[str], horizon_key: str) -> list[str]:
    """Canonical group_id keys observed before ``horizon_key``, oldest first.

    Cheap (no database): the shell calls it first so the registry is asked only about these.
    """
    return sorted(k for k in partition_keys if looks_like_group_id(k) and k < horizon_key)


@dataclass(frozen=True)
class RetirementPlan:
    """What one evaluation decided, and why each old key that stays, stays."""

    retire: list[str]
    horizon_key: str
    total: int  # partitions that exist now
    recent: int  # keys at or after the horizon (or not group_ids): kept
    unfinished: list[str] = field(default_factory=list)  # old, but not completed/failed
    unregistered: list[str] = field(default_factory=list)  # old, no processing_queue row
    busy: list[str] = field(default_factory=list)  # old, a run queued/running/just ended
    deferred: int = 0  # retirable, left for the next tick (max_per_tick)

    @property
    def remaining(self) -> int:
        """Partitions left once ``retire`` is applied."""
        return self.total - len(self.retire)

    def summary(self) -> str:
        """One line for the sensor's log and skip reason."""
        return (
            f"{self.total} group_id partitions; retiring {len(self.retire)} observed before "
            f"{self.horizon_key} and finished; kept: {self.recent} recent, "
            f"{len(self.unfinished)} old unfinished, {len(self.unregistered)} old unregistered, "
            f"{len(self.busy)} old with a recent or active run; {self.deferred} deferred"
        )


def plan_retirement(
    partition_keys: Iterable[str],
    queue_states: Mapping[str, str],
    busy: Iterable[str],
    *,
    now: float,
    policy: RetentionPolicy,
) -> RetirementPlan:
    """Decide which partitions to delete (see the module docstring for the rule).

    Parameters
    ----------
    partition_keys
        Every ``group_id`` partition key that exists.
    queue_states
        ``processing_queue.state`` by group_id, for (at least) the old keys; a key missing
        here has no registry row.
    busy
        Partition keys with a run queued or in progress, or one that ended within
        ``policy.grace_s`` (the shell asks the Dagster instance).
    now
        Unix seconds (an injected clock; never read here).
    """
    keys = list(partition_keys)
    horizon = policy.horizon_key(now)
    old = old_keys(keys, horizon)
    busy_set = set(busy)
    retirable: list[str] = []
    unfinished: list[str] = []
    unregistered: list[str] = []
    kept_busy: list[str] = []
    for key in old:
        state = queue_states.get(key)
        if state is None:
            unregistered.append(key)
        elif state not in FINISHED_STATES:
            unfinished.append(key)
        elif key in busy_set:
            kept_busy.append(key)
        else:
            retirable.append(key)
    return RetirementPlan(
        retire=retirable[: policy.max_per_tick],
        horizon_key=horizon,
        total=len(keys),
        recent=len(keys) - len(old),
        unfinished=unfinished,
        unregistered=unregistered,
        busy=kept_busy,
        deferred=max(0, len(retirable) - policy.max_per_tick),
    )


@dataclass(frozen=True)
class GroupRecord:
    """What the registry says about a group an operator asked to re-run."""

    group_id: str
    state: str
    retry_count: int
    subband_files: int
    error_message: str | None


def group_record(registry: Registry, group_id: str) -> GroupRecord | None:
    """Return the registry's view of ``group_id`` (None when it has no queue row)."""
    row = queue_entry(registry, group_id)
    if row is None:
        return None
    files = count_group_files(registry, group_id)
    return GroupRecord(
        group_id, str(row["state"]), int(row["retry_count"] or 0), files, row["error_message"]
    )
