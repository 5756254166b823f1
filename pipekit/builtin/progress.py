"""Progress on stderr, driven by the hooks: a live rich display on a terminal,
one plain line per event elsewhere.

``--progress`` is a core option (it is accepted even when ``-p no:progress``
removed this plugin): ``auto`` (rich on a terminal, plain otherwise),
``rich``, ``simple`` or ``none``. ``-q`` silences it too.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from datetime import timezone
import sys
from typing import IO

from pipekit.config import Config
from pipekit.config import Parser
from pipekit.display.batches import BatchView
from pipekit.display.progress import ProgressTracker
from pipekit.display.progress import SimpleProgress
from pipekit.display.progress import is_rich_supported
from pipekit.display.simple import HEARTBEAT_SECONDS
from pipekit.engine.control import Item
from pipekit.engine.outcome import AttemptOutcome
from pipekit.engine.runner import Run
from pipekit.hookspecs import hookimpl
from pipekit.notify import format_message
from pipekit.outcomes import Retry
from pipekit.pipeline.context import PhaseOutcome
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import DONE_STATUSES
from pipekit.state.model import PENDING
from pipekit.state.model import WAITING


class ProgressPlugin:
    """Feeds the hooks to a ``ProgressTracker`` (rich) or ``SimpleProgress`` (plain).

    :param rich: draw the live rich display (else plain lines).
    :param stream: the terminal or log (stderr).
    """

    name = "progress-display"

    def __init__(self, rich: bool, stream: IO[str], verbose: int = 0, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.rich = rich
        self.stream = stream
        self.verbose = verbose
        self.heartbeat = heartbeat
        self.tracker: ProgressTracker | SimpleProgress | None = None
        self._run: Run | None = None
        self._positions: dict[int, int] = {}
        self._already_done = 0
        self._not_run = 0
        #: Phases each item has counted as done or settled in this run (an item waiting
        #: on a batch is started again by ``--wait``: its phases count once).
        self._counted: dict[str, set[int]] = {}

    def _sync(self) -> None:
        """Copy what only the run knows: earlier runs' cost, items found finished or not run."""
        run, tracker = self._run, self.tracker
        assert run is not None and tracker is not None
        tracker.state.earlier_cost_usd = run.earlier_cost_usd
        if run.items_already_done > self._already_done:
            tracker.skip_items(run.items_already_done - self._already_done)
            self._already_done = run.items_already_done
        not_run = run.items_busy + run.items_unreadable  # no work for this run either
        if not_run > self._not_run:
            tracker.settle_phases((not_run - self._not_run) * run.total_phases)
            self._not_run = not_run

    @hookimpl
    def pipekit_run_start(self, run: Run) -> None:
        self._run = run
        phases = sorted(run.pipeline.phases, key=lambda p: p.num)
        self._positions = {p.num: position for position, p in enumerate(phases, 1)}
        noun = run.pipeline.item_noun
        title = f"{run.pipeline.name} -j {run.workers}"
        if self.rich:
            from rich.console import Console

            console = Console(file=self.stream, force_terminal=True)
            self.tracker = ProgressTracker(run.total_items, run.total_phases, noun, console=console, title=title)
        else:
            self.tracker = SimpleProgress(
                run.total_items,
                run.total_phases,
                noun,
                stream=self.stream,
                title=title,
                verbose=self.verbose,
                heartbeat_seconds=self.heartbeat,
            )
        self.tracker.start()

    @hookimpl
    def pipekit_item_start(self, item: Item) -> None:
        assert self.tracker is not None
        self._sync()
        self.tracker.start_item(item.index, item.id, key=item.id)
        self.tracker.settle_phases(self._count(item, DONE_STATUSES))

    def _count(self, item: Item, statuses: Collection[str]) -> int:
        """How many of the item's phases in ``statuses`` were not counted yet (now they are)."""
        counted = self._counted.setdefault(item.id, set())
        found = {num for num, p in item.state.phases.items() if p.status in statuses} - counted
        counted |= found
        return len(found)

    @hookimpl
    def pipekit_phase_start(self, item: Item, phase: PhaseDefinition) -> None:
        assert self.tracker is not None
        self.tracker.start_phase(self._positions.get(phase.num, phase.num), phase.name, key=item.id)

    @hookimpl
    def pipekit_phase_progress(self, item: Item, done: int, total: int | None, label: str | None) -> None:
        assert self.tracker is not None
        self.tracker.phase_progress(done, total, label, key=item.id)

    @hookimpl
    def pipekit_phase_complete(self, item: Item, phase: PhaseDefinition, result: PhaseOutcome) -> None:
        assert self.tracker is not None
        self._counted.setdefault(item.id, set()).add(phase.num)
        self.tracker.complete_phase(
            result.tokens_in, result.tokens_out, result.cost_usd, key=item.id, duration=result.duration_seconds
        )

    @hookimpl
    def pipekit_phase_retry(self, item: Item, error: BaseException, attempt: int, result: AttemptOutcome) -> None:
        assert self.tracker is not None
        if isinstance(error, Retry):  # asked for (a rate limit), not a failure
            self.tracker.request_retry(attempt, error.after, *result.usage, key=item.id)
            return
        message = _first_line(result.message or str(error))
        self.tracker.retry_phase(message, attempt, *result.usage, key=item.id)

    @hookimpl
    def pipekit_phase_fail(
        self, item: Item, phase: PhaseDefinition, error: BaseException, result: AttemptOutcome
    ) -> None:
        assert self.tracker is not None
        self._counted.setdefault(item.id, set()).add(phase.num)
        self.tracker.fail_phase(
            _first_line(result.message or str(error)),
            *result.usage,
            key=item.id,
            duration=round(result.duration_seconds, 6),
            critical=phase.critical,
        )

    @hookimpl
    def pipekit_phase_skip(self, item: Item, phase: PhaseDefinition, reason: str) -> None:
        assert self.tracker is not None
        self._counted.setdefault(item.id, set()).add(phase.num)
        self.tracker.skip_phase(self._positions.get(phase.num, phase.num), phase.name, reason, key=item.id)

    @hookimpl
    def pipekit_item_finish(self, item: Item) -> None:
        assert self.tracker is not None
        # Phases a failed or interrupted item leaves pending are not work of this run
        # (those after a batch phase it waits on may be: --wait starts the item again).
        if item.state.status != WAITING:
            self.tracker.settle_phases(self._count(item, (PENDING,)))
        self.tracker.complete_item(key=item.id, status=item.state.status)
        self._sync()

    @hookimpl
    def pipekit_batch_event(
        self,
        run: Run,
        event: str,
        provider: str,
        batch_id: str | None,
        requests: int,
        status: str,
        counts: dict[str, int],
        next_poll: float | None,
    ) -> None:
        if self.tracker is None:
            return
        view = BatchView(provider, batch_id, requests, status, dict(counts))
        self.tracker.batch_event(event, view, age=_batch_age(run, batch_id), next_poll=next_poll)

    @hookimpl(tryfirst=True)
    def pipekit_run_finish(self, run: Run) -> None:
        """Draw the last frame before the summary prints."""
        if self.tracker is not None:
            self._sync()
            self.close()

    def print_above(self, line: str) -> bool:
        """Print ``line`` above the live rich display; False when none is drawn."""
        tracker = self.tracker
        if not isinstance(tracker, ProgressTracker):
            return False
        from rich.text import Text

        tracker.console.print(Text(line))
        return True

    def close(self) -> None:
        """Stop the display (idempotent)."""
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.stop()


class MessagePrinter:
    """The terminal side of ``pipekit_report_message``: engine messages on stderr,
    above the live display when one is drawn, ``info`` ones hidden by ``-q``.
    """

    name = "progress-messages"

    def __init__(self, stream: IO[str], quiet: bool, display: ProgressPlugin | None = None) -> None:
        self.stream = stream
        self.quiet = quiet
        self.display = display

    @hookimpl(trylast=True)
    def pipekit_report_message(self, message: str, level: str) -> bool:
        if self.quiet and level == "info":
            return True
        line = format_message(message, level)
        if self.display is None or not self.display.print_above(line):
            self.stream.write(line + "\n")
            self.stream.flush()
        return True


@hookimpl
def pipekit_addoption(parser: Parser) -> None:
    """``--heartbeat``: how often plain progress says what is still running."""
    parser.getgroup("output").addoption(
        "--heartbeat",
        type=float,
        default=HEARTBEAT_SECONDS,
        metavar="SECONDS",
        help=f"plain progress: after SECONDS without a line, print what is running "
        f"(default {HEARTBEAT_SECONDS:g}; 0: never)",
    )


def choose_display(mode: str, stderr: IO[str], stdout: IO[str], jsonl: bool) -> str:
    """``rich``, ``simple`` or ``none`` for ``--progress MODE``.

    ``auto`` draws rich only on a terminal, and not when ``--jsonl`` events go
    to the same terminal (they would tear the live display).
    """
    if mode != "auto":
        return mode
    if not is_rich_supported(stderr):
        return "simple"
    if jsonl and _isatty(stdout):
        return "simple"
    return "rich"


def _batch_age(run: Run, batch_id: str | None) -> float:
    """Seconds since the batch's submission record was written (0 when the run does not hold it)."""
    batcher = run.batches
    record = next((r for r in batcher.pending() if r.get("batch_id") == batch_id), None) if batcher else None
    try:
        created = datetime.fromisoformat(str(record["created_at"])) if record else None
    except ValueError:
        created = None
    return 0.0 if created is None else max(0.0, (datetime.now(timezone.utc) - created).total_seconds())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register the display chosen by ``--progress`` and the message printer."""
    quiet = bool(config.getoption("quiet"))
    messages = MessagePrinter(sys.stderr, quiet)
    config.pluginmanager.register(messages, MessagePrinter.name)
    config.add_cleanup(lambda: config.pluginmanager.unregister(messages))
    if quiet:
        return
    display = choose_display(
        config.getoption("progress") or "auto", sys.stderr, config.stdout, bool(config.getoption("jsonl"))
    )
    if display == "none":
        return
    plugin = messages.display = ProgressPlugin(
        display == "rich",
        sys.stderr,
        verbose=config.getoption("verbose") or 0,
        heartbeat=config.getoption("heartbeat", HEARTBEAT_SECONDS),
    )
    config.pluginmanager.register(plugin, ProgressPlugin.name)

    def cleanup() -> None:
        plugin.close()
        config.pluginmanager.unregister(plugin)

    config.add_cleanup(cleanup)
