"""Plain progress lines, one per meaningful event: for logs, pipes and CI."""

from __future__ import annotations

from collections.abc import Hashable
import sys
import threading
import time
from typing import IO

from pipekit.display.batches import BatchView
from pipekit.display.batches import status_line
from pipekit.display.format import clock
from pipekit.display.format import count_of
from pipekit.display.format import duration as format_duration
from pipekit.display.format import money
from pipekit.display.format import running
from pipekit.display.format import singular
from pipekit.display.tracking import BaseProgress
from pipekit.display.tracking import Clock
from pipekit.display.tracking import ItemProgress


#: Seconds without a line after which ``SimpleProgress`` says what is still running.
HEARTBEAT_SECONDS = 30.0
#: In-flight items listed by one heartbeat line.
HEARTBEAT_ITEMS = 4
#: A plain line shows an item's progress (``ctx.progress``) at most once in this many seconds.
PROGRESS_LINE_SECONDS = 5.0


class SimpleProgress(BaseProgress):
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
        heading = f"{count_of(state.total_items, state.item_noun)} x {state.total_phases} phases"
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
        busy = [
            f"{item.label} phase {item.phase}/{self.state.total_phases} {item.phase_name} "
            f"{running(now - item.phase_started)}"
            for item in items[:HEARTBEAT_ITEMS]
            if item.phase_started is not None
        ]
        more = f" (+{len(items) - HEARTBEAT_ITEMS} more)" if len(items) > HEARTBEAT_ITEMS else ""
        self._line(f"pipekit: {self.overview()}; running: {', '.join(busy) or '-'}{more}")

    def overview(self) -> str:
        """Items and phases done, elapsed, ETA and cost, on one line."""
        s = self.state
        done = s.completed_items + s.failed_items
        text = (
            f"{done}/{s.total_items} {s.item_noun}, phases {s.executed_phases + s.skipped_phases}/{s.total_work}, "
            f"elapsed {clock(self.elapsed)}, ETA {clock(self.eta)}"
        )
        if s.failed_items:
            text += f", {s.failed_items} failed"
        if self.show_cost:
            text += f", {money(s.total_cost_usd)}"
            if s.earlier_cost_usd:
                text += f" (+{money(s.earlier_cost_usd)} in earlier runs)"
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
        text = f"{self._where(item)} {outcome} in {format_duration(duration)}"
        if self.show_cost and cost:
            text += f" {money(cost)} (run {money(self.state.total_cost_usd)})"
        self._line(f"{text}: {error}" if error else text)

    def _show_progress(self, item: ItemProgress) -> None:
        now = self.clock()
        if now - item.progress_shown >= PROGRESS_LINE_SECONDS:
            item.progress_shown = now
            self._line(f"{self._where(item)} {item.progress}")

    def _show_retry(self, item: ItemProgress, error: str, attempt: int) -> None:
        self._line(f"{self._where(item)} attempt {attempt} failed, retrying: {error}")

    def _show_requested_retry(self, item: ItemProgress, attempt: int, after: float | None) -> None:
        if self.verbose:  # dozens a run when an API rate-limits: not worth a line by default
            wait = f" (after {after:g}s)" if after else ""
            self._line(f"{self._where(item)} attempt {attempt}: retry requested{wait}")

    def _show_skip(self, item: ItemProgress, reason: str) -> None:
        self._line(f"{self._where(item)} skipped ({reason})")

    def _show_item_end(self, item: ItemProgress, status: str) -> None:
        s = self.state
        text = f"[{item.index}/{s.total_items}] {item.label} {status}"
        text += f" ({s.completed_items + s.failed_items}/{s.total_items} {s.item_noun} done"
        if self.show_cost:
            text += f", {money(item.cost_usd)} this {singular(s.item_noun)}"
        self._line(text + ")")

    def _show_batch(self, view: BatchView) -> None:
        self._line(status_line(view))

    def _line(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            stream.write(text + "\n")
            stream.flush()
            self._last_line = self.clock()



