"""Where a phase's handler executes: the seam between the runner and the work.

The runner asks an executor to ``start`` a call and gets back an awaitable; it
races that awaitable against the phase's timeout and the run's interruption,
and abandons it when either comes first. Executors never touch state.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from collections.abc import Callable
import contextvars
import queue
import threading
from typing import TYPE_CHECKING
from typing import Any

from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition


if TYPE_CHECKING:
    from pipekit.execution.code import PipelineCode
    from pipekit.execution.remote import RemoteCall
    from pipekit.execution.remote import RemoteOutcome


if TYPE_CHECKING:
    from pipekit.execution.isolate import IsolatedCalls


class PhaseExecutor:
    """Base of executors: ``start`` returns an awaitable of the handler's return value."""

    #: Name recorded in ``--executor`` and ``pipekit plugins``.
    name = "base"
    #: True when ``abandon`` really stops a sync handler (its process is killed),
    #: so a timed-out sync phase may be retried in the same run.
    hard_timeouts = False
    #: True when the executor places each phase by its ``resources`` itself (Dask
    #: workers declare theirs); False: the run caps phases by ``--resources``.
    places_resources = False
    #: True when the executor's workers read large outputs from the run's store
    #: themselves: a handler's inputs that a worker stored (``StoredOutput``) go to
    #: it as references, and every input as JSON, for
    #: ``pipekit.pipeline.outputs.received_inputs`` to turn into what it receives.
    takes_stored_outputs = False

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None = None,
    ) -> asyncio.Future[Any]:
        """Start ``func(**kwargs)`` for ``phase``; the future holds its return value.

        :param ctx: the attempt's context (also in ``kwargs`` when the handler asks
            for it); remote executors replay the worker's usage onto it.
        """
        raise NotImplementedError

    def abandon(self, future: asyncio.Future[Any]) -> None:
        """The runner no longer wants ``future``'s result (timeout or interrupt)."""
        future.cancel()

    def running(self, future: asyncio.Future[Any]) -> asyncio.Future[Any] | None:
        """A future done once the call behind ``future`` has started to run, for
        an executor whose calls may first wait (in a cluster's queue): the
        phase's timeout counts from then. None (the default): calls start at once."""
        return None

    def when_stopped(self, future: asyncio.Future[Any], callback: Callable[[], None]) -> None:
        """Call ``callback`` once the call behind ``future`` no longer runs (the
        runner then frees the phase's concurrency slot). By default: when
        ``future`` is done; an executor whose abandoned calls run on says later."""
        if future.done():
            callback()
        else:
            future.add_done_callback(lambda _: callback())

    async def astart(self) -> None:
        """Get ready before the first phase (connect, start a cluster): outside any
        phase's timeout."""

    async def aclose(self) -> None:
        """Release what the executor holds (pools, clients)."""


class LocalExecutor(PhaseExecutor):
    """Runs handlers in this process: coroutines on the event loop, sync
    functions each in a thread of their own.

    A thread per sync call (not a bounded pool) means a handler abandoned at
    its timeout keeps only its own thread busy: it never takes a worker slot
    from the rest of the run. The threads are daemons, so the process exits
    without waiting for one that is stuck. A phase marked
    ``isolate="process"`` runs in a worker process instead, killed when
    abandoned (``pipekit.execution.isolate``).
    """

    name = "local"

    def __init__(self) -> None:
        self._isolated: IsolatedCalls | None = None
        #: Sync calls whose thread still runs, with what to call when it ends.
        self._threads: dict[asyncio.Future[Any], list[Callable[[], None]]] = {}
        #: Whether each function started so far is a coroutine function (asked once, not per phase).
        self._async: dict[Callable[..., Any], bool] = {}

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None = None,
    ) -> asyncio.Future[Any]:
        if phase.isolate == "process" and func is phase.handler:
            if self._isolated is None:
                from pipekit.execution.isolate import IsolatedCalls

                self._isolated = IsolatedCalls()
            return self._isolated.start(phase, func, kwargs, ctx)
        is_async = self._async.get(func)
        if is_async is None:
            is_async = self._async[func] = asyncio.iscoroutinefunction(func)
        if is_async:
            return asyncio.ensure_future(_call_async(func, kwargs))
        waiting: list[Callable[[], None]] = []
        future = run_in_thread(func, kwargs, name=f"pipekit-{phase.name}", on_exit=lambda: self._ended(future))
        self._threads[future] = waiting
        return future

    def when_stopped(self, future: asyncio.Future[Any], callback: Callable[[], None]) -> None:
        waiting = self._threads.get(future)
        if waiting is not None and future.cancelled():
            waiting.append(callback)  # abandoned, but its thread cannot be stopped: wait for it
        else:
            super().when_stopped(future, callback)

    def _ended(self, future: asyncio.Future[Any]) -> None:
        for callback in self._threads.pop(future, []):
            callback()

    async def aclose(self) -> None:
        if self._isolated is not None:
            self._isolated.close()


async def _call_async(func: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> Any:
    try:
        return await func(**kwargs)
    except (KeyboardInterrupt, SystemExit) as exc:
        # Inside a task these would escape the event loop and end the whole run.
        raise HandlerExit(exc) from exc


class HandlerExit(Exception):
    """A handler raised ``SystemExit`` or ``KeyboardInterrupt``: the phase fails, the run goes on."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            f"handler raised {type(exc).__name__}{exc.args!r}; a phase fails by raising an exception"
        )


def run_in_thread(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    name: str,
    on_exit: Callable[[], None] | None = None,
) -> asyncio.Future[Any]:
    """Run ``func(**kwargs)`` in a daemon thread of its own; a future of its result.

    The thread is an idle one from an earlier call when there is one (starting
    a thread costs more than a no-op phase), else a new one, so a call stuck
    in its thread never delays another. A result that arrives after the future
    was cancelled is dropped. ``on_exit`` is called on the event loop when the
    call is over, even then. The call sees the caller's context variables.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    _THREADS.submit(_ThreadCall(func, kwargs, name, future, on_exit, _reports(loop)), name)
    return future


class _ThreadCall:
    """One ``run_in_thread`` call: run in a cached thread, its outcome handed back to the loop."""

    __slots__ = ("func", "kwargs", "name", "future", "on_exit", "reports", "context", "outcome")

    def __init__(
        self,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        name: str,
        future: asyncio.Future[Any],
        on_exit: Callable[[], None] | None,
        reports: _Reports,
    ) -> None:
        self.func, self.kwargs, self.name, self.future = func, kwargs, name, future
        self.on_exit, self.reports = on_exit, reports
        self.context = contextvars.copy_context()
        self.outcome: tuple[bool, Any] = (False, None)

    def __call__(self) -> Callable[[], None]:
        """Run the call (in its thread); returns what reports its outcome."""
        thread = threading.current_thread()
        if thread.name != self.name:
            thread.name = self.name
        try:
            self.outcome = (True, self.context.run(self.func, **self.kwargs))
        except (KeyboardInterrupt, SystemExit) as exc:
            self.outcome = (False, HandlerExit(exc))
        except BaseException as exc:  # handed to the runner, which decides
            self.outcome = (False, exc)
        self.func = self.kwargs = self.context = None  # type: ignore[assignment]  # dropped before the next call
        return self.report

    def report(self) -> None:
        self.reports.put(self)

    def finish(self) -> None:
        """On the loop: resolve the future (unless abandoned), then ``on_exit``."""
        future = self.future
        if not future.done():
            ok, value = self.outcome
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self.outcome = (False, None)
        if self.on_exit is not None:
            self.on_exit()


class _Reports:
    """Calls ended in threads, on their way back to one event loop: those that end
    while the loop is busy are handed over together, with one wake-up of the loop
    (``call_soon_threadsafe`` writes to the loop's self-pipe), not one each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ended: collections.deque[_ThreadCall] = collections.deque()
        #: True from when a thread asks the loop to drain until the drain starts.
        self._asked = False

    def put(self, call: _ThreadCall) -> None:
        """From a thread: hand ``call`` back (the loop wakes unless it is already asked to)."""
        self._ended.append(call)
        if not self._asked:
            self._asked = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the loop is closed: the run is over and nobody wants this result

    def _drain(self) -> None:
        # Cleared before taking: a call appended after this is taken now, or wakes the loop again.
        self._asked = False
        ended = self._ended
        try:
            while ended:
                ended.popleft().finish()
        finally:
            if ended:  # one raised (an ``on_exit``): the loop reports it, the others still end
                self.loop.call_soon(self._drain)


#: The reports of the last loop that ran a thread call (one loop runs at a time).
_last_reports: _Reports | None = None


def _reports(loop: asyncio.AbstractEventLoop) -> _Reports:
    global _last_reports
    reports = _last_reports
    if reports is None or reports.loop is not loop:
        reports = _last_reports = _Reports(loop)
    return reports


class ThreadCache:
    """Daemon threads for sync calls, reused: an idle thread takes the next
    call, and a new one starts when every thread is busy. A thread idle for
    ``idle_seconds`` ends.

    A call returns what reports its result; the thread counts itself idle
    before running it, so the next call (which the report may trigger at
    once) finds it free.
    """

    def __init__(self, idle_seconds: float = 30.0) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        #: The inbox of each idle thread, the most recently idle last.
        self._idle: list[queue.SimpleQueue[Callable[[], Callable[[], None]]]] = []

    def submit(self, call: Callable[[], Callable[[], None]], name: str) -> None:
        """Run ``call`` in an idle thread, or in a new one named ``name``."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put(call)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], Callable[[], None]]]) -> None:
        while True:
            try:
                call = inbox.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken by a submit just now: its call is on the way
            report = call()
            del call  # drop the call's arguments before waiting for the next one
            with self._lock:
                self._idle.append(inbox)
            report()
            del report


_THREADS = ThreadCache()


class RemoteExecutor(PhaseExecutor):
    """Base of executors that run each call in another process.

    The call travels as data (``pipekit.execution.remote.build_call``); a subclass only
    says how to get a ``RemoteCall`` executed, in ``execute``. The worker's
    usage is replayed onto the driver's ``ctx`` before the future resolves.
    """

    #: The pipeline module each worker imports.
    module_path: str
    #: A folder driver and workers both see, for large outputs (None: send them back).
    shared_dir: str | None = None
    _code: PipelineCode | None = None

    def pipeline_code(self) -> PipelineCode:
        """The pipeline's source, read once and sent with every call, so workers
        run the code this process fingerprints even if they loaded another
        version before (``pipekit.execution.code``)."""
        if self._code is None:
            from pipekit.execution.code import capture
            from pipekit.outcomes import UsageError

            try:
                self._code = capture(self.module_path)
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read the pipeline's source to send it to workers: {exc}") from None
        return self._code

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None = None,
    ) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._run(phase, func, kwargs, ctx))

    async def _run(
        self, phase: PhaseDefinition, func: Callable[..., Any], kwargs: dict[str, Any], ctx: PhaseContext | None
    ) -> Any:
        from pipekit.execution.remote import apply_outcome

        return apply_outcome(await self.execute(self.remote_call(phase, func, kwargs)), ctx)

    def remote_call(self, phase: PhaseDefinition, func: Callable[..., Any], kwargs: dict[str, Any]) -> RemoteCall:
        """``func(**kwargs)`` as a ``RemoteCall`` carrying the pipeline's code."""
        from pipekit.execution.remote import build_call

        return build_call(self.module_path, phase, func, kwargs, shared_dir=self.shared_dir, code=self.pipeline_code())

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        """Run ``call`` somewhere else and return what came back."""
        raise NotImplementedError
