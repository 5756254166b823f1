"""Fencing the writes of the flock stores (JSON directory, SQLite) by their locks.

An flock does not expire, so while this process holds an item's lock no other
process writes it. What can go wrong is order within this process: a write
that lands after the item's lock was released (a thread the run abandoned at
a timeout, still calling ``ctx.checkpoint``; a save queued behind the
release) would overwrite the state of the process that took the item next.
So every item a store object locked stays fenced until it closes, as the
PostgreSQL store's leases fence theirs (``pipekit.state.fencing``): a write
for one it released raises ``LeaseLostError`` and writes nothing, unless the
store locked the item again. A release waits for a write of the item in
flight, so a write is either before the release, whole, or refused.

Items a store object never locked (``pipekit migrate``) are written as they come.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import threading

from pipekit.state.holder import LeaseLostError
from pipekit.state.store import ItemLock


class _Guard:
    """One hold of an item's lock: writes of the item take ``mutex``; the release
    takes it too, and sets ``released``."""

    __slots__ = ("mutex", "released")

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.released = False


class FencedLock(ItemLock):
    """An item's lock whose release fences the store's later writes of the item."""

    def __init__(self, inner: ItemLock, fence: ItemFence, item_id: str, guard: _Guard) -> None:
        super().__init__(-1, locked=inner.locked)
        self._inner: ItemLock | None = inner
        self._fence = fence
        self._item_id = item_id
        self._guard = guard

    def release(self) -> None:
        """Release the lock (idempotent), once a write of the item in flight has landed."""
        if self._inner is not None:
            inner, self._inner = self._inner, None
            with self._guard.mutex:
                self._guard.released = True
                inner.release()
            self._fence._released(self._item_id, self._guard)


class ItemFence:
    """The items one store object locked, and which of them it holds now.

    :param location: the store, as errors name it.
    """

    def __init__(self, location: str) -> None:
        self.location = location
        self._mutex = threading.Lock()
        #: Every item locked since the store opened: the hold of its lock, None once released.
        self._holds: dict[str, _Guard | None] = {}

    def take(self, item_id: str, lock: ItemLock | None) -> ItemLock | None:
        """``lock`` (just taken on ``item_id``), fencing this store's writes of the item from its release on."""
        if lock is None:
            return None
        guard = _Guard()
        with self._mutex:
            self._holds[item_id] = guard
        return FencedLock(lock, self, item_id, guard)

    def _released(self, item_id: str, guard: _Guard) -> None:
        with self._mutex:
            if self._holds.get(item_id) is guard:  # (not when taken again since)
                self._holds[item_id] = None

    @contextlib.contextmanager
    def writing(self, item_ids: Iterable[str]) -> Iterator[set[str]]:
        """Hold off the release of ``item_ids`` while the block writes them; yields
        those whose lock this store released (the block must leave them unwritten)."""
        guards: list[tuple[str, _Guard]] = []
        lost: set[str] = set()
        with self._mutex:
            if self._holds:
                for item_id in sorted(set(item_ids)):  # in order: two writes never wait on each other
                    if item_id in self._holds:
                        guard = self._holds[item_id]
                        if guard is None:
                            lost.add(item_id)
                        else:
                            guards.append((item_id, guard))
        with contextlib.ExitStack() as holding:
            for item_id, guard in guards:
                holding.enter_context(guard.mutex)
                if guard.released:  # released between the look and the hold
                    lost.add(item_id)
            yield lost

    @contextlib.contextmanager
    def writing_one(self, item_id: str) -> Iterator[None]:
        """``writing`` for one item: ``LeaseLostError`` if this store released its lock."""
        with self.writing((item_id,)) as lost:
            if lost:
                raise self.lost(lost)
            yield

    def lost(self, item_ids: Iterable[str]) -> LeaseLostError:
        """The error naming writes refused for items whose lock was released."""
        return LeaseLostError(self.location, sorted(item_ids), released=True)
