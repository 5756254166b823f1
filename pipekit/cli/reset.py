"""``pipekit reset MODULE``: set selected phases of selected items back to pending.

It never prompts: it prints what it changed (or, with ``--dry-run``, what it
would change). Each item is changed under its lock, as a run works on it.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timezone
import os
from pathlib import Path
import sys
from typing import Any

from pipekit.cli.batchview import waiting_cell_notes
from pipekit.cli.parsing import ArgumentParser
from pipekit.cli.parsing import command_parser
from pipekit.cli.target import Edits
from pipekit.cli.target import Target
from pipekit.cli.target import locked_items
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.engine.selection import chosen_item_ids
from pipekit.engine.selection import is_glob
from pipekit.engine.selection import resolve_phase
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import COMPLETED
from pipekit.state.model import FAILED
from pipekit.state.model import PENDING
from pipekit.state.model import WAITING
from pipekit.state.model import PipelineState


def reset_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit reset MODULE [--item ID]... [--phase N]... [--downstream] [--failed] [--all] [--dry-run]``."""
    option = parse(_parser(), args)
    if option is None:
        return ExitCode.OK
    if not (option.item or option.phase or option.failed or option.all):
        raise UsageError("pipekit reset: nothing selected; say --all to reset every phase of every item")
    if option.downstream and not option.phase:
        raise UsageError("pipekit reset: --downstream needs --phase N")
    with open_target(option) as target:
        nums = {resolve_phase(target.pipeline, text).num for text in option.phase}
        if option.downstream:
            nums = {p.num for p in target.pipeline.phases if p.num >= min(nums)}
        edits, changed_items, changed_phases = Edits(), 0, 0
        ids = _selected_ids(target, option.item, edits)
        literal = {i for i in option.item if not is_glob(i)}
        verb = "would reset" if option.dry_run else "reset"
        for item_id, loaded in locked_items(target, ids, edits):
            if isinstance(loaded, StateFileError):
                if item_id in literal:
                    _recover(target, item_id, loaded, option.dry_run)
                    changed_items += 1
                    changed_phases += len(target.pipeline.phases)
                else:
                    edits.unreadable += 1
                    print(f"pipekit: error: {loaded}; reset it by naming it: --item {item_id!r}", file=sys.stderr)
                continue
            chosen = _phases_to_reset(loaded.state, nums, option.failed)
            if not chosen:
                continue
            names = ", ".join(f"{n} {loaded.state.phases[n].name} ({loaded.state.phases[n].status})" for n in chosen)
            print(f"{verb} {item_id}: {names}")
            for warning in _orphaned_outputs(loaded.state, chosen):
                print(f"  warning: {warning}")
            cancel = option.cancel and not option.dry_run
            for num in (n for n in chosen if loaded.state.phases[n].status == WAITING):
                for note in waiting_cell_notes(target.store, target.pipeline, item_id, num, cancel):
                    print(f"  {note}")
            if not option.dry_run:
                loaded.reset_phases(chosen)
            changed_items += 1
            changed_phases += len(chosen)
        if changed_items:
            print(
                f"{verb} {changed_phases} phase(s) of {changed_items} item(s)"
                + (" (dry run: nothing changed)" if option.dry_run else "")
            )
        else:
            print("nothing to reset")
        return edits.exit_status()


def _parser() -> ArgumentParser:
    parser = command_parser("pipekit reset", "Set phases back to pending so the next run does them again.", state=True)
    parser.add_argument(
        "--item", action="append", default=[], metavar="ID", help="this item (repeatable; globs like 'book-*')"
    )
    parser.add_argument(
        "--phase", action="append", default=[], metavar="N", help="exactly this phase, by num or name (repeatable)"
    )
    parser.add_argument("--downstream", action="store_true", help="with --phase: that phase and every later one")
    parser.add_argument("--failed", action="store_true", help="only phases that failed")
    parser.add_argument("--all", action="store_true", help="every item (needed when nothing else selects)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    parser.add_argument(
        "--cancel", action="store_true", help="also cancel the provider batches of the waiting phases it resets"
    )
    return parser


def _selected_ids(target: Target, patterns: list[str], edits: Edits) -> list[str]:
    """The items ``--item`` names, or every item of the store (a file too broken
    to name its item is reported and counted)."""
    unreadable: list[StateFileError] = []
    ids = chosen_item_ids(target.store, patterns, unreadable)
    for error in unreadable:
        edits.unreadable += 1
        print(f"pipekit: error: {error}; reset it by naming its item with --item ID", file=sys.stderr)
    return ids


def _phases_to_reset(state: PipelineState, nums: set[int], failed_only: bool) -> list[int]:
    return [
        num
        for num, phase in sorted(state.phases.items())
        if phase.status != PENDING and (not nums or num in nums) and (not failed_only or phase.status == FAILED)
    ]


def _orphaned_outputs(state: PipelineState, chosen: list[int]) -> list[str]:
    """Later phases that completed using an output this reset drops, and stay completed."""
    dropped = [n for n in chosen if n in state.phase_outputs]
    warnings = []
    for num, phase in sorted(state.phases.items()):
        if phase.status != COMPLETED or num in chosen:
            continue
        used = [n for n in dropped if n < num]
        if used:
            inputs = ", ".join(f"{n} {state.phases[n].name}" for n in used)
            warnings.append(
                f"phase {num} {phase.name} stays completed but used the output of {inputs}, "
                f"which is dropped (add --downstream to redo it too)"
            )
    return warnings


def _recover(target: Target, item_id: str, error: StateFileError, dry_run: bool) -> None:
    """Start a corrupt item afresh; the JSON store keeps the bad file beside it."""
    if dry_run:
        print(f"would reset {item_id}: its state is corrupt ({error.problem}); it would start afresh")
        return
    kept = ""
    if isinstance(target.store, JsonDirStore):
        path = Path(target.store.describe(item_id))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.corrupt-{stamp}")
        os.replace(path, backup)
        kept = f"; the old file is kept as {backup}"
    manager = PipelineStateManager(item_id, target.store)
    manager.create_state({}, target.pipeline.phases)
    manager.state.pipeline_module = target.pipeline.path
    manager.save_state()
    print(f"reset {item_id}: its state was corrupt ({error.problem}); every phase is pending{kept}")
