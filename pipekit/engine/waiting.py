"""What a phase waits for: its concurrency slot and rate limits, its handler
under a timeout, a retry's backoff; each gives way to the run's interruption."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import heapq
import threading
from typing import Any

from pipekit.engine.control import RunControl
from pipekit.execution.base import PhaseExecutor
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import PhaseTimeoutError
from pipekit.pipeline.limits import WaitCallback
from pipekit.pipeline.phases import PhaseDefinition


def no_release() -> None:
    """The release of a phase that took no slot."""


async def admit(
    control: RunControl, phase: PhaseDefinition, waiting: WaitCallback, first: bool = False
) -> Callable[[], None] | None:
    """Wait for the phase's concurrency slot, resources and rate limits; the release, or
    None when the run was interrupted first (or, before the ``first``
    attempt, told to start no new phase).
    """
    gate = control.gate
    if gate is None or not gate.gates(phase):
        return no_release
    entering = asyncio.ensure_future(gate.enter(phase, waiting))
    stopping = asyncio.ensure_future(control.stopping.wait()) if first else None
    try:
        await asyncio.wait(
            {entering, control.interruption(), *([stopping] if stopping else [])},
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        if stopping is not None:
            stopping.cancel()
    if not entering.done():
        entering.cancel()
        await asyncio.wait({entering})
    if entering.cancelled():
        return None
    release = entering.result()
    if control.interrupted.is_set() or (first and control.stopping.is_set()):
        release()
        return None
    return release


async def race(
    control: RunControl, executor: PhaseExecutor, phase: PhaseDefinition, future: asyncio.Future[Any]
) -> tuple[Any, BaseException | None]:
    """Wait for ``future``, the phase's timeout or the run's interruption: ``(value, error)``."""
    running = executor.running(future) if phase.timeout_seconds is not None else None
    interruption = control.interruption()
    if running is not None:
        # The timeout counts from the handler's start, not from a wait in a cluster's queue.
        await asyncio.wait({future, running, interruption}, return_when=asyncio.FIRST_COMPLETED)
        interruption = control.interruption()
    await _first_of(future, interruption, phase.timeout_seconds)
    if future.done():
        if future.cancelled():
            return None, PhaseInterrupted()
        exc = future.exception()
        return (future.result(), None) if exc is None else (None, exc)
    executor.abandon(future)
    if isinstance(future, asyncio.Task):
        # Let a cancelled coroutine run its cleanup; it cannot take longer than this.
        await asyncio.wait({future}, timeout=1.0)
    if control.interrupted.is_set():
        return None, PhaseInterrupted()
    assert phase.timeout_seconds is not None
    return None, PhaseTimeoutError(phase.name, phase.timeout_seconds)


async def _first_of(future: asyncio.Future[Any], interruption: asyncio.Future[Any], timeout: float | None) -> None:
    """Until ``future`` or ``interruption`` is done, or ``timeout`` seconds pass:
    ``asyncio.wait`` without its sets of futures and results (once per phase:
    on the driver's hot path)."""
    if future.done() or interruption.done():
        return
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not woken.done():
            woken.set_result(None)

    future.add_done_callback(wake)
    interruption.add_done_callback(wake)
    deadline = None if timeout is None else deadlines(loop).add(loop.time() + timeout, wake)
    try:
        await woken
    finally:
        if deadline is not None:
            deadline[2] = None  # (cancelled)
        future.remove_done_callback(wake)
        interruption.remove_done_callback(wake)


class Deadlines:
    """The phases' timeouts of one event loop behind one loop timer, armed for the
    earliest: a phase that ends before its timeout (nearly all) costs a heap entry,
    not a timer of the loop's own to make and cancel.

    An entry is ``[when, sequence, callback]``; a callback of None is cancelled
    (dropped when it comes up, or all at once when they are most of the heap).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[list[Any]] = []
        self._added = 0
        self._timer: asyncio.TimerHandle | None = None
        #: The heap's size at which its cancelled entries are dropped.
        self._limit = 128

    def add(self, when: float, callback: Callable[[None], None]) -> list[Any]:
        """Call ``callback(None)`` at loop time ``when``; set the entry's callback to None to cancel."""
        self._added += 1
        entry = [when, self._added, callback]
        if len(self._heap) >= self._limit:
            self._compact()
        heapq.heappush(self._heap, entry)
        timer = self._timer
        if timer is None or when < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(when, self._fire)
        return entry

    def _compact(self) -> None:
        # Amortised: the next compaction comes after as many additions as live entries kept.
        live = [entry for entry in self._heap if entry[2] is not None]
        heapq.heapify(live)
        self._heap = live
        self._limit = max(128, 2 * len(live))

    def _fire(self) -> None:
        self._timer = None
        heap, now = self._heap, self.loop.time()
        while heap and (heap[0][2] is None or heap[0][0] <= now):
            callback = heapq.heappop(heap)[2]
            if callback is not None:
                callback(None)
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        if heap:
            self._timer = self.loop.call_at(heap[0][0], self._fire)


#: The ``Deadlines`` of the loop each thread ran phases on last.
_local = threading.local()


def deadlines(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The ``Deadlines`` of ``loop``, the running loop of this thread."""
    table: Deadlines | None = getattr(_local, "deadlines", None)
    if table is None or table.loop is not loop:
        table = _local.deadlines = Deadlines(loop)
    return table


async def interruptible_sleep(control: RunControl, seconds: float) -> bool:
    """Sleep; True if the run was interrupted meanwhile."""
    try:
        await asyncio.wait_for(control.interrupted.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    return True
