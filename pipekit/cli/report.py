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

from pipekit.cli.parsing import command_parser
from pipekit.cli.status import STATUS_ORDER
from pipekit.cli.status import item_status
from pipekit.cli.status import last_note
from pipekit.cli.target import Target
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.display.format import duration
from pipekit.display.format import money_exact
from pipekit.display.format import tokens
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.state.model import FAILED
from pipekit.state.model import PipelineState
from pipekit.state.store import write_atomically


#: Status colours, shared by the matrix, the timeline and the legend.
COLOURS = {
    "completed": "#2e9d57",
    "failed": "#d64545",
    "skipped": "#d9a521",
    "in_progress": "#3a7bd5",
    "pending": "#d7dbe0",
}
#: Failures listed in the page (the rest are counted).
MAX_FAILURES = 500
#: Most expensive items listed.
TOP_ITEMS = 25
#: Columns of the concurrency chart.
BUCKETS = 120


def report_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """Write the HTML report of a pipeline's saved state."""
    parser = command_parser("pipekit report", "Write a self-contained HTML report of the batch.", state=True)
    parser.add_argument("-o", "--output", metavar="FILE", help="the HTML file to write (e.g. report.html)")
    option = parse(parser, args)
    if option is None:
        return ExitCode.OK
    if not option.output:
        raise UsageError("pipekit report: say where with -o report.html")
    with open_target(option) as target:
        errors: list[StateFileError] = []
        states = list(target.states(errors))
        page = render_report(target, states, [str(e) for e in errors])
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


def _rows(target: Target, states: list[PipelineState]) -> list[list[Any]]:
    """Compact per-item data for the page's script: id, status, cost, note, phases."""
    codes = {s: i for i, s in enumerate(STATUS_ORDER)}
    rows = []
    for state in states:
        cells: list[list[Any]] = []
        for definition in target.pipeline.phases:
            phase = state.phases.get(definition.num)
            if phase is None:
                cells.append([codes["pending"], None, None])
                continue
            start = _epoch(phase.started_at)
            end = _epoch(phase.completed_at)
            cells.append([codes.get(phase.status, codes["pending"]), start, end])
        rows.append([state.item_id, item_status(state), round(state.total_cost_usd, 6), last_note(state), cells])
    return rows


def _concurrency(rows: list[list[Any]]) -> tuple[list[int], float, float]:
    """Phases running per time bucket over the whole batch."""
    spans = [(c[1], c[2]) for row in rows for c in row[4] if c[1] is not None and c[2] is not None]
    if not spans:
        return [], 0.0, 0.0
    t0 = min(s for s, _ in spans)
    t1 = max(e for _, e in spans)
    width = max(t1 - t0, 1e-6) / BUCKETS
    counts = [0] * BUCKETS
    for start, end in spans:
        first = min(BUCKETS - 1, int((start - t0) / width))
        last = min(BUCKETS - 1, int((end - t0) / width))
        for bucket in range(first, last + 1):
            counts[bucket] += 1
    return counts, t0, t1


def _svg_bars(values: list[int], height: int = 80) -> str:
    top = max(values, default=0) or 1
    width = 6
    bars = "".join(
        f'<rect x="{i * width}" y="{height - v * height / top:.1f}" width="{width - 1}" '
        f'height="{v * height / top:.1f}"><title>{v}</title></rect>'
        for i, v in enumerate(values)
    )
    return (
        f'<svg class="conc" viewBox="0 0 {len(values) * width} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="phases running over time">{bars}</svg>'
    )


def render_report(target: Target, states: list[PipelineState], errors: list[str]) -> str:
    """The whole page as one string."""
    esc = html.escape
    pipeline = target.pipeline
    rows = _rows(target, states)
    by_status = Counter(item_status(s) for s in states)
    total_cost = sum(s.total_cost_usd for s in states)
    tokens_in = sum(s.total_tokens_in for s in states)
    tokens_out = sum(s.total_tokens_out for s in states)

    phase_rows = _phase_rows(pipeline, states)
    item_rows = _item_rows(states)
    failures, failure_rows, more_failures = _failure_rows(states)
    conc, t0, t1 = _concurrency(rows)
    conc_html = (
        f"<p>Phases running at once, from {esc(_clock(t0))} to {esc(_clock(t1))} "
        f"(peak {max(conc)}):</p>{_svg_bars(conc)}"
        if conc
        else "<p>No phase has run yet.</p>"
    )
    data = {
        "phases": [[p.num, p.name] for p in pipeline.phases],
        "statuses": list(STATUS_ORDER),
        "colours": COLOURS,
        "rows": rows,
    }
    cards = "".join(
        f'<div class="card"><b>{by_status[status]}</b><span>{status.replace("_", " ")}</span></div>'
        for status in ("completed", "failed", "in_progress", "pending")
    )
    legend = "".join(
        f'<span class="lg"><i style="background:{COLOURS[s]}"></i>{s.replace("_", " ")}</span>' for s in STATUS_ORDER
    )
    error_html = "".join(f'<p class="err">{esc(e)}</p>' for e in errors)
    return _asset("page.html").substitute(
        title=esc(f"pipekit report: {pipeline.name}"),
        name=esc(pipeline.name),
        location=esc(target.store.location),
        generated=esc(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        count=len(states),
        noun=esc(pipeline.item_noun),
        phases=len(pipeline.phases),
        cards=cards,
        total_cost=money_exact(total_cost),
        tokens=f"{tokens(tokens_in)} in / {tokens(tokens_out)} out",
        errors=error_html,
        legend=legend,
        status_heads="".join(f'<th class="n">{s.replace("_", " ")}</th>' for s in STATUS_ORDER),
        phase_rows="".join(phase_rows),
        item_rows=item_rows,
        failure_count=len(failures),
        failure_rows=failure_rows or '<tr><td colspan="5">No failures.</td></tr>',
        more_failures=more_failures,
        concurrency=conc_html,
        data=json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c"),
        script=_asset("report.js").template,
    )


def _phase_rows(pipeline: Pipeline, states: list[PipelineState]) -> list[str]:
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
        cells = "".join(f'<td class="n">{counts[status]}</td>' for status in STATUS_ORDER)
        phase_rows.append(
            f"<tr><td>{definition.num}</td><td>{esc(definition.name)}</td>{cells}"
            f'<td class="n">{duration(mean)}</td><td class="n">{money_exact(cost)}</td>'
            f'<td class="barcell">{_bar(cost, top_phase_cost)}</td></tr>'
        )
    return phase_rows


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


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
