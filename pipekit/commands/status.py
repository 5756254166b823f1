"""``pipekit status MODULE``: items x phases, costs, errors; never changes state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
import json
import os
import sys
from typing import Any
from typing import TextIO

from pipekit.commands.target import Target
from pipekit.commands.target import command_parser
from pipekit.commands.target import open_target
from pipekit.commands.target import parse
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.selection import is_glob
from pipekit.selection import select_item_ids
from pipekit.state import COMPLETED
from pipekit.state import DONE_STATUSES
from pipekit.state import FAILED
from pipekit.state import IN_PROGRESS
from pipekit.state import PENDING
from pipekit.state import SKIPPED
from pipekit.state import PipelineState


#: One glyph per phase status, and its ANSI colour.
GLYPHS = {
    COMPLETED: ("✓", "32"),
    FAILED: ("✗", "31"),
    SKIPPED: ("↷", "33"),
    IN_PROGRESS: ("▶", "36"),
    PENDING: ("·", "2"),
}
STATUS_ORDER = (COMPLETED, FAILED, SKIPPED, IN_PROGRESS, PENDING)
#: Above this many rows the matrix is summarised unless ``--all``.
DEFAULT_MAX_ROWS = 50
#: Failures listed in a summary.
SUMMARY_FAILURES = 20


def item_status(state: PipelineState) -> str:
    """What the item looks like now: failed, in_progress, completed or pending."""
    statuses = {p.status for p in state.phases.values()}
    if FAILED in statuses:
        return FAILED
    if IN_PROGRESS in statuses:
        return IN_PROGRESS
    if statuses <= DONE_STATUSES:
        return COMPLETED
    return PENDING


def last_note(state: PipelineState) -> str:
    """The last failure (``2 draft: error``), else the last hand-made skip reason."""
    phases = sorted(state.phases.values(), key=lambda p: p.phase)
    for phase in reversed(phases):
        if phase.status == FAILED:
            return f"{phase.phase} {phase.name}: {phase.error or phase.reason or 'failed'}"
    for phase in phases:
        if phase.status == SKIPPED and phase.reason and phase.reason != "cache":
            return f"{phase.phase} {phase.name} skipped: {phase.reason}"
    return ""


def state_record(state: PipelineState) -> dict[str, Any]:
    """The machine-readable picture of one item (outputs left out: see ``export``)."""
    return {
        "item_id": state.item_id,
        "status": item_status(state),
        "saved_status": state.status,
        "metadata": state.metadata,
        "started_at": state.started_at,
        "last_updated": state.last_updated,
        "total_tokens_in": state.total_tokens_in,
        "total_tokens_out": state.total_tokens_out,
        "total_cost_usd": state.total_cost_usd,
        "phases": [dict(vars(p)) for _, p in sorted(state.phases.items())],
    }


def status_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit status MODULE [--item ID]... [--failed] [--pending] [--all] [--json]``."""
    parser = command_parser("pipekit status", "Show items x phases, costs and errors (never changes state).")
    parser.add_argument(
        "--item",
        action="append",
        default=[],
        metavar="ID",
        help="only these items (globs allowed); one id shows its full story",
    )
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
    target = open_target(option)
    out = sys.stdout
    if len(option.item) == 1 and not is_glob(option.item[0]):
        # Raises StateFileError (exit 4) naming a corrupt file.
        state = target.manager(select_item_ids(target.store, option.item)[0]).state
        if option.json:
            json.dump(state_record(state), out, indent=2, ensure_ascii=False)
            out.write("\n")
        else:
            write_story(out, target, state, _colour(out))
        return ExitCode.OK
    errors: list[StateFileError] = []
    states = list(target.states(errors))
    if option.item:
        wanted = set(select_item_ids(target.store, option.item, known=[s.item_id for s in states]))
        states = [s for s in states if s.item_id in wanted]
    if option.failed or option.pending:
        states = [
            s
            for s in states
            if (option.failed and item_status(s) == FAILED) or (option.pending and item_status(s) != COMPLETED)
        ]
    if option.json:
        write_json(out, target, states, errors)
    elif option.all or len(states) <= option.max_rows:
        write_matrix(out, target, states, _colour(out))
    else:
        write_summary(out, target, states, _colour(out))
    for error in errors:
        print(f"pipekit: error: {error}", file=sys.stderr)
    return ExitCode.USAGE_ERROR if errors else ExitCode.OK


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
    out.write(f"pipeline: {pipeline.name}  ({count} {pipeline.item_noun} x {len(pipeline.phases)} phases)\n")
    out.write(f"state: {target.store.location}\n")
    out.write("phases: " + ", ".join(f"{p.num} {p.name}" for p in pipeline.phases) + "\n\n")


def _cost(value: float) -> str:
    return f"${value:.4f}"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write_matrix(out: TextIO, target: Target, states: list[PipelineState], colour: bool) -> None:
    """One row per item: a glyph per phase, cost, and the last error or skip reason."""
    _header(out, target, len(states))
    nums = [p.num for p in target.pipeline.phases]
    widths = [len(str(n)) for n in nums]
    id_width = min(40, max([4, *(len(s.item_id) for s in states)]))
    cells = " ".join(str(n).rjust(w) for n, w in zip(nums, widths, strict=True))
    out.write(f"{'item'.ljust(id_width)}  {cells}  {'cost':>9}  last error\n")
    for state in states:
        row = " ".join(
            " " * (w - 1) + glyph(state.phases[n].status if n in state.phases else PENDING, colour)
            for n, w in zip(nums, widths, strict=True)
        )
        note = _clip(last_note(state), 100)
        label = _clip(state.item_id, id_width).ljust(id_width)
        out.write(f"{label}  {row}  {_cost(state.total_cost_usd):>9}  {note}".rstrip() + "\n")
    out.write("\n" + legend(colour) + "\n")
    out.write(totals_line(target, states) + "\n")


def legend(colour: bool) -> str:
    """What the glyphs mean."""
    return "  ".join(f"{glyph(s, colour)} {s.replace('_', ' ')}" for s in STATUS_ORDER)


def totals_line(target: Target, states: Iterable[PipelineState]) -> str:
    """Items by status, tokens and cost."""
    states = list(states)
    by_status = Counter(item_status(s) for s in states)
    tokens_in = sum(s.total_tokens_in for s in states)
    tokens_out = sum(s.total_tokens_out for s in states)
    cost = sum(s.total_cost_usd for s in states)
    parts = ", ".join(f"{by_status[s]} {s.replace('_', ' ')}" for s in (COMPLETED, FAILED, IN_PROGRESS, PENDING))
    return (
        f"total: {len(states)} {target.pipeline.item_noun}: {parts}; "
        f"tokens {tokens_in} in / {tokens_out} out; cost {_cost(cost)}"
    )


def write_summary(out: TextIO, target: Target, states: list[PipelineState], colour: bool) -> None:
    """Counts per phase and status, then the failures: for batches too big to list."""
    _header(out, target, len(states))
    counts: dict[int, Counter[str]] = {p.num: Counter() for p in target.pipeline.phases}
    cost = {p.num: 0.0 for p in target.pipeline.phases}
    failures: list[tuple[str, str]] = []
    for state in states:
        for num, phase in state.phases.items():
            if num in counts:
                counts[num][phase.status] += 1
                cost[num] += phase.cost_usd
        if item_status(state) == FAILED:
            failures.append((state.item_id, last_note(state)))
    name_width = max([5, *(len(f"{p.num} {p.name}") for p in target.pipeline.phases)])
    heads = "".join(f"{glyph(s, colour)} {s.replace('_', ' '):>11}  " for s in STATUS_ORDER)
    out.write(f"{'phase'.ljust(name_width)}  {heads}{'cost':>10}\n")
    for definition in target.pipeline.phases:
        row = "".join(f"{counts[definition.num][s]:>13}  " for s in STATUS_ORDER)
        out.write(
            f"{f'{definition.num} {definition.name}'.ljust(name_width)}  {row}{_cost(cost[definition.num]):>10}\n"
        )
    if failures:
        shown = failures[:SUMMARY_FAILURES]
        out.write(f"\nfailures ({len(shown)} of {len(failures)}; --failed --all lists them all):\n")
        for item_id, note in shown:
            out.write(f"  {_clip(item_id, 40)}  {_clip(note, 100)}\n")
    out.write(f"\n{totals_line(target, states)}\n")
    out.write(f"(summary of {len(states)} rows; --all shows every row)\n")


def write_json(out: TextIO, target: Target, states: list[PipelineState], errors: list[StateFileError]) -> None:
    """The whole picture as one JSON document."""
    by_status = Counter(item_status(s) for s in states)
    document = {
        "pipeline": target.pipeline.name,
        "module": target.pipeline.path,
        "state": target.store.location,
        "phases": [{"num": p.num, "name": p.name, "critical": p.critical} for p in target.pipeline.phases],
        "items": [state_record(s) for s in states],
        "totals": {
            "items": len(states),
            **{s: by_status[s] for s in (COMPLETED, FAILED, IN_PROGRESS, PENDING)},
            "tokens_in": sum(s.total_tokens_in for s in states),
            "tokens_out": sum(s.total_tokens_out for s in states),
            "cost_usd": sum(s.total_cost_usd for s in states),
        },
        "errors": [str(e) for e in errors],
    }
    # No indent: json's C encoder is used only without one (pipe it to `jq` to read it).
    out.write(json.dumps(document, ensure_ascii=False))
    out.write("\n")


def write_story(out: TextIO, target: Target, state: PipelineState, colour: bool) -> None:
    """One item in full: every phase with attempts, times, cost, errors and tracebacks."""
    out.write(f"item: {state.item_id}   status: {item_status(state)}   cost: {_cost(state.total_cost_usd)}   ")
    out.write(f"tokens: {state.total_tokens_in} in / {state.total_tokens_out} out\n")
    out.write(f"state: {target.store.describe(state.item_id)}\n")
    if state.metadata:
        out.write(f"metadata: {json.dumps(state.metadata, ensure_ascii=False)}\n")
    out.write(f"started: {state.started_at}   last updated: {state.last_updated}\n\n")
    for num, phase in sorted(state.phases.items()):
        label = phase.status + (f" ({phase.reason})" if phase.reason else "")
        out.write(f"{glyph(phase.status, colour)} phase {num} {phase.name}: {label}\n")
        if phase.status == PENDING and not phase.attempts:
            continue
        took = f"{phase.duration_seconds:.2f}s" if phase.duration_seconds is not None else "-"
        out.write(
            f"    attempts {phase.attempts}   started {phase.started_at or '-'}   took {took}   "
            f"tokens {phase.tokens_in}/{phase.tokens_out}   cost {_cost(phase.cost_usd)}\n"
        )
        if phase.output_file:
            out.write(f"    output file: {phase.output_file}\n")
        if phase.error:
            out.write(f"    error: {phase.error}\n")
        if phase.traceback and phase.status == FAILED:
            for line in phase.traceback.rstrip().splitlines():
                out.write(f"    | {line}\n")
