"""Walking a run's selection in chunks of claims (``StateStore.claim``).

Drivers sharing a store would otherwise each try every item's lock: K drivers
over a million items, K million lock transactions. And each lock taken on the
event loop's thread stops every item while it waits: a lock file's create
waits behind another write's fsync (a quarter of a millisecond, often more), a
lease is a round trip to the server. Where the store claims in chunks
(``claim_chunk`` over 1: every built-in store), the run takes the next unfinished
items of its selection in one claim, as many as it runs at once (``-j``, at most
``claim_chunk``), starts those it won as slots free up, and puts the others aside as busy (``pipekit.engine.busy``),
which waits for them by chunks too. The items another driver finished meanwhile
are found in the store's finished index (one query of their rows only:
``StateStore.iter_fresh_finished_of``), not by taking their locks.
The claim runs off the event loop (``Claims``: on the writer's threads), one
call per chunk, which then reads the states of the items won, under their
locks (one query on a database), so that starting an item reads nothing on the
event loop's thread either. A claimed item stays held until it is started and
done; a driver that dies releases its claim when its lease expires, or at once
where the locks are flocks (JSON, SQLite: the kernel drops them with the
process). A store with ``claim_chunk`` 1, and a run at ``-j 1``, take each
item's lock as the run starts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
import functools
from typing import Any

from pipekit.engine.control import RunControl
from pipekit.engine.finished import Finished
from pipekit.engine.finished import finished_among
from pipekit.outcomes import StateFileError
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.manager import PipelineStateManager
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore
from pipekit.state.writer import StateWriter


#: An item a run reached: ``(index, item_id, metadata)``.
Candidate = tuple[int, str, dict[str, Any]]
#: Runs an item, with its lock when one was taken for it: ``(index, item_id, metadata, lock)``.
Start = Callable[[int, str, dict[str, Any], ItemLock | None], Awaitable[None]]
#: Says whether an item is finished already (and counts it so): ``Run._already_done``.
AlreadyDone = Callable[[str, dict[str, Any]], bool]
#: Takes the locks of the free ones of some items, by id (``Claims.claim``).
Claim = Callable[[Sequence[str]], Awaitable[dict[str, ItemLock]]]
#: Drops from the waiting items (id to ``(index, metadata)``) those another driver finished.
Settle = Callable[[dict[str, tuple[int, dict[str, Any]]]], None]


#: An item's document read under its claim: None when it has no state, or why it is unreadable.
Read = dict[str, Any] | None | StateFileError


class Claims:
    """A run's claims, taken off the event loop with the states of the items won read
    in the same call; each item's start takes its state from there (``load``)."""

    def __init__(self, store: StateStore, writer: StateWriter) -> None:
        self._store = store
        self._writer = writer
        #: The documents read with a claim, by id, until their item starts.
        self._read: dict[str, Read] = {}
        #: Claim the next chunk while the items of one start (``StateStore.claim_ahead``).
        self.ahead = store.claim_ahead

    async def claim(self, item_ids: Sequence[str]) -> dict[str, ItemLock]:
        """The locks of the free ones of ``item_ids``, by id; their states are read too."""
        take = functools.partial(claim_and_read, self._store, item_ids)
        locks, read = await self._writer.off_loop(self._store, take, _release_claimed)
        self._read.update(read)
        return dict(locks)

    def load(self, manager: PipelineStateManager, *, by_reference: bool) -> bool:
        """``manager.load_state``, from the document read with the item's claim when
        there is one (then read under the lock the item still holds)."""
        read = self._read.pop(manager.item_id, _UNREAD)
        if read is _UNREAD:
            return manager.load_state(by_reference=by_reference)
        if isinstance(read, StateFileError):
            raise read
        return manager.load_document(read, by_reference=by_reference)


_UNREAD: Any = object()


def claim_and_read(store: StateStore, item_ids: Sequence[str]) -> tuple[dict[str, ItemLock], dict[str, Read]]:
    """``store.claim(item_ids)``, then the documents of the items won, read under their
    locks (``load_many``); on any error the locks are released."""
    locks = store.claim(item_ids)
    try:
        return locks, dict(store.load_many(list(locks)))
    except BaseException:
        _release_claimed((locks, {}))
        raise


def _release_claimed(claimed: tuple[dict[str, ItemLock], dict[str, Read]]) -> None:
    for lock in claimed[0].values():
        lock.release()


async def walk(
    claims: Claims,
    items: Iterable[tuple[int, tuple[str, dict[str, Any]]]],
    already_done: AlreadyDone,
    control: RunControl,
    put_aside: Callable[[int, str, dict[str, Any]], None],
    start: Start,
    size: int,
) -> None:
    """Start every item of ``items`` (``(index, (item_id, metadata))``, as
    ``pipekit.engine.finished.unfinished`` gives them) not ``already_done``, in order, until the run stops
    starting phases: one ``claims.claim`` per ``size`` of them (``BusyItems.claim_size``), the
    items others hold ``put_aside`` (``BusyItems.add``). With a size of 1 each item
    is started without a lock, and the runner takes it as it starts the item."""
    if size <= 1:
        for index, (item_id, metadata) in items:
            if already_done(item_id, metadata):
                continue
            if control.stop_new_phases:
                return
            await start(index, item_id, metadata, None)
        return
    claimed: tuple[list[Candidate], asyncio.Future[dict[str, ItemLock]]] | None = None
    try:
        for chunk in _chunks(items, already_done, control, size):
            # With ``claims.ahead`` the next chunk is claimed while this one's items wait for
            # slots: creating lock files can take longer than a slot takes to free up.
            previous, claimed = claimed, (chunk, asyncio.ensure_future(claims.claim([i for _, i, _ in chunk])))
            if previous is not None:
                for held in await _start_won(*previous, control, start):
                    put_aside(*held)
            if not claims.ahead:  # only what it can start soon (``StateStore.claim_ahead``)
                previous, claimed = claimed, None
                for held in await _start_won(*previous, control, start):
                    put_aside(*held)
        if claimed is not None and not control.stop_new_phases:
            held_back, claimed = claimed, None
            for held in await _start_won(*held_back, control, start):
                put_aside(*held)
    finally:
        if claimed is not None:  # claimed, never started: the run stopped or failed
            claimed[1].add_done_callback(_release_unstarted)


def _chunks(
    items: Iterable[tuple[int, tuple[str, dict[str, Any]]]], already_done: AlreadyDone, control: RunControl, size: int
) -> Iterator[list[Candidate]]:
    """The items not ``already_done``, ``size`` at a time, until the run stops starting phases."""
    chunk: list[Candidate] = []
    for index, (item_id, metadata) in items:
        if already_done(item_id, metadata):
            continue
        if control.stop_new_phases:
            return
        chunk.append((index, item_id, metadata))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk and not control.stop_new_phases:
        yield chunk


def _release_unstarted(claiming: asyncio.Future[dict[str, ItemLock]]) -> None:
    """A claim the run stopped before starting any of its items: give its locks back."""
    if not claiming.cancelled() and claiming.exception() is None:
        for lock in claiming.result().values():
            lock.release_soon()


async def start_claimed(
    claim: Claim, chunk: Sequence[Candidate], control: RunControl, start: Start
) -> list[Candidate]:
    """Claim the items of ``chunk`` in one call and start those won, in order; returns
    the ones another process holds. A won item the run does not start (it stopped)
    is released."""
    return await _start_won(chunk, claim([item_id for _, item_id, _ in chunk]), control, start)


async def _start_won(
    chunk: Sequence[Candidate], claiming: Awaitable[dict[str, ItemLock]], control: RunControl, start: Start
) -> list[Candidate]:
    """``start_claimed`` once ``claiming`` has the locks of ``chunk``."""
    locks = dict(await claiming)
    held: list[Candidate] = []
    try:
        for index, item_id, metadata in chunk:
            lock = locks.pop(item_id, None)
            if lock is None:
                held.append((index, item_id, metadata))
            elif not control.stop_new_phases:
                await start(index, item_id, metadata, lock)
            else:
                lock.release_soon()
    finally:
        for lock in locks.values():
            lock.release_soon()
    return held


def finished_elsewhere(
    store: StateStore,
    phases: Sequence[PhaseDefinition],
    finished: Callable[[], Finished | None],
    count: Callable[[str, dict[str, Any], float], None],
) -> Settle:
    """A ``Settle`` reading the store's finished index for the waiting items (their
    rows only, however many others are finished): those found finished, with the same metadata, are taken out of
    the waiting ones and given to ``count`` with their recorded cost, without a
    claim. Not for a run that checks staleness (that needs each item's state),
    nor one whose store has no index (``finished`` is then None)."""

    def settle(waiting: dict[str, tuple[int, dict[str, Any]]]) -> None:
        if finished() is None or not waiting:
            return
        found = finished_among(store, phases, {item_id: metadata for item_id, (_, metadata) in waiting.items()})
        for item_id, cost in (found or {}).items():
            _, metadata = waiting.pop(item_id)
            count(item_id, metadata, cost)

    return settle
