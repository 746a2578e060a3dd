"""The numbers of the storage lifecycle, their defaults and the ranges they are held to.

In one light module (no astropy, no Dagster) so the ``dsa110`` parser can validate
``--older-than`` and ``--grace-days`` without importing the lifecycle itself, and the
Dagster config of the scheduled job holds the same rules.
"""

from __future__ import annotations

from dsa110_assets.settings import NumberRule

DAY_S = 86400.0
#: Raw files of finished groups stay on the input tier this many days (the issue's default).
DEFAULT_OLDER_THAN_DAYS = 7.0
#: Any age from "now" to a century; fractions of a day are allowed.
OLDER_THAN_DAYS_RULE = NumberRule(float, 0.0, 36500.0)
#: Days a quarantined orphan is kept after the day it was quarantined (the issue's default).
DEFAULT_GRACE_DAYS = 7
GRACE_DAYS_RULE = NumberRule(int, 0, 3650)
#: An unregistered product modified more recently than this is not an orphan yet: a step
#: publishes its product and then registers it, and a group's run is bounded by hours.
MIN_AGE_S = DAY_S
MIN_AGE_RULE = NumberRule(float, 0.0, 365 * DAY_S)
