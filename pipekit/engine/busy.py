"""Items another pipekit process holds: waited for until they are free, then taken.

A run ends when every selected item is finished, whoever ran it (CONTRACT §4).
An item whose lock another live process holds when the run reaches it is put
aside; once the other items are started, the run polls for the held ones with
a growing pause, naming each holder once (host, pid, since, and the lease's
expiry where the store knows it). ``try_lock`` alone decides when an item is
free: its holder released it, died, or let its lease expire. The runner then
reads the item's state under the lock, so an item the other process finished
counts as completed without running anything.

Where the store claims items in chunks (``pipekit.engine.claims``), each try
first drops the items the store's index shows finished (one query of their
rows), then claims the rest a chunk at a time: a chunk still held costs a
claim, not a lock per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from pipekit.engine.claims import Claims
from pipekit.engine.claims import Settle
from pipekit.engine.claims import start_claimed
from pipekit.engine.control import RunControl
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore
from pipekit.state.writer import StateWriter


#: Seconds before the first new try at the held items; the pause doubles up to ``LAST_PAUSE``.
FIRST_PAUSE = 0.2
LAST_PAUSE = 5.0
#: Held items named one by one; beyond these, one line says how many more.
NAMED = 10

#: Runs an item whose lock was just taken: ``(index, item_id, metadata, lock)``.
Start = Callable[[int, str, dict[str, Any], ItemLock], Awaitable[None]]


class BusyItems:
    """The selected items held by another process, in the order the run reached them.

    :param store: where the items' locks are.
    :param writer: takes locks as the runner does (off the event loop where it can).
    :param control: the run's stop flags (an interruption or a budget ends the wait).
    :param say: reports a message (``Run._say``).
    :param skip: skip them instead of waiting (``--skip-busy``): the run then did not finish them.
    :param workers: items the run runs at once (``-j``): the most it claims at a time.
    """

    def __init__(
        self,
        store: StateStore,
        writer: StateWriter,
        control: RunControl,
        say: Callable[[str, str], None],
        *,
        skip: bool = False,
        workers: int = 1,
    ) -> None:
        self._store = store
        self._writer = writer
        self._control = control
        self._say = say
        #: Waiting items: id to ``(index, metadata)``.
        self.waiting: dict[str, tuple[int, dict[str, Any]]] = {}
        self._named: set[str] = set()
        self.skip = skip
        #: Items skipped (``skip``), or left to a driver that took them over from this one.
        self.skipped = 0
        #: Items claimed at once (``pipekit.engine.claims``): never more than the run can start
        #: soon, so that no driver sits idle at the end while another holds items it cannot run yet.
        self.claim_size = max(1, min(store.claim_chunk, workers))
        #: The run's claims (the first ones and those of the waiting items), and the states they read.
        self.claims = Claims(store, writer)

    def add(self, index: int, item_id: str, metadata: dict[str, Any]) -> None:
        """Put ``item_id`` aside until its holder lets it go (said once, with who holds it),
        or skip it (``skip``)."""
        if self.skip:
            self.skipped += 1
            self._say(f"item {item_id!r} is being run by another pipekit process; skipped", "notice")
            return
        self.waiting[item_id] = (index, metadata)
        if item_id in self._named:
            return
        self._named.add(item_id)
        if len(self._named) <= NAMED:
            held = self._store.lock_holder(item_id)
            who = f" ({held.describe()})" if held is not None else ""
            self._say(f"item {item_id!r} is being run by another pipekit process{who}; waiting for it", "notice")
        elif len(self._named) == NAMED + 1:
            self._say("more items are being run by other pipekit processes; waiting for them too", "notice")

    async def drain(self, start: Start, settle: Settle | None = None) -> None:
        """Try the waiting items until none is left (each taken one handed to ``start``),
        or the run stops starting phases (an interruption, a budget).

        :param settle: with chunk claims, drops the waiting items found finished first.
        """
        pause = FIRST_PAUSE
        while self.waiting and not self._control.stop_new_phases:
            if self.claim_size > 1:
                await self._claim_waiting(start, settle)
            else:
                await self._lock_waiting(start)
            if self.waiting:
                await self._pause(pause)
                pause = min(pause * 2, LAST_PAUSE)

    async def _claim_waiting(self, start: Start, settle: Settle | None) -> None:
        """One try at the waiting items by chunk claims."""
        if settle is not None:
            settle(self.waiting)
        size = self.claim_size

        async def take(index: int, item_id: str, metadata: dict[str, Any], lock: ItemLock | None) -> None:
            self.waiting.pop(item_id, None)
            assert lock is not None
            await start(index, item_id, metadata, lock)

        waiting = [(index, item_id, metadata) for item_id, (index, metadata) in self.waiting.items()]
        for at in range(0, len(waiting), size):
            if self._control.stop_new_phases:
                return
            await start_claimed(self.claims.claim, waiting[at : at + size], self._control, take)

    async def _lock_waiting(self, start: Start) -> None:
        """One try at the waiting items, one lock each."""
        for item_id in list(self.waiting):
            if self._control.stop_new_phases:
                return
            lock = await self._writer.lock_item(self._store, item_id)
            if lock is not None:
                index, metadata = self.waiting.pop(item_id)
                await start(index, item_id, metadata, lock)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the run is interrupted or a budget stops it."""
        stopping = asyncio.ensure_future(self._control.stopping.wait())
        try:
            await asyncio.wait(
                [self._control.interruption(), stopping], timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()

    def finish(self, noun: str) -> None:
        """At the end of the run: say how many items were skipped (they make it exit 1)."""
        if self.skipped:
            self._say(f"--skip-busy: {self.skipped:,} {noun} left unfinished to another pipekit process", "warning")
