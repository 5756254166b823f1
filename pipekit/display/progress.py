"""Progress display (the seed's Pattern 2): a live rich view on a terminal, plain lines elsewhere.

``create_progress_tracker`` picks the implementation::

    tracker = create_progress_tracker(total_items=10, total_phases=5, item_noun="books")
    tracker.start()
    for i, item in enumerate(items, 1):
        tracker.start_item(i, item.label)
        for phase_num, phase in enumerate(phases, 1):
            tracker.start_phase(phase_num, phase.name)
            result = execute(phase, item)
            tracker.complete_phase(tokens_in=result.tokens_in, cost_usd=result.cost)
        tracker.complete_item()
    tracker.stop()

Several items may be in flight at once: pass ``key=`` (any hashable, e.g.
the item id) to the item and phase methods; without it they act on the item
started last. Both classes only update counters on an event; the rich one
redraws on its own timer, so a run with many items and workers stays cheap.
``rich`` is imported only when the rich display is used.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
import sys
import threading
import time
from typing import IO
from typing import TYPE_CHECKING
from typing import Any


if TYPE_CHECKING:
    from rich.console import Console
    from rich.console import RenderableType
    from rich.live import Live

Clock = Callable[[], float]

#: Seconds without a line after which ``SimpleProgress`` says what is still running.
HEARTBEAT_SECONDS = 30.0
#: In-flight items listed by one heartbeat line.
HEARTBEAT_ITEMS = 4


@dataclass
class ProgressState:
    """Current state of pipeline progress (the seed's fields, then pipekit's)."""

    total_items: int
    total_phases: int
    current_item: int = 0
    current_item_label: str = ""
    current_phase: int = 0
    current_phase_name: str = ""
    completed_items: int = 0
    completed_phases: int = 0
    total_tokens_in: int = 0
    total_tokens_out: int = 0
    total_cost_usd: float = 0.0
    started_at: datetime | None = None
    item_noun: str = "items"  # "books", "minds", "courses", etc.
    #: Items that ended with a failed critical phase.
    failed_items: int = 0
    #: Phases that failed for good (their last attempt).
    failed_phases: int = 0
    #: Phases counted as done without being executed: cache hits, phases already
    #: complete before this run, phases an unfinished item leaves for a later run.
    skipped_phases: int = 0
    #: Attempts that failed and were retried.
    retried_attempts: int = 0
    #: Dollars spent on these items by earlier runs (from their state).
    earlier_cost_usd: float = 0.0

    @property
    def total_work(self) -> int:
        """Phases of every item: ``total_items * total_phases``."""
        return self.total_items * self.total_phases

    @property
    def executed_phases(self) -> int:
        """Phases executed to their end in this run (completed or failed)."""
        return self.completed_phases + self.failed_phases

    @property
    def phases_left(self) -> int:
        """Phases still to execute (skipped and already complete phases are not work)."""
        return max(0, self.total_work - self.executed_phases - self.skipped_phases)


@dataclass
class ItemProgress:
    """One item in flight."""

    index: int
    label: str
    started: float
    phase: int = 0
    phase_name: str = ""
    #: Clock reading when the current phase started, None between phases.
    phase_started: float | None = None
    #: Dollars spent by this item in this run, and by its current phase (retries included).
    cost_usd: float = 0.0
    phase_cost_usd: float = 0.0


class _BaseProgress:
    """Bookkeeping shared by both displays; subclasses decide what to show."""

    def __init__(
        self,
        total_items: int,
        total_phases: int,
        item_noun: str = "items",
        show_cost: bool = True,
        *,
        clock: Clock = time.monotonic,
        title: str = "",
    ) -> None:
        self.state = ProgressState(total_items, total_phases, item_noun=item_noun)
        self.show_cost = show_cost
        self.clock = clock
        #: A heading (e.g. the pipeline's name and worker count).
        self.title = title
        #: Items in flight by key, in start order.
        self.in_flight: dict[Hashable, ItemProgress] = {}
        self._current: Hashable | None = None
        self._t0: float | None = None

    # -- the seed's operations --------------------------------------------------

    def start(self) -> None:
        """Start the clock (and the display)."""
        self.state.started_at = datetime.now(timezone.utc)
        self._t0 = self.clock()

    def stop(self) -> None:
        """End the display."""

    def start_item(self, index: int, label: str, *, key: Hashable | None = None) -> None:
        """Item number ``index`` (1-based) called ``label`` starts."""
        key = label if key is None else key
        self.in_flight[key] = ItemProgress(index, label, self.clock())
        self._current = key
        self.state.current_item = index
        self.state.current_item_label = label

    def start_phase(self, phase_num: int, name: str, *, key: Hashable | None = None) -> None:
        """Phase number ``phase_num`` (1-based position) of an item starts."""
        item = self._item(key)
        item.phase, item.phase_name, item.phase_started = phase_num, name, self.clock()
        item.phase_cost_usd = 0.0
        self.state.current_phase = phase_num
        self.state.current_phase_name = name

    def complete_phase(
        self,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        *,
        key: Hashable | None = None,
        duration: float | None = None,
    ) -> None:
        """The item's current phase completed, with its usage."""
        item = self._item(key)
        duration = self._phase_duration(item, duration)
        self.state.completed_phases += 1
        if tokens_in or tokens_out or cost_usd:
            self._add_usage(item, tokens_in, tokens_out, cost_usd)
        self._show_phase_end(item, "done", duration, item.phase_cost_usd, "")
        item.phase_started = None

    def complete_item(self, *, key: Hashable | None = None, status: str = "completed") -> None:
        """The item is done for this run; ``status`` is its state's status."""
        key = self._current if key is None else key
        item = self.in_flight.pop(key, None) if key is not None else None
        if status.startswith("completed"):
            self.state.completed_items += 1
        elif status == "failed":
            self.state.failed_items += 1
        if item is not None:
            self._show_item_end(item, status)

    # -- pipekit's additions ---------------------------------------------------

    def fail_phase(
        self,
        error: str = "",
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        *,
        key: Hashable | None = None,
        duration: float | None = None,
        critical: bool = True,
    ) -> None:
        """The item's current phase failed for good."""
        item = self._item(key)
        duration = self._phase_duration(item, duration)
        self.state.failed_phases += 1
        self._add_usage(item, tokens_in, tokens_out, cost_usd)
        outcome = "FAILED" if critical else "failed (non-critical)"
        self._show_phase_end(item, outcome, duration, item.phase_cost_usd, error)
        item.phase_started = None

    def retry_phase(
        self,
        error: str,
        attempt: int,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        *,
        key: Hashable | None = None,
    ) -> None:
        """Attempt ``attempt`` of the item's current phase failed (spending this) and will be retried."""
        item = self._item(key)
        self.state.retried_attempts += 1
        self._add_usage(item, tokens_in, tokens_out, cost_usd)
        self._show_retry(item, error, attempt)

    def skip_phase(self, phase_num: int, name: str, reason: str = "cache", *, key: Hashable | None = None) -> None:
        """A phase was skipped without executing (its cache had the work)."""
        item = self._item(key)
        item.phase, item.phase_name, item.phase_started = phase_num, name, None
        self.state.skipped_phases += 1
        self._show_skip(item, reason)

    def settle_phases(self, count: int) -> None:
        """``count`` phases need no work in this run (already complete, or left for later)."""
        self.state.skipped_phases += count

    def skip_items(self, count: int) -> None:
        """``count`` items were already finished: done, with no work."""
        self.state.completed_items += count
        self.state.skipped_phases += count * self.state.total_phases

    # -- figures ------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return 0.0 if self._t0 is None else max(0.0, self.clock() - self._t0)

    @property
    def eta(self) -> float | None:
        """Seconds left: the run's time per executed phase times the phases left.

        The time per phase is wall time over phases executed, so it already
        accounts for items running concurrently. None until a phase has ended.
        """
        state = self.state
        left = state.phases_left
        if left == 0:
            return 0.0
        if state.executed_phases == 0:
            return None
        return self.elapsed / state.executed_phases * left

    # -- internals -------------------------------------------------------------

    def _item(self, key: Hashable | None) -> ItemProgress:
        key = self._current if key is None else key
        item = self.in_flight.get(key) if key is not None else None
        if item is None:
            # Driven without start_item (e.g. by a bare PhaseRunner): an anonymous item.
            index = self.state.current_item or 1
            if key is not None:
                label = str(key)
            else:
                label = key = self.state.current_item_label or f"{self.state.item_noun} {index}"
            item = self.in_flight[key] = ItemProgress(index, label, self.clock())
            self._current = key
        return item

    def _phase_duration(self, item: ItemProgress, duration: float | None) -> float:
        if duration is not None:
            return duration
        return 0.0 if item.phase_started is None else max(0.0, self.clock() - item.phase_started)

    def _add_usage(self, item: ItemProgress, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        self.state.total_tokens_in += tokens_in
        self.state.total_tokens_out += tokens_out
        self.state.total_cost_usd += cost_usd
        item.cost_usd += cost_usd
        item.phase_cost_usd += cost_usd

    def _show_phase_end(self, item: ItemProgress, outcome: str, duration: float, cost: float, error: str) -> None:
        pass

    def _show_retry(self, item: ItemProgress, error: str, attempt: int) -> None:
        pass

    def _show_skip(self, item: ItemProgress, reason: str) -> None:
        pass

    def _show_item_end(self, item: ItemProgress, status: str) -> None:
        pass


def format_seconds(seconds: float | None) -> str:
    """``H:MM:SS`` (``--:--:--`` when unknown)."""
    if seconds is None:
        return "--:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_running(seconds: float) -> str:
    """A short running time: ``4.2s``, ``12:05``, ``1:02:03``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        whole = int(seconds)
        return f"{whole // 60}:{whole % 60:02d}"
    return format_seconds(seconds)


def format_cost(cost: float) -> str:
    """Dollars with cents, and tenths of a cent below a dollar."""
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"


class SimpleProgress(_BaseProgress):
    """One plain line per meaningful event, no escape codes: for logs, pipes and CI.

    :param stream: where lines go (``sys.stderr`` when None).
    :param clock: seconds, monotonic (injectable for tests).
    :param verbose: also print a line when a phase starts.
    :param heartbeat_seconds: after this long without a line, say what is
        still running (0 disables it).
    """

    def __init__(
        self,
        total_items: int,
        total_phases: int,
        item_noun: str = "items",
        show_cost: bool = True,
        *,
        stream: IO[str] | None = None,
        clock: Clock = time.monotonic,
        title: str = "",
        verbose: int = 0,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(total_items, total_phases, item_noun, show_cost, clock=clock, title=title)
        self.stream = stream
        self.verbose = verbose
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._last_line = clock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Print the heading and start the heartbeat."""
        super().start()
        state = self.state
        heading = f"{state.total_items} {state.item_noun} x {state.total_phases} phases"
        self._line(f"pipekit: {self.title}: {heading}" if self.title else f"pipekit: {heading}")
        if self.heartbeat_seconds > 0 and self._thread is None:
            self._stopped.clear()
            self._thread = threading.Thread(target=self._beat, name="pipekit-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def start_phase(self, phase_num: int, name: str, *, key: Hashable | None = None) -> None:
        super().start_phase(phase_num, name, key=key)
        if self.verbose:
            self._line(f"{self._where(self._item(key))} started")

    def heartbeat(self) -> None:
        """Print what is running if no line was printed for ``heartbeat_seconds``."""
        if not self.in_flight or self.clock() - self._last_line < self.heartbeat_seconds:
            return
        now = self.clock()
        items = list(self.in_flight.values())
        running = [
            f"{item.label} phase {item.phase}/{self.state.total_phases} {item.phase_name} "
            f"{format_running(now - item.phase_started)}"
            for item in items[:HEARTBEAT_ITEMS]
            if item.phase_started is not None
        ]
        more = f" (+{len(items) - HEARTBEAT_ITEMS} more)" if len(items) > HEARTBEAT_ITEMS else ""
        self._line(f"pipekit: {self.overview()}; running: {', '.join(running) or '-'}{more}")

    def overview(self) -> str:
        """Items and phases done, elapsed, ETA and cost, on one line."""
        s = self.state
        done = s.completed_items + s.failed_items
        text = (
            f"{done}/{s.total_items} {s.item_noun}, phases {s.executed_phases + s.skipped_phases}/{s.total_work}, "
            f"elapsed {format_seconds(self.elapsed)}, ETA {format_seconds(self.eta)}"
        )
        if s.failed_items:
            text += f", {s.failed_items} failed"
        if self.show_cost:
            text += f", {format_cost(s.total_cost_usd)}"
            if s.earlier_cost_usd:
                text += f" (+{format_cost(s.earlier_cost_usd)} in earlier runs)"
        return text

    def _beat(self) -> None:
        while not self._stopped.wait(min(self.heartbeat_seconds, 1.0)):
            self.heartbeat()

    def _where(self, item: ItemProgress) -> str:
        text = f"[{item.index}/{self.state.total_items}] {item.label}"
        if item.phase:
            text += f" phase {item.phase}/{self.state.total_phases} {item.phase_name}"
        return text

    def _show_phase_end(self, item: ItemProgress, outcome: str, duration: float, cost: float, error: str) -> None:
        text = f"{self._where(item)} {outcome} in {duration:.2f}s"
        if self.show_cost and cost:
            text += f" {format_cost(cost)} (run {format_cost(self.state.total_cost_usd)})"
        self._line(f"{text}: {error}" if error else text)

    def _show_retry(self, item: ItemProgress, error: str, attempt: int) -> None:
        self._line(f"{self._where(item)} attempt {attempt} failed, retrying: {error}")

    def _show_skip(self, item: ItemProgress, reason: str) -> None:
        self._line(f"{self._where(item)} skipped ({reason})")

    def _show_item_end(self, item: ItemProgress, status: str) -> None:
        s = self.state
        text = f"[{item.index}/{s.total_items}] {item.label} {status}"
        text += f" ({s.completed_items + s.failed_items}/{s.total_items} {s.item_noun} done"
        if self.show_cost:
            text += f", {format_cost(item.cost_usd)} this {_singular(s.item_noun)}"
        self._line(text + ")")

    def _line(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            stream.write(text + "\n")
            stream.flush()
            self._last_line = self.clock()


def _singular(noun: str) -> str:
    return noun[:-1] if noun.endswith("s") and len(noun) > 1 else noun


class ProgressTracker(_BaseProgress):
    """A live rich display on a terminal, redrawn a few times a second.

    Shows a bar of items done in ``item_noun``, phases done, elapsed time, ETA,
    tokens, cost (this run and earlier runs), failures in red, and one line
    per item in flight with its phase and how long it has been running.

    :param console: a ``rich.console.Console`` (stderr when None).
    :param clock: seconds, monotonic (injectable for tests).
    :param refresh_per_second: redraws per second.
    """

    def __init__(
        self,
        total_items: int,
        total_phases: int,
        item_noun: str = "items",
        show_cost: bool = True,
        *,
        console: Console | None = None,
        clock: Clock = time.monotonic,
        title: str = "",
        refresh_per_second: float = 4.0,
    ) -> None:
        super().__init__(total_items, total_phases, item_noun, show_cost, clock=clock, title=title)
        if console is None:
            from rich.console import Console

            console = Console(file=sys.stderr)
        self.console = console
        self.refresh_per_second = refresh_per_second
        self._live: Live | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the clock and the live display (it redraws on its own thread)."""
        super().start()
        from rich.live import Live

        self._live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=self.refresh_per_second,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()

    def stop(self) -> None:
        """Draw the last frame and leave it on the screen."""
        live, self._live = self._live, None
        self._stopped = True  # the last frame shows no ETA for work this run will not do
        if live is not None:
            live.stop()

    def render(self) -> RenderableType:
        """The display as it is now (what each refresh draws)."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        s = self.state
        done = s.completed_items + s.failed_items
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True)
        counts = Text(f"{done:,}/{s.total_items:,} {s.item_noun}")
        if s.failed_items:
            counts.append(f"  {s.failed_items} failed", style="bold red")
        head.add_row(
            Text(self.title or "pipekit", style="bold"),
            ProgressBar(total=max(1, s.total_items), completed=done),
            counts,
        )
        facts = Text(
            f"phases {s.executed_phases + s.skipped_phases:,}/{s.total_work:,}"
            f"  elapsed {format_seconds(self.elapsed)}"
            f"  ETA {format_seconds(None if self._stopped and s.phases_left else self.eta)}"
        )
        if s.failed_phases:
            facts.append(f"  failed phases {s.failed_phases}", style="red")
        lines: list[RenderableType] = [head, facts]
        if self.show_cost:
            money = f"tokens {s.total_tokens_in:,} in / {s.total_tokens_out:,} out"
            money += f"  cost {format_cost(s.total_cost_usd)}"
            if s.earlier_cost_usd:
                money += f"  (+{format_cost(s.earlier_cost_usd)} in earlier runs)"
            lines.append(Text(money))
        lines.extend(self._in_flight_lines())
        return Group(*lines)

    def _in_flight_lines(self) -> list[RenderableType]:
        from rich.table import Table
        from rich.text import Text

        items = list(self.in_flight.values())
        if not items:
            return []
        room = max(1, self.console.height - 5)
        shown = items if len(items) <= room else items[: room - 1]
        now = self.clock()
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=max(10, self.console.width // 3))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, justify="right")
        for item in shown:
            phase = f"phase {item.phase}/{self.state.total_phases} {item.phase_name}" if item.phase else "starting"
            running = format_running(now - item.phase_started) if item.phase_started is not None else ""
            table.add_row(Text(f"  {item.label}", style="cyan"), phase, running)
        lines: list[RenderableType] = [table]
        if len(shown) < len(items):
            lines.append(Text(f"  ... and {len(items) - len(shown)} more in flight", style="dim"))
        return lines


def is_rich_supported(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (stderr by default) is a terminal that rich can drive."""
    stream = stream if stream is not None else sys.stderr
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    from rich.console import Console

    console = Console(file=stream)
    return console.is_terminal and not console.is_dumb_terminal


def create_progress_tracker(
    total_items: int,
    total_phases: int,
    item_noun: str = "items",
    show_cost: bool = True,
    force_simple: bool = False,
    **options: Any,
) -> ProgressTracker | SimpleProgress:
    """The rich ``ProgressTracker`` when stderr is a terminal rich supports, else ``SimpleProgress``.

    :param options: passed to the chosen class (``clock``, ``title``, and
        ``console`` or ``stream``/``verbose``/``heartbeat_seconds``); those the
        chosen class does not take are ignored.
    """
    if force_simple or not is_rich_supported():
        simple = {k: v for k, v in options.items() if k in ("clock", "title", "stream", "verbose", "heartbeat_seconds")}
        return SimpleProgress(total_items, total_phases, item_noun, show_cost, **simple)
    rich = {k: v for k, v in options.items() if k in ("clock", "title", "console", "refresh_per_second")}
    return ProgressTracker(total_items, total_phases, item_noun, show_cost, **rich)
