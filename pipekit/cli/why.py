"""``pipekit why MODULE ITEM PHASE``: the story of one (item, phase) cell (#10).

It reads state through the store and changes nothing; it exits 0 whatever it
shows.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Any

from pipekit.cli.parsing import command_parser
from pipekit.display.format import duration
from pipekit.display.format import money_exact
from pipekit.display.format import tokens
from pipekit.engine.location import open_store
from pipekit.engine.location import output_root
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.checker import RUN
from pipekit.stale.checker import STALE
from pipekit.stale.checker import STALE_REASONS
from pipekit.stale.checker import StaleChecker
from pipekit.stale.checker import StalePolicy
from pipekit.stale.fingerprint import SourceArchive
from pipekit.stale.fingerprint import phase_code
from pipekit.stale.plan import load_states
from pipekit.stale.plan import plan_item
from pipekit.state.digest import output_hash
from pipekit.state.model import COMPLETED
from pipekit.state.model import PipelineState


def why_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit why MODULE ITEM PHASE``: the story of one cell."""
    parser = command_parser(
        "pipekit why", "Explain one (item, phase): its status, attempts, and what changed since it ran.", state=True
    )
    parser.add_argument("item", metavar="ITEM", nargs="?", help="the item's id")
    parser.add_argument("phase", metavar="PHASE", nargs="?", help="the phase's num or name")
    parser.add_argument("--output-dir", metavar="DIR", help="root of each item's ctx.output_dir")
    option = parser.parse_args(args)
    if option.help:
        parser.print_help()
        return ExitCode.OK
    if not (option.module and option.item and option.phase):
        raise UsageError("pipekit why: give MODULE ITEM PHASE (PHASE is a num or a name)")
    pipeline = load(option.module)
    definition = _find_phase(pipeline, option.phase)
    with contextlib.closing(open_store(option, pipeline)) as store:
        states, unreadable = load_states(pipeline, store, [option.item])
        print(f"item {option.item!r}, phase {definition.num} {definition.name}")
        if option.item in unreadable:
            print(f"  state unreadable: {unreadable[option.item]}")
            return ExitCode.OK
        state = states.get(option.item)
        if state is None:
            print(f"  no state in {store.location}: a run would execute it (pending)")
            return ExitCode.OK
        checker = StaleChecker(pipeline, output_root(option, store))
        for line in explain(checker, state, definition, SourceArchive.for_store(store)):
            print(line)
        return ExitCode.OK


def _find_phase(pipeline: Pipeline, text: str) -> PhaseDefinition:
    found = pipeline.phase_named(text)
    if found is None and text.lstrip("-").isdigit():
        found = next((p for p in pipeline.phases if p.num == int(text)), None)
    if found is None:
        names = ", ".join(f"{p.num} {p.name}" for p in pipeline.phases)
        raise UsageError(f"pipekit why: no phase {text!r} in {pipeline.name} (phases: {names})")
    return found


def _short(value: Any) -> str:
    return "none" if value is None else str(value)


def explain(
    checker: StaleChecker, state: PipelineState, definition: PhaseDefinition, archive: SourceArchive
) -> list[str]:
    """The lines ``pipekit why`` prints for one cell."""
    phase = state.phases[definition.num]
    lines = [f"  status: {phase.status}" + (f" ({phase.reason})" if phase.reason else "")]
    lines.append(f"  attempts: {phase.attempts}")
    if phase.started_at:
        lines.append(f"  started: {phase.started_at}")
    if phase.completed_at:
        lines.append(f"  ended: {phase.completed_at}")
    if phase.duration_seconds is not None:
        lines.append(f"  duration: {duration(phase.duration_seconds)}")
    lines.append(
        f"  spent (all attempts): {money_exact(phase.cost_usd)}, "
        f"{tokens(phase.tokens_in)} tokens in, {tokens(phase.tokens_out)} tokens out"
    )
    if phase.error:
        lines.append(f"  last error: {phase.error}")
    recorded = phase.fingerprint
    if not recorded:
        if phase.status == COMPLETED:
            lines.append("  fingerprint: not recorded (state from an older pipekit): treated as up to date")
        else:
            lines.append(_verdict(checker, state, definition))
        return lines
    differences = checker.differences(definition, state)
    changed = {d.part for d in differences}
    identity = phase_code(definition)
    lines.append("  fingerprint (then -> now):")
    lines.append(_row("code", recorded.get("code"), identity.hash, "code" in changed))
    lines.append(_row("version", recorded.get("version"), definition.version, "version" in changed))
    if definition.fingerprint is not None or recorded.get("input") is not None:
        try:
            now = checker.current_input(definition, state) if definition.fingerprint else None
        except Exception as exc:
            now = f"error: {exc}"
        lines.append(_row("input", recorded.get("input"), now, "input" in changed))
    consumed = recorded.get("consumed") or {}
    if consumed:
        lines.append("    consumed:")
        nums = {p.name: p.num for p in checker.phases}
        for name, then in consumed.items():
            num = nums.get(name)
            now = output_hash(state.phase_outputs.get(num)) if num is not None else "phase gone"
            lines.append(_row(f"  {name}", then, now, then != now and num is not None))
    else:
        lines.append("    consumed: no earlier output")
    lines.append(_verdict(checker, state, definition))
    if "code" in changed:
        lines += _code_diff(definition, recorded.get("code"), identity.source, archive)
    return lines


def _verdict(checker: StaleChecker, state: PipelineState, definition: PhaseDefinition) -> str:
    """What a plain run would do with the cell, as ``pipekit plan`` says it."""
    cells = plan_item(checker, StalePolicy(checker, rerun_stale=False), state.item_id, state)
    cell = next(c for c in cells if c.num == definition.num)
    reasons = ", ".join(cell.reasons)
    if cell.action == STALE:
        return f"  stale: {reasons}; a run re-executes it with --rerun-stale"
    if cell.action == RUN and set(cell.reasons) <= set(STALE_REASONS):
        return f"  stale: {reasons}; a run re-executes it (on_change='rerun')"
    if cell.action == RUN:
        return f"  a run would execute it ({reasons})"
    return "  up to date: a run skips it"


def _row(label: str, then: Any, now: Any, changed: bool) -> str:
    mark = "CHANGED" if changed else "same"
    return f"    {label + ':':<10} {_short(then)} -> {_short(now)}  {mark}"


def _code_diff(definition: PhaseDefinition, old_hash: Any, source: str | None, archive: SourceArchive) -> list[str]:
    old = archive.load(str(old_hash)) if old_hash else None
    if old is None or source is None:
        return ["  (the source it ran with was not kept: no diff to show)"]
    name = getattr(definition.handler, "__name__", definition.name)
    diff = difflib.unified_diff(
        old.splitlines(), source.splitlines(), f"{name} (then)", f"{name} (now)", lineterm="", n=2
    )
    return ["  code diff:", *(f"    {line}" for line in diff)]

