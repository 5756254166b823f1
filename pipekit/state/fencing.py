"""Fencing the PostgreSQL store's writes by its leases (see ``pipekit.state.postgres``).

Every item a store object has leased since it opened stays fenced until it
closes, held or not: a write for it lands only in a transaction that finds its
lease row still naming this store's ``owner`` and locks that row ``FOR KEY
SHARE`` until the commit (a takeover's ``FOR UPDATE`` and the release's
``DELETE`` wait for it). A write for an item this store released is refused
at once, without asking the server: the release came first, so the write is
late (a thread the run abandoned, a queued save behind the release) and
another driver may hold the item now; leased again, the item is fenced by its
new lease. Items this store never leased (``pipekit migrate``, ``reset`` of
an item it never took) are written as they come.

A worker process's store never leases: it opens the run's store by its URL
and writes an item's sub-items, progress and checkpoints for the driver that
holds the lease. The driver hands it that lease's token (``fencing_token``)
with the call and the worker's store fences the item's writes against it
(``fence_as``): once the row no longer names the driver, because its lease
expired and another driver took the item, the worker's writes are refused
as the driver's own would be.
"""

from __future__ import annotations

from collections.abc import Iterable
import threading
from typing import TYPE_CHECKING
from typing import Any

from pipekit.outcomes import StateWriteError
from pipekit.state.holder import LeaseLostError
from pipekit.state.leases import HELD


class LeaseFence:
    """The fencing of writes: mixed into ``PostgresStore``, whose connection, lock and
    lease bookkeeping (``pipekit.state.leases.LeaseHolding``) it uses."""

    pipeline: str
    location: str
    owner: str
    _psycopg: Any
    _db: Any
    _lock: threading.RLock
    #: The items this driver holds a lease on now.
    _held: set[str]
    #: Every item this driver leased since the store opened (held now or released).
    _leased: set[str]
    #: The items another store object (the driver's) leased, by its token: ``fence_as``.
    _fenced_as: dict[str, str]

    if TYPE_CHECKING:

        def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

        def describe(self, item_id: str) -> str: ...

    def fencing_token(self, item_id: str) -> str | None:
        """The token naming this store's lease on ``item_id`` (its ``owner``), for a
        worker's store to fence that item's writes by (``fence_as``); None when this
        store never leased it."""
        with self._lock:
            return self.owner if item_id in self._leased else None

    def fence_as(self, item_id: str, token: str) -> None:
        """Fence this store's writes for ``item_id`` by the lease ``token`` names (another
        store object's, ``fencing_token``), never taking or releasing it: each write
        lands only while the lease row still names ``token``, else ``LeaseLostError``."""
        with self._lock:
            if item_id not in self._leased:  # its own lease, if it took one, fences it already
                self._fenced_as[item_id] = token

    def _lost_leases(self, connection: Any, item_ids: Iterable[str]) -> set[str]:
        """Those of ``item_ids`` whose writes must not land: leased by this store and
        released since, or whose lease row no longer names it (or the token ``fence_as``
        gave). The lease rows of the others are locked ``FOR KEY SHARE`` in
        ``connection``'s open transaction."""
        item_ids = list(item_ids)
        by_token: dict[str, set[str]] = {}
        with self._lock:
            fenced = {item_id for item_id in item_ids if item_id in self._leased}
            lost = fenced - self._held
            if fenced - lost:
                by_token[self.owner] = fenced - lost
            for item_id in item_ids:
                token = self._fenced_as.get(item_id)
                if token is not None and item_id not in fenced:
                    by_token.setdefault(token, set()).add(item_id)
        for token, held in by_token.items():
            rows = connection.execute(HELD, (self.pipeline, token, sorted(held))).fetchall()
            lost |= held - {found for (found,) in rows}
        return lost

    def _lease_lost(self, lost: Iterable[str]) -> LeaseLostError:
        """The error naming the ``lost`` items (released by this driver: a late write;
        an item fenced by ``fence_as`` was not released here but lost by its driver)."""
        names = sorted(lost)
        with self._lock:
            released = self._held.isdisjoint(names) and self._leased.issuperset(names)
        return LeaseLostError(self.location, names, released=released)

    def _fenced(self, item_id: str, sql: str, params: tuple[Any, ...]) -> None:
        """Write for ``item_id``; if this store ever leased it, in one transaction with
        the check that the lease is still its own (``LeaseLostError`` otherwise)."""
        if item_id not in self._leased and item_id not in self._fenced_as:
            self._query(sql, params)
            return
        with self._lock:
            try:
                with self._db.transaction():
                    if self._lost_leases(self._db, [item_id]):
                        raise self._lease_lost([item_id])
                    self._db.execute(sql, params)
            except self._psycopg.Error as exc:
                raise StateWriteError(self.describe(item_id), str(exc).strip()) from exc

