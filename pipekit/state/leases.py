"""The PostgreSQL store's per-item leases (see ``pipekit.state.postgres``).

A lease is a row naming its holder (``pipekit.state.holder``) and an expiry
that a background thread keeps pushing forward; a driver that dies stops
renewing, and once its lease expires another driver takes the item. Taking one
locks the lease row with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two drivers
racing for one item never wait on each other and never both win.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from typing import Any

from pipekit.outcomes import StateWriteError
from pipekit.state.heldby import holder_record
from pipekit.state.holder import Holder
from pipekit.state.holder import holder_is_gone
from pipekit.state.store import ItemLock


#: Seconds a lease lasts without renewal (the holder renews it every third of that).
DEFAULT_LEASE_SECONDS = 30.0

#: Locks this driver's lease row of an item, if it still holds it (see ``pipekit.state.postgres``).
HELD = """SELECT item_id FROM pipekit_leases WHERE pipeline = %s AND owner = %s AND item_id = ANY(%s)
           FOR KEY SHARE"""


class Lease(ItemLock):
    """A held lease; ``release`` deletes it."""

    def __init__(self, store: LeaseHolding, item_id: str) -> None:
        super().__init__(-1)
        self._store: LeaseHolding | None = store
        self._item_id = item_id

    def release(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store._release(self._item_id)


class LeaseHolding:
    """Taking, renewing and releasing leases: mixed into ``PostgresStore``, whose
    connection, lock and identity it uses."""

    pipeline: str
    conninfo: str
    lease_seconds: float
    holder: Holder
    #: Unique per store object: also the fencing token of its writes.
    owner: str
    _psycopg: Any
    _db: Any
    _lock: threading.RLock
    #: The items this driver holds a lease on.
    _held: set[str]
    _stop: threading.Event
    _heartbeat: threading.Thread | None

    if TYPE_CHECKING:

        def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

        def describe(self, item_id: str) -> str: ...

    def try_lock(self, item_id: str) -> ItemLock | None:
        """Take the item's lease without waiting: a new one, or one whose holder's
        expired or certainly died on this machine; None when someone holds it."""
        lease = f"{self.lease_seconds} seconds"
        with self._lock:
            try:
                with self._db.transaction():
                    me = (self.owner, self.holder.host, self.holder.pid, holder_record(self.holder), lease)
                    taken = self._db.execute(
                        """INSERT INTO pipekit_leases (owner, host, pid, holder, expires_at, pipeline, item_id)
                           VALUES (%s, %s, %s, %s, now() + %s::interval, %s, %s)
                           ON CONFLICT (pipeline, item_id) DO NOTHING RETURNING 1""",
                        (*me, self.pipeline, item_id),
                    ).fetchone()
                    if taken is None:
                        # Someone holds or held it: take it only if the lease expired. A row
                        # another driver is taking right now is skipped, not waited for.
                        row = self._db.execute(
                            """SELECT expires_at < now(), holder FROM pipekit_leases
                               WHERE pipeline = %s AND item_id = %s FOR UPDATE SKIP LOCKED""",
                            (self.pipeline, item_id),
                        ).fetchone()
                        # Before expiry, only a holder certainly dead on this machine is overtaken.
                        if row is None or not (row[0] or holder_is_gone(Holder.from_json(row[1]), self.holder)):
                            return None
                        self._db.execute(
                            """UPDATE pipekit_leases SET owner = %s, host = %s, pid = %s, holder = %s,
                               expires_at = now() + %s::interval WHERE pipeline = %s AND item_id = %s""",
                            (*me, self.pipeline, item_id),
                        )
            except self._psycopg.Error as exc:
                raise StateWriteError(self.describe(item_id), str(exc).strip()) from exc
            self._held.add(item_id)
            self._start_heartbeat()
        return Lease(self, item_id)

    def _release(self, item_id: str) -> None:
        with self._lock:
            self._held.discard(item_id)
            if not self._db.closed:
                self._query(
                    "DELETE FROM pipekit_leases WHERE pipeline = %s AND item_id = %s AND owner = %s",
                    (self.pipeline, item_id, self.owner),
                )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._renew_leases, name="pipekit-leases", daemon=True)
            self._heartbeat.start()

    def _renew_leases(self) -> None:
        """Push this driver's leases forward until the store is closed (own connection)."""
        try:
            db = self._psycopg.connect(self.conninfo, autocommit=True)
        except self._psycopg.Error:
            return
        with db:
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    db.execute(
                        "UPDATE pipekit_leases SET expires_at = now() + %s::interval WHERE owner = %s",
                        (f"{self.lease_seconds} seconds", self.owner),
                    )
                except self._psycopg.Error:
                    continue  # a network blip: try again; the lease outlives a few misses
