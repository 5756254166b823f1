"""A run over many items: locking, resume, concurrency, interruption, exit codes.

The per-item phase protocol lives in ``pipekit.engine.phaserunner``; this module
decides which items run, with how much concurrency, and what the run returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
import time
from typing import Any

from pipekit.config import Config
from pipekit.engine import claims
from pipekit.engine.arguments import with_values
from pipekit.engine.batching import drive as batching
from pipekit.engine.budget import Forecast
from pipekit.engine.budget import Spending
from pipekit.engine.budget import make_forecast
from pipekit.engine.busy import BusyItems
from pipekit.engine.control import Item
from pipekit.engine.control import RunControl
from pipekit.engine.exitcode import items_exit_code
from pipekit.engine.failfast import Breaker
from pipekit.engine.finished import Finished
from pipekit.engine.finished import find_finished
from pipekit.engine.finished import unfinished
from pipekit.engine.phaserunner import PhaseRunner
from pipekit.engine.preflight import Preflight
from pipekit.engine.preflight import preflight
from pipekit.engine.result import RunResult
from pipekit.engine.signals import Interrupter
from pipekit.execution.base import LocalExecutor
from pipekit.execution.base import PhaseExecutor
from pipekit.notify import HookNotifier
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.pipeline.items import ItemSpec
from pipekit.pipeline.limits import declared_limits
from pipekit.pipeline.limits import make_gate
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.phases import Injector
from pipekit.stale.checker import StalePolicy
from pipekit.stale.plan import stale_report
from pipekit.state.holder import LeaseLostError
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import COMPLETED
from pipekit.state.model import COMPLETED_WITH_ERRORS
from pipekit.state.model import FAILED
from pipekit.state.model import PENDING
from pipekit.state.model import PipelineState
from pipekit.state.model import state_outcome
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id
from pipekit.state.writer import StateWriter


#: Item status when the run was interrupted while it was in flight.
INTERRUPTED = "interrupted"
#: Item status when the run stopped starting phases (a budget) before it finished.
STOPPED = "stopped"


class Run:
    """One run of a pipeline over its selected items, as hooks see it.

    :param config: the run's configuration.
    :param pipeline: the loaded pipeline.
    :param items: the selected items.
    :param store: where state lives.
    :param output_root: folder of the items' ``ctx.output_dir``.
    """

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        items: Sequence[ItemSpec],
        store: StateStore,
        output_root: Path,
        *,
        workers: int = 1,
        force: bool = False,
        from_phase: int | None = None,
        executor: PhaseExecutor | None = None,
        notifier: HookNotifier | None = None,
        keep_states: bool = False,
        on_state: Callable[[PipelineState], None] | None = None,
        max_cost: float | None = None,
        stale_policy: StalePolicy | None = None,
        skip_busy: bool = False,
    ) -> None:
        # Over 60 lines: one assignment per attribute that hooks read, each documented here.
        self.config = config
        self.pipeline = pipeline
        self.items = items
        self.store = store
        self.output_root = output_root
        self.workers = max(1, workers)
        self.force = force
        self.from_phase = from_phase
        #: Which completed-but-stale phases run again (``--rerun-stale``, ``on_change``).
        self.stale_policy = stale_policy
        self.executor = executor or LocalExecutor()
        self.notify = notifier or HookNotifier.of(config.pluginmanager)
        self.control = RunControl()
        #: ``--maxfail`` / ``--maxfail-same``: stops the run after too many failed items (or None).
        self.breaker = Breaker.of(config, self.control, self._say)
        #: Writes states off the event loop when items run concurrently.
        self._writer = StateWriter(threads=min(self.workers, 8) if self.workers > 1 else 0)
        #: Rate limits declared in the module's ``LIMITS`` (checked against the phases).
        self.limits = declared_limits(pipeline.module, pipeline.phases)
        #: The cost forecast and the ``--max-cost`` cap.
        self.spending = Spending(
            self.control,
            max_cost,
            self._say,
            noun=pipeline.item_noun,
            forecast_now=self._forecast,
            on_reached=self._budget_reached,
        )
        #: Where state lives, for humans.
        self.state_location = store.location
        self.total_items = len(items)
        self.total_phases = len(pipeline.phases)
        self.started_at = time.monotonic()
        self.items_completed = 0
        self.items_failed = 0
        self.items_interrupted = 0
        self.items_stopped = 0
        self.items_waiting = 0  # for a provider's batch (``pipekit.engine.batching``)
        self.batches = batching.batcher_for(self)
        #: Items another process holds: waited for once the others are started (or skipped).
        self.busy = BusyItems(store, self._writer, self.control, self._say, skip=skip_busy, workers=self.workers)
        #: Items that were already finished when the run started.
        self.items_already_done = 0
        #: Items whose state file could not be read.
        self.items_unreadable = 0
        #: Dollars these items' states had recorded before this run (earlier runs).
        self.earlier_cost_usd = 0.0
        #: Items in flight right now, by id.
        self.in_flight: dict[str, Item] = {}
        self.exit_status: ExitCode | None = None
        self.fatal_error: BaseException | None = None
        #: Final states by id, kept only when asked (the library API): a CLI run
        #: over 100,000 items must not hold them all in memory.
        self.states: dict[str, PipelineState] = {}
        self._keep_states = keep_states
        #: Called with each selected item's final state (the library's ``on_state``).
        self._on_state = on_state
        #: Whether each selected item's final state goes to the caller (``states`` or ``on_state``).
        self._hands_out_states = keep_states or on_state is not None
        #: States of items that ended with a failed phase, for the summary.
        self.failed_states: dict[str, PipelineState] = {}
        self._injectors: dict[str, Injector] = {}
        self._module_warning_given = False
        #: Finished items skipped unread, with their cost (None: each item is read).
        self._finished: Finished | None = None
        #: What the start of the run read of the items' states (set by ``execute``).
        self.preflight: Preflight | None = None
        self._interrupter = Interrupter(self.control, self._say, self.notify.signal_handler)

    # -- totals, for plugins ----------------------------------------------------

    @property
    def tokens_in(self) -> int:
        """Input tokens spent in this run."""
        return self.control.tokens_in

    @property
    def tokens_out(self) -> int:
        """Output tokens spent in this run."""
        return self.control.tokens_out

    @property
    def cost_usd(self) -> float:
        """Dollars spent in this run."""
        return self.control.cost_usd

    @property
    def items_busy(self) -> int:
        """Items another pipekit process was running (or took over from this one), skipped (``--skip-busy``)."""
        return self.busy.skipped

    @property
    def elapsed_seconds(self) -> float:
        """Wall time since the run started."""
        return time.monotonic() - self.started_at

    # -- the run ------------------------------------------------------------------

    async def execute(self) -> ExitCode:
        """Process every item; fires run_start and run_finish; returns the exit code."""
        self.preflight = preflight(
            self.pipeline,
            self.store,
            self.items,
            self.stale_policy,
            force=self.force,
            from_phase=self.from_phase,
            max_cost=self.spending.max_cost,
        )
        if self.preflight.plan is not None:
            for line in stale_report(self.preflight.plan):
                self._say(line, "notice")
        self.control.gate = make_gate(self.limits, self.pipeline.phases, self._say, self.control.resources)
        self.spending.start(self.preflight.forecast)
        self.notify.run_start(self)
        restore = self._interrupter.install()
        try:
            self.spending.check_at_start()
            await self.executor.astart()
            await batching.drive(self, self._process_all)
        finally:
            restore()
            self.control.close()
            self._writer.close()
            await self.executor.aclose()
            self.exit_status = self._exit_status()
            self.busy.finish(self.pipeline.item_noun)
            self.spending.finish()
            self.notify.run_finish(self, int(self.exit_status))
        return self.exit_status

    async def _process_all(self) -> None:
        slots = asyncio.Semaphore(self.workers)
        tasks: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()

        async def start(index: int, item_id: str, metadata: dict[str, Any], lock: ItemLock | None = None) -> None:
            await slots.acquire()
            if self.control.stop_new_phases:
                slots.release()
                if lock is not None:
                    lock.release_soon()
                return
            task = asyncio.ensure_future(self._process_item(index, item_id, metadata, lock))
            tasks.add(task)
            task.add_done_callback(finished)

        stale_check = self.stale_policy is not None and self.stale_policy.active
        # The start-of-run plan already found the finished items (see _already_done).
        self._finished = None if self.preflight is None else self.preflight.finished
        if self._finished is None and not (self.force or self.from_phase is not None or stale_check):
            # One streamed, indexed query instead of a read per item, where the store has
            # one (not when staleness is checked: that needs each item's state).
            self._finished = find_finished(self.store, self.pipeline.phases, self.items)
        specs, skipped, cost = unfinished(self.items, self._finished, per_item=self._hands_out_states)
        self.items_already_done += skipped
        self.items_completed += skipped
        self.earlier_cost_usd += cost
        try:
            await claims.walk(
                self.busy.claims, specs, self._already_done, self.control, self.busy.add, start,
                self.busy.claim_size)
            settle = None if stale_check else claims.finished_elsewhere(
                self.store, self.pipeline.phases, lambda: self._finished, self._finished_elsewhere)
            while True:  # the items other processes hold, once every other item is started
                if tasks:
                    await asyncio.shield(asyncio.gather(*tasks))
                if not self.busy.waiting or self.control.stop_new_phases:
                    break
                await self.busy.drain(start, settle)
        except asyncio.CancelledError:
            # The caller cancelled the run (pipekit.arun under a timeout, say):
            # stop as an interrupt does, so in-flight phases are recorded.
            self.control.stop_new_phases = True
            self.control.interrupted.set()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if self.fatal_error is not None:
            raise self.fatal_error

    def _forecast(self) -> Forecast:
        return make_forecast(
            self.store,
            (item_id for item_id, _ in self.items),
            self.pipeline.phases,
            rerun=lambda p: self.force or (self.from_phase is not None and p.num >= self.from_phase),
        )

    def _budget_reached(self, spent: float, cap: float) -> None:
        self.notify.budget_reached(self, spent, cap)

    def _finished_elsewhere(self, item_id: str, metadata: dict[str, Any], cost_usd: float) -> None:
        """Count an item another driver finished while this run waited for it."""
        assert self._finished is not None
        self._finished.add(item_id, cost_usd)
        if self._hands_out_states and self._already_done(item_id, metadata):
            return  # it read the state to keep it, and counted it
        self._count_done(cost_usd)

    def _already_done(self, item_id: str, metadata: dict[str, Any]) -> bool:
        """Cheap check without the lock: finished items need no lock and fire no hooks."""
        if self.force or self.from_phase is not None:
            return False
        if self._finished is not None and item_id not in self._finished:
            # Found at the start of the run (the stale report, or the store's index): not read again.
            return False  # unfinished, new or unreadable: looked at under the lock
        state = self._saved_state(item_id)
        if state is None:
            return False
        if self._finished is None:
            if not state.is_done or any(state.metadata.get(k) != v for k, v in metadata.items()):
                return False
            if self._reruns_stale(state):
                return False
        # else: reached only when final states are kept: ``unfinished`` counts the others at once.
        self._count_done(state.total_cost_usd)
        self._keep(state)
        return True

    def _saved_state(self, item_id: str) -> PipelineState | None:
        """The item's saved state, reconciled with the pipeline; None when it has none
        or it is unreadable (reported, under the lock, by ``_process_item``)."""
        manager = PipelineStateManager(item_id, self.store)
        try:
            if not manager.load_state(by_reference=self.executor.takes_stored_outputs):
                return None
        except StateFileError:
            return None
        manager.reconcile(self.pipeline.phases)
        return manager.state

    def _count_done(self, cost_usd: float) -> None:
        self.items_already_done += 1
        self.items_completed += 1
        self.earlier_cost_usd += cost_usd

    async def _process_item(
        self, index: int, item_id: str, metadata: dict[str, Any], lock: ItemLock | None = None
    ) -> None:
        try:
            lock = lock or await self._writer.lock_item(self.store, item_id)
            if lock is None:
                self.busy.add(index, item_id, metadata)
                return
            try:
                await self._process_locked_item(index, item_id, metadata)
            finally:
                lock.release_soon()  # its last write is durable: the lease may go, off this thread
        except LeaseLostError as exc:  # paused past its lease, the item was taken over: the new holder's now
            self._say(f"{exc}; item {item_id!r} left to it", "warning")
            self.busy.add(index, item_id, metadata)
        except Exception as exc:  # a failed state write (every later one would fail too) or a bug: stop, exit 3
            if self.fatal_error is None:
                self.fatal_error = exc
            self.control.stop_new_phases = True

    async def _process_locked_item(self, index: int, item_id: str, metadata: dict[str, Any]) -> None:
        manager = self._prepare_state(item_id, metadata)
        if manager is None:
            return
        try:
            # Not written yet: the write that starts the item's first phase includes it.
            await self._run_prepared(index, item_id, manager)
        finally:
            await self._writer.release(manager)

    async def _run_prepared(self, index: int, item_id: str, manager: PipelineStateManager) -> None:
        state = manager.state
        if state.is_done and not self._reruns_stale(state):
            self.items_already_done += 1
            self.items_completed += 1
            self._keep(state)
            return
        item = Item(item_id, state.metadata, manager, index)
        self.in_flight[item_id] = item
        self.notify.item_start(item)
        try:
            ok = await PhaseRunner(
                self.pipeline.phases, manager,
                notify=self.notify, item=item,
                output_root=self.output_root,
                force=self.force,
                executor=self.executor,
                control=self.control,
                injectors=self._injectors,
                item_dir_name=encode_item_id(item_id),
                stale_check=self.stale_policy,
                price=self.config.hook.pipekit_price_usage,
                writer=self._writer, batches=self.batches,
            ).run_async()
            self._finish_item(manager, ok)
            await self._writer.flush(manager)
        finally:
            del self.in_flight[item_id]
        self._keep(state)
        self.notify.item_finish(item)

    def _reruns_stale(self, state: PipelineState) -> bool:
        return self.stale_policy is not None and self.stale_policy.item_needs_rerun(state)

    def _prepare_state(self, item_id: str, metadata: dict[str, Any]) -> PipelineStateManager | None:
        """Load (or create) the item's state under its lock and apply this run's options."""
        manager = PipelineStateManager(item_id, self.store)
        # The new state, its module and any reset below are written once, by the caller.
        self._writer.hold(manager)
        phases = self.pipeline.phases
        try:
            # Large outputs stay in the store when the workers read them there.
            loaded = self.busy.claims.load(manager, by_reference=self.executor.takes_stored_outputs)
        except StateFileError as exc:
            self.items_unreadable += 1
            self._say(f"{exc}; item {item_id!r} not run (fix the file or `pipekit reset`)", "error")
            return None
        if not loaded:
            manager.create_state(metadata, phases)
            manager.state.pipeline_module = self.pipeline.path
            manager.save_state()
            return manager
        state = manager.state
        self.earlier_cost_usd += state.total_cost_usd
        changed = manager.reconcile(phases)
        if any(state.metadata.get(k) != v for k, v in metadata.items()):
            state.metadata.update(metadata)
            changed = True
        if state.pipeline_module != self.pipeline.path:
            if state.pipeline_module and not self._module_warning_given:
                self._module_warning_given = True
                self._say(
                    f"state in {self.state_location} was written by "
                    f"{state.pipeline_module}; this run uses {self.pipeline.path}", "warning"
                )
            state.pipeline_module = self.pipeline.path
            changed = True
        to_reset = [
            phase.num
            for phase in phases
            if state.phases[phase.num].status != PENDING
            and (self.force or (self.from_phase is not None and phase.num >= self.from_phase))
        ]
        if to_reset:
            manager.reset_phases(to_reset)
        elif changed:
            manager.save_state()
        return manager

    def _finish_item(self, manager: PipelineStateManager, ok: bool) -> None:
        state = manager.state
        if self.control.interrupted.is_set() and not state.is_done:
            status, self.items_interrupted = INTERRUPTED, self.items_interrupted + 1
        elif ok and batching.waits(state):
            status, self.items_waiting = batching.WAITING, self.items_waiting + 1
        elif ok and (outcome := state_outcome(state, self.pipeline.phases)) in (COMPLETED, COMPLETED_WITH_ERRORS):
            status, self.items_completed = outcome, self.items_completed + 1
        elif ok:
            status, self.items_stopped = STOPPED, self.items_stopped + 1
        else:
            status, self.items_failed = FAILED, self.items_failed + 1
        if state.status != status:
            state.status = status
            manager.save_state()
        if any(p.status == FAILED for p in state.phases.values()):
            self.failed_states[state.item_id] = state

    def _exit_status(self) -> ExitCode:
        return items_exit_code(self)

    def interrupt(self) -> None:
        """Stop as SIGINT does: abandon in-flight phases (recorded interrupted), start none."""
        self._interrupter.interrupt()

    def _keep(self, state: PipelineState) -> None:
        if self._hands_out_states:  # the caller gets values, not a worker's references
            state = with_values(state, self.store)
        if self._keep_states:
            self.states[state.item_id] = state
        if self._on_state is not None:
            self._on_state(state)

    def _say(self, message: str, level: str = "info") -> None:
        self.notify.report(message, level)

    def result(self) -> RunResult:
        """The run's ``RunResult``."""
        assert self.exit_status is not None
        return RunResult(
            exit_status=self.exit_status,
            states=dict(self.states),
            items_total=self.total_items,
            items_completed=self.items_completed,
            items_failed=self.items_failed,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=self.cost_usd,
        )
