"""Benchmark: the imaging levers of issue 15 (channel averaging, pixels per beam) on one group.

Simulates one full-size target group (the simulator's ``PRESETS["full"]``: 96 antennas,
16 subbands x 48 channels, 24 integrations), ``--hours`` after today's 3C286 transit, with
noise and its background sky but no corruptions and no interference (the visibilities are
the sky, so any flux difference is the imaging's), and converts it. Then, for each
``--combos`` entry ``BIN:PPB[:MAX]`` (adjacent channels averaged in the imaging copy, pixels
per beam of the cell, the largest image side, default 4096 px: ``4:3:3072`` keeps the field
of view of ``4:4``; then any WSClean options, each ``+option[=value]``: ``4:4+use-wgridder``,
``4:4+reorder``, ``4:4+nwlayers-factor=0.5``), it writes the imaging copy
(:func:`~dsa110_assets.imaging.imaging_ms.write_imaging_ms`), images it with WSClean at the
production settings (:class:`~dsa110_assets.imaging.wsclean.WSCleanParams` defaults, the
geometry from :func:`~dsa110_assets.imaging.wsclean.choose_image_geometry`), divides by the
primary beam and measures every catalog source with forced photometry.

Prints per combination: the copy's and WSClean's time, the image size and cell, the
residual noise and the fitted beam; then against ``--reference`` (default ``1:4``, every
channel at the finest cell): the noise ratio and the flux ratio of every source with
S/N > 20 in the reference, with the worst source's distance from the image centre, and
the flux over the catalog's (the simulated truth) for both, so a lever's bias and the
imaging's own can be told apart. Issue 15's goals: noise within 5%, fluxes within 2%.
``--results`` keeps the figures in a JSON file, so a later run adds combinations to them.

Measured 2026-12-04 on the 2-core development machine: see the README's Speed section.

Usage: ``python bench/imaging_levers.py [--hours 1.0] [--combos 1:4,2:4,4:4,4:3:3072,4:2:2048]
[--reference 1:4] [--seed 8] [--dir /tmp] [--results FILE.json] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _common import scratch_folder, timed

from dsa110_assets.catalogs.cone import angular_separation_deg
from dsa110_assets.conversion import convert_group
from dsa110_assets.imaging import (
    WSCleanParams,
    choose_image_geometry,
    image_statistics,
    primary_beam_image,
    run_wsclean,
    write_pb_products,
)
from dsa110_assets.imaging.image_stats import ImageStats
from dsa110_assets.imaging.imaging_ms import write_imaging_ms
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.photometry.forced import forced_photometry
from dsa110_assets.simulation import PRESETS, SimulationConfig, simulate_observations
from dsa110_assets.simulation.simulate import calibrator_transit
from dsa110_assets.simulation.sky import get_calibrator

CALIBRATOR = "3C286"
MIN_SNR = 20.0


@dataclass(frozen=True)
class Combo:
    """One imaging setting: channels averaged, pixels per beam, largest side, WSClean options."""

    chan_bin: int
    pixels_per_beam: float
    max_size: int = 4096
    options: tuple[str, ...] = ()  # each "option" or "option=value", passed as -option [value]

    @classmethod
    def parse(cls, text: str) -> Combo:
        """Read ``BIN:PPB[:MAX][+option[=value]...]``: BIN >= 1, PPB >= 2, MAX >= 256 px."""
        base, *options = text.split("+")
        try:
            parts = base.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            numbers = cls(int(parts[0]), float(parts[1]), *(int(x) for x in parts[2:]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected BIN:PPB[:MAX][+option[=value]...], got {text!r}"
            ) from None
        if (
            numbers.chan_bin < 1
            or numbers.max_size < 256
            or not (math.isfinite(numbers.pixels_per_beam) and numbers.pixels_per_beam >= 2)
        ):
            raise argparse.ArgumentTypeError(f"{text!r}: need BIN >= 1, PPB >= 2, MAX >= 256")
        if any(not re.fullmatch(r"[a-z][a-z-]*(=[\w.]+)?", o) for o in options):
            raise argparse.ArgumentTypeError(f"{text!r}: options are +name or +name=value")
        return replace(numbers, options=tuple(options))

    def wsclean_args(self) -> tuple[str, ...]:
        """Return the options as WSClean arguments (``nwlayers-factor=0.5`` -> two)."""
        args: list[str] = []
        for option in self.options:
            name, _, value = option.partition("=")
            args += [f"-{name}", value] if value else [f"-{name}"]
        return tuple(args)

    def __str__(self) -> str:
        tail = "" if self.max_size == 4096 else f":{self.max_size}"
        return f"{self.chan_bin}:{self.pixels_per_beam:g}{tail}" + "".join(
            f"+{o}" for o in self.options
        )


@dataclass
class Result:
    """What one combination took and measured."""

    copy_s: float | None  # None: the copy of an earlier combination with this bin
    wsclean_s: float
    size: int
    scale_arcsec: float
    noise_jy: float
    beam: str
    fluxes: dict[str, tuple[float, float, float]]  # source -> (flux, error, radius deg)


def _combos(text: str) -> list[Combo]:
    return [Combo.parse(t) for t in text.split(",") if t]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="after the transit")
    parser.add_argument("--combos", type=_combos, default=_combos("1:4,2:4,4:4,4:3:3072,4:2:2048"))
    parser.add_argument("--reference", type=Combo.parse, default=Combo(1, 4.0))
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--results", type=Path, help="JSON file of results: read (combos in it are not re-run), "
        "then written; a file from another --hours or --seed is refused",
    )  # fmt: skip
    args = parser.parse_args()
    if not (math.isfinite(args.hours) and abs(args.hours) <= 12):
        parser.error("--hours must be within 12 of the transit")
    combos = list(dict.fromkeys([args.reference, *args.combos]))
    key = {"hours": args.hours, "seed": args.seed}
    results = _load(args.results, key)
    with scratch_folder("bench-levers-", args.dir, keep=args.keep) as root:
        ms, sources = simulate_and_convert(root, args)
        for combo in combos:
            if str(combo) not in results:
                results[str(combo)] = _image(root, ms, combo, sources)
                _save(args.results, key, results)
        _compare(results, str(args.reference), sources)
    return 0


def _load(path: Path | None, key: dict) -> dict[str, Result]:
    if path is None or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("key") != key:
        raise SystemExit(f"{path}: results of {saved.get('key')}, not {key}")
    return {label: Result(**r) for label, r in saved["results"].items()}


def _save(path: Path | None, key: dict, results: dict[str, Result]) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    body = {label: asdict(r) for label, r in results.items()}
    tmp.write_text(json.dumps({"key": key, "results": body}, indent=1))
    os.replace(tmp, path)


def simulate_and_convert(root: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """Simulate the group (``args.hours`` after the transit, ``args.seed``) and convert it.

    Returns the MS and the simulated sources by name; the subband files are removed once
    converted (the later copies need the disk). ``bench/selfcal_continue.py`` uses it too.
    """
    calibrator = get_calibrator(CALIBRATOR)
    transit = calibrator_transit(calibrator, datetime.now(UTC).date())
    preset = PRESETS["full"]
    seconds, sim = timed(
        simulate_observations,
        SimulationConfig(
            output_dir=root / "incoming",
            truth_dir=root / "truth",
            n_groups=1,
            start=transit + timedelta(hours=args.hours),
            dec_deg=calibrator.dec_deg,
            n_antennas=preset["n_antennas"],
            n_channels=preset["n_channels"],
            seed=args.seed,
            calibrator=CALIBRATOR,
            corruptions=False,
            rfi=None,
        ),
    )
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    ms = root / "ms" / "target.ms"
    convert_s, conversion = timed(convert_group, files, ms, tmpfs_dir=None,
                                  scratch_dir=root / "scratch")  # fmt: skip
    print(
        f"group {sim.groups[0].start:%Y-%m-%dT%H:%M:%S} ({args.hours:+g} h from the "
        f"{CALIBRATOR} transit): {len(sim.sources)} sources, simulated in {seconds:.0f} s; "
        f"MS {conversion.size_bytes / 1e9:.2f} GB converted in {convert_s:.1f} s"
    )
    sources = {s.name: s for s in sim.sources}
    for path in sim.groups[0].files:
        path.unlink()  # the MS holds them now; the copies need the disk
    return ms, sources


def _image(root: Path, ms: Path, combo: Combo, sources: dict) -> Result:
    copy_path = root / f"copy{combo.chan_bin}.ms"
    if not copy_path.exists():
        for old in root.glob("copy*.ms"):  # one copy on disk at a time
            shutil.rmtree(old)
    copy_s = None
    if not copy_path.exists():
        copy_s, _ = timed(write_imaging_ms, ms, copy_path, chan_bin=combo.chan_bin)
    geometry = choose_image_geometry(
        copy_path, pixels_per_beam=combo.pixels_per_beam, max_size=combo.max_size
    )
    params = WSCleanParams(
        size=geometry.size, scale_arcsec=geometry.scale_arcsec, data_column="DATA",
        extra_args=combo.wsclean_args(),
    )  # fmt: skip
    name = re.sub(r"[^\w.-]", "_", f"b{combo.chan_bin}-p{combo.pixels_per_beam:g}-m{combo.max_size}"
                  + "".join(f"-{o}" for o in combo.options))  # fmt: skip
    result = run_wsclean(copy_path, root / "images", name, params)
    pb = primary_beam_image(copy_path, result.image)
    pb_path, _ = write_pb_products(result.image, pb)
    stats = image_statistics(result.image)
    residual = image_statistics(result.residual)
    names = sorted(sources)
    measured = forced_photometry(
        result.image,
        (names, [sources[n].ra_deg for n in names], [sources[n].dec_deg for n in names]),
        pb_fits=pb_path,
    )
    centre = (stats.centre_ra_deg, stats.centre_dec_deg)
    fluxes = {
        m.source_id: (
            m.flux_jy,
            m.flux_err_jy,
            float(angular_separation_deg(*centre, m.ra_deg, m.dec_deg)),
        )
        for m in measured
        if m.skip_reason is None
    }
    out = Result(
        copy_s, result.duration_s, geometry.size, geometry.scale_arcsec, residual.noise_jy,
        _beam_text(stats), fluxes,
    )  # fmt: skip
    copy = "reused" if copy_s is None else f"{copy_s:.1f} s"
    split = re.search(r"Inversion: .*", result.log_tail)  # WSClean's own split of its time
    if split:
        print(f"  WSClean {split.group(0)}")
    print(
        f"{combo}: copy {copy}, WSClean {out.wsclean_s:.1f} s, {out.size} px at "
        f"{out.scale_arcsec:g} arcsec, residual noise {out.noise_jy * 1e3:.4f} mJy, "
        f"beam {out.beam}, {len(fluxes)} sources measured",
        flush=True,
    )
    return out


def _beam_text(stats: ImageStats) -> str:
    bmaj, bmin = stats.beam_major_arcsec, stats.beam_minor_arcsec
    return "?" if bmaj is None or bmin is None else f'{bmaj:.1f}"x{bmin:.1f}"'


def _compare(results: dict[str, Result], reference: str, sources: dict) -> None:
    ref = results[reference]
    bright = sorted(s for s, (f, e, _) in ref.fluxes.items() if e > 0 and f / e > MIN_SNR)
    print(f"\nagainst {reference} ({len(bright)} sources with S/N > {MIN_SNR:g} there):")
    head = ("combo", "WSClean", "x ref", "noise", "flux / ref: median", "worst", "at r",
            "flux / catalog")  # fmt: skip
    print(
        "  " + " ".join(f"{h:>{w}}" for h, w in zip(head, (6, 9, 6, 7, 19, 7, 7, 15), strict=True))
    )
    for label, r in results.items():
        common = [s for s in bright if s in r.fluxes]
        ratio = np.array([r.fluxes[s][0] / ref.fluxes[s][0] for s in common])
        truth = np.array([r.fluxes[s][0] / sources[s].flux_1400_jy for s in common])
        worst = int(np.argmax(np.abs(ratio - 1))) if common else 0
        print(
            f"  {label:>6} {r.wsclean_s:>8.1f}s {r.wsclean_s / ref.wsclean_s:>6.3f} "
            f"{r.noise_jy / ref.noise_jy:>7.4f} "
            + (
                f"{np.median(ratio):>19.4f} {ratio[worst]:>7.4f} "
                f"{r.fluxes[common[worst]][2]:>6.2f}d {np.median(truth):>15.4f}"
                if common
                else "  (no source in common)"
            )  # fmt: skip
        )


if __name__ == "__main__":
    raise SystemExit(main())
