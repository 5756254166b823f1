"""A pool of worker processes that each run one call at a time.

Unlike ``concurrent.futures.ProcessPoolExecutor``, a worker that dies (killed,
segfault, out of memory) fails only the call it was running, and a call the
runner abandons (timeout, interrupt) has its worker killed: a hard timeout,
even for sync code stuck in C. Each worker leads a process group of its own,
and killing it kills the group: the subprocesses a handler started stop with
it, instead of running on beside a retry and after the run. Either way a fresh
worker takes the dead one's place; the other calls in flight are not disturbed.

While a call runs, its worker sends the handler's reports (``ctx.progress``,
finished sub-items) down the same pipe, before the outcome; the driver hands
each to the call's ``on_event`` as it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.connection import wait
import os
import signal
import threading
from typing import Any

from pipekit.execution.remote import Event
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome
from pipekit.execution.remote import WorkerLost


#: Receives, on the driver's event loop, a report the worker sent while the call ran.
OnEvent = Callable[[Event], None]


def _worker_main(conn: Connection) -> None:
    # A session of its own: what the handler starts can be killed with the worker, and
    # Ctrl-C in the terminal reaches only the driver, which decides what stops.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_driver()
    # stdout carries the driver's --jsonl events: a handler's print goes to stderr.
    os.dup2(2, 1)
    from pipekit.execution.remote import execute_call

    lock = threading.Lock()  # a map's fn threads report while the handler runs

    def send(message: Any) -> None:
        with lock:
            conn.send(message)

    while True:
        try:
            call = conn.recv()
        except EOFError:
            return
        send(execute_call(call, lambda event: send(("event", event))))


def _die_with_driver() -> None:
    """Have Linux kill this worker when the driver dies, kill -9 included; else a
    worker busy in a long call would outlive a killed run."""
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the driver died before the request above
        os._exit(1)


class _Worker:
    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True, name="pipekit-worker")
        self.process.start()
        child.close()
        #: Joined after it died: its pid may belong to another process now.
        self.reaped = False

    def kill_group(self) -> None:
        """Kill every process in the worker's group, the worker too if it still runs.

        Only before the worker is reaped (``join``, ``is_alive``): until then its
        pid, the group's id, cannot name another process group.
        """
        if self.reaped:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # No such group before the worker's setsid: then only the worker is there to kill.
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        self.kill_group()
        with contextlib.suppress(ProcessLookupError, ValueError):
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ProcessPool:
    """``size`` worker processes, started on demand, each running one ``RemoteCall`` at a time.

    :param size: most calls in flight at once.
    :param start_method: multiprocessing start method; ``spawn`` by default,
        since forking a process with an event loop and threads is unsafe.
    """

    def __init__(self, size: int, start_method: str = "spawn") -> None:
        self.size = max(1, size)
        self._context = multiprocessing.get_context(start_method)
        self._idle: list[_Worker] = []
        self._started = 0
        self._available: asyncio.Semaphore | None = None
        #: Workers that died while running a call, for reports.
        self.workers_lost = 0

    async def run(self, call: RemoteCall, on_event: OnEvent | None = None) -> RemoteOutcome:
        """Run ``call`` on a worker. Raises ``WorkerLost`` if the worker died;
        cancelling the await kills the worker. ``on_event`` gets the handler's
        reports as they come (all of them before this returns)."""
        if self._available is None:
            self._available = asyncio.Semaphore(self.size)
        async with self._available:
            worker = self._idle.pop() if self._idle else _Worker(self._context)
            try:
                outcome = await self._exchange(worker, call, on_event)
            except BaseException:
                worker.kill()
                raise
            self._idle.append(worker)
            return outcome

    async def _exchange(self, worker: _Worker, call: RemoteCall, on_event: OnEvent | None) -> RemoteOutcome:
        loop = asyncio.get_running_loop()
        try:
            worker.conn.send(call)
        except OSError:
            raise WorkerLost(f"worker process {worker.process.pid} was gone before the phase started") from None
        while True:
            await self._readable(loop, worker)
            while worker.conn.poll():
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    break
                if isinstance(message, RemoteOutcome):
                    return message
                if on_event is not None and isinstance(message, tuple) and message[:1] == ("event",):
                    on_event(message[1])
            else:
                # Not is_alive(): it would reap the worker, whose group is still to be killed.
                if not wait([worker.process.sentinel], 0):
                    continue  # every report read; the outcome is still to come
            break
        worker.kill_group()  # the dead worker's subprocesses, before joining it frees its pid
        worker.process.join(timeout=5)
        worker.reaped = worker.process.exitcode is not None
        self.workers_lost += 1
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise WorkerLost(f"worker process {worker.process.pid} died while running the phase ({how})")

    @staticmethod
    async def _readable(loop: asyncio.AbstractEventLoop, worker: _Worker) -> None:
        """Until the worker's pipe has something to read, or the worker died."""
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        fds = (worker.conn.fileno(), worker.process.sentinel)
        for fd in fds:
            loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    def close(self) -> None:
        """Stop every idle worker (busy ones are killed by their cancelled calls)."""
        while self._idle:
            worker = self._idle.pop()
            worker.conn.close()
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.kill()


