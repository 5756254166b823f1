"""Writing item states off the event loop.

A durable save (temporary file, fsync, rename, directory fsync) blocks for
milliseconds; done on the event loop it stops every other item, and 100
concurrent items that only ``await`` a network call run no faster than their
state writes one after another. The runner marks each item's manager
``defer_saves`` and awaits ``StateWriter.flush`` after each change and before
telling observers: the write runs in a small thread pool, so writes of
different items overlap, while one item's writes stay in order (its runner
waits for each). Several changes between two flushes are written once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from pipekit.state import PipelineStateManager


class StateWriter:
    """Writes deferred saves of ``PipelineStateManager`` objects.

    :param threads: size of the thread pool; 0 writes on the calling thread
        (still coalescing changes made between two flushes).
    """

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def hold(self, manager: PipelineStateManager) -> bool:
        """Defer ``manager``'s saves until ``flush``; False if they already were."""
        if manager.defer_saves:
            return False
        manager.defer_saves = True
        return True

    async def flush(self, manager: PipelineStateManager) -> None:
        """Write what ``manager`` saved since the last flush, if anything."""
        document = manager.take_pending()
        if document is None:
            return
        if self.threads <= 0 or not manager.store.threadsafe_saves:
            manager.store.save(manager.item_id, document)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pipekit-save")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, manager.store.save, manager.item_id, document)
        manager.saved()

    def release(self, manager: PipelineStateManager) -> None:
        """Stop deferring: write anything still unwritten, synchronously."""
        manager.defer_saves = False
        document = manager.take_pending()
        if document is not None:
            manager.store.save(manager.item_id, document)
            manager.saved()

    def close(self) -> None:
        """Wait for writes in flight and stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
