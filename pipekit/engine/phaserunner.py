"""Runs one item's phases in order (the seed's Pattern 3): cache, start, execute
with timeout and retries, then complete or fail, saving state before any
observer is told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
import time
from typing import Any

from pipekit.engine import attempts
from pipekit.engine.arguments import handler_arguments
from pipekit.engine.attempts import Retries
from pipekit.engine.attempts import as_result
from pipekit.engine.batching.cell import run_batch_phase
from pipekit.engine.control import Item
from pipekit.engine.control import RunControl
from pipekit.engine.control import no_notify
from pipekit.engine.outcome import AttemptOutcome
from pipekit.engine.subwork import PhaseReports
from pipekit.engine.subwork import phase_context
from pipekit.engine.waiting import admit
from pipekit.engine.waiting import interruptible_sleep
from pipekit.engine.waiting import no_release
from pipekit.engine.waiting import race
from pipekit.execution.base import LocalExecutor
from pipekit.execution.base import PhaseExecutor
from pipekit.execution.base import run_in_thread
from pipekit.execution.remote import WorkerLost
from pipekit.notify import HookNotifier
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import PhaseTimeoutError
from pipekit.outcomes import Retry
from pipekit.pipeline.checkpoints import release_attempt
from pipekit.pipeline.checkpoints import release_dead_attempts
from pipekit.pipeline.context import CostCapExceeded
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import Injector
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.fingerprint import phase_fingerprint
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import DONE_STATUSES
from pipekit.state.model import PENDING
from pipekit.state.model import WAITING
from pipekit.state.model import PipelineState
from pipekit.state.store import encode_item_id
from pipekit.state.writer import StateWriter


class PhaseRunner:
    """Executes phases in sequence with state, progress, and error handling.

    :param phases: the phase definitions, in any order (run by ``num``).
    :param state_manager: the item's manager; its state is loaded or created if needed.
    :param progress_tracker: an optional seed ``ProgressTracker``/``SimpleProgress``.
    :param notify: a ``HookNotifier``.
    :param output_root: folder under which each item gets its ``ctx.output_dir``
        (default: ``outputs`` in the state directory).
    :param force: ignore caches (completed phases must be reset by the caller).
    :param executor: where handlers execute (``LocalExecutor`` by default).
    :param control: the run's shared stop flags and counters.
    :param stale_check: says whether a completed phase must run again (its
        fingerprint changed and the run includes stale phases; ``pipekit.stale.checker``).
    :param price: prices ``ctx.record_usage`` calls (the ``pipekit_price_usage`` hook).
    :param writer: writes the state after each change, before observers are
        told (``pipekit.state.writer``; by default on the event loop's thread).
    """

    def __init__(
        self,
        phases: Sequence[PhaseDefinition],
        state_manager: PipelineStateManager,
        progress_tracker: Any = None,
        *,
        notify: HookNotifier | None = None,
        item: Item | None = None,
        output_root: Path | None = None,
        force: bool = False,
        executor: PhaseExecutor | None = None,
        control: RunControl | None = None,
        injectors: dict[str, Injector] | None = None,
        item_dir_name: str | None = None,
        stale_check: Callable[[PhaseDefinition, PipelineState], bool] | None = None,
        price: Callable[..., float | None] | None = None,
        writer: StateWriter | None = None,
        batches: Any = None,
    ) -> None:
        self.phases = sorted(phases, key=lambda p: p.num)
        self.state = state_manager
        self.progress = progress_tracker
        self.notify = notify or no_notify
        self.output_root = output_root
        self.force = force
        self.executor = executor or LocalExecutor()
        self.control = control
        self._injectors = injectors if injectors is not None else {}
        self._item = item
        self._item_dir_name = item_dir_name
        self.stale_check = stale_check
        self._price = price
        self.writer = writer or StateWriter()
        #: The run's ``pipekit.engine.batching.batcher.Batcher`` (batch phases wait on it).
        self.batches = batches
        #: The next phase, started in the same write that completed the one before.
        self._prestarted: PhaseDefinition | None = None
        self._in_loop = False
        self._item_output_dir: Path | None = None
        #: The error that failed a critical phase in this run (what fails the item).
        self.failure: BaseException | None = None

    # -- the loop -------------------------------------------------------------

    async def run_async(self) -> bool:
        """Run every phase not completed or skipped; False if a critical phase failed
        or the run was interrupted.
        """
        own_control = self.control is None
        if self.control is None:
            self.control = RunControl()
        self._ensure_state()
        release_dead_attempts(self.state.store, self.state.state)
        held = self.writer.hold(self.state)
        try:
            ok = await self._run_phases()
            if self.control.on_item_end is not None:
                self.control.on_item_end(self.failure, ok and not self.control.stop_new_phases)
            return ok
        finally:
            if held:
                await self.writer.release(self.state)
            if own_control:
                self.control.close()

    async def _run_phases(self) -> bool:
        assert self.control is not None
        self._in_loop = True
        for phase in self.phases:
            if self._prestarted is not phase:
                if self.state.state.phases[phase.num].status in DONE_STATUSES:
                    if self.stale_check is None or not self.stale_check(phase, self.state.state):
                        continue
                    self.state.reset_phase(phase.num, keep_subitems=True)  # written with the phase's start
                if self.control.interrupted.is_set():
                    return False
                if self.control.stop_new_phases:
                    return True  # stopped (a budget), not failed: the item is left to a later run
            ok = await self.run_phase(phase)
            if self.control.interrupted.is_set():
                await self._interrupt_prestarted()
                return False
            if not ok and phase.critical:
                return False
            if self.state.state.phases[phase.num].status == WAITING:
                return True  # the later phases need its answers: a later pass goes on
        return True

    def run(self) -> bool:
        """Synchronous ``run_async`` for scripts: ``PhaseRunner(...).run()``."""
        return asyncio.run(self.run_async())

    def _ensure_state(self) -> None:
        manager = self.state
        if manager._state is None and not manager.load_state():
            manager.create_state({}, self.phases)

    @property
    def item(self) -> Item:
        """The item being run, as hooks see it."""
        if self._item is None:
            state = self.state.state
            self._item = Item(state.item_id, state.metadata, self.state, 1)
        return self._item

    # -- one phase --------------------------------------------------------------

    async def run_phase(self, phase: PhaseDefinition) -> bool:
        """Run ``phase`` to its end (with retries); True when completed or skipped."""
        assert self.control is not None
        item, manager = self.item, self.state
        if attempts.gave_up(phase, manager.state.phases[phase.num]):
            return False  # it failed its max_attempts times: not run again until a reset
        if phase.batch is not None and self.batches is not None:
            prestarted, self._prestarted = self._prestarted is phase, None
            return await run_batch_phase(self, phase, self.batches, prestarted)
        if self._prestarted is phase:
            self._prestarted = None
            return await self._execute(phase, no_release)
        if phase.cache_check is not None and not self.force:
            hit = await self._check_cache(phase)
            if hit is None:
                return False
            if hit:
                manager.skip_phase(phase.num, "cache", output=hit if isinstance(hit, str) else None)
                await self._saved()
                self.control.phases_skipped += 1
                self.notify.phase_skip(item, phase, "cache")
                return True
        release = await self._admit(phase, first=True)
        if release is None or self.control.stop_new_phases:
            if release is not None:
                release()
            return not self.control.interrupted.is_set()
        manager.start_phase(phase.num, executor=phase.executor)
        await self._saved()
        return await self._execute(phase, release)

    async def _execute(self, phase: PhaseDefinition, release: Callable[[], None]) -> bool:
        """Run a phase whose start is on disk: its handler, with retries, to its end."""
        assert self.control is not None
        manager = self.state
        self._announce_start(phase)
        if self.progress is not None:
            self.progress.start_phase(phase.num, phase.name)
        started = time.monotonic()
        fingerprint, error = await self._fingerprint(phase)
        if error is not None:
            release()
            return await self._fail(attempts.failed(phase, self._attempts(phase), error, prefix="fingerprint: "))
        retries = Retries(phase, self.executor)
        while True:
            outcome, ctx = await self._attempt(phase, release, started)
            if outcome.error is None:
                manager.state.phases[phase.num].fingerprint = fingerprint  # saved by _complete
                return await self._complete(outcome)
            delay = retries.delay(outcome.error, attempts.attempts_used(manager.state.phases[phase.num]))
            if delay is not None and isinstance(outcome.error, Retry) and outcome.error.after:
                if self.control.gate is not None:
                    who = f"item {self.item.id!r} phase {phase.name!r}"
                    self.control.gate.pause(ctx.limits_used, outcome.error.after, who)
            if delay is None or self.control.stop_new_phases:
                # (a run that is stopping, a budget reached, starts no new attempt)
                if delay is not None and not self.control.interrupted.is_set():
                    await self._retry(outcome)
                    return await self._leave_pending(phase)
                return await self._fail(outcome)
            await self._retry(outcome)
            admitted = None if await self._interruptible_sleep(delay) else await self._admit(phase)
            if self.control.stop_new_phases and not self.control.interrupted.is_set():
                if admitted is not None:
                    admitted()
                return await self._leave_pending(phase)  # a budget stopped the run during the wait
            if admitted is None:
                interrupted = PhaseInterrupted()
                return await self._fail(
                    attempts.failed(phase, self._attempts(phase), interrupted, duration=time.monotonic() - started)
                )
            release = admitted
            manager.start_phase(phase.num, executor=phase.executor)
            await self._saved()

    async def _attempt(
        self, phase: PhaseDefinition, release: Callable[[], None], started: float
    ) -> tuple[AttemptOutcome, PhaseContext]:
        """Run the handler once (its slot is held): how the attempt ended, and its ``ctx``."""
        attempt = self._attempts(phase)
        ctx = self._context(phase, attempt)
        future: asyncio.Future[Any] | None = None
        try:
            future = self.executor.start(phase, phase.handler, self._arguments(phase, ctx), ctx)
            value, error = await self._race(phase, future)
        finally:
            if future is None:
                release()
            else:  # a sync handler abandoned at its timeout still holds its slot while it runs
                self.executor.when_stopped(future, release)
        usage = (ctx.tokens_in, ctx.tokens_out, ctx.cost_usd)
        killed = phase.isolate == "process" or self.executor.hard_timeouts  # at a timeout
        if isinstance(error, WorkerLost) or (isinstance(error, PhaseTimeoutError) and killed):
            # The attempt's usage died with its process: its checkpoints' usage is counted by no one yet.
            release_attempt(self.state.store, self.state.state.item_id, phase.name, attempt)
        if error is None:
            try:
                result = as_result(phase, value)
                if phase.max_cost is not None and usage[2] + result.cost_usd > phase.max_cost:
                    # What the PhaseResult reports counts toward max_cost like ctx.record_cost.
                    ctx.cost_usd = usage[2] + result.cost_usd
                    ctx._check_max_cost()
            except (TypeError, CostCapExceeded) as exc:
                error = exc
                if isinstance(exc, CostCapExceeded):
                    usage = (usage[0] + result.tokens_in, usage[1] + result.tokens_out, ctx.cost_usd)
            else:
                executor = result.executor or ctx.executor
                duration = time.monotonic() - started
                return attempts.completed(phase, attempt, result, usage, duration, executor), ctx
        return attempts.failed(phase, attempt, error, usage, time.monotonic() - started), ctx

    def _attempts(self, phase: PhaseDefinition) -> int:
        """The phase's attempts so far, across runs (the one in flight included)."""
        return self.state.state.phases[phase.num].attempts

    async def _interrupt_prestarted(self) -> None:
        """A phase started with the end of the one before it, interrupted before
        its handler ran, is recorded like any phase in flight at an interruption."""
        phase, self._prestarted = self._prestarted, None
        if phase is not None:
            self._announce_start(phase)
            await self._fail(attempts.failed(phase, self._attempts(phase), PhaseInterrupted()))

    def _announce_start(self, phase: PhaseDefinition) -> None:
        """Count the execution and tell observers (its start is on disk)."""
        assert self.control is not None
        self.control.phases_started += 1
        self.notify.phase_start(self.item, phase)

    def _startable_after(self, done: PhaseDefinition) -> PhaseDefinition | None:
        """The phase the loop runs after ``done``, if it can start at once: no cache
        check to run first, no slot or rate limit to wait for, no stop asked."""
        assert self.control is not None
        if not self._in_loop or self.control.interrupted.is_set() or self.control.stop_new_phases:
            return None  # (a caller of run_phase picks the next phase itself)
        following = next((p for p in self.phases if p.num > done.num), None)
        if following is None or self.state.state.phases[following.num].status in DONE_STATUSES:
            return None
        if following.cache_check is not None and not self.force:
            return None
        if attempts.gave_up(following, self.state.state.phases[following.num]):
            return None
        if self.control.gate is not None and self.control.gate.gates(following):
            return None
        return following

    async def _fingerprint(self, phase: PhaseDefinition) -> tuple[Any, BaseException | None]:
        """What produced this execution (``pipekit.stale.fingerprint``); a user's ``fingerprint=``
        callable runs in a thread, under the phase's timeout, never on the event loop."""
        outputs = self.state.state.phase_outputs
        if phase.fingerprint is None:
            try:
                return phase_fingerprint(phase, self.phases, outputs, _no_arguments), None
            except Exception as exc:
                return None, exc
        ctx = self._context(phase, self.state.state.phases[phase.num].attempts)
        arguments = self._arguments(phase, ctx, phase.fingerprint)
        kwargs: dict[str, Any] = {
            "definition": phase,
            "phases": self.phases,
            "outputs": dict(outputs),  # a copy: read by another thread
            "arguments_for": lambda _: arguments,
        }
        future = run_in_thread(phase_fingerprint, kwargs, name=f"pipekit-{phase.name}-fingerprint")
        return await self._race(phase, future)

    async def _admit(self, phase: PhaseDefinition, first: bool = False) -> Callable[[], None] | None:
        assert self.control is not None
        return await admit(self.control, phase, PhaseReports(self.notify, self.item, phase).wait, first)

    async def _check_cache(self, phase: PhaseDefinition) -> Any:
        """The cache's answer; None (after failing the phase) if the check itself failed."""
        assert phase.cache_check is not None
        ctx = self._context(phase, self.state.state.phases[phase.num].attempts + 1)
        func = phase.cache_check
        future = self.executor.start(phase, func, self._arguments(phase, ctx, func), ctx)
        value, error = await self._race(phase, future)
        if error is None:
            return value if value else False
        # The check is user code that ran: observers see it start and fail like any execution.
        self.state.start_phase(phase.num, executor=phase.executor)
        await self._saved()
        self._announce_start(phase)
        await self._fail(attempts.failed(phase, self._attempts(phase), error, prefix="cache check: "))
        return None

    async def _race(self, phase: PhaseDefinition, future: asyncio.Future[Any]) -> tuple[Any, BaseException | None]:
        assert self.control is not None
        return await race(self.control, self.executor, phase, future)

    async def _interruptible_sleep(self, seconds: float) -> bool:
        """Sleep; True if the run was interrupted meanwhile."""
        assert self.control is not None
        return await interruptible_sleep(self.control, seconds)

    async def _saved(self) -> None:
        """Write the changes made so far (observers are told only after this)."""
        await self.writer.flush(self.state)

    # -- endings ----------------------------------------------------------------

    async def _complete(self, outcome: AttemptOutcome) -> bool:
        assert self.control is not None and outcome.phase is not None
        phase = outcome.phase
        self.state.complete_phase(
            phase.num,
            outcome.output,
            *outcome.usage,
            duration_seconds=round(outcome.duration_seconds, 6),
            output_file=outcome.output_file,
            executor=outcome.executor,
        )
        self.control.phases_completed += 1
        self.control.add_usage(*outcome.usage)  # before the next start: a budget may stop it
        following = self._startable_after(phase)
        if following is not None:
            # One write ends this phase and starts the next: each is on disk before
            # anyone hears of it or acts on it, for half the writes.
            self.state.start_phase(following.num, executor=following.executor)
            self._prestarted = following
        await self._saved()
        if self.progress is not None:
            self.progress.complete_phase(
                tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out, cost_usd=outcome.cost_usd
            )
        self.notify.phase_complete(self.item, phase, outcome)
        return True

    async def _retry(self, outcome: AttemptOutcome) -> None:
        """Record a failed attempt that will be tried again, then tell observers."""
        assert self.control is not None and outcome.phase is not None and outcome.error is not None
        self.state.record_failed_attempt(outcome.phase.num, outcome.message, *outcome.usage)
        await self._saved()
        self.control.add_usage(*outcome.usage)
        self.notify.phase_retry(self.item, outcome.phase, outcome.error, outcome.attempt, outcome)

    async def _leave_pending(self, phase: PhaseDefinition) -> bool:
        """A retry the run stopped before it began (a budget): work not started, so not a
        failure. The phase goes back to pending (its attempts and usage so far are kept)
        and the next run starts it."""
        recorded = self.state.state.phases[phase.num]
        recorded.status, recorded.started_at, recorded.reason, recorded.error = PENDING, None, None, None
        self.state.save_state()
        await self._saved()
        return True

    async def _fail(self, outcome: AttemptOutcome) -> bool:
        assert self.control is not None and outcome.phase is not None and outcome.error is not None
        phase = outcome.phase
        self.state.fail_phase(
            phase.num,
            outcome.message,
            reason=outcome.reason,
            traceback=outcome.traceback,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            cost_usd=outcome.cost_usd,
            duration_seconds=round(outcome.duration_seconds, 6),
            critical=phase.critical,
        )
        await self._saved()
        if phase.critical:
            self.failure = outcome.error
        self.control.phases_failed += 1
        self.control.add_usage(*outcome.usage)
        self.notify.phase_fail(self.item, phase, outcome.error, outcome)
        return False

    # -- arguments --------------------------------------------------------------

    def _context(self, phase: PhaseDefinition, attempt: int) -> PhaseContext:
        gate = self.control.gate if self.control is not None else None
        reports = PhaseReports(self.notify, self.item, phase)
        return phase_context(self.state, self.phases, phase, attempt, self._output_dir(), self._price, gate, reports)

    def _output_dir(self) -> Path:
        """The item's ``ctx.output_dir`` (made by the context when asked for)."""
        if self._item_output_dir is None:
            root = self.output_root
            if root is None:
                state_dir = getattr(self.state.store, "state_dir", None)
                root = self.output_root = Path(state_dir or ".").resolve() / "outputs"
            self._item_output_dir = root / (self._item_dir_name or encode_item_id(self.state.state.item_id))
        return self._item_output_dir

    def _arguments(
        self, phase: PhaseDefinition, ctx: PhaseContext, func: Callable[..., Any] | None = None
    ) -> dict[str, Any]:
        state, func = self.state.state, func or phase.handler
        return handler_arguments(self.phases, state, phase, ctx, func, self._injectors, self.executor)


def _no_arguments(func: Callable[..., Any]) -> dict[str, Any]:
    return {}
