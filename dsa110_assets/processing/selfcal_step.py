"""Self-calibration rounds around WSClean: solve, re-image, keep the image only if better.

The image step calls :func:`self_calibrate` with its first image (made with the clean model
written to ``MODEL_DATA``) and a callable that images a data column; each round solves gains
against that model (:func:`~dsa110_assets.calibration.selfcal.solve_selfcal`), writes
``SELFCAL_DATA`` from ``CORRECTED_DATA`` and every kept round's gains, re-images it, and is
judged by :func:`~dsa110_assets.calibration.selfcal_policy.judge_round`. The image kept last
is the group's image; the others are removed (the registry keeps each round's numbers).

WSClean 3.1 writes its model only to ``MODEL_DATA``, where a calibrator group keeps the sky
its solutions were made against; :func:`model_column_set_aside` moves that column out of the
way for the rounds and back afterwards, also after a dead attempt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from casacore import tables as pt

from dsa110_assets.calibration.selfcal import (
    SELFCAL_COLUMN,
    SelfcalError,
    SelfcalGains,
    remove_column,
    solve_selfcal,
    write_selfcal_column,
)
from dsa110_assets.calibration.selfcal_policy import SelfcalPolicy, Verdict, judge_round
from dsa110_assets.imaging.image_stats import image_statistics
from dsa110_assets.imaging.wsclean import WSCleanResult

MODEL_COLUMN = "MODEL_DATA"
SET_ASIDE_COLUMN = "DSA110_CAL_MODEL"  # the calibrator's MODEL_DATA while self-cal runs


@dataclass(frozen=True)
class RoundImage:
    """One imaging of the rounds: WSClean's products, the column imaged and the numbers."""

    result: WSCleanResult
    column: str
    noise_jy: float  # robust rms of the residual
    peak_jy: float

    @property
    def dynamic_range(self) -> float:
        """Peak of the restored image over the residual's noise."""
        return self.peak_jy / self.noise_jy if self.noise_jy > 0 else float("nan")


def measure(result: WSCleanResult, column: str) -> RoundImage:
    """Return the round numbers of a WSClean run (residual noise, image peak)."""
    residual = image_statistics(result.residual if result.residual else result.image)
    image = image_statistics(result.image)
    return RoundImage(result, column, residual.noise_jy, image.peak_jy)


@dataclass(frozen=True)
class SelfcalRound:
    """What one round did (a ``selfcal_rounds`` row)."""

    round: int
    mode: str
    solint_s: float
    noise_before_jy: float
    noise_after_jy: float | None
    dynamic_range_before: float
    dynamic_range_after: float | None
    accepted: bool
    reason: str
    solutions: dict[str, object] = field(default_factory=dict)
    duration_s: float = 0.0


@dataclass
class SelfcalOutcome:
    """The rounds, and the image kept (the first one when no round helped)."""

    rounds: list[SelfcalRound]
    final: RoundImage
    first: RoundImage
    skipped: str = ""  # why no round ran (a thermal-limited first image), else empty

    @property
    def applied(self) -> bool:
        """True when the kept image is a self-calibrated one."""
        return self.final is not self.first


Imager = Callable[[str, str], RoundImage]  # (data column, name suffix) -> measured image


def self_calibrate(
    ms_path: Path,
    first: RoundImage,
    image: Imager,
    policy: SelfcalPolicy,
    discard: Callable[[WSCleanResult], None],
    *,
    thermal_noise_jy: float | None = None,
) -> SelfcalOutcome:
    """Run phase rounds, then perhaps one amplitude+phase round; return what was kept.

    ``image(column, suffix)`` images a column with the model written to ``MODEL_DATA``;
    ``discard(result)`` removes a round's products that are not kept. With
    ``thermal_noise_jy`` (the radiometer noise of the data imaged), a first image already
    near it is kept without a round (:meth:`SelfcalPolicy.skip_after_first_image`).
    """
    skipped = policy.skip_after_first_image(first.noise_jy, thermal_noise_jy)
    if skipped:
        return SelfcalOutcome(rounds=[], final=first, first=first, skipped=skipped)
    best, kept_gains, rounds = first, None, []
    mode: str | None = "phase"
    while mode is not None and len(rounds) < policy.max_rounds:
        number = len(rounds) + 1
        started = time.monotonic()
        solint = policy.solint_for(mode)
        try:
            gains = solve_selfcal(
                ms_path,
                mode=mode,
                solint_s=solint,
                data_column=best.column,
                model_column=MODEL_COLUMN,
                min_snr=policy.min_snr,
                min_baselines=policy.min_baselines,
            )
        except SelfcalError as exc:
            unsolved = Verdict(False, False, f"not solved: {exc}")
            rounds.append(_round(number, mode, solint, best, None, unsolved, None, started))
            break
        combined = gains.combined(kept_gains)
        write_selfcal_column(ms_path, combined)
        trial = image(SELFCAL_COLUMN, f"selfcal{number}")
        verdict = judge_round(
            policy, best.noise_jy, trial.noise_jy, best.dynamic_range, trial.dynamic_range
        )
        rounds.append(_round(number, mode, solint, best, trial, verdict, gains, started))
        if not verdict.accepted:
            discard(trial.result)
            _restore(ms_path, kept_gains)
            break
        if best is not first:
            discard(best.result)
        best, kept_gains = trial, combined
        mode = _next_mode(policy, mode, verdict.carry_on, len(rounds), best)
    if best is first:
        remove_column(ms_path, SELFCAL_COLUMN)
    return SelfcalOutcome(rounds=rounds, final=best, first=first)


def _next_mode(
    policy: SelfcalPolicy, mode: str, carry_on: bool, done: int, best: RoundImage
) -> str | None:
    """Phase while it keeps helping, then one amplitude+phase round if the S/N allows."""
    if mode == "amplitude+phase":
        return None
    if carry_on:
        return "phase"
    return "amplitude+phase" if policy.wants_amplitude(done, best.dynamic_range) else None


def _restore(ms_path: Path, kept: SelfcalGains | None) -> None:
    """Put the kept rounds' data back in ``SELFCAL_DATA`` after a rejected round."""
    if kept is None:
        remove_column(ms_path, SELFCAL_COLUMN)
    else:
        write_selfcal_column(ms_path, kept)


def _round(
    number: int,
    mode: str,
    solint: float,
    before: RoundImage,
    after: RoundImage | None,
    verdict: Verdict,
    gains: SelfcalGains | None,
    started: float,
) -> SelfcalRound:
    """Return the record of a round (``after`` and ``gains`` None: nothing was solved)."""
    return SelfcalRound(
        round=number,
        mode=mode,
        solint_s=solint,
        noise_before_jy=before.noise_jy,
        noise_after_jy=None if after is None else after.noise_jy,
        dynamic_range_before=before.dynamic_range,
        dynamic_range_after=None if after is None else after.dynamic_range,
        accepted=verdict.accepted,
        reason=verdict.reason,
        solutions={} if gains is None else gains.summary(),
        duration_s=time.monotonic() - started,
    )


@contextlib.contextmanager
def model_column_set_aside(ms_path: Path) -> Iterator[None]:
    """Keep the MS's own ``MODEL_DATA`` (a calibrator's sky) out of WSClean's way.

    On entry a column set aside by a dead attempt is put back first; on exit WSClean's
    ``MODEL_DATA`` is removed (it is regenerable and as large as the data) and the original
    returns under its name.
    """
    with pt.table(str(ms_path), readonly=False, ack=False) as main:
        if SET_ASIDE_COLUMN in main.colnames():
            _put_back(main)  # a dead attempt's: MODEL_DATA is WSClean's
        if MODEL_COLUMN in main.colnames():
            main.renamecol(MODEL_COLUMN, SET_ASIDE_COLUMN)
    try:
        yield
    finally:
        with pt.table(str(ms_path), readonly=False, ack=False) as main:
            _put_back(main)


def _put_back(main: pt.table) -> None:
    """Drop WSClean's ``MODEL_DATA`` and give the set-aside column its name back."""
    if MODEL_COLUMN in main.colnames():
        main.removecols([MODEL_COLUMN])
    if SET_ASIDE_COLUMN in main.colnames():
        main.renamecol(SET_ASIDE_COLUMN, MODEL_COLUMN)


def selfcal_table(rounds: list[SelfcalRound], skipped: str = "") -> str:
    """Return the rounds as a Markdown table (the image asset's metadata), or why none ran."""
    if not rounds:
        return f"no self-calibration: {skipped or 'no round ran'}"
    lines = [
        "| round | mode | solint (s) | noise before (mJy) | after | DR before | after | kept "
        "| why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        after = "" if r.noise_after_jy is None else f"{r.noise_after_jy * 1e3:.3f}"
        dr_after = "" if r.dynamic_range_after is None else f"{r.dynamic_range_after:.0f}"
        lines.append(
            f"| {r.round} | {r.mode} | {r.solint_s:g} | {r.noise_before_jy * 1e3:.3f} | {after} "
            f"| {r.dynamic_range_before:.0f} | {dr_after} | {'yes' if r.accepted else 'no'} "
            f"| {r.reason} |"
        )
    return "\n".join(lines)
