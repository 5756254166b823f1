"""The PostgreSQL store's per-item leases (see ``pipekit.state.postgres``).

A lease is a row naming its holder (``pipekit.state.holder``) and an expiry
that a background thread keeps pushing forward; a driver that dies stops
renewing, and once its lease expires another driver takes the item. Taking one
locks the lease row with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two drivers
racing for one item never wait on each other and never both win.

Drivers sharing a store claim work in chunks (``claim``, ``?claim=N`` in the
store's URL, 256 by default): one ``INSERT ... SELECT unnest(ids) ... ON
CONFLICT DO NOTHING RETURNING`` takes every free item of a chunk of the
selection and, in the same statement, reads the leases others hold of the rest;
only when one of those expired or its holder certainly died are they locked
(``FOR UPDATE SKIP LOCKED``) and taken over. A chunk held whole by live drivers
costs that one statement, not one per item.
The leases a driver holds are renewed together by one statement per heartbeat,
and those of claimed items it finished are deleted in batches. ``claim=1``
keeps the per-item leases of ``try_lock``, the path before chunks.

A run gives up its leases with ``Lease.release_soon``: the lease row is deleted
by the heartbeat's thread, on its connection, never on the event loop's thread,
where the round trip (behind the store's lock, a claim or a heartbeat) stopped
every item; a per-item lease at once, those of claimed items a batch at a time.
Releasing later is always safe: the run calls it only once the item's last write
is durable, and nobody else can take the item meanwhile. ``close`` deletes
every lease still held or waiting, and a killed driver's leases expire.

``PIPEKIT_COUNT_STATEMENTS=PATH`` makes each store append, when it closes, one
JSON line to ``PATH`` counting its lock, claim, release and renewal statements,
and its reads of finished rows (``finished``) with the rows they returned
(``finished_rows``); the many-drivers benchmark reads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
import contextlib
import json
import os
import threading
import time
from typing import TYPE_CHECKING
from typing import Any

from pipekit.outcomes import StateWriteError
from pipekit.state.heldby import holder_record
from pipekit.state.holder import Holder
from pipekit.state.holder import holder_is_gone
from pipekit.state.store import ItemLock


#: Seconds a lease lasts without renewal (the holder renews it every third of that).
DEFAULT_LEASE_SECONDS = 30.0
#: Items a driver claims in one statement (``?claim=N``); 1 takes each item's lease alone.
DEFAULT_CLAIM_CHUNK = 256
#: Released leases of claimed items are deleted once this many wait (or at the next
#: claim, heartbeat or close, whichever comes first).
RELEASE_BATCH = 64
#: Names the file the stores append their statement counts to (see the module's docstring).
COUNT_STATEMENTS = "PIPEKIT_COUNT_STATEMENTS"

#: Takes every free item of a chunk, in one statement: the new leases' rows, inserted in
#: id order (two drivers claiming overlapping chunks lock rows in the same order), come
#: back with NULLs; the rows others held already (the statement's snapshot does not see
#: the rows it inserts) come back with whether they expired and who holds them.
_CLAIM = """WITH won AS (
    INSERT INTO pipekit_leases (owner, host, pid, holder, expires_at, pipeline, item_id)
    SELECT %s, %s, %s, %s, now() + %s::interval, %s, item_id FROM unnest(%s::text[]) AS wanted(item_id)
    ORDER BY item_id
    ON CONFLICT (pipeline, item_id) DO NOTHING RETURNING item_id)
SELECT item_id, NULL::boolean, NULL::text FROM won
UNION ALL
SELECT item_id, expires_at < now(), holder FROM pipekit_leases WHERE pipeline = %s AND item_id = ANY(%s)"""
#: Leases that looked free to take over, locked to check again (another driver's
#: takeover in flight is skipped, not waited for).
_CLAIMED_BY_OTHERS = """SELECT item_id, expires_at < now(), holder FROM pipekit_leases
    WHERE pipeline = %s AND item_id = ANY(%s) ORDER BY item_id FOR UPDATE SKIP LOCKED"""
_TAKE_OVER = """UPDATE pipekit_leases SET owner = %s, host = %s, pid = %s, holder = %s,
    expires_at = now() + %s::interval WHERE pipeline = %s AND item_id = ANY(%s)"""

#: Locks this driver's lease row of an item, if it still holds it (see ``pipekit.state.postgres``).
HELD = """SELECT item_id FROM pipekit_leases WHERE pipeline = %s AND owner = %s AND item_id = ANY(%s)
           FOR KEY SHARE"""


class Lease(ItemLock):
    """A held lease; ``release`` deletes it (with ``batched``, in the next batch of releases)."""

    def __init__(self, store: LeaseHolding, item_id: str, *, batched: bool = False) -> None:
        super().__init__(-1)
        self._store: LeaseHolding | None = store
        self._item_id = item_id
        self._batched = batched

    def release(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            if self._batched:
                store._release_later(self._item_id)
            else:
                store._release(self._item_id)

    def release_soon(self) -> None:
        """Give the lease up without a round trip here: the heartbeat's thread deletes
        it (a per-item lease at once, a claimed one with the next batch)."""
        if self._store is not None:
            store, self._store = self._store, None
            store._release_later(self._item_id, soon=not self._batched)


class LeaseHolding:
    """Taking, renewing and releasing leases: mixed into ``PostgresStore``, whose
    connection, lock and identity it uses."""

    pipeline: str
    location: str
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
    #: Every item this driver leased since the store opened: its writes stay fenced
    #: (``pipekit.state.fencing``).
    _leased: set[str]
    _stop: threading.Event
    _heartbeat: threading.Thread | None
    #: Items ``claim`` takes at once.
    claim_chunk: int
    #: Released leases, not deleted yet.
    _releasing: set[str]
    #: Wakes the heartbeat's thread to delete the released leases (or to stop).
    _wake: threading.Event
    #: Released leases being deleted now, and the lock held while they are.
    _deleting: set[str]
    _deleting_lock: threading.Lock
    #: Statements sent, by kind (``lock``, ``claim``, ``release``, ``renew``, ``finished``),
    #: and ``finished_rows``, the rows the ``finished`` ones returned.
    _statements: Counter[str]

    if TYPE_CHECKING:

        def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

        def describe(self, item_id: str) -> str: ...

    def try_lock(self, item_id: str) -> ItemLock | None:
        """Take the item's lease without waiting: a new one, or one whose holder's
        expired or certainly died on this machine; None when someone holds it."""
        me = self._me()
        self._release_first((item_id,))
        with self._lock:
            try:
                with self._db.transaction():
                    taken = self._db.execute(
                        """INSERT INTO pipekit_leases (owner, host, pid, holder, expires_at, pipeline, item_id)
                           VALUES (%s, %s, %s, %s, now() + %s::interval, %s, %s)
                           ON CONFLICT (pipeline, item_id) DO NOTHING RETURNING 1""",
                        (*me, self.pipeline, item_id),
                    ).fetchone()
                    self._statements["lock"] += 1
                    if taken is None:
                        # Someone holds or held it: take it only if the lease expired. A row
                        # another driver is taking right now is skipped, not waited for.
                        row = self._db.execute(
                            """SELECT expires_at < now(), holder FROM pipekit_leases
                               WHERE pipeline = %s AND item_id = %s FOR UPDATE SKIP LOCKED""",
                            (self.pipeline, item_id),
                        ).fetchone()
                        self._statements["lock"] += 1
                        if row is None or not self._overtakes(row[0], row[1]):
                            return None
                        self._db.execute(_TAKE_OVER, (*me, self.pipeline, [item_id]))
                        self._statements["lock"] += 1
            except self._psycopg.Error as exc:
                raise StateWriteError(self.describe(item_id), str(exc).strip()) from exc
            self._held.add(item_id)
            self._leased.add(item_id)
            self._start_heartbeat()
        return Lease(self, item_id)

    def _release(self, item_id: str) -> None:
        with self._lock:
            self._held.discard(item_id)
            if not self._db.closed:
                self._statements["release"] += 1
                self._query(
                    "DELETE FROM pipekit_leases WHERE pipeline = %s AND item_id = %s AND owner = %s",
                    (self.pipeline, item_id, self.owner),
                )

    def claim(self, item_ids: Sequence[str]) -> dict[str, ItemLock]:
        """Take the leases of those of ``item_ids`` that are free, expired or held by a
        process certainly dead on this machine, without waiting: one statement, and
        two more in a transaction only when some lease looks free to take over."""
        wanted = sorted(set(item_ids))
        me = self._me()
        self._release_first(wanted)
        with self._lock:
            if self._releasing:
                self._wake.set()  # the released leases go now, on the heartbeat's connection
            try:
                rows = self._db.execute(_CLAIM, (*me, self.pipeline, wanted, self.pipeline, wanted)).fetchall()
                self._statements["claim"] += 1
                won = [item for item, expired, _ in rows if expired is None]
                if any(self._overtakes(expired, holder) for _, expired, holder in rows if expired is not None):
                    won += self._take_over(sorted(set(wanted) - set(won)), me)
            except self._psycopg.Error as exc:
                raise StateWriteError(self.location, str(exc).strip()) from exc
            self._held.update(won)
            self._leased.update(won)
            if won:
                self._start_heartbeat()
        return {item_id: Lease(self, item_id, batched=True) for item_id in won}

    def _me(self) -> tuple[Any, ...]:
        """This driver's lease columns: owner, host, pid, holder and the lease's length."""
        lease = f"{self.lease_seconds} seconds"
        return (self.owner, self.holder.host, self.holder.pid, holder_record(self.holder), lease)

    def _overtakes(self, expired: bool, holder: str | None) -> bool:
        """Whether a lease another driver holds may be taken: it expired or, before
        expiry, its holder certainly died on this machine."""
        return expired or holder_is_gone(Holder.from_json(holder), self.holder)

    def _take_over(self, item_ids: list[str], me: tuple[Any, ...]) -> list[str]:
        """Take over those of ``item_ids`` whose lease may be taken, checked again under
        the rows' locks (a row a fenced write or another takeover holds is skipped, and
        tried again later); returns them."""
        with self._db.transaction():
            rows = self._db.execute(_CLAIMED_BY_OTHERS, (self.pipeline, item_ids)).fetchall()
            free = [item for item, expired, holder in rows if self._overtakes(expired, holder)]
            self._statements["claim"] += 1
            if free:
                self._db.execute(_TAKE_OVER, (*me, self.pipeline, free))
                self._statements["claim"] += 1
        return free

    def _release_later(self, item_id: str, *, soon: bool = False) -> None:
        """Forget an item now; its lease row is deleted by the heartbeat's thread: with
        ``soon`` at once, else with the next batch of releases (held a little longer is
        always safe: nobody else runs it meanwhile). Never a statement on this thread."""
        with self._lock:
            self._held.discard(item_id)
            self._releasing.add(item_id)
            if soon or len(self._releasing) >= RELEASE_BATCH:
                self._wake.set()

    def _flush_releases(self, connection: Any) -> None:
        """Delete the lease rows of the released items, in one statement on ``connection``
        (the heartbeat's, or the store's own one under its lock)."""
        with self._deleting_lock:
            with self._lock:
                if not self._releasing or connection.closed:
                    return
                released, self._releasing = sorted(self._releasing), set()
                self._deleting = set(released)
            try:
                with self._lock if connection is self._db else contextlib.nullcontext():
                    connection.execute(
                        "DELETE FROM pipekit_leases WHERE pipeline = %s AND owner = %s AND item_id = ANY(%s)",
                        (self.pipeline, self.owner, released),
                    )
                self._statements["release"] += 1
            except self._psycopg.Error:
                with self._lock:
                    self._releasing.update(released)  # deleted at the next try or at close; the rows expire anyway
            finally:
                self._deleting = set()

    def _release_first(self, item_ids: Sequence[str]) -> None:
        """Delete now the released leases of any of ``item_ids`` not deleted yet (rare: an
        item taken again after its lease was lost): the DELETE names this driver, so
        landing after the new lease it would end it, and another driver would run the
        item beside this one."""
        with self._lock:
            if self._releasing.isdisjoint(item_ids) and self._deleting.isdisjoint(item_ids):
                return
        self._flush_releases(self._db)  # after the batch in flight, if one is

    def _count_statements(self) -> None:
        """Append this store's statement counts to ``$PIPEKIT_COUNT_STATEMENTS`` (at close)."""
        path = os.environ.get(COUNT_STATEMENTS)
        if path:
            counts = {"pid": os.getpid(), "owner": self.owner, **self._statements}
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(counts) + "\n")

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._renew_leases, name="pipekit-leases", daemon=True)
            self._heartbeat.start()

    def _renew_leases(self) -> None:
        """Push this driver's leases forward until the store is closed, and delete the
        released ones when woken (own connection)."""
        try:
            db = self._psycopg.connect(self.conninfo, autocommit=True)
        except self._psycopg.Error:
            return  # nothing renewed: the leases expire; close() deletes the released ones
        period = self.lease_seconds / 3
        renew_at = time.monotonic() + period
        with db:
            while not self._stop.is_set():
                self._wake.wait(max(0.0, renew_at - time.monotonic()))
                self._wake.clear()  # before taking the released ones: a later release wakes it again
                if self._stop.is_set():
                    return
                try:
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + period
                        db.execute(
                            "UPDATE pipekit_leases SET expires_at = now() + %s::interval WHERE owner = %s",
                            (f"{self.lease_seconds} seconds", self.owner),
                        )
                        self._statements["renew"] += 1
                    self._flush_releases(db)
                except self._psycopg.Error:
                    continue  # a network blip: try again; the lease outlives a few misses
