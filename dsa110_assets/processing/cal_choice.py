"""Choosing the calibration to apply to a group now: which gains, which bandpass.

Which gains. Among the valid calibrator gain solutions (``solved_against = 'calibrator'``)
within ``gain_window_h`` (default 12 h) of the target's mid-time: the group's own when it is
a calibrator group (``calibrator``); else interpolated linearly in time between the nearest
solution before and the nearest after (``interpolated``); else the nearest on the one side
there is (``nearest``). DSA-110 sees a given calibrator once a day per pointing, so the
+/-12 h window lets one transit calibrate the day. A gain table is used only when its own
solve's bandpass is valid too.

Which bandpass. Among the valid calibrator bandpass tables covering the target, the one
solved at the highest calibrator beam response (``calibration_tables.beam_response``,
compared to 3 decimals; ties go to the nearest in time): the bandpass is stable for the day,
and its noise scales with the calibrator's apparent flux. It is rebased onto the gains' solve
(:mod:`dsa110_assets.processing.cal_rebase`).

A table that fails validation is marked ``invalid`` in ``calibration_tables`` and never
applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dsa110_assets.processing.cal_rebase import merge_gain_tables, rebase_bandpass, table_problem
from dsa110_assets.registry import Registry
from dsa110_assets.registry.caltables import (
    calibrator_bandpasses,
    calibrator_gain_solves,
    mark_invalid,
)


class CalMethod(StrEnum):
    """How a group was calibrated, best first (see :mod:`dsa110_assets.processing.apply_step`)."""

    CALIBRATOR = "calibrator"
    INTERPOLATED = "interpolated"
    NEAREST = "nearest"
    FIELD_MODEL = "field-model"
    UNCALIBRATED = "uncalibrated"


#: Calibrator-referenced methods: what the calibration sensor re-calibrates quick looks to.
CALIBRATOR_METHODS = (CalMethod.CALIBRATOR, CalMethod.INTERPOLATED, CalMethod.NEAREST)
#: A solution this close to the target (days) is the target's own transit, not a neighbour.
_OWN_SOLVE_D = 3.0 / 1440


@dataclass(frozen=True)
class GainSolve:
    """A registered gain solution and its own bandpass (one calibrator or field solve)."""

    gain: Path
    bandpass: Path
    calibrator: str | None
    group_id: str | None
    centre_mjd: float


@dataclass(frozen=True)
class GainChoice:
    """Which gain solves calibrate a target, and how: the first is the nearer one."""

    method: CalMethod
    solves: tuple[GainSolve, ...]
    age_h: float

    @property
    def key(self) -> str:
        """Stable identity of the choice (the calibration sensor's run key)."""
        groups = ",".join(str(s.group_id) for s in self.solves)
        return f"{self.method.value}:{groups}"


#: A bandpass choice: (registered table, its group, its calibrator, its beam response).
BandpassChoice = tuple[Path, str | None, str | None, float | None]


@dataclass(frozen=True)
class CalPair:
    """The tables applied together: ``bandpass`` (as applied) and ``gain``.

    ``calibrator`` and ``source_group`` are the gain solve's; ``bandpass_group`` the solve the
    bandpass shape comes from, ``bandpass_source`` its registered table (``bandpass`` itself
    unless it was rebased onto the gain solve, see the module docstring).
    """

    bandpass: Path
    gain: Path
    calibrator: str | None
    source_group: str | None
    bandpass_source: Path | None = None
    bandpass_group: str | None = None
    bandpass_calibrator: str | None = None
    bandpass_response: float | None = None
    method: CalMethod = CalMethod.NEAREST
    age_h: float | None = None
    gain_solves: tuple[GainSolve, ...] = ()

    @property
    def rebased(self) -> bool:
        """Whether the bandpass applied was rebased from another solve's table."""
        return self.bandpass_source is not None and self.bandpass_source != self.bandpass


def _first_valid(
    registry: Registry, rows: list, paths_of: int, rejected: list[str]
) -> tuple | None:
    """Return the first of ``rows`` whose first ``paths_of`` columns all read back as tables.

    Tables that do not are marked ``invalid`` (so never considered again) with the reason
    appended to ``rejected``.
    """
    for row in rows:
        paths = [str(p) for p in tuple(row)[:paths_of]]
        problems = {p: r for p in paths if (r := table_problem(Path(p))) is not None}
        if not problems:
            return tuple(row)
        mark_invalid(registry, list(problems))
        rejected.extend(f"{path}: {reason}" for path, reason in problems.items())
    return None


def choose_gains(
    registry: Registry,
    mid_mjd: float,
    *,
    window_h: float = 12.0,
    group_id: str | None = None,
) -> tuple[GainChoice | None, list[str]]:
    """Return the calibrator gain solves for a target at ``mid_mjd`` (see the module docstring).

    Only ``solved_against = 'calibrator'`` solutions whose own bandpass is valid and whose
    centre is within ``window_h`` hours are considered. Tables that do not read back are
    marked ``invalid`` (reasons returned) and the next candidate is taken. Writes nothing
    else: the calibration sensor asks this without calibrating.
    """
    rejected: list[str] = []
    window_d = window_h / 24.0
    rows = calibrator_gain_solves(registry, mid_mjd, window_d)
    solves = [GainSolve(Path(r[0]), Path(r[1]), r[2], r[3], float(r[4])) for r in rows]
    own = [
        s for s in solves if s.group_id == group_id or abs(s.centre_mjd - mid_mjd) < _OWN_SOLVE_D
    ]
    before = [s for s in solves if s.centre_mjd <= mid_mjd and s not in own]
    after = [s for s in solves if s.centre_mjd > mid_mjd and s not in own]

    def first_valid(candidates: list[GainSolve]) -> GainSolve | None:
        found = _first_valid(
            registry,
            [(str(c.gain), str(c.bandpass), i) for i, c in enumerate(candidates)],
            2,
            rejected,
        )
        return None if found is None else candidates[int(found[2])]

    def age(solve: GainSolve) -> float:
        return abs(solve.centre_mjd - mid_mjd) * 24.0

    mine = first_valid(own)
    if mine is not None:
        return GainChoice(CalMethod.CALIBRATOR, (mine,), age(mine)), rejected
    earlier, later = first_valid(before), first_valid(after)
    if earlier is not None and later is not None:
        pair = sorted((earlier, later), key=age)
        return GainChoice(CalMethod.INTERPOLATED, tuple(pair), age(pair[0])), rejected
    one = earlier or later
    if one is None:
        return None, rejected
    return GainChoice(CalMethod.NEAREST, (one,), age(one)), rejected


def best_bandpass(registry: Registry, mid_mjd: float, rejected: list[str]) -> BandpassChoice | None:
    """Return the valid calibrator bandpass covering ``mid_mjd`` of the highest beam response.

    Ties go to the nearest in time; None when there is none.
    """
    bandpasses = calibrator_bandpasses(registry, mid_mjd)
    best = _first_valid(registry, bandpasses, 1, rejected)
    if best is None:
        return None
    path, group, calibrator, response = best
    return Path(path), group, calibrator, None if response is None else float(response)


def pair_for(
    solve: GainSolve,
    gain: Path,
    bandpass: BandpassChoice | None,
    rebased_dir: Path | None,
    method: CalMethod,
    age_h: float | None,
    solves: tuple[GainSolve, ...],
) -> CalPair:
    """Return the pair applying ``gain`` (of ``solve``) with ``bandpass`` rebased onto it.

    With no better ``bandpass``, the solve's own bandpass is applied as it is.
    """
    best_path, best_group, best_calibrator, response = bandpass or (
        solve.bandpass,
        solve.group_id,
        solve.calibrator,
        None,
    )
    applied = best_path
    if best_path != solve.bandpass:
        folder = rebased_dir if rebased_dir is not None else best_path.parent / "rebased"
        applied = rebase_bandpass(
            best_path,
            solve.bandpass,
            folder / f"{best_path.stem}__for__{solve.gain.stem}.bcal",
        )
    return CalPair(
        bandpass=applied,
        gain=gain,
        calibrator=solve.calibrator,
        source_group=solve.group_id,
        bandpass_source=best_path,
        bandpass_group=best_group,
        bandpass_calibrator=best_calibrator,
        bandpass_response=response,
        method=method,
        age_h=age_h,
        gain_solves=solves,
    )


def find_calibration(
    registry: Registry,
    mid_mjd: float,
    *,
    rebased_dir: Path | None = None,
    window_h: float = 12.0,
    group_id: str | None = None,
) -> tuple[CalPair | None, list[str]]:
    """Return the calibrator calibration for a target at ``mid_mjd``.

    Gains by :func:`choose_gains`, the best-response bandpass rebased onto the (nearer) gain
    solve.

    Returns the pair (or None) and the reasons tables were rejected (marked ``invalid``).
    Interpolated gains are merged into one table (:func:`merge_gain_tables`) in
    ``interpolated/`` beside the nearer gain table.
    """
    choice, rejected = choose_gains(registry, mid_mjd, window_h=window_h, group_id=group_id)
    if choice is None:
        return None, rejected
    best = best_bandpass(registry, mid_mjd, rejected)
    if best is None:  # the gains' own bandpass was valid a moment ago: a concurrent invalidation
        return None, rejected
    nearer = choice.solves[0]
    gain = nearer.gain
    if choice.method is CalMethod.INTERPOLATED:
        other = choice.solves[1]
        gain = merge_gain_tables(
            nearer.gain,
            nearer.bandpass,
            other.gain,
            other.bandpass,
            nearer.gain.parent / "interpolated" / f"{nearer.gain.stem}__{other.gain.stem}.gcal",
        )
    pair = pair_for(nearer, gain, best, rebased_dir, choice.method, choice.age_h, choice.solves)
    return pair, rejected
