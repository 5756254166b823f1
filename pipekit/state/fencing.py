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

    if TYPE_CHECKING:

        def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

        def describe(self, item_id: str) -> str: ...

    def _lost_leases(self, connection: Any, item_ids: Iterable[str]) -> set[str]:
        """Those of ``item_ids`` whose writes must not land: leased by this store and
        released since, or whose lease row no longer names it. The lease rows of the
        others are locked ``FOR KEY SHARE`` in ``connection``'s open transaction."""
        with self._lock:
            fenced = {item_id for item_id in item_ids if item_id in self._leased}
            lost = fenced - self._held
        held = fenced - lost
        if held:
            rows = connection.execute(HELD, (self.pipeline, self.owner, sorted(held))).fetchall()
            lost |= held - {found for (found,) in rows}
        return lost

    def _lease_lost(self, lost: Iterable[str]) -> LeaseLostError:
        """The error naming the ``lost`` items (released by this driver: a late write)."""
        names = sorted(lost)
        with self._lock:
            released = self._held.isdisjoint(names)
        return LeaseLostError(self.location, names, released=released)

    def _fenced(self, item_id: str, sql: str, params: tuple[Any, ...]) -> None:
        """Write for ``item_id``; if this store ever leased it, in one transaction with
        the check that the lease is still its own (``LeaseLostError`` otherwise)."""
        if item_id not in self._leased:
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

