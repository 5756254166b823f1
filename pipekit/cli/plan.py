"""``pipekit plan`` and ``pipekit why``: what a run would do, and the story of one cell (#10).

Both read state through the store and change nothing; both exit 0 whatever
they show.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import difflib
import json
import sys
from typing import Any

from pipekit.cli.main import ArgumentParser
from pipekit.config import Config
from pipekit.engine.session import _collect_items
from pipekit.engine.session import _output_root
from pipekit.engine.session import build_run_parser
from pipekit.engine.session import check_from_phase
from pipekit.engine.session import open_store
from pipekit.engine.session import parse_with_plugins
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.checker import RUN
from pipekit.stale.checker import SKIP
from pipekit.stale.checker import STALE
from pipekit.stale.checker import STALE_REASONS
from pipekit.stale.checker import StaleChecker
from pipekit.stale.checker import StalePolicy
from pipekit.stale.fingerprint import SourceArchive
from pipekit.stale.fingerprint import code_identity
from pipekit.stale.plan import Cell
from pipekit.stale.plan import Plan
from pipekit.stale.plan import format_cost
from pipekit.stale.plan import format_seconds
from pipekit.stale.plan import load_states
from pipekit.stale.plan import make_plan
from pipekit.stale.plan import plan_item
from pipekit.stale.plan import reason_counts
from pipekit.state.digest import output_hash
from pipekit.state.model import COMPLETED
from pipekit.state.model import PipelineState


#: Item ids listed per phase and action in the text output (``-v`` lists all).
SHOWN_IDS = 8


# -- plan ------------------------------------------------------------------------


def plan_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit plan MODULE [run options] [--json]``: what a run would do, without doing it."""
    parser = build_run_parser()
    parser.prog = "pipekit plan"
    parser.description = "Show what `pipekit run` with the same options would do, and what it would cost."
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    with _configured(parser, args, plugins) as (option, config, pipeline):
        if option is None:
            return ExitCode.OK
        check_from_phase(pipeline, option.from_phase)
        with contextlib.redirect_stdout(sys.stderr):
            specs = _collect_items(config, pipeline, None)
        store = open_store(option, pipeline)
        config.add_cleanup(store.close)
        plan = make_plan(
            pipeline,
            store,
            [item_id for item_id, _ in specs],
            _output_root(option, store),
            rerun_stale=option.rerun_stale,
            force=option.force,
            from_phase=option.from_phase,
            metadata=dict(specs),
        )
        if option.json:
            # One line: the indenting encoder is pure Python and slow on 10,000s of cells.
            print(json.dumps(plan_document(plan, store.location), ensure_ascii=False))
        else:
            print_plan(plan, store.location, verbose=option.verbose)
    return ExitCode.OK


@contextlib.contextmanager
def _configured(
    parser: ArgumentParser, args: list[str], plugins: list[Any]
) -> Iterator[tuple[Any, Config, Pipeline]]:
    """Plugins, module, options and ``pipekit_configure`` as a run has them
    (so that plugin item sources and options work); option is None after ``--help``."""
    option, pm, pipeline = parse_with_plugins(parser, args, plugins)
    if option.help:
        parser.print_help(sys.stdout)
        yield None, None, None  # type: ignore[misc]
        return
    if pipeline is None:
        raise UsageError(f"{parser.prog}: give the pipeline MODULE (a dotted name or a .py path)")
    config = Config(option, pm, pipeline)
    config.stdout = sys.stdout
    try:
        config.do_configure()
        yield option, config, pipeline
    finally:
        config.ensure_unconfigure()


def plan_document(plan: Plan, location: str) -> dict[str, Any]:
    """The ``--json`` form of a plan."""
    phases = []
    grouped = plan.by_phase()
    for definition in plan.pipeline.phases:
        cells = grouped[definition.num]
        history = plan.history[definition.num]
        run = [c for c in cells if c.action == RUN]
        seconds, dollars = plan.estimate(definition.num, len(run))
        phases.append(
            {
                "num": definition.num,
                "name": definition.name,
                "run": [{"item_id": c.item_id, "reasons": c.reasons} for c in run],
                "stale": [{"item_id": c.item_id, "reasons": c.reasons} for c in cells if c.action == STALE],
                "skipped": sum(1 for c in cells if c.action == SKIP),
                "mean_duration_seconds": history.mean_duration,
                "mean_cost_usd": history.mean_cost,
                "estimated_seconds": seconds,
                "estimated_cost_usd": dollars,
            }
        )
    count, seconds, dollars = plan.totals(RUN)
    stale, stale_seconds, stale_dollars = plan.totals(STALE)
    return {
        "pipeline": plan.pipeline.name,
        "state": location,
        "items": len(plan.items),
        "phases": phases,
        "total": {
            "run": count,
            "estimated_seconds": seconds,
            "estimated_cost_usd": dollars,
            "stale_not_included": stale,
            "stale_estimated_seconds": stale_seconds,
            "stale_estimated_cost_usd": stale_dollars,
        },
        "unknown_fingerprints": plan.unknown,
        "unreadable": plan.unreadable,
    }


def _ids(cells: list[Cell], verbose: int) -> str:
    ids = [c.item_id for c in cells]
    if verbose or len(ids) <= SHOWN_IDS:
        return ", ".join(ids)
    return ", ".join(ids[:SHOWN_IDS]) + f", ... and {len(ids) - SHOWN_IDS} more (-v lists all)"


def _why(cells: list[Cell]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in reason_counts(cells).items())


def print_plan(plan: Plan, location: str, *, verbose: int = 0) -> None:
    """The plan for humans, on stdout."""
    noun = plan.pipeline.item_noun
    print(f"plan for {plan.pipeline.name}: {len(plan.items)} {noun}, {len(plan.pipeline.phases)} phases")
    print(f"state: {location}")
    grouped = plan.by_phase()
    for definition in plan.pipeline.phases:
        cells = grouped[definition.num]
        run = [c for c in cells if c.action == RUN]
        stale = [c for c in cells if c.action == STALE]
        skipped = sum(1 for c in cells if c.action == SKIP)
        parts = []
        if run:
            seconds, dollars = plan.estimate(definition.num, len(run))
            parts.append(f"run {len(run)} ({_why(run)}; est. {format_seconds(seconds)}, {format_cost(dollars)})")
        if stale:
            parts.append(f"stale {len(stale)}, not included ({_why(stale)})")
        if skipped:
            parts.append(f"skip {skipped}")
        print(f"phase {definition.num} {definition.name}: {'; '.join(parts) or 'nothing'}")
        if run:
            print(f"    run: {_ids(run, verbose)}")
        if stale:
            print(f"    stale: {_ids(stale, verbose)}")
    count, seconds, dollars = plan.totals(RUN)
    print(f"total: {count} cells to run; estimated {format_seconds(seconds)}, {format_cost(dollars)}")
    stale_count, stale_seconds, stale_dollars = plan.totals(STALE)
    if stale_count:
        print(
            f"{stale_count} stale cells not included (estimated {format_seconds(stale_seconds)}, "
            f"{format_cost(stale_dollars)}): add --rerun-stale to include them; `pipekit why` explains one"
        )
    if plan.unknown:
        print(f"{plan.unknown} completed cells have no fingerprint (state from an older pipekit): not checked")
    for item_id, message in plan.unreadable.items():
        print(f"unreadable state for {item_id!r}: {message}")


# -- why ----------------------------------------------------------------------------


def why_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit why MODULE ITEM PHASE``: the story of one cell."""
    parser = ArgumentParser(
        prog="pipekit why",
        description="Explain one (item, phase): its status, attempts, and what changed since it ran.",
        add_help=False,
    )
    parser.add_argument("module", metavar="MODULE", nargs="?", help="dotted module name or path to a .py file")
    parser.add_argument("item", metavar="ITEM", nargs="?", help="the item's id")
    parser.add_argument("phase", metavar="PHASE", nargs="?", help="the phase's num or name")
    parser.add_argument("--state-dir", metavar="DIR", help="this pipeline's state directory")
    parser.add_argument("--store", metavar="URL", help="where state lives (json:DIR); wins over --state-dir")
    parser.add_argument("--output-dir", metavar="DIR", help="root of each item's ctx.output_dir")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    option = parser.parse_args(args)
    if option.help:
        parser.print_help(sys.stdout)
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
        checker = StaleChecker(pipeline, _output_root(option, store))
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
        lines.append(f"  duration: {format_seconds(phase.duration_seconds)}")
    lines.append(
        f"  spent (all attempts): {format_cost(phase.cost_usd)}, "
        f"{phase.tokens_in} tokens in, {phase.tokens_out} tokens out"
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
    identity = code_identity(definition.handler)
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

