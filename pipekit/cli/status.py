"""``pipekit status MODULE``: items x phases, costs, errors; never changes state."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
import json
import os
import sys
from typing import Any
from typing import TextIO

from pipekit.cli.batchview import batch_lines
from pipekit.cli.batchview import batch_records
from pipekit.cli.batchview import has_batches
from pipekit.cli.batchview import with_waiting
from pipekit.cli.parsing import add_item_sources
from pipekit.cli.parsing import command_parser
from pipekit.cli.statusrows import RowReader
from pipekit.cli.statusrows import StatusRow
from pipekit.cli.statusrows import gc_paused
from pipekit.cli.statusrows import phases_note
from pipekit.cli.statusrows import subitem_lines
from pipekit.cli.target import Target
from pipekit.cli.target import batch_items
from pipekit.cli.target import never_started
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.display.format import count_of
from pipekit.display.format import duration
from pipekit.display.format import money_exact
from pipekit.display.format import tokens
from pipekit.engine.attempts import attempts_used
from pipekit.engine.attempts import gave_up
from pipekit.engine.selection import is_glob
from pipekit.engine.selection import natural_key
from pipekit.engine.selection import select_item_ids
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.pipeline.items import ItemSpec
from pipekit.pipeline.outputs import preview
from pipekit.state.model import COMPLETED
from pipekit.state.model import COMPLETED_WITH_ERRORS
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import SKIPPED
from pipekit.state.model import WAITING
from pipekit.state.model import PipelineState
from pipekit.state.model import state_outcome
from pipekit.state.open import existing_stores_only
from pipekit.state.store import StateStore


#: One glyph per phase status, and its ANSI colour.
GLYPHS = {
    COMPLETED: ("✓", "32"),
    FAILED: ("✗", "31"),
    SKIPPED: ("↷", "33"),
    IN_PROGRESS: ("▶", "36"),
    PENDING: ("·", "2"),
    WAITING: ("⧗", "34"),
}
STATUS_ORDER = (COMPLETED, FAILED, SKIPPED, IN_PROGRESS, PENDING)
#: Above this many rows the matrix is summarised unless ``--all``.
DEFAULT_MAX_ROWS = 50
#: Failures listed in a summary.
SUMMARY_FAILURES = 20


#: Items per write of ``--json`` (never one string of the whole document).
JSON_CHUNK = 1000


def item_status(state: PipelineState, definitions: Iterable[Any]) -> str:
    """What the item is now (``item_outcome``: failed, in_progress, completed,
    completed_with_errors or pending), over the pipeline's phase ``definitions``."""
    return state_outcome(state, definitions)


def last_note(state: PipelineState) -> str:
    """The last failure (``2 draft: error``), else the last hand-made skip reason."""
    return phases_note([vars(p) for p in sorted(state.phases.values(), key=lambda p: p.phase)])


def state_record(state: PipelineState, definitions: Iterable[Any]) -> dict[str, Any]:
    """The machine-readable picture of one item (outputs left out: see ``export``)."""
    return StatusRow.from_state(state, definitions).record()


def status_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit status MODULE [--item ID]... [--failed] [--pending] [--all] [--json]``."""
    parser = command_parser(
        "pipekit status", "Show items x phases, costs and errors (never changes state).", state=True
    )
    add_item_sources(parser, item_help="only these items (globs allowed); one id shows its full story")
    parser.add_argument("--failed", action="store_true", help="only items with a failed phase")
    parser.add_argument("--pending", action="store_true", help="only items with work left")
    parser.add_argument("--all", action="store_true", help="every row, however many")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        metavar="N",
        help=f"summarise above N rows (default {DEFAULT_MAX_ROWS})",
    )
    parser.add_argument("--json", action="store_true", help="the full picture as JSON on stdout")
    option = parse(parser, args)
    if option is None:
        return ExitCode.OK
    with existing_stores_only():  # a mistyped --store path must not become an empty store
        target = open_target(option)
    with target:
        out = sys.stdout
        if len(option.item) == 1 and not is_glob(option.item[0]):
            state = one_state(target, option.item[0], batch_items(option, target, plugins))
            if option.json:
                json.dump(state_record(state, target.pipeline.phases), out, indent=2, ensure_ascii=False)
                out.write("\n")
            else:
                write_story(out, target, state, _colour(out))
            return ExitCode.OK
        # Rows of 100,000 items are acyclic: a collection of the cyclic GC started by
        # sorting or encoding would rescan them all, for nothing. Paused until they are freed.
        with gc_paused():
            return show_batch(option, target, out, batch_items(option, target, plugins))


def one_state(target: Target, item_id: str, specs: list[ItemSpec] | None) -> PipelineState:
    """The full state of one item: saved, or every phase pending when the item
    sources name it and it never started. Raises ``StateFileError`` (exit 4)
    naming a corrupt file, ``UsageError`` for an id neither has."""
    selected = dict(specs or [])
    if item_id in selected and target.store.load(item_id) is None:
        return never_started(item_id, selected[item_id], target.pipeline.phases)
    return target.manager(select_item_ids(target.store, [item_id])[0]).state


def show_batch(option: argparse.Namespace, target: Target, out: TextIO, specs: list[ItemSpec] | None) -> ExitCode:
    """The matrix, the summary or ``--json`` of many items (filters and all):
    the items ``specs`` selects (never-started ones pending), or without any
    every item with state."""
    errors: list[StateFileError] = []
    reader = RowReader(target, full=option.json)
    if specs is not None:
        rows = reader.selected_rows(specs, errors)
    else:
        rows = reader.rows(errors)
        if option.item:
            wanted = set(select_item_ids(target.store, option.item, known=[r.item_id for r in rows]))
            rows = [r for r in rows if r.item_id in wanted]
    if option.failed or option.pending:
        rows = [
            r
            for r in rows
            if (option.failed and FAILED in r.statuses) or (option.pending and r.status != COMPLETED)
        ]
    if option.json:
        write_json(out, target, sorted_rows(rows), errors)
    elif option.all or len(rows) <= option.max_rows:
        write_matrix(out, target, sorted_rows(rows), _colour(out))
    else:
        # Only the failures listed are sorted: sorting 100,000 ids is a tenth of the work.
        write_summary(out, target, rows, _colour(out))
    for error in errors:
        print(f"pipekit: error: {error}", file=sys.stderr)
    return ExitCode.USAGE_ERROR if errors else ExitCode.OK


def sorted_rows(rows: list[StatusRow]) -> list[StatusRow]:
    """``rows`` naturally sorted by item id (``book-2`` before ``book-10``)."""
    return sorted(rows, key=lambda row: natural_key(row.item_id))


def _colour(out: TextIO) -> bool:
    return out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def glyph(status: str, colour: bool) -> str:
    """The coloured glyph of a phase status."""
    char, code = GLYPHS.get(status, ("?", "35"))
    return _paint(char, code, colour)


def _header(out: TextIO, target: Target, count: int) -> None:
    pipeline = target.pipeline
    out.write(f"pipeline: {pipeline.name}  ({count_of(count, pipeline.item_noun)} x {len(pipeline.phases)} phases)\n")
    out.write(f"state: {target.store.location}\n")
    out.write("phases: " + ", ".join(f"{p.num} {p.name}" for p in pipeline.phases) + "\n\n")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write_matrix(out: TextIO, target: Target, rows: list[StatusRow], colour: bool) -> None:
    """One row per item: a glyph per phase, cost, and the last error or skip reason."""
    _header(out, target, len(rows))
    nums = [p.num for p in target.pipeline.phases]
    widths = [len(str(n)) for n in nums]
    id_width = min(40, max([4, *(len(r.item_id) for r in rows)]))
    cells = " ".join(str(n).rjust(w) for n, w in zip(nums, widths, strict=True))
    out.write(f"{'item'.ljust(id_width)}  {cells}  {'cost':>9}  last error\n")
    for item in rows:
        line = " ".join(" " * (w - 1) + glyph(status, colour) for status, w in zip(item.statuses, widths, strict=True))
        note = _clip(item.last_note(), 100)
        label = _clip(item.item_id, id_width).ljust(id_width)
        out.write(f"{label}  {line}  {money_exact(item.total_cost_usd):>9}  {note}".rstrip() + "\n")
    out.write("\n" + legend(colour, target) + "\n")
    out.write(totals_line(target, rows) + "\n")
    _write_batches(out, target)


def legend(colour: bool, target: Target | None = None) -> str:
    """What the glyphs mean (``waiting`` too for a pipeline with batch phases)."""
    order = STATUS_ORDER if target is None else with_waiting(STATUS_ORDER, target.pipeline)
    return "  ".join(f"{glyph(s, colour)} {s.replace('_', ' ')}" for s in order)


def _write_batches(out: TextIO, target: Target) -> None:
    """The pipeline's provider batches: provider, id, status, counts, age."""
    if has_batches(target.pipeline):
        lines = batch_lines(batch_records(target.store, target.pipeline))
        out.write("".join(f"{line}\n" for line in ["", *lines] if lines))


def totals(rows: list[StatusRow], store: StateStore, waiting: bool = False) -> dict[str, Any]:
    """Items by status, tokens and cost, as ``--json`` gives them: ``completed``
    counts the items completed with errors too, as a run does, and
    ``completed_with_errors`` those alone; ``waiting`` (for a pipeline with batch
    phases) the items waiting for a provider's batch; ``interrupted`` counts the items
    in progress that no process runs (None: the store cannot tell)."""
    by_status = Counter(r.status for r in rows)
    by_status[COMPLETED] += by_status[COMPLETED_WITH_ERRORS]
    in_progress = [r.item_id for r in rows if r.status == IN_PROGRESS]
    interrupted = None
    if store.knows_running:
        interrupted = sum(1 for item_id in in_progress if store.running_holder(item_id) is None)
    return {
        "items": len(rows),
        **{
            s: by_status[s]
            for s in (COMPLETED, COMPLETED_WITH_ERRORS, FAILED, IN_PROGRESS, PENDING, *((WAITING,) if waiting else ()))
        },
        "interrupted": interrupted,
        "tokens_in": sum(r.total_tokens_in for r in rows),
        "tokens_out": sum(r.total_tokens_out for r in rows),
        "cost_usd": sum(r.total_cost_usd for r in rows),
    }


def totals_line(target: Target, rows: list[StatusRow]) -> str:
    """Items by status, tokens and cost; items in progress that no process runs are named so."""
    shown = with_waiting((COMPLETED, FAILED, IN_PROGRESS, PENDING), target.pipeline)
    total = totals(rows, target.store, waiting=WAITING in shown)
    counts = {s: f"{total[s]} {s.replace('_', ' ')}" for s in shown}
    if total[COMPLETED_WITH_ERRORS]:
        counts[COMPLETED] += f" ({total[COMPLETED_WITH_ERRORS]} with errors)"
    stopped = total["interrupted"]
    if total[IN_PROGRESS] and stopped is not None:
        running = total[IN_PROGRESS] - stopped
        counts[IN_PROGRESS] += f" ({running} running, {stopped} interrupted: the next run resumes them)"
    parts = ", ".join(counts.values())
    return (
        f"total: {count_of(total['items'], target.pipeline.item_noun)}: {parts}; "
        f"tokens {tokens(total['tokens_in'])} in / {tokens(total['tokens_out'])} out; "
        f"cost {money_exact(total['cost_usd'])}"
    )


def write_summary(out: TextIO, target: Target, rows: list[StatusRow], colour: bool) -> None:
    """Counts per phase and status, then the failures: for batches too big to list.

    ``rows`` may come in any order: only the failures listed are sorted.
    """
    _header(out, target, len(rows))
    definitions = target.pipeline.phases
    counts: dict[int, Counter[str]] = {}
    cost: dict[int, float] = {}
    for index, definition in enumerate(definitions):
        counts[definition.num] = Counter([r.statuses[index] for r in rows])
        cost[definition.num] = sum([r.costs[index] for r in rows])
    failed = sorted_rows([r for r in rows if FAILED in r.statuses])
    failures = [(r.item_id, r.last_note()) for r in failed[:SUMMARY_FAILURES]]
    name_width = max([5, *(len(f"{p.num} {p.name}") for p in target.pipeline.phases)])
    order = with_waiting(STATUS_ORDER, target.pipeline)
    heads = "".join(f"{glyph(s, colour)} {s.replace('_', ' '):>11}  " for s in order)
    out.write(f"{'phase'.ljust(name_width)}  {heads}{'cost':>10}\n")
    for definition in target.pipeline.phases:
        row = "".join(f"{counts[definition.num][s]:>13}  " for s in order)
        out.write(
            f"{f'{definition.num} {definition.name}'.ljust(name_width)}  {row}{money_exact(cost[definition.num]):>10}\n"
        )
    if failures:
        out.write(f"\nfailures ({len(failures)} of {len(failed)}; --failed --all lists them all):\n")
        for item_id, note in failures:
            out.write(f"  {_clip(item_id, 40)}  {_clip(note, 100)}\n")
    out.write(f"\n{totals_line(target, rows)}\n")
    out.write(f"(summary of {len(rows)} rows; --all shows every row)\n")
    _write_batches(out, target)


def write_json(out: TextIO, target: Target, rows: list[StatusRow], errors: list[StateFileError]) -> None:
    """The whole picture as one JSON document, written a chunk of items at a time."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    # json's C encoder is used only without an indent (pipe it to `jq` to read it).
    head = encode(
        {
            "pipeline": target.pipeline.name,
            "module": target.pipeline.path,
            "state": target.store.location,
            "phases": [{"num": p.num, "name": p.name, "critical": p.critical} for p in target.pipeline.phases],
        }
    )
    out.write(head[:-1] + ', "items": [')
    for start in range(0, len(rows), JSON_CHUNK):
        if start:
            out.write(", ")
        out.write(", ".join([r.json() for r in rows[start : start + JSON_CHUNK]]))
    waiting = has_batches(target.pipeline)
    batches = f', "batches": {encode(batch_records(target.store, target.pipeline))}' if waiting else ""
    out.write(
        f'], "totals": {encode(totals(rows, target.store, waiting))}{batches}, '
        f'"errors": {encode([str(e) for e in errors])}}}\n'
    )


def write_story(out: TextIO, target: Target, state: PipelineState, colour: bool) -> None:
    """One item in full: every phase with attempts, times, cost, errors and tracebacks."""
    status = item_status(state, target.pipeline.phases)
    out.write(f"item: {state.item_id}   status: {status}   cost: {money_exact(state.total_cost_usd)}   ")
    out.write(f"tokens: {tokens(state.total_tokens_in)} in / {tokens(state.total_tokens_out)} out\n")
    out.write(f"state: {target.store.describe(state.item_id)}\n")
    if status == IN_PROGRESS and target.store.knows_running:
        holder = target.store.running_holder(state.item_id)
        if holder is None:
            out.write("interrupted: no process runs it (the one that started it is gone); the next run resumes it\n")
        else:
            out.write(f"running: {holder.describe()}\n")
    if state.metadata:
        out.write(f"metadata: {json.dumps(state.metadata, ensure_ascii=False)}\n")
    out.write(f"started: {state.started_at}   last updated: {state.last_updated}\n\n")
    definitions = {p.num: p for p in target.pipeline.phases}
    for num, phase in sorted(state.phases.items()):
        label = phase.status + (f" ({phase.reason})" if phase.reason else "")
        if num in definitions and gave_up(definitions[num], phase):
            label += f", gave up after {attempts_used(phase)} attempts (max_attempts; `pipekit reset` runs it again)"
        out.write(f"{glyph(phase.status, colour)} phase {num} {phase.name}: {label}\n")
        if phase.status == PENDING and not phase.attempts:
            continue
        took = duration(phase.duration_seconds)
        out.write(
            f"    attempts {phase.attempts}   started {phase.started_at or '-'}   took {took}   "
            f"tokens {tokens(phase.tokens_in)}/{tokens(phase.tokens_out)}   cost {money_exact(phase.cost_usd)}\n"
        )
        if phase.output_file:
            out.write(f"    output file: {phase.output_file}\n")
        if num in state.phase_outputs:
            out.write(f"    output: {preview(state.phase_outputs[num])}\n")
        if phase.error:
            out.write(f"    error: {phase.error}\n")
        running = phase.status == IN_PROGRESS
        out.writelines(f"{line}\n" for line in subitem_lines(target.store, state.item_id, phase.name, running))
        if phase.traceback and phase.status == FAILED:
            for line in phase.traceback.rstrip().splitlines():
                out.write(f"    | {line}\n")
