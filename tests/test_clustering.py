"""Properties of the ±tolerance clustering rule (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from helpers import names, touch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_assets.ingest import GroupIndex, normalize_directory
from dsa110_assets.naming import epoch_to_group_id, parse_subband_filename, subband_filename

T0 = 1_736_942_400  # 2025-01-15T12:00:00


@given(
    arrivals=st.lists(st.integers(T0, T0 + 3600), min_size=1, max_size=60),
    tolerance=st.integers(1, 120),
)
def test_assignment_invariants(arrivals, tolerance):
    index = GroupIndex()
    assigned = [index.assign(t, tolerance) for t in arrivals]
    groups = sorted({g for g, _ in assigned})
    # Each file lies within the tolerance of its group.
    assert all(abs(g - t) <= tolerance for (g, _), t in zip(assigned, arrivals, strict=True))
    # Canonical times stay more than the tolerance apart ...
    assert all(b - a > tolerance for a, b in zip(groups, groups[1:], strict=False))
    # ... each was the timestamp of the group's first arrival ...
    first = {}
    for (g, created), t in zip(assigned, arrivals, strict=True):
        if created:
            first[g] = t
    assert first == {g: g for g in groups}
    # ... and a normalized name maps back to its own group (idempotence).
    assert all(index.nearest(g, tolerance) == g for g in groups)


def test_ties_go_to_the_earlier_group():
    index = GroupIndex([T0, T0 + 100])
    assert index.nearest(T0 + 50, 60) == T0
    assert index.nearest(T0 + 51, 60) == T0 + 100
    assert index.nearest(T0 + 161, 60) is None


# A realistic stream: groups every ~309 s, each subband's name drifts 0..2 s, files of a group
# arrive in random order, one group after the other.
observation = st.tuples(
    st.lists(st.integers(0, 2), min_size=16, max_size=16),  # per-subband jitter
    st.permutations(list(range(16))),  # arrival order
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observations=st.lists(observation, min_size=1, max_size=4), gap=st.integers(300, 320))
def test_directory_recovers_true_groups_and_is_idempotent(observations, gap):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = {}
        age = 10_000.0
        for k, (jitter, order) in enumerate(observations):
            start = T0 + k * gap
            for sb in order:
                name = subband_filename(epoch_to_group_id(start + jitter[sb]), sb)
                touch(folder, name, age_s=age)
                age -= 1.0  # arrival order = modification order
                truth[(k, sb)] = None
            first_sb = order[0]
            for sb in range(16):
                truth[(k, sb)] = epoch_to_group_id(start + jitter[first_sb])

        stats = normalize_directory(folder)
        assert stats["conflicts"] == 0 and stats["skipped"] == 0
        assert stats["groups"] == len(observations)
        expected = sorted(subband_filename(gid, sb) for (_, sb), gid in truth.items())
        assert names(folder) == expected
        for name in names(folder):  # contents travel with the name
            parsed = parse_subband_filename(name)
            assert parsed.subband == int(name[-7:-5])

        again = normalize_directory(folder)
        assert again["files_renamed"] == 0 and names(folder) == expected
