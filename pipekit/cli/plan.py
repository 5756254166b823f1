"""``pipekit plan``: what a run with the same options would do, and cost (#10).

It reads state through the store and changes nothing; it exits 0 whatever it
shows.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from pipekit.cli.run import build_run_parser
from pipekit.cli.run import prepare
from pipekit.display.format import count_of
from pipekit.display.format import estimate
from pipekit.display.format import money_exact
from pipekit.engine.lifecycle import configured
from pipekit.engine.location import open_store
from pipekit.engine.location import output_root
from pipekit.engine.selection import natural_key
from pipekit.engine.session import check_from_phase
from pipekit.engine.session import collect_items
from pipekit.outcomes import ExitCode
from pipekit.stale.checker import RUN
from pipekit.stale.checker import SKIP
from pipekit.stale.checker import STALE
from pipekit.stale.plan import Cell
from pipekit.stale.plan import Plan
from pipekit.stale.plan import make_plan
from pipekit.stale.plan import reason_counts


#: Item ids listed per phase and action in the text output (``-v`` lists all).
SHOWN_IDS = 8


# -- plan ------------------------------------------------------------------------


def plan_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit plan MODULE [run options] [--json]``: what a run would do, without doing it."""
    parser = build_run_parser()
    parser.prog = "pipekit plan"
    parser.description = "Show what `pipekit run` with the same options would do, and what it would cost."
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    # Plugins, module, options and pipekit_configure as a run has them, so
    # that plugin item sources and options work.
    config = prepare(parser, args, plugins)(sys.stdout)
    if config is None:  # --help
        return ExitCode.OK
    assert config.pipeline is not None
    pipeline, option = config.pipeline, config.option
    with configured(config):
        check_from_phase(pipeline, option.from_phase)
        store = open_store(option, pipeline)
        config.add_cleanup(store.close)
        with contextlib.redirect_stdout(sys.stderr):
            # Without an item source, the items the state holds (as `status` shows them).
            specs = collect_items(config, pipeline, None, lambda: sorted(store.item_ids(), key=natural_key))
        plan = make_plan(
            pipeline,
            store,
            [item_id for item_id, _ in specs],
            output_root(option, store),
            rerun_stale=option.rerun_stale,
            force=option.force,
            from_phase=option.from_phase,
            metadata=dict(specs),
            workers=option.workers,
        )
        if option.json:
            # One line: the indenting encoder is pure Python and slow on 10,000s of cells.
            print(json.dumps(plan_document(plan, store.location), ensure_ascii=False))
        else:
            print_plan(plan, store.location, verbose=option.verbose)
    return ExitCode.OK


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
                "concurrency": plan.concurrency(definition.num, len(run)),
            }
        )
    count, seconds, dollars = plan.totals(RUN)
    stale, stale_seconds, stale_dollars = plan.totals(STALE)
    return {
        "pipeline": plan.pipeline.name,
        "state": location,
        "items": len(plan.items),
        "workers": plan.workers,
        "phases": phases,
        "total": {
            "run": count,
            "estimated_seconds": seconds,
            "estimated_cost_usd": dollars,
            "stale_not_included": stale,
            "stale_estimated_seconds": stale_seconds,
            "stale_estimated_cost_usd": stale_dollars,
            # Counting cells that run again only if an upstream output changes.
            "estimate_is_upper_bound": plan.upper_bound(RUN),
            "stale_estimate_is_upper_bound": plan.upper_bound(STALE),
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


def _at_most(plan: Plan, action: str) -> str:
    return "at most " if plan.upper_bound(action) else ""


def _assuming(plan: Plan, action: str, form: str) -> str:
    """Why an estimate is an upper bound, in ``form``; empty when it is not one."""
    return form.format("assumes every downstream cell re-runs") if plan.upper_bound(action) else ""


def print_plan(plan: Plan, location: str, *, verbose: int = 0) -> None:
    """The plan for humans, on stdout."""
    noun = plan.pipeline.item_noun
    print(f"plan for {plan.pipeline.name}: {count_of(len(plan.items), noun)}, {len(plan.pipeline.phases)} phases")
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
            parts.append(f"run {len(run)} ({_why(run)}; est. {estimate(seconds)}, {money_exact(dollars)})")
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
    estimated = f"{_at_most(plan, RUN)}{estimate(seconds)}, {money_exact(dollars)}"
    print(f"total: {count} cells to run; estimated {estimated}{_assuming(plan, RUN, ' ({})')}")
    stale_count, stale_seconds, stale_dollars = plan.totals(STALE)
    if stale_count:
        print(
            f"{stale_count} stale cells not included (estimated {_at_most(plan, STALE)}"
            f"{estimate(stale_seconds)}, {money_exact(stale_dollars)}{_assuming(plan, STALE, ': {}')}): "
            "add --rerun-stale to include them; `pipekit why` explains one"
        )
    if plan.unknown:
        print(f"{plan.unknown} completed cells have no fingerprint (state from an older pipekit): not checked")
    for item_id, message in plan.unreadable.items():
        print(f"unreadable state for {item_id!r}: {message}")
