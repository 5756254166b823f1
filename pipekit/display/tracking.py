"""Progress bookkeeping shared by both displays: counters, items in flight, the ETA."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
import time

from pipekit.display.batches import BatchView


Clock = Callable[[], float]


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
    #: Attempts a handler ended with ``Retry`` (a 429, say): tried again, not failed.
    requested_retries: int = 0

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
    #: The current phase's last ``ctx.progress``, as shown ("chapter 17/40"); "" when none.
    progress: str = ""
    #: Clock reading when a plain line last showed this item's progress.
    progress_shown: float = float("-inf")


class BaseProgress:
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
        #: Provider batches outstanding, by batch id.
        self.batches: dict[str, BatchView] = {}
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
        item.progress = ""
        self.state.current_phase = phase_num
        self.state.current_phase_name = name

    def phase_progress(
        self, done: int, total: int | None, label: str | None = None, *, key: Hashable | None = None
    ) -> None:
        """The running phase of an item reports ``done`` of ``total`` (``ctx.progress``)."""
        item = self._item(key)
        amount = f"{done}/{total}" if total is not None else str(done)
        item.progress = f"{label} {amount}" if label else amount
        self._show_progress(item)

    def _show_progress(self, item: ItemProgress) -> None:
        """Say an item's new progress (the live display draws it on the item's line)."""

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

    def request_retry(
        self,
        attempt: int,
        after: float | None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        *,
        key: Hashable | None = None,
    ) -> None:
        """Attempt ``attempt`` of the item's current phase asked for another (``Retry``), spending this."""
        item = self._item(key)
        self.state.requested_retries += 1
        self._add_usage(item, tokens_in, tokens_out, cost_usd)
        self._show_requested_retry(item, attempt, after)

    def _show_requested_retry(self, item: ItemProgress, attempt: int, after: float | None) -> None:
        pass

    def batch_event(
        self,
        event: str,
        view: BatchView,
        *,
        age: float = 0.0,
        next_poll: float | None = None,
    ) -> None:
        """A provider batch was sent, polled or collected (``pipekit_batch_event``), or
        the run waits ``next_poll`` seconds to poll it again; ``age`` is how long ago it was recorded.

        A line is shown for each change of the batch's status, not for each poll;
        a collected batch is no longer outstanding.
        """
        key = view.batch_id or f"{view.provider}:(not sent)"
        now = self.clock()
        known = self.batches.get(key)
        view.since = now - age if known is None else known.since
        view.next_poll_at = None if next_poll is None else now + next_poll
        if event == "batch_completed":
            self.batches.pop(key, None)
        else:
            self.batches[key] = view
        if event in ("batch_polled", "batch_completed") and (known is None or known.status != view.status):
            self._show_batch(view)

    def _show_batch(self, view: BatchView) -> None:
        """Say a batch's new status (the live display draws it on the batch's line)."""
