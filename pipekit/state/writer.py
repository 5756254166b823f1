"""Writing item states off the event loop.

A durable save (temporary file, fsync, rename, directory fsync) blocks for
milliseconds; done on the event loop it stops every other item, and 100
concurrent items that only ``await`` a network call run no faster than their
state writes one after another. The runner marks each item's manager
``defer_saves`` and awaits ``StateWriter.flush`` after a change and before it
tells observers or runs a handler: the write runs in a small thread pool, so
writes of different items overlap while one item's writes land in order (one
write per item in flight at a time). Changes saved while an item's write is
queued or in flight are written together, once.

A database store that declares ``batched_saves`` gets group commit instead:
one thread writes every item queued meanwhile with one ``save_many`` (one
transaction, one fsync), while the next batch gathers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import functools
import queue
import threading
from typing import Any

from pipekit.state.manager import PendingWrite
from pipekit.state.manager import PipelineStateManager
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore


class StateWriter:
    """Writes deferred saves of ``PipelineStateManager`` objects.

    :param threads: size of the thread pool; 0 writes on the calling thread.
    """

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._pool: WorkerThreads | None = None
        #: Items waiting for a thread, oldest first.
        self._queue: deque[PipelineStateManager] = deque()
        #: Items with a write in flight (at most one each, so they land in order).
        self._busy: set[PipelineStateManager] = set()
        #: Flushes waiting for an item to have nothing left to write.
        self._waiters: dict[PipelineStateManager, list[asyncio.Future[None]]] = {}

    def hold(self, manager: PipelineStateManager) -> bool:
        """Defer ``manager``'s saves until written here; False if they already were."""
        if manager.defer_saves:
            return False
        manager.defer_saves = True
        return True

    async def flush(self, manager: PipelineStateManager) -> None:
        """Wait until everything ``manager`` saved so far is written."""
        if not self._in_threads(manager):
            if manager.has_pending_save:
                manager.write_pending()
            return
        if self._all_written(manager):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(manager, []).append(waiter)
        if manager.has_pending_save:
            self._enqueue(manager)
            self._dispatch()
        await waiter

    async def release(self, manager: PipelineStateManager) -> None:
        """Write anything still unwritten and stop deferring ``manager``'s saves.

        Waits for a write in flight even when cancelled meanwhile (then
        re-raises the cancellation): a write that lands after a later one would
        put an older state on disk.
        """
        if self._all_written(manager):
            manager.defer_saves = False  # no task to wait on
            return
        try:
            flushing = asyncio.ensure_future(self.flush(manager))
            cancelled = False
            while not flushing.done():
                try:
                    await asyncio.shield(flushing)
                except asyncio.CancelledError:
                    cancelled = cancelled or not flushing.done()
            if cancelled:
                raise asyncio.CancelledError
            flushing.result()
        finally:
            manager.defer_saves = False
            if manager.has_pending_save and manager not in self._busy:
                manager.write_pending()

    async def lock_item(self, store: StateStore, item_id: str) -> ItemLock | None:
        """``store.try_lock(item_id)``, on the writer's threads when it has them:
        taking a lock is a system call that can wait behind the disk."""
        if self.threads <= 0 or not store.threadsafe_saves:
            return store.try_lock(item_id)
        taken: asyncio.Future[ItemLock | None] = asyncio.get_running_loop().create_future()

        def hand_over(lock: ItemLock | None, error: BaseException | None) -> None:
            if taken.cancelled():
                if lock is not None:
                    lock.release()  # nobody is waiting for it any more
            elif error is not None:
                taken.set_exception(error)
            else:
                taken.set_result(lock)

        self._threads().submit(functools.partial(store.try_lock, item_id), hand_over)
        return await taken

    def close(self) -> None:
        """Wait for writes in flight and stop the threads."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- scheduling -------------------------------------------------------------

    def _threads(self) -> WorkerThreads:
        if self._pool is None:
            self._pool = WorkerThreads(self.threads, "pipekit-save")
        return self._pool

    def _all_written(self, manager: PipelineStateManager) -> bool:
        return not manager.has_pending_save and manager not in self._busy

    def _in_threads(self, manager: PipelineStateManager) -> bool:
        store = manager.store
        return self.threads > 0 and (store.threadsafe_saves or store.batched_saves)

    def _enqueue(self, manager: PipelineStateManager) -> None:
        if manager not in self._busy and manager not in self._queue:
            self._queue.append(manager)  # (a busy one is queued again when its write lands)

    def _dispatch(self) -> None:
        """Start writes while threads are free, oldest first; for a store with
        batched saves, one call at a time writes every item queued meanwhile."""
        while self._queue and len(self._busy) < self.threads:
            if self._queue[0].store.batched_saves:
                if self._busy:
                    return  # the batch in flight takes the next ones when it lands
                managers = self._take_queue()
                job = PendingWrite.run_together
            else:
                managers, job = [self._queue.popleft()], _run_one
            pending = []
            for manager in managers:
                if manager.has_pending_save:
                    pending.append(manager)
                else:
                    self._wake(manager)  # written meanwhile with an earlier change
            if not pending:
                continue
            managers = pending
            writes = [manager.take_pending_write() for manager in managers]
            self._busy.update(managers)
            self._threads().submit(functools.partial(job, writes), functools.partial(self._landed, managers, writes))

    def _take_queue(self, limit: int = 1000) -> list[PipelineStateManager]:
        taken: list[PipelineStateManager] = []
        while self._queue and len(taken) < limit:
            taken.append(self._queue.popleft())
        return taken

    def _landed(
        self,
        managers: list[PipelineStateManager],
        writes: list[PendingWrite],
        _: None,
        error: BaseException | None,
    ) -> None:
        for manager, write in zip(managers, writes, strict=True):
            self._busy.discard(manager)
            if error is not None:
                self._wake(manager, error)
                continue
            manager.saved(write)
            if manager.has_pending_save:
                self._enqueue(manager)
            else:
                self._wake(manager)
        self._dispatch()

    def _wake(self, manager: PipelineStateManager, error: BaseException | None = None) -> None:
        """Tell the item's flushes its writes have landed (or failed)."""
        for waiter in self._waiters.pop(manager, []):
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _run_one(writes: list[PendingWrite]) -> None:
    writes[0].run()


class WorkerThreads:
    """A few threads running jobs for an event loop, which gets the results back
    in batches: a thread that finishes while the loop has not yet collected
    earlier results adds to them instead of waking the loop again.

    Leaner than ``loop.run_in_executor`` (no future pair per job, one wake-up
    per batch): at 100 items in flight, waking the loop for every write cost
    about as much CPU as the write.
    """

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]] | None]
        self._jobs = queue.SimpleQueue()
        self._results: deque[tuple[Callable[[Any, BaseException | None], None], Any, BaseException | None]] = deque()
        self._collect_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True) for n in range(count)]
        self._started = False

    def submit(self, job: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``job`` on a thread; then ``on_done(value, error)`` on the running event loop.

        (The threads report to the loop of the latest ``submit``: a writer serves
        one loop at a time, and every job of a loop ends before it closes.)
        """
        self._loop = asyncio.get_running_loop()
        if not self._started:
            for thread in self._threads:
                thread.start()
            self._started = True
        self._jobs.put((job, on_done))

    def close(self) -> None:
        """Let the jobs submitted so far finish, then stop the threads."""
        if self._started:
            for _ in self._threads:
                self._jobs.put(None)
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        assert self._loop is not None
        while (task := self._jobs.get()) is not None:
            job, on_done = task
            try:
                value, error = job(), None
            except BaseException as exc:  # handed to on_done, on the loop's thread
                value, error = None, exc
            self._results.append((on_done, value, error))
            # The loop clears the flag before it takes the results, so a result
            # appended after that is either taken now or announced again.
            if not self._collect_scheduled:
                self._collect_scheduled = True
                try:
                    self._loop.call_soon_threadsafe(self._collect)
                except RuntimeError:
                    self._collect_scheduled = False  # that loop is closed; nobody waits for this

    def _collect(self) -> None:
        self._collect_scheduled = False
        while self._results:
            on_done, value, error = self._results.popleft()
            on_done(value, error)
