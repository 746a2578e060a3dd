"""Properties of the clustering rule (hypothesis): membership by content, not arrival order."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from helpers import names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_assets.ingest import GroupIndex, normalize_directory
from dsa110_assets.ingest.content import NAME_TIME_TOLERANCE_S, read_content_time
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.instrument import FILE_DURATION_S
from dsa110_assets.naming import epoch_to_group_id, parse_subband_filename, subband_filename
from dsa110_assets.registry import Registry

T0 = 1_736_942_400  # 2025-01-15T12:00:00


@given(
    starts=st.lists(st.floats(T0, T0 + 3600), min_size=1, max_size=60),
    tolerance=st.integers(0, 120),
)
def test_assignment_invariants(starts, tolerance):
    index = GroupIndex()
    assigned = []
    for k, s in enumerate(starts):
        assigned.append(index.assign(s, tolerance, f"g{k}")[0])
    group_start = {gid: index.start_of(gid) for gid in set(assigned)}
    # Each file lies within the tolerance of its group's observation start ...
    assert all(abs(group_start[g] - s) <= tolerance for g, s in zip(assigned, starts, strict=True))
    # ... group starts stay more than the tolerance apart ...
    ordered = sorted(group_start.values())
    assert all(b - a > tolerance for a, b in zip(ordered, ordered[1:], strict=False))
    # ... and a group's own start maps back to it (idempotence).
    assert all(index.nearest(s, tolerance) == g for g, s in group_start.items())


def test_ties_go_to_the_earlier_group():
    index = GroupIndex([(T0, "a"), (T0 + 100, "b")])
    assert index.nearest(T0 + 50, 60) == "a"
    assert index.nearest(T0 + 51, 60) == "b"
    assert index.nearest(T0 + 161, 60) is None


# An observation: its start, and for each subband a name offset from that start (node clock,
# anything up to the name tolerance once the name is truncated to the second), and an
# arrival order.
offsets = st.integers(1 - int(NAME_TIME_TOLERANCE_S), int(NAME_TIME_TOLERANCE_S))
observation = st.tuples(
    st.lists(offsets, min_size=16, max_size=16),
    st.permutations(list(range(16))),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observations=st.lists(observation, min_size=1, max_size=3), tol=st.sampled_from([30, 60]))
def test_any_arrival_order_and_any_honest_names_give_the_true_groups(observations, tol):
    """Give each observation one complete group, whatever the names and the order.

    Names anywhere within the name tolerance, files of consecutive observations
    interleaved in any order: each observation is exactly one complete group, no conflicts,
    and a second pass changes nothing (issue 10, item 17).
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "incoming"
        folder.mkdir()
        arrivals = []
        for k, (offset, order) in enumerate(observations):
            start = T0 + k * FILE_DURATION_S
            arrivals += [(start, offset[sb], sb, rank) for rank, sb in enumerate(order)]
        # Interleave observations: a later observation's files may arrive first.
        arrivals.sort(key=lambda a: (a[3], -a[0]))
        now = time.time()
        for i, (start, offset, sb, _) in enumerate(arrivals):
            name = subband_filename(epoch_to_group_id(start + offset), sb)
            path = folder / name
            if path.exists():  # cannot happen: names differ by subband
                raise AssertionError(path)
            write_header_only_subband(path, start, mtime=now - 10_000 + i)
        files = sorted(folder.iterdir())
        with Registry(Path(tmp) / "db.sqlite3") as registry:
            stats = normalize_directory(folder, cluster_tolerance_s=tol, registry=registry)
            assert stats["conflicts"] == 0 and stats["skipped"] == 0, stats
            assert stats["groups"] == len(observations)
            # One group per observation: every file's content start is its group's.
            by_group = {}
            for p in folder.glob("*.hdf5"):
                parsed = parse_subband_filename(p.name)
                by_group.setdefault(parsed.timestamp, set()).add(
                    round(read_content_time(p).start_s, 3)
                )
            assert len(by_group) == len(observations)
            assert all(len(s) == 1 for s in by_group.values())
            registered = registry.query("SELECT COUNT(*) FROM subband_files")[0][0]
            assert registered == len(files)
            before = names(folder)
            again = normalize_directory(folder, cluster_tolerance_s=tol, registry=registry)
            assert again["files_renamed"] == 0 and names(folder) == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(list(range(32))))
def test_an_outlier_stamped_at_the_tolerance_edge_never_merges_the_next_observation(order):
    """Keep observation B out of A when A's first file is stamped at the tolerance edge.

    The reported case: sb00 of observation A stamped T+59 (its clock) may arrive first;
    A's other files (T..T+2) and observation B's (309 s later) arrive in any order.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for sb in range(16):
            files.append((T0, T0 + (59 if sb == 0 else sb % 3), sb))
            b = T0 + FILE_DURATION_S
            files.append((b, int(b) + sb % 3, sb))
        now = time.time()
        for i, k in enumerate(order):
            start, stamp, sb = files[k]
            write_header_only_subband(
                folder / subband_filename(epoch_to_group_id(stamp), sb), start, mtime=now - 99 + i
            )
        stats = normalize_directory(folder)
        assert stats["conflicts"] == 0 and stats["groups"] == 2 and stats["skipped"] == 0
        groups = {}
        for p in folder.iterdir():
            groups.setdefault(parse_subband_filename(p.name).timestamp, []).append(p)
        assert sorted(len(v) for v in groups.values()) == [16, 16]
