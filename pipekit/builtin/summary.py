"""End-of-run summary on stderr: a table per phase, the run's totals and its failures.

Gathered from the hooks alone. A rich table on a terminal, aligned plain text
otherwise. ``-v`` lists every failure (not only the first ten) and adds the
rate of work and the concurrency reached; ``-q`` silences it.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import math
import sys
from typing import IO

from pipekit.config import Config
from pipekit.display.format import duration
from pipekit.display.format import money
from pipekit.display.format import tokens
from pipekit.display.progress import is_rich_supported
from pipekit.engine.control import Item
from pipekit.engine.outcome import AttemptOutcome
from pipekit.engine.runner import Run
from pipekit.hookspecs import hookimpl
from pipekit.outcomes import Retry
from pipekit.pipeline.context import PhaseOutcome
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import COMPLETED_WITH_ERRORS
from pipekit.state.model import state_outcome


#: Failures listed without ``-v``.
FIRST_FAILURES = 10

COLUMNS = ("phase", "executed", "completed", "failed", "skipped", "mean", "p95", "tokens in", "tokens out", "cost")


@dataclass
class PhaseStats:
    """What one phase did over the run's items."""

    num: int
    name: str
    executed: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    durations: list[float] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def row(self) -> tuple[str, ...]:
        """The phase's cells, in ``COLUMNS`` order."""
        return (
            f"{self.num} {self.name}",
            f"{self.executed:,}",
            f"{self.completed:,}",
            f"{self.failed:,}",
            f"{self.skipped:,}",
            duration(mean(self.durations)),
            duration(percentile(self.durations, 95)),
            tokens(self.tokens_in),
            tokens(self.tokens_out),
            money(self.cost_usd),
        )


def mean(values: list[float]) -> float | None:
    """The mean, None for no values."""
    return sum(values) / len(values) if values else None


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]



class Summary:
    """Counts what each phase did and prints it when the run finishes.

    :param stream: where the summary goes (stderr).
    :param rich: draw a rich table (on a terminal) instead of plain text.
    """

    name = "summary-reporter"

    def __init__(self, stream: IO[str], verbose: int = 0, rich: bool = False) -> None:
        self.stream = stream
        self.verbose = verbose
        self.rich = rich
        self.phases: dict[int, PhaseStats] = {}
        #: ``(item id, phase num, phase name, first line of the error)``.
        self.failures: list[tuple[str, int, str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        #: The executions in flight, by ``(item id, phase num)``.
        self._running: set[tuple[str, int]] = set()
        #: Times phases had to wait, by what they waited for.
        self.waits: dict[str, int] = {}
        #: Attempts whose value did not fit the phase's ``output=`` model, by phase name.
        self.invalid_outputs: dict[str, int] = {}
        #: ``(spent, cap)`` when ``--max-cost`` was reached.
        self.budget: tuple[float, float] | None = None
        #: Attempts tried again: those a handler asked for (``Retry``), those after an error.
        self.retries_requested = 0
        self.retries_after_errors = 0
        #: Items this run finished with a non-critical phase failed (counted completed).
        self.completed_with_errors = 0
        self._definitions: list[PhaseDefinition] = []
        #: Sub-items of ``ctx.map`` finished in this run, by status (``done``, ``failed``).
        self.subitems: dict[str, int] = {}
        #: Requests answered by provider batches for the phases completed this run,
        #: their cost and what they would have cost online.
        self.batch_requests = 0
        self.batch_cost_usd = 0.0
        self.batch_online_cost_usd = 0.0

    def _stats(self, phase: PhaseDefinition) -> PhaseStats:
        stats = self.phases.get(phase.num)
        if stats is None:
            stats = self.phases[phase.num] = PhaseStats(phase.num, phase.name)
        return stats

    def _add_usage(self, phase: PhaseDefinition, result: PhaseOutcome) -> None:
        """Add what one attempt spent (every attempt of an execution is reported once)."""
        if not (result.tokens_in or result.tokens_out or result.cost_usd):
            return
        stats = self._stats(phase)
        stats.tokens_in += result.tokens_in
        stats.tokens_out += result.tokens_out
        stats.cost_usd += result.cost_usd

    @hookimpl
    def pipekit_run_start(self, run: Run) -> None:
        self._definitions = list(run.pipeline.phases)
        for phase in sorted(run.pipeline.phases, key=lambda p: p.num):
            self._stats(phase)

    @hookimpl
    def pipekit_item_start(self, item: Item) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    @hookimpl
    def pipekit_phase_start(self, item: Item, phase: PhaseDefinition) -> None:
        if (item.id, phase.num) in self._running:
            return  # one execution: a batch phase under --wait starts where it asks and again where it collects
        self._running.add((item.id, phase.num))
        self._stats(phase).executed += 1

    @hookimpl
    def pipekit_phase_wait(self, item: Item, phase: PhaseDefinition, reason: str) -> None:
        kind, _, name = reason.partition(":")  # "limit:openai", "retry-after:openai", "concurrency"
        key = f"{kind} {name!r}" if name else f"{kind} of {phase.name!r}"
        self.waits[key] = self.waits.get(key, 0) + 1

    @hookimpl
    def pipekit_subitem_finish(self, status: str) -> None:
        self.subitems[status] = self.subitems.get(status, 0) + 1

    @hookimpl
    def pipekit_budget_reached(self, spent: float, cap: float) -> None:
        self.budget = (spent, cap)

    @hookimpl
    def pipekit_phase_complete(self, item: Item, phase: PhaseDefinition, result: PhaseOutcome) -> None:
        stats = self._stats(phase)
        stats.completed += 1
        stats.durations.append(result.duration_seconds)
        self._running.discard((item.id, phase.num))
        self._add_usage(phase, result)
        cell = item.state.batch_requests.get(str(phase.num)) if phase.batch is not None else None
        if cell and cell.get("done"):
            self.batch_requests += int(cell.get("requests") or 0)
            self.batch_cost_usd += float(cell.get("cost_usd") or 0.0)
            self.batch_online_cost_usd += float(cell.get("online_cost_usd") or 0.0)

    @hookimpl
    def pipekit_phase_retry(self, phase: PhaseDefinition, error: BaseException, result: AttemptOutcome) -> None:
        if isinstance(error, Retry):
            self.retries_requested += 1
        else:
            self.retries_after_errors += 1
        self._add_usage(phase, result)
        self._count_invalid(phase, result)

    @hookimpl
    def pipekit_phase_fail(
        self, item: Item, phase: PhaseDefinition, error: BaseException, result: AttemptOutcome
    ) -> None:
        stats = self._stats(phase)
        stats.failed += 1
        if (item.id, phase.num) in self._running:
            self._running.discard((item.id, phase.num))
        else:
            stats.executed += 1  # a failure without a start (an observer registered mid-run)
        self._add_usage(phase, result)
        self._count_invalid(phase, result)
        stats.durations.append(round(result.duration_seconds, 6))
        if result.reason == "interrupted":
            return  # counted once as interrupted items, not listed as eight failures
        message = (result.message or str(error) or type(error).__name__).strip()
        self.failures.append((item.id, phase.num, phase.name, message.splitlines()[0] if message else ""))

    @hookimpl
    def pipekit_phase_skip(self, item: Item, phase: PhaseDefinition, reason: str) -> None:
        self._stats(phase).skipped += 1

    @hookimpl
    def pipekit_item_finish(self, item: Item) -> None:
        self.in_flight -= 1
        if state_outcome(item.manager.state, self._definitions) == COMPLETED_WITH_ERRORS:
            self.completed_with_errors += 1

    @hookimpl(trylast=True)
    def pipekit_run_finish(self, run: Run, exitstatus: int) -> None:
        """Print the summary (after the live display has drawn its last frame)."""
        rows = [stats.row() for stats in self.phases.values()]
        rows.append(self._total_row())
        lines = self._run_lines(run)
        failures = self._failure_lines()
        if self.rich:
            self._print_rich(f"pipekit: summary of {run.pipeline.name}", rows, lines, failures)
        else:
            text = [f"pipekit: summary of {run.pipeline.name}", *_plain_table(COLUMNS, rows), *lines, *failures]
            self.stream.write("\n".join(text) + "\n")
            self.stream.flush()

    def _total_row(self) -> tuple[str, ...]:
        every = list(self.phases.values())
        total = PhaseStats(0, "all")
        for stats in every:
            total.executed += stats.executed
            total.completed += stats.completed
            total.failed += stats.failed
            total.skipped += stats.skipped
            total.durations.extend(stats.durations)
            total.tokens_in += stats.tokens_in
            total.tokens_out += stats.tokens_out
            total.cost_usd += stats.cost_usd
        return ("total", *total.row()[1:])

    def _run_lines(self, run: Run) -> list[str]:
        noun = run.pipeline.item_noun
        remaining = run.total_items - run.items_completed - run.items_failed
        completed = f"{run.items_completed:,} completed"
        if self.completed_with_errors:
            completed += f" ({self.completed_with_errors:,} with errors)"
        parts = [completed, f"{run.items_failed:,} failed", f"{remaining:,} remaining"]
        for count, label in (
            (run.items_already_done, "already done before this run"),
            (run.items_interrupted, "interrupted"),
            (run.items_stopped, f"stopped by {_stopped_by(run)}"),
            (run.items_busy, "busy in another process"),
            (run.items_unreadable, "with unreadable state"),
        ):
            if count:
                parts.append(f"{count:,} {label}")
        cost = f"cost {money(run.cost_usd)} this run"
        if run.earlier_cost_usd:
            cost += (
                f" + {money(run.earlier_cost_usd)} in earlier runs"
                f" = {money(run.cost_usd + run.earlier_cost_usd)}"
            )
        wall = run.elapsed_seconds
        lines = [
            f"{noun}: {run.total_items:,} selected: {', '.join(parts)}",
            f"wall time {duration(wall)}; tokens {tokens(run.tokens_in)} in / {tokens(run.tokens_out)} out; {cost}",
        ]
        if self.subitems:
            done, failed = self.subitems.get("done", 0), self.subitems.get("failed", 0)
            lines.append(f"sub-items: {done:,} done, {failed:,} failed")
        if self.batch_requests:
            lines.append(batch_line(self.batch_requests, self.batch_cost_usd, self.batch_online_cost_usd))
        if self.waits:
            lines.append("waited: " + ", ".join(f"{n:,} x {what}" for what, n in sorted(self.waits.items())))
        if self.retries_requested or self.retries_after_errors:
            lines.append(
                f"retries: {self.retries_requested:,} requested by handlers (Retry), "
                f"{self.retries_after_errors:,} after errors"
            )
        breaker = getattr(run, "breaker", None)
        if breaker is not None and breaker.reason is not None:
            lines.append(breaker.reason)
        if self.invalid_outputs:
            counts = ", ".join(f"{n:,} x {name}" for name, n in sorted(self.invalid_outputs.items()))
            lines.append(f"invalid outputs (attempts): {counts}")
        if self.budget is not None:
            spent, cap = self.budget
            lines.append(f"budget: --max-cost {money(cap)} reached ({money(spent)} spent)")
        if self.verbose:
            executed = sum(s.completed + s.failed for s in self.phases.values())
            rate = executed / wall * 60 if wall > 0 else 0.0
            lines.append(
                f"throughput {rate:,.1f} phases/min; concurrency reached {self.max_in_flight} of -j {run.workers}"
            )
        return lines

    def _count_invalid(self, phase: PhaseDefinition, result: AttemptOutcome) -> None:
        if result.reason == "invalid_output":
            self.invalid_outputs[phase.name] = self.invalid_outputs.get(phase.name, 0) + 1

    def _failure_lines(self) -> list[str]:
        if not self.failures:
            return []
        limit = None if self.verbose else FIRST_FAILURES
        lines = [f"failures ({len(self.failures)}):"]
        for item_id, num, name, error in self.failures[:limit]:
            lines.append(f"  {item_id}  phase {num} {name}: {error}")
        if limit is not None and len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more (-v lists them all)")
        return lines

    def _print_rich(self, title: str, rows: list[tuple[str, ...]], lines: list[str], failures: list[str]) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console(file=self.stream, force_terminal=True, highlight=False)
        table = Table(title=title, title_justify="left", show_edge=False)
        for index, name in enumerate(COLUMNS):
            table.add_column(name, justify="left" if index == 0 else "right", no_wrap=True)
        for number, row in enumerate(rows):
            last = number == len(rows) - 1
            style = "bold" if last else ("red" if row[3] != "0" else None)
            table.add_row(*row, style=style, end_section=number == len(rows) - 2)
        console.print(table)
        for line in lines:
            console.print(Text(line))
        for number, line in enumerate(failures):
            console.print(Text(line, style="red" if number == 0 else ""))


def batch_line(requests: int, cost: float, online: float) -> str:
    """What went by provider batch: ``batches: 40 requests, cost $0.01 (saved $0.01 against online prices)``."""
    saved = max(online - cost, 0.0)
    noun = "request" if requests == 1 else "requests"
    return f"batches: {requests:,} {noun}, cost {money(cost)} (saved {money(saved)} against online prices)"


def _stopped_by(run: Run) -> str:
    """The option that stopped the run's unfinished items."""
    breaker = getattr(run, "breaker", None)
    return breaker.tripped_by if breaker is not None and breaker.tripped_by else "--max-cost"


def _plain_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(columns[i]), *(len(row[i]) for row in rows)) for i in range(len(columns))]

    def line(cells: tuple[str, ...]) -> str:
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    return [line(columns), *(line(row) for row in rows)]


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register the summary unless ``-q``."""
    if config.getoption("quiet"):
        return
    rich = config.getoption("progress") != "simple" and is_rich_supported(sys.stderr)
    summary = Summary(sys.stderr, verbose=config.getoption("verbose") or 0, rich=rich)
    config.pluginmanager.register(summary, Summary.name)
    config.add_cleanup(lambda: config.pluginmanager.unregister(summary))
