"""``pipekit report MODULE -o report.html``: one self-contained HTML page.

Status matrix and timeline (paginated in the page, so 5,000 items stay usable),
concurrency over time, cost per phase and per item, and the failures. No
network is needed to view it: styles, script and data are all inline.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from datetime import timezone
import html
from importlib import resources
import json
from pathlib import Path
import string
import sys
from typing import Any

from pipekit.cli.batchview import with_waiting
from pipekit.cli.parsing import add_item_sources
from pipekit.cli.parsing import command_parser
from pipekit.cli.status import STATUS_ORDER
from pipekit.cli.status import item_status
from pipekit.cli.status import last_note
from pipekit.cli.target import Previews
from pipekit.cli.target import Target
from pipekit.cli.target import batch_items
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.cli.timeline import Overlap
from pipekit.cli.timeline import chart
from pipekit.cli.timeline import clock
from pipekit.cli.timeline import overlap
from pipekit.display.format import duration
from pipekit.display.format import money_exact
from pipekit.display.format import tokens
from pipekit.engine.selection import select_item_ids
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.state.model import COMPLETED
from pipekit.state.model import COMPLETED_WITH_ERRORS
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import PipelineState
from pipekit.state.store import write_atomically


#: Status colours, shared by the matrix, the timeline and the legend.
COLOURS = {
    "completed": "#2e9d57",
    "failed": "#d64545",
    "skipped": "#d9a521",
    "in_progress": "#3a7bd5",
    "pending": "#d7dbe0",
    "waiting": "#7b5fc7",
}
#: Failures listed in the page (the rest are counted).
MAX_FAILURES = 500
#: Most expensive items listed.
TOP_ITEMS = 25


def report_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """Write the HTML report of a pipeline's saved state."""
    parser = command_parser("pipekit report", "Write a self-contained HTML report of the batch.", state=True)
    parser.add_argument("-o", "--output", metavar="FILE", help="the HTML file to write (e.g. report.html)")
    add_item_sources(parser, item_help="only these items (globs allowed)")
    option = parse(parser, args)
    if option is None:
        return ExitCode.OK
    if not option.output:
        raise UsageError("pipekit report: say where with -o report.html")
    with open_target(option) as target:
        errors: list[StateFileError] = []
        previews: Previews = {}
        specs = batch_items(option, target, plugins)
        if specs is not None:
            states = target.selected_states(specs, errors, previews)
        else:
            states = list(target.states(errors, previews))
            if option.item:
                wanted = set(select_item_ids(target.store, option.item, known=[s.item_id for s in states]))
                states = [s for s in states if s.item_id in wanted]
        page = render_report(target, states, [str(e) for e in errors], previews)
        path = Path(option.output)
        write_atomically(path, page.encode("utf-8"), durable=False)
        print(f"wrote {path} ({len(states)} {target.pipeline.item_noun})")
        for error in errors:
            print(f"pipekit: error: {error}", file=sys.stderr)
        return ExitCode.USAGE_ERROR if errors else ExitCode.OK


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _rows(
    target: Target, states: list[PipelineState], previews: Previews, notes: dict[str, str], order: tuple[str, ...]
) -> list[list[Any]]:
    """Compact per-item data for the page's script: id, status, cost, note, and
    per phase its status, start, end and a preview of its output (or None)."""
    codes = {s: i for i, s in enumerate(order)}
    definitions = target.pipeline.phases
    rows = []
    for state in states:
        cells: list[list[Any]] = []
        shown = previews.get(state.item_id, {})
        for definition in definitions:
            phase = state.phases.get(definition.num)
            if phase is None:
                cells.append([codes["pending"], None, None, None])
                continue
            start = _epoch(phase.started_at)
            end = _epoch(phase.completed_at)
            cells.append([codes.get(phase.status, codes["pending"]), start, end, shown.get(definition.num)])
        note = notes.get(state.item_id) or last_note(state)
        rows.append([state.item_id, item_status(state, definitions), round(state.total_cost_usd, 6), note, cells])
    return rows


def _holder_notes(target: Target, states: list[PipelineState]) -> dict[str, str]:
    """For each item in progress, who runs it now, or that nothing does (its
    process died): what ``status`` says of it."""
    store = target.store
    notes: dict[str, str] = {}
    if not store.knows_running:
        return notes
    for state in states:
        if item_status(state, target.pipeline.phases) != IN_PROGRESS:
            continue
        holder = store.running_holder(state.item_id)
        notes[state.item_id] = (
            f"running: {holder.describe()}"
            if holder is not None
            else "interrupted: no process runs it (the one that started it is gone); the next run resumes it"
        )
    return notes


def _concurrency_html(view: Overlap | None) -> str:
    """The concurrency chart with its peak, time axis and run boundaries."""
    if view is None:
        return "<p>No phase has run yet.</p>"
    runs = len(view.run_gaps) + 1
    said = f"{runs} runs, separated by the dashed lines" if runs > 1 else "1 run"
    return (
        f'<p>Phases running at once, from {html.escape(clock(view.t0))} to {html.escape(clock(view.t1))} '
        f'(<span id="peak">peak {view.peak}</span>; {said}):</p>{chart(view)}'
    )


def _cards(states: list[PipelineState], target: Target, notes: dict[str, str]) -> str:
    """Items by ``item_outcome``: completed (with errors too, as a run counts
    them), failed, in progress (running or interrupted) and pending."""
    by_status = Counter(item_status(s, target.pipeline.phases) for s in states)
    counts = {
        COMPLETED: (by_status[COMPLETED] + by_status[COMPLETED_WITH_ERRORS], ""),
        FAILED: (by_status[FAILED], ""),
        IN_PROGRESS: (by_status[IN_PROGRESS], ""),
        PENDING: (by_status[PENDING], ""),
    }
    if by_status[COMPLETED_WITH_ERRORS]:
        counts[COMPLETED] = (counts[COMPLETED][0], f" ({by_status[COMPLETED_WITH_ERRORS]} with errors)")
    if notes:
        stopped = sum(1 for note in notes.values() if note.startswith("interrupted"))
        counts[IN_PROGRESS] = (counts[IN_PROGRESS][0], f" ({len(notes) - stopped} running, {stopped} interrupted)")
    return "".join(
        f'<div class="card" id="card-{status}"><b>{count}</b>'
        f'<span>{status.replace("_", " ")}{html.escape(more)}</span></div>'
        for status, (count, more) in counts.items()
    )


def render_report(
    target: Target, states: list[PipelineState], errors: list[str], previews: Previews | None = None
) -> str:
    """The whole page as one string (``previews``: of the completed outputs)."""
    esc = html.escape
    pipeline = target.pipeline
    notes = _holder_notes(target, states)
    order = with_waiting(STATUS_ORDER, pipeline)
    rows = _rows(target, states, previews or {}, notes, order)
    total_cost = sum(s.total_cost_usd for s in states)
    tokens_in = sum(s.total_tokens_in for s in states)
    tokens_out = sum(s.total_tokens_out for s in states)
    failures, failure_rows, more_failures = _failure_rows(states)
    view = overlap((c[1], c[2]) for row in rows for c in row[4] if c[1] is not None and c[2] is not None)
    data = {
        "phases": [[p.num, p.name] for p in pipeline.phases],
        "statuses": list(order),
        "colours": COLOURS,
        "rows": rows,
        "run_gaps": view.run_gaps if view is not None else [],
    }
    legend = "".join(
        f'<span class="lg"><i style="background:{COLOURS[s]}"></i>{s.replace("_", " ")}</span>' for s in order
    )
    return _asset("page.html").substitute(
        title=esc(f"pipekit report: {pipeline.name}"),
        name=esc(pipeline.name),
        location=esc(target.store.location),
        generated=esc(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        count=len(states),
        noun=esc(pipeline.item_noun),
        phases=len(pipeline.phases),
        cards=_cards(states, target, notes) + _batch_card(states),
        total_cost=money_exact(total_cost),
        tokens=f"{tokens(tokens_in)} in / {tokens(tokens_out)} out",
        errors="".join(f'<p class="err">{esc(e)}</p>' for e in errors),
        legend=legend,
        status_heads="".join(f'<th class="n">{s.replace("_", " ")}</th>' for s in order),
        phase_rows="".join(_phase_rows(pipeline, states, order)),
        item_rows=_item_rows(states),
        failure_count=len(failures),
        failure_rows=failure_rows or '<tr><td colspan="5">No failures.</td></tr>',
        more_failures=more_failures,
        concurrency=_concurrency_html(view),
        data=json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c"),
        script=_asset("report.js").template,
    )


def _phase_rows(pipeline: Pipeline, states: list[PipelineState], order: tuple[str, ...]) -> list[str]:
    """One row per phase: counts by status, mean duration, cost and its bar."""
    esc = html.escape
    phase_rows = []
    top_phase_cost = (
        max((sum(s.phases[p.num].cost_usd for s in states if p.num in s.phases) for p in pipeline.phases), default=0.0)
        or 1.0
    )
    for definition in pipeline.phases:
        counts = Counter(s.phases[definition.num].status for s in states if definition.num in s.phases)
        cost = sum(s.phases[definition.num].cost_usd for s in states if definition.num in s.phases)
        durations = [
            s.phases[definition.num].duration_seconds or 0.0
            for s in states
            if definition.num in s.phases and s.phases[definition.num].duration_seconds is not None
        ]
        mean = sum(durations) / len(durations) if durations else 0.0
        cells = "".join(f'<td class="n">{counts[status]}</td>' for status in order)
        phase_rows.append(
            f"<tr><td>{definition.num}</td><td>{esc(definition.name)}</td>{cells}"
            f'<td class="n">{duration(mean)}</td><td class="n">{money_exact(cost)}</td>'
            f'<td class="barcell">{_bar(cost, top_phase_cost)}</td></tr>'
        )
    return phase_rows


def _batch_card(states: list[PipelineState]) -> str:
    """How many requests went by provider batch, their cost and what they saved
    against online prices (from the finished batch cells); nothing without any."""
    cells = [c for s in states for c in s.batch_requests.values() if c.get("done")]
    if not cells:
        return ""
    requests = sum(int(c.get("requests") or 0) for c in cells)
    cost = sum(float(c.get("cost_usd") or 0.0) for c in cells)
    saved = max(sum(float(c.get("online_cost_usd") or 0.0) for c in cells) - cost, 0.0)
    return (
        f'<div class="card" id="card-batch"><b>{requests:,}</b><span>requests by batch &middot; '
        f"cost {money_exact(cost)}, saved {money_exact(saved)} against online prices</span></div>"
    )


def _item_rows(states: list[PipelineState]) -> str:
    """The most expensive items, with their tokens and cost."""
    esc = html.escape
    expensive = sorted(states, key=lambda s: s.total_cost_usd, reverse=True)[:TOP_ITEMS]
    top_item_cost = expensive[0].total_cost_usd if expensive and expensive[0].total_cost_usd else 1.0
    item_rows = "".join(
        f'<tr><td class="id">{esc(s.item_id)}</td><td class="n">{tokens(s.total_tokens_in)}</td>'
        f'<td class="n">{tokens(s.total_tokens_out)}</td><td class="n">{money_exact(s.total_cost_usd)}</td>'
        f'<td class="barcell">{_bar(s.total_cost_usd, top_item_cost)}</td></tr>'
        for s in expensive
    )
    return item_rows


def _failure_rows(states: list[PipelineState]) -> tuple[list[Any], str, str]:
    """The failed phases (all of them), the rows of the first ones, and a note on the rest."""
    esc = html.escape
    failures = [(s.item_id, num, p) for s in states for num, p in sorted(s.phases.items()) if p.status == FAILED]
    failure_rows = "".join(
        f'<tr><td class="id">{esc(item_id)}</td><td>{num} {esc(p.name)}</td><td>{esc(p.reason or "")}</td>'
        f"<td>{p.attempts}</td><td><details><summary>{esc(p.error or 'failed')}</summary>"
        f"<pre>{esc(p.traceback or '')}</pre></details></td></tr>"
        for item_id, num, p in failures[:MAX_FAILURES]
    )
    more_failures = (
        f"<p>{len(failures) - MAX_FAILURES} more failures not listed; "
        f"<code>pipekit status MODULE --failed --all</code> lists them.</p>"
        if len(failures) > MAX_FAILURES
        else ""
    )
    return failures, failure_rows, more_failures


def _bar(value: float, top: float) -> str:
    return f'<div class="bar" style="width:{100 * value / top:.1f}%"></div>'


def _asset(name: str) -> string.Template:
    """A file of ``report_assets``: the page (a ``$name`` template) and its script."""
    return string.Template(resources.files("pipekit.cli").joinpath("report_assets", name).read_text("utf-8"))
