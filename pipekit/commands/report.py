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
import json
from pathlib import Path
import sys
from typing import Any

from pipekit.commands.status import STATUS_ORDER
from pipekit.commands.status import item_status
from pipekit.commands.status import last_note
from pipekit.commands.target import Target
from pipekit.commands.target import command_parser
from pipekit.commands.target import open_target
from pipekit.commands.target import parse
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state import FAILED
from pipekit.state import PipelineState
from pipekit.store import write_atomically


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
    parser = command_parser("pipekit report", "Write a self-contained HTML report of the batch.")
    parser.add_argument("-o", "--output", metavar="FILE", help="the HTML file to write (e.g. report.html)")
    option = parse(parser, args)
    if option is None:
        return ExitCode.OK
    if not option.output:
        raise UsageError("pipekit report: say where with -o report.html")
    target = open_target(option)
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
        cells = []
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


def _money(value: float) -> str:
    return f"${value:,.4f}"


def render_report(target: Target, states: list[PipelineState], errors: list[str]) -> str:
    """The whole page as one string."""
    esc = html.escape
    pipeline = target.pipeline
    rows = _rows(target, states)
    by_status = Counter(item_status(s) for s in states)
    total_cost = sum(s.total_cost_usd for s in states)
    tokens_in = sum(s.total_tokens_in for s in states)
    tokens_out = sum(s.total_tokens_out for s in states)

    phase_rows = []
    top_phase_cost = max((sum(s.phases[p.num].cost_usd for s in states if p.num in s.phases) for p in pipeline.phases), default=0.0) or 1.0
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
            f'<td class="n">{mean:.2f}s</td><td class="n">{_money(cost)}</td>'
            f'<td class="barcell"><div class="bar" style="width:{100 * cost / top_phase_cost:.1f}%"></div></td></tr>'
        )

    expensive = sorted(states, key=lambda s: s.total_cost_usd, reverse=True)[:TOP_ITEMS]
    top_item_cost = expensive[0].total_cost_usd if expensive and expensive[0].total_cost_usd else 1.0
    item_rows = "".join(
        f'<tr><td class="id">{esc(s.item_id)}</td><td class="n">{s.total_tokens_in}</td>'
        f'<td class="n">{s.total_tokens_out}</td><td class="n">{_money(s.total_cost_usd)}</td>'
        f'<td class="barcell"><div class="bar" style="width:{100 * s.total_cost_usd / top_item_cost:.1f}%"></div></td></tr>'
        for s in expensive
    )

    failures = [
        (s.item_id, num, p)
        for s in states
        for num, p in sorted(s.phases.items())
        if p.status == FAILED
    ]
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
        f'<span class="lg"><i style="background:{COLOURS[s]}"></i>{s.replace("_", " ")}</span>'
        for s in STATUS_ORDER
    )
    error_html = "".join(f'<p class="err">{esc(e)}</p>' for e in errors)
    return _PAGE.format(
        title=esc(f"pipekit report: {pipeline.name}"),
        name=esc(pipeline.name),
        location=esc(target.store.location),
        generated=esc(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        count=len(states),
        noun=esc(pipeline.item_noun),
        phases=len(pipeline.phases),
        cards=cards,
        total_cost=_money(total_cost),
        tokens=f"{tokens_in:,} in / {tokens_out:,} out",
        errors=error_html,
        legend=legend,
        status_heads="".join(f"<th>{s.replace('_', ' ')}</th>" for s in STATUS_ORDER),
        phase_rows="".join(phase_rows),
        item_rows=item_rows,
        failure_count=len(failures),
        failure_rows=failure_rows or '<tr><td colspan="5">No failures.</td></tr>',
        more_failures=more_failures,
        concurrency=conc_html,
        data=json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c"),
        script=_SCRIPT,
    )


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var pageSize = 100, page = 0, shown = data.rows;
  var matrix = document.getElementById("matrix"), timeline = document.getElementById("timeline");
  var filter = document.getElementById("filter"), only = document.getElementById("only");
  var info = document.getElementById("pageinfo");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function apply() {
    var q = filter.value.toLowerCase(), s = only.value;
    shown = data.rows.filter(function (r) {
      return (!q || r[0].toLowerCase().indexOf(q) >= 0) && (!s || r[1] === s);
    });
    page = 0;
    render();
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    if (page >= pages) page = pages - 1;
    var rows = shown.slice(page * pageSize, (page + 1) * pageSize);
    info.textContent = "page " + (page + 1) + " of " + pages + " (" + shown.length + " of " + data.rows.length + " items)";
    var thead = el("tr");
    thead.appendChild(el("th", "", "item"));
    data.phases.forEach(function (p) { var th = el("th", "ph", String(p[0])); th.title = p[1]; thead.appendChild(th); });
    thead.appendChild(el("th", "", "cost"));
    thead.appendChild(el("th", "", "last error"));
    matrix.replaceChildren(thead);
    var t0 = Infinity, t1 = -Infinity;
    rows.forEach(function (r) { r[4].forEach(function (c) {
      if (c[1] !== null) t0 = Math.min(t0, c[1]);
      if (c[2] !== null) t1 = Math.max(t1, c[2]);
      if (c[1] !== null && c[2] === null) t1 = Math.max(t1, c[1]);
    }); });
    var span = (t1 > t0) ? (t1 - t0) : 1;
    timeline.replaceChildren();
    rows.forEach(function (r) {
      var tr = el("tr", "row-" + r[1]);
      tr.appendChild(el("td", "id", r[0]));
      r[4].forEach(function (c, i) {
        var status = data.statuses[c[0]];
        var td = el("td", "cell");
        var dot = el("span", "dot s-" + status);
        dot.style.background = data.colours[status];
        dot.title = data.phases[i][1] + ": " + status;
        td.appendChild(dot);
        tr.appendChild(td);
      });
      tr.appendChild(el("td", "n", "$" + r[2].toFixed(4)));
      tr.appendChild(el("td", "note", r[3]));
      matrix.appendChild(tr);
      var line = el("div", "tl-row");
      line.appendChild(el("div", "tl-id", r[0]));
      var lane = el("div", "tl-lane");
      r[4].forEach(function (c, i) {
        var start = c[1], end = c[2], status = data.statuses[c[0]];
        if (start === null && end === null) return;
        if (start === null) start = end;
        if (end === null) end = t1;
        var bar = el("div", "tl-bar s-" + status);
        bar.style.left = (100 * (start - t0) / span) + "%";
        bar.style.width = Math.max(0.4, 100 * (end - start) / span) + "%";
        bar.style.background = data.colours[status];
        bar.title = data.phases[i][0] + " " + data.phases[i][1] + ": " + status + ", " + (end - start).toFixed(2) + "s";
        lane.appendChild(bar);
      });
      line.appendChild(lane);
      timeline.appendChild(line);
    });
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }
  document.getElementById("prev").onclick = function () { page--; render(); };
  document.getElementById("next").onclick = function () { page++; render(); };
  filter.oninput = apply;
  only.onchange = apply;
  render();
  document.body.setAttribute("data-rendered", "yes");
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d232b; background: #f7f8fa; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.meta {{ color: #5b6673; }}
section {{ background: #fff; border: 1px solid #e2e6ea; border-radius: 8px; padding: 12px 16px; margin-top: 16px; }}
.cards {{ display: flex; gap: 12px; flex-wrap: wrap; margin-top: 12px; }}
.card {{ background: #fff; border: 1px solid #e2e6ea; border-radius: 8px; padding: 10px 16px; min-width: 110px; }}
.card b {{ display: block; font-size: 22px; }} .card span {{ color: #5b6673; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef0f3; vertical-align: top; }}
th {{ font-weight: 600; color: #3b4450; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.id, .tl-id {{ font-family: ui-monospace, monospace; white-space: nowrap; max-width: 260px; overflow: hidden; text-overflow: ellipsis; }}
th.ph, td.cell {{ text-align: center; width: 22px; padding: 3px 2px; }}
.dot {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; }}
td.note {{ color: #a33; max-width: 480px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
.barcell {{ width: 30%; }} .bar {{ background: #7a8ca3; height: 10px; border-radius: 2px; }}
.lg {{ margin-right: 14px; white-space: nowrap; }} .lg i {{ display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 4px; vertical-align: -1px; }}
.controls {{ margin: 8px 0; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }}
.tl-row {{ display: flex; align-items: center; height: 16px; }}
.tl-id {{ width: 180px; flex: none; font-size: 12px; }}
.tl-lane {{ position: relative; flex: 1; height: 10px; background: #f0f2f5; border-radius: 2px; }}
.tl-bar {{ position: absolute; top: 0; height: 10px; border-radius: 2px; opacity: .9; }}
svg.conc {{ width: 100%; height: 80px; fill: #3a7bd5; background: #f0f2f5; }}
details summary {{ cursor: pointer; color: #a33; }} pre {{ font-size: 12px; white-space: pre-wrap; background: #f6f6f6; padding: 8px; }}
.err {{ color: #a33; font-weight: 600; }}
</style></head>
<body>
<h1>{name}</h1>
<div class="meta">{count} {noun} &times; {phases} phases &middot; state: {location} &middot; generated {generated}</div>
<div class="cards">{cards}<div class="card"><b>{total_cost}</b><span>cost &middot; tokens {tokens}</span></div></div>
{errors}
<section id="status"><h2>Status matrix</h2><div>{legend}</div>
<div class="controls"><input id="filter" type="search" placeholder="filter item ids">
<select id="only"><option value="">every status</option><option value="failed">failed</option>
<option value="completed">completed</option><option value="in_progress">in progress</option><option value="pending">pending</option></select>
<button id="prev">&larr; previous</button><button id="next">next &rarr;</button><span id="pageinfo"></span></div>
<table id="matrix"></table></section>
<section id="timeline-section"><h2>Timeline</h2>
<p class="meta">Each row is an item of the page above; each bar a phase from its start to its end, coloured by status.</p>
<div id="timeline"></div>
<h2>Concurrency</h2>{concurrency}</section>
<section id="phase-costs"><h2>Per phase</h2><table><tr><th>#</th><th>phase</th>{status_heads}<th>mean time</th><th>cost</th><th></th></tr>{phase_rows}</table></section>
<section id="item-costs"><h2>Most expensive {noun}</h2><table><tr><th>item</th><th>tokens in</th><th>tokens out</th><th>cost</th><th></th></tr>{item_rows}</table></section>
<section id="failures"><h2>Failures ({failure_count})</h2><table><tr><th>item</th><th>phase</th><th>reason</th><th>attempts</th><th>error</th></tr>{failure_rows}</table>{more_failures}</section>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""
