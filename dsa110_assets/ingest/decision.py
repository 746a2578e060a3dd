"""Where one file belongs: the ingest rules as pure functions of what is known about it.

A file's decision needs facts that cost a read each, and each is needed only if the one
before did not settle it. So the decision comes in three steps, each a pure function of the
facts gathered so far (the pass, :mod:`dsa110_assets.ingest.passes`, does the reads in
between):

1. :func:`decide_known`: a path an earlier pass registered in a slot this pass has not given
   to another file is ``unchanged`` (and not read again);
2. :func:`decide_content`: given its content time (or why it cannot be read), a file is
   ``unreadable`` or a ``mismatch``, or goes on to join a group;
3. :func:`decide_slot`: given its group and who holds its (group, subband) slot, it is
   ``renamed``, ``registered`` (``unchanged`` without a registry) or a ``conflict``.

The result is a :class:`Decision`; carrying it out (the rename, the registry rows) is the
pass's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from dsa110_assets.ingest.content import ContentTime, UnreadableSubband, name_disagreement
from dsa110_assets.ingest.outcomes import Action, FileOutcome
from dsa110_assets.ingest.scan import Candidate

#: An unreadable file modified less than this long ago may still be being written: the
#: sensor keeps looking at it every tick (``FileOutcome.retry``) even if it does not change.
UNREADABLE_RETRY_S = 900.0

Slot = tuple[str, int]  # (group_id, subband)


class SlotState(Enum):
    """Who holds the (group, subband) slot a file wants."""

    FREE = "free"  # nobody: the file takes it under the canonical name
    OWN = "own"  # an earlier pass registered this very file but stopped before renaming it
    HELD = "held"  # another file (``holder``): a conflict
    NAME_BLOCKED = "name_blocked"  # the canonical name is taken by a file that is no subband


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one file.

    ``target`` is the name the file has once placed (for ``renamed``, the name to rename it
    to), or for a ``conflict`` the canonical name of the slot; ``holder`` is the path of the
    file holding that slot. ``subband`` is the registered slot's, for a file known from an
    earlier pass (else the one in the file's name).
    """

    action: Action
    group_id: str | None = None
    target: str | None = None
    holder: str | None = None
    reason: str | None = None
    retry: bool | None = None
    subband: int | None = None

    def outcome(self, candidate: Candidate) -> FileOutcome:
        """Return the file's outcome as the report lists it."""
        return FileOutcome(
            candidate.name,
            self.action,
            self.group_id,
            candidate.subband if self.subband is None else self.subband,
            self.target,
            reason=self.reason,
            retry=self.retry,
        )


@dataclass
class SlotBook:
    """The slots near the pass's files: those the registry holds and those given this pass.

    ``registered`` maps a slot to ``(path, original_name)`` of its registered file and
    ``registered_paths`` is its inverse; ``claimed`` maps the slots given in this pass to
    the path of the file holding them.
    """

    registered: dict[Slot, tuple[str, str | None]] = field(default_factory=dict)
    registered_paths: dict[str, Slot] = field(default_factory=dict)
    claimed: dict[Slot, str] = field(default_factory=dict)

    def add_registered(self, slot: Slot, path: str, original: str | None) -> None:
        """Note a slot an earlier pass registered."""
        self.registered[slot] = (path, original)
        self.registered_paths[path] = slot

    def known_slot(self, path: str) -> Slot | None:
        """Return the slot ``path`` holds from an earlier pass, unless this pass gave it away."""
        slot = self.registered_paths.get(path)
        return slot if slot is not None and slot not in self.claimed else None

    def state_of(self, slot: Slot, dst_path: str, name: str) -> tuple[SlotState, str | None]:
        """Return who holds ``slot`` for the file ``name`` going to ``dst_path``, and its path.

        Only this pass and the registry are asked; a FREE slot may still have its canonical
        name taken on disk (the pass looks, then calls :func:`decide_slot`).
        """
        holder = self.claimed.get(slot)
        if holder is not None:
            return SlotState.HELD, holder
        registered = self.registered.get(slot)
        if registered is None:
            return SlotState.FREE, None
        if registered == (dst_path, name):
            return SlotState.OWN, None
        return SlotState.HELD, registered[0]


def decide_known(candidate: Candidate, src_path: str, book: SlotBook) -> Decision | None:
    """Step 1: a file registered by an earlier pass is ``unchanged``; else None (go on)."""
    slot = book.known_slot(src_path)
    if slot is None:
        return None
    return Decision(Action.UNCHANGED, slot[0], Path(src_path).name, subband=slot[1])


def decide_content(
    candidate: Candidate, content: ContentTime | UnreadableSubband, now: float
) -> Decision | None:
    """Step 2: refuse a file that cannot be read or holds another observation; else None.

    An unreadable file modified less than :data:`UNREADABLE_RETRY_S` before ``now`` may
    still be being written, so it is marked to be looked at again.
    """
    name = candidate.name
    if isinstance(content, UnreadableSubband):
        young = now - candidate.mtime < UNREADABLE_RETRY_S
        reason = f"{name}: {content}" + ("; will look again" if young else "")
        return Decision(Action.UNREADABLE, reason=reason, retry=young)
    disagreement = name_disagreement(candidate.epoch, content)
    if disagreement is not None:
        return Decision(Action.MISMATCH, reason=f"{name}: {disagreement}")
    return None


def decide_slot(
    candidate: Candidate,
    group_id: str,
    target: str,
    state: SlotState,
    holder: str | None,
    *,
    with_registry: bool,
) -> Decision:
    """Step 3: place the file in its group's slot under ``target``, or report the conflict.

    Parameters
    ----------
    candidate
        The file.
    group_id, target
        Its group and canonical name there.
    state, holder
        Who holds the slot (:meth:`SlotBook.state_of`, then the look on disk).
    with_registry
        A file that has its name already is ``registered`` with a registry, else
        ``unchanged``.
    """
    sb = candidate.subband
    if state is SlotState.HELD:
        assert holder is not None
        reason = f"({group_id}, sb{sb:02d}) already held by {Path(holder).name}"
        return Decision(Action.CONFLICT, group_id, target, holder, reason)
    if state is SlotState.NAME_BLOCKED:
        # A file that cannot be a subband (say, an empty one) must not block the real file,
        # which registers under its own name.
        reason = f"{target} is held by a file that is not a subband; kept this name"
        target = candidate.name
    else:
        reason = None
    if candidate.name != target:
        return Decision(Action.RENAMED, group_id, target, reason=reason)
    action = Action.REGISTERED if with_registry else Action.UNCHANGED
    return Decision(action, group_id, target, reason=reason)
