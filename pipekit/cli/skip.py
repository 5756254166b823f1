"""``pipekit skip MODULE --item ID [--phase N] --reason TEXT``: give up on work by hand.

A phase skipped by hand is ``skipped`` with reason ``by hand: TEXT``, so runs
stop retrying it (and stop failing on it); ``status`` shows the reason and
``reset`` undoes it.
"""

from __future__ import annotations

import sys
from typing import Any

from pipekit.cli.parsing import command_parser
from pipekit.cli.target import Edits
from pipekit.cli.target import locked_items
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.engine.selection import resolve_phase
from pipekit.engine.selection import select_item_ids
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state.model import is_finished


#: Prefix of the reason of a phase skipped by hand.
BY_HAND = "by hand: "


def skip_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """Mark phases of the given items skipped with a reason."""
    parser = command_parser("pipekit skip", "Mark phases skipped by hand so runs stop retrying them.", state=True)
    parser.add_argument(
        "--item", action="append", default=[], metavar="ID", help="the item (repeatable; globs allowed)"
    )
    parser.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="N",
        help="only this phase, by num or name (default: every unfinished phase)",
    )
    parser.add_argument("--reason", metavar="TEXT", help="why (shown by status)")
    option = parse(parser, args)
    if option is None:
        return ExitCode.OK
    if not option.item:
        raise UsageError("pipekit skip: say which item with --item ID")
    if not (option.reason or "").strip():
        raise UsageError("pipekit skip: say why with --reason TEXT")
    with open_target(option) as target:
        nums = {resolve_phase(target.pipeline, text).num for text in option.phase}
        edits, skipped = Edits(), 0
        for item_id, loaded in locked_items(target, select_item_ids(target.store, option.item), edits):
            if isinstance(loaded, StateFileError):
                edits.unreadable += 1
                print(f"pipekit: error: {loaded}", file=sys.stderr)
                continue
            phases = loaded.state.phases
            for num in sorted(nums):
                if is_finished((phases[num].status,)):
                    print(
                        f"{item_id}: phase {num} {phases[num].name} is already {phases[num].status}; "
                        "reset it first to skip it"
                    )
            chosen = [n for n, p in sorted(phases.items()) if not is_finished((p.status,)) and (not nums or n in nums)]
            for num in chosen:
                loaded.skip_phase(num, BY_HAND + option.reason.strip())
            if chosen:
                skipped += len(chosen)
                print(f"skipped {item_id}: " + ", ".join(f"{n} {phases[n].name}" for n in chosen))
        print(f"skipped {skipped} phase(s)" if skipped else "nothing to skip")
        return edits.exit_status()
