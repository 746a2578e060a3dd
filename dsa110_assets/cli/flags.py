"""``dsa110 flags``: list, save, restore or delete the flag versions of a group's MS.

The same versions CASA's ``flagmanager`` reads and writes (``<ms>.flagversions``); the
pipeline's flagging saves ``before_flagging``, ``before_aoflagger`` and ``flagged``, so
``dsa110 flags restore GROUP_ID --name before_flagging`` undoes all of its flagging.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsa110_assets.cli.arguments import add_actions, add_command, add_json, group_id_arg
from dsa110_assets.cli.common import CommandError, existing_registry
from dsa110_assets.cli.display import print_json
from dsa110_assets.flagging.versions import (
    delete_flag_version,
    list_flag_versions,
    restore_flag_version,
    save_flag_version,
)
from dsa110_assets.registry import Registry
from dsa110_assets.registry.products import ms_record
from dsa110_assets.settings import Settings


def add_flags_parser(sub: Any) -> None:
    """Add ``flags`` with ``list``, ``save``, ``restore`` and ``delete`` to ``sub``."""
    flags = add_command(sub, "flags", None, help="flag versions of a group's Measurement Set")
    actions = add_actions(flags, "flags_command", "ACTION")
    listing = add_command(actions, "list", cmd_flags_list, help="list the saved flag versions")
    listing.add_argument("group_id", type=group_id_arg, metavar="GROUP_ID")
    add_json(listing)
    for name, func, text in (
        ("save", cmd_flags_save, "save the MS's flags as a version"),
        ("restore", cmd_flags_restore, "write a saved version's flags back into the MS"),
        ("delete", cmd_flags_delete, "delete a saved version"),
    ):
        action = add_command(actions, name, func, help=text)
        action.add_argument("group_id", type=group_id_arg, metavar="GROUP_ID")
        action.add_argument("--name", required=True, help="the version's name")
        if name == "save":
            action.add_argument("--comment", default="", help="a one-line comment")


def _ms_of(group_id: str) -> Path:
    """Return the group's MS from the registry, refusing a group without one."""
    settings = Settings.from_env()
    with Registry(existing_registry(settings), readonly=True) as registry:
        try:
            record = ms_record(registry, group_id)
        except LookupError as exc:
            raise CommandError(f"group {group_id} has no Measurement Set registered") from exc
    if not record.path.is_dir():
        raise CommandError(f"the Measurement Set of {group_id} ({record.path}) is missing")
    return record.path


def cmd_flags_list(args: argparse.Namespace) -> int:
    """Print the group's flag versions, oldest first; return 0."""
    ms = _ms_of(args.group_id)
    versions = list_flag_versions(ms)
    if args.json:
        print_json(
            {"ms": ms, "versions": [{"name": v.name, "comment": v.comment} for v in versions]}
        )
    elif not versions:
        print(f"{ms}: no flag versions")
    else:
        for v in versions:
            print(f"{v.name} : {v.comment}" if v.comment else v.name)
    return 0


def cmd_flags_save(args: argparse.Namespace) -> int:
    """Save the group's flags as ``--name``; return 0."""
    ms = _ms_of(args.group_id)
    save_flag_version(ms, args.name, args.comment)
    print(f"saved the flags of {ms.name} as {args.name}")
    return 0


def cmd_flags_restore(args: argparse.Namespace) -> int:
    """Restore the group's flags from ``--name``; return 0."""
    ms = _ms_of(args.group_id)
    restore_flag_version(ms, args.name)
    print(f"restored the flags of {ms.name} from {args.name}")
    return 0


def cmd_flags_delete(args: argparse.Namespace) -> int:
    """Delete version ``--name`` of the group's flags; return 0."""
    ms = _ms_of(args.group_id)
    delete_flag_version(ms, args.name)
    print(f"deleted flag version {args.name} of {ms.name}")
    return 0
