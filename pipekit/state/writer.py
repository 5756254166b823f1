"""Writing item states: the one protocol, from a change to the bytes on disk.

Every save of a ``PipelineStateManager`` goes through a writer. By default
(``IMMEDIATE``) it is written at once, on the calling thread: library users'
saves are synchronous. A runner's ``StateWriter`` holds an item's manager
instead: its saves wait for ``StateWriter.flush``, which the runner awaits
after a change and before it tells observers or runs a handler.

A durable save (temporary file, fsync, rename, directory fsync) blocks for
milliseconds; done on the event loop it stops every other item, and 100
concurrent items that only ``await`` a network call run no faster than their
state writes one after another. So the write runs in a small thread pool:
writes of different items overlap while one item's writes land in order (one
write per item in flight at a time). Changes saved while an item's write is
queued or in flight are written together, once. An output too large to keep
inline is written by the same ``PendingWrite``, on the same thread, before
the document that refers to it: a document never refers to a file that is
not yet durable.

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
from typing import Protocol

from pipekit.state.holder import LeaseLostError
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore


class PendingWrite:
    """One write of an item's state: its large outputs not yet stored, the
    document, then the checkpoints the written state made useless (dropped
    only after it landed, so a crash in between leaves stale checkpoints,
    never lost work). Safe to ``run`` on a thread other than the one changing
    the state: it holds its own copy. The output files it no longer refers to
    are deleted by the manager's ``saved``, after it.

    A plain class with slots, not a dataclass: one is built per save, and a
    frozen dataclass's ``__init__`` cost a few percent of a save's CPU.
    """

    __slots__ = (
        "store", "item_id", "document", "checkpoints_to_drop", "outputs_unreferenced",
        "outputs_to_write", "outputs_written",
    )  # fmt: skip

    def __init__(
        self,
        store: StateStore,
        item_id: str,
        document: dict[str, Any],
        checkpoints_to_drop: list[str],
        outputs_unreferenced: list[str],
        outputs_to_write: list[tuple[int, str]] | None = None,
    ) -> None:
        self.store = store
        self.item_id = item_id
        self.document = document
        self.checkpoints_to_drop = checkpoints_to_drop
        self.outputs_unreferenced = outputs_unreferenced
        #: ``(phase num, text)`` of the outputs to store beside the document, before it.
        self.outputs_to_write = outputs_to_write or []
        #: ``(phase num, text, reference)`` of those stored, filled in by ``run``.
        self.outputs_written: list[tuple[int, str, str]] = []

    def run(self) -> None:
        """Store the large outputs, write the document, then drop the checkpoints."""
        self.write_outputs()
        self.store.save(self.item_id, self.document)
        self.drop_checkpoints()

    def write_outputs(self) -> None:
        """Store each large output and refer to it in the document (not yet written)."""
        if not self.outputs_to_write:
            return
        files = dict(self.document["phase_output_files"])
        for num, text in self.outputs_to_write:
            ref = self.store.write_output(self.item_id, num, text)
            self.outputs_written.append((num, text, ref))
            files[str(num)] = ref
        self.document["phase_output_files"] = {key: files[key] for key in sorted(files, key=int)}

    def drop_checkpoints(self) -> None:
        """Drop the checkpoints the written state made useless."""
        for phase_name in self.checkpoints_to_drop:
            self.store.drop_checkpoints(self.item_id, phase_name)

    @staticmethod
    def run_together(writes: list[PendingWrite]) -> None:
        """Write the documents of several items and drop their checkpoints with
        one ``save_group`` of their (shared) store: one transaction on a database.
        A ``LeaseLostError`` names the items of which nothing was written."""
        for write in writes:
            write.write_outputs()
        writes[0].store.save_group(
            [(write.item_id, write.document) for write in writes],
            [(write.item_id, phase) for write in writes for phase in write.checkpoints_to_drop],
        )


class Saving(Protocol):
    """What a writer needs of a ``PipelineStateManager``."""

    @property
    def store(self) -> StateStore: ...

    @property
    def has_pending_save(self) -> bool: ...

    def take_pending_write(self) -> PendingWrite: ...

    def saved(self, write: PendingWrite) -> None: ...

    def save_through(self, writer: Writer | None) -> Writer: ...


class Writer(Protocol):
    """Decides when a manager's saves are written."""

    def changed(self, manager: Saving) -> None:
        """``manager`` saved a change (``has_pending_save`` is now True)."""


class ImmediateWrites:
    """Writes every save at once, on the calling thread (the default)."""

    def changed(self, manager: Saving) -> None:
        """Write it now."""
        write_now(manager)


#: The writer of a manager no ``StateWriter`` holds.
IMMEDIATE = ImmediateWrites()


def write_now(manager: Saving) -> None:
    """Write ``manager``'s pending save here and now."""
    write = manager.take_pending_write()
    write.run()
    manager.saved(write)


class StateWriter:
    """Writes the saves of the ``PipelineStateManager`` objects it holds, when flushed.

    :param threads: size of the thread pool; 0 writes on the calling thread.
    """

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._pool: WorkerThreads | None = None
        #: Items waiting for a thread, oldest first.
        self._queue: deque[Saving] = deque()
        #: Items with a write in flight (at most one each, so they land in order).
        self._busy: set[Saving] = set()
        #: Flushes waiting for an item to have nothing left to write.
        self._waiters: dict[Saving, list[asyncio.Future[None]]] = {}

    def hold(self, manager: Saving) -> bool:
        """Write ``manager``'s saves here, when flushed; False if this writer already held it."""
        previous = manager.save_through(self)
        return previous is not self

    def changed(self, manager: Saving) -> None:
        """A held manager saved a change: it is written by the next ``flush``
        (a change made while one is queued or in flight costs no extra write)."""

    async def flush(self, manager: Saving) -> None:
        """Wait until everything ``manager`` saved so far is written."""
        if not self._in_threads(manager):
            if manager.has_pending_save:
                write_now(manager)
            return
        if self._all_written(manager):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(manager, []).append(waiter)
        if manager.has_pending_save:
            self._enqueue(manager)
            self._dispatch()
        await waiter

    async def release(self, manager: Saving) -> None:
        """Write anything still unwritten and stop deferring ``manager``'s saves.

        Waits for a write in flight even when cancelled meanwhile (then
        re-raises the cancellation): a write that lands after a later one would
        put an older state on disk.
        """
        if self._all_written(manager):
            manager.save_through(None)  # no task to wait on
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
            manager.save_through(None)
            if manager.has_pending_save and manager not in self._busy:
                write_now(manager)

    async def lock_item(self, store: StateStore, item_id: str) -> ItemLock | None:
        """``store.try_lock(item_id)``, on the writer's threads when it has them:
        taking a lock is a system call that can wait behind the disk, or a round
        trip to a database server."""
        lock: ItemLock | None = await self.off_loop(store, functools.partial(store.try_lock, item_id), _release_one)
        return lock

    async def off_loop(self, store: StateStore, take: Callable[[], Any], give_back: Callable[[Any], None]) -> Any:
        """``take()``, which takes locks of ``store``: on the writer's threads when the
        store lets them be taken there, else here. What it took is given back
        (``give_back``) when the caller stopped waiting for it (cancelled)."""
        if not self._locks_in_threads(store):
            return take()
        taken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def hand_over(value: Any, error: BaseException | None) -> None:
            if taken.cancelled():
                if value is not None:
                    give_back(value)  # nobody is waiting for it any more
            elif error is not None:
                taken.set_exception(error)
            else:
                taken.set_result(value)

        self._threads().submit(take, hand_over)
        return await taken

    def _locks_in_threads(self, store: StateStore) -> bool:
        return self.threads > 0 and (store.threadsafe_saves or store.threadsafe_locks)

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

    def _all_written(self, manager: Saving) -> bool:
        return not manager.has_pending_save and manager not in self._busy

    def _in_threads(self, manager: Saving) -> bool:
        store = manager.store
        return self.threads > 0 and (store.threadsafe_saves or store.batched_saves)

    def _enqueue(self, manager: Saving) -> None:
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

    def _take_queue(self, limit: int = 1000) -> list[Saving]:
        taken: list[Saving] = []
        while self._queue and len(taken) < limit:
            taken.append(self._queue.popleft())
        return taken

    def _landed(
        self,
        managers: list[Saving],
        writes: list[PendingWrite],
        _: None,
        error: BaseException | None,
    ) -> None:
        # A batch that lost some items' leases wrote the others: only those named failed.
        lost = set(error.item_ids) if isinstance(error, LeaseLostError) else None
        for manager, write in zip(managers, writes, strict=True):
            self._busy.discard(manager)
            if error is not None and (lost is None or write.item_id in lost):
                self._wake(manager, error)
                continue
            manager.saved(write)
            if manager.has_pending_save:
                self._enqueue(manager)
            else:
                self._wake(manager)
        self._dispatch()

    def _wake(self, manager: Saving, error: BaseException | None = None) -> None:
        """Tell the item's flushes its writes have landed (or failed)."""
        for waiter in self._waiters.pop(manager, []):
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _release_one(lock: ItemLock) -> None:
    lock.release()


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
