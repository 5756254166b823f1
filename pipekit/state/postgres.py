"""The PostgreSQL store: the state of many pipelines, drivers and hosts in one
database (``postgresql://USER:PASSWORD@HOST/DB[?pipeline=NAME&lease=SECONDS&claim=N]``).

Needs psycopg 3 (``pip install 'pipekit[postgres]'``). The same schema idea as
the SQLite store, in ``jsonb``; rows are kept apart by pipeline name. Per-item
locks are leases (``pipekit.state.leases``): a row naming the holder and an
expiry that a background thread keeps pushing forward; a run claims them ``claim``
items at a time.

Leases fence writes. A driver paused past its lease (a closed laptop lid, a
paused VM) is alive but no longer holds the item when it resumes, and by then
another driver may have run and saved the item's phases. So every write this
driver makes for an item it leased is conditional, in the same transaction, on
the lease row still naming this driver's ``owner`` token (unique per store
object, so it doubles as the fencing token), and it takes a ``FOR KEY SHARE``
lock on that row meanwhile, so a takeover (``FOR UPDATE``) cannot slip in
between the check and the commit. A write that finds the lease gone raises
``LeaseLostError`` and writes nothing. An item stays fenced once its lease is
released, until the store closes or leases it again: a write that comes after
the release (a thread the run abandoned at a timeout) is refused without
asking the server (``pipekit.state.fencing``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
import os
import threading
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit
from urllib.parse import urlunsplit
import uuid

from pipekit.outcomes import StateFileError
from pipekit.outcomes import StateWriteError
from pipekit.outcomes import UsageError
from pipekit.state.encoded import document_jsonb_text
from pipekit.state.escaping import json_value
from pipekit.state.escaping import jsonb_text
from pipekit.state.fencing import LeaseFence
from pipekit.state.heldby import LeaseRowHolder
from pipekit.state.holder import this_holder
from pipekit.state.indexed import FinishedItem
from pipekit.state.indexed import asked_once
from pipekit.state.indexed import index_columns
from pipekit.state.leases import DEFAULT_CLAIM_CHUNK
from pipekit.state.leases import DEFAULT_LEASE_SECONDS
from pipekit.state.leases import LeaseHolding
from pipekit.state.postgresschema import DROP_CHECKPOINTS
from pipekit.state.postgresschema import FINISHED_OF
from pipekit.state.postgresschema import SCHEMA
from pipekit.state.postgresschema import SCHEMA_IS_CURRENT
from pipekit.state.postgresschema import SCHEMA_LOCK_KEY
from pipekit.state.postgresschema import UPSERT
from pipekit.state.store import StateStore
from pipekit.state.store import in_chunks
from pipekit.state.urls import mask_password
from pipekit.state.values import decode_output
from pipekit.state.values import encode_output
from pipekit.state.values import output_ref


#: URL parameters that are pipekit's, not libpq's.
_OWN_PARAMETERS = ("pipeline", "lease", "claim")

def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError("the postgresql store needs psycopg 3: pip install 'pipekit[postgres]'") from None
    return psycopg


class PostgresStore(LeaseFence, LeaseRowHolder, LeaseHolding, StateStore):
    """The items of one pipeline in a PostgreSQL database.

    :param conninfo: a libpq connection string or URL (without pipekit's parameters).
    :param pipeline: the pipeline whose items these are.
    :param lease_seconds: how long an item stays taken after its driver stops renewing.
    :param create: create pipekit's tables when missing (else a ``UsageError``).
    :param claim_chunk: items a run claims at once (1: each item's lease on its own).
    """

    # One connection behind a lock: usable from the writer's thread, and many
    # items' states are committed in one transaction (``save_many``).
    batched_saves = True
    # Every call is safe from any thread (the lock), so the writer takes leases on its
    # threads: each is a round trip to the server the event loop would wait for.
    threadsafe_saves = True

    def __init__(
        self,
        conninfo: str,
        pipeline: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        create: bool = True,
        claim_chunk: int = DEFAULT_CLAIM_CHUNK,
    ) -> None:
        psycopg = _psycopg()
        self._psycopg = psycopg
        self.conninfo = conninfo
        self.pipeline = pipeline
        self.lease_seconds = float(lease_seconds)
        query = urlencode({"pipeline": pipeline})
        self.location = f"{mask_password(conninfo)}{'&' if '?' in conninfo else '?'}{query}"
        self.holder = this_holder()
        self.owner = f"{self.holder.host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._lock = threading.RLock()
        #: The writer's group commits have a connection of their own (made at the first),
        #: so taking and releasing leases on the event loop's thread never waits behind them.
        self._saver: Any = None
        self._save_lock = threading.Lock()
        self._held: set[str] = set()
        self._leased: set[str] = set()
        self._fenced_as: dict[str, str] = {}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.claim_chunk = max(1, int(claim_chunk))
        self._releasing: set[str] = set()
        self._wake = threading.Event()
        self._deleting: set[str] = set()
        self._deleting_lock = threading.Lock()
        self._statements: Counter[str] = Counter()
        try:
            self._db = self._connect(autocommit=True)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                # Only when needed: an ALTER TABLE, even one that changes nothing, locks the
                # table whole, and deadlocks with the drivers already writing to it.
                if not self._db.execute(SCHEMA_IS_CURRENT).fetchone():
                    if not create:
                        self._db.close()
                        raise UsageError(f"postgresql store {self.location} holds no pipekit state (no tables)")
                    for statement in SCHEMA:
                        self._db.execute(statement)
        except psycopg.Error as exc:
            raise UsageError(f"postgresql store {self.location} cannot be opened: {exc}".strip()) from None

    def reopen_url(self) -> str:
        own = urlencode({"pipeline": self.pipeline, "lease": repr(self.lease_seconds), "claim": self.claim_chunk})
        return f"{self.conninfo}{'&' if '?' in self.conninfo else '?'}{own}"

    @classmethod
    def from_url(cls, url: str, *, pipeline: str | None = None, create: bool = True) -> PostgresStore:
        """Split pipekit's own ``pipeline`` and ``lease`` parameters off ``url``."""
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in pairs if k in _OWN_PARAMETERS}
        rest = urlencode([(k, v) for k, v in pairs if k not in _OWN_PARAMETERS])
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        name = own.get("pipeline") or pipeline
        if not name:
            raise UsageError(f"postgresql store {mask_password(url)}: name the pipeline (?pipeline=NAME)")
        try:
            lease = float(own.get("lease", DEFAULT_LEASE_SECONDS))
        except ValueError:
            raise UsageError(f"postgresql store: lease must be a number of seconds, not {own['lease']!r}") from None
        claim = own.get("claim", str(DEFAULT_CLAIM_CHUNK))
        if not claim.isdigit() or int(claim) < 1:
            raise UsageError(f"postgresql store: claim must be a whole number of items (1 or more), not {claim!r}")
        return cls(conninfo, name, lease_seconds=lease, create=create, claim_chunk=int(claim))

    # -- helpers ------------------------------------------------------------------

    def _connect(self, autocommit: bool = False) -> Any:
        """A connection whose ``jsonb`` values hold any text: NUL and lone surrogates
        are escaped on the way in and decoded on the way out (``pipekit.state.escaping``)."""
        from psycopg.types.json import set_json_dumps
        from psycopg.types.json import set_json_loads

        connection = self._psycopg.connect(self.conninfo, autocommit=autocommit)
        set_json_dumps(jsonb_text, context=connection)
        set_json_loads(json_value, context=connection)
        return connection

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
            except self._psycopg.Error as exc:
                raise StateWriteError(self.location, str(exc).strip()) from exc

    def _row(self, item_id: str, document: dict[str, Any]) -> tuple[Any, ...]:
        from psycopg.types.json import Jsonb

        summary, key = index_columns(document)
        return (
            self.pipeline,
            item_id,
            Jsonb(document, dumps=document_jsonb_text),
            summary.status,
            summary.next_phase,
            list(summary.done_names),
            Jsonb(summary.metadata),
            summary.cost_usd,
            key,
        )

    # -- the interface ------------------------------------------------------------

    def describe(self, item_id: str) -> str:
        return f"{self.location} item {item_id!r}"

    def load(self, item_id: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT state FROM pipekit_items WHERE pipeline = %s AND item_id = %s", (self.pipeline, item_id)
        )
        if not rows:
            return None
        document = rows[0][0]
        if not isinstance(document, dict):
            raise StateFileError(self.describe(item_id), "not a JSON object")
        return document

    def save(self, item_id: str, document: dict[str, Any]) -> None:
        self._fenced(item_id, UPSERT, self._row(item_id, document))

    def save_many(self, documents: Iterable[tuple[str, dict[str, Any]]], batch: int = 2000) -> int:
        """Save in batches of one transaction each; ``LeaseLostError`` names items whose lease was lost (unwritten)."""
        count = 0
        rows: list[tuple[Any, ...]] = []
        lost: list[str] = []

        def flush() -> None:
            with self._lock:
                try:
                    with self._db.transaction(), self._db.cursor() as cursor:
                        gone = self._lost_leases(cursor, [row[1] for row in rows])
                        if gone:
                            lost.extend(gone)
                            rows[:] = [row for row in rows if row[1] not in gone]
                        cursor.executemany(UPSERT, rows)
                except self._psycopg.Error as exc:
                    raise StateWriteError(self.location, str(exc).strip()) from exc

        for item_id, document in documents:
            rows.append(self._row(item_id, document))
            if len(rows) >= batch:
                flush()
                count, rows = count + len(rows), []
        if rows:
            flush()
        if lost:
            raise self._lease_lost(lost)
        return count + len(rows)

    def save_group(self, documents: list[tuple[str, dict[str, Any]]], drops: list[tuple[str, str]]) -> None:
        """One transaction for the documents and the checkpoints they end, fenced like
        every write: the lease check (``FOR KEY SHARE``) is in it; the writes are
        pipelined (one round trip). ``LeaseLostError`` names the items left unwritten."""
        rows = [self._row(item_id, document) for item_id, document in documents]
        with self._save_lock:
            try:
                if self._saver is None:
                    self._saver = self._connect(autocommit=True)
                db = self._saver
                with db.transaction(), db.cursor() as cursor:
                    lost = self._lost_leases(cursor, [row[1] for row in rows])
                    ends = [(self.pipeline, item_id, phase) for item_id, phase in drops if item_id not in lost]
                    with db.pipeline():
                        cursor.executemany(UPSERT, [row for row in rows if row[1] not in lost])
                        if ends:
                            cursor.executemany(DROP_CHECKPOINTS, ends)
            except self._psycopg.Error as exc:
                raise StateWriteError(self.location, str(exc).strip()) from exc
        if lost:
            raise self._lease_lost(lost)

    def write_output(self, item_id: str, phase_num: int, text: Any) -> str:
        # Named by content: the output the saved state refers to is never overwritten.
        ref = output_ref(phase_num, text)
        self._query(
            """INSERT INTO pipekit_outputs (pipeline, item_id, ref, text) VALUES (%s, %s, %s, %s)
               ON CONFLICT (pipeline, item_id, ref) DO UPDATE SET text = excluded.text""",
            (self.pipeline, item_id, ref, encode_output(text)),
        )
        return ref

    def read_output(self, item_id: str, ref: str) -> Any:
        rows = self._query(
            "SELECT text FROM pipekit_outputs WHERE pipeline = %s AND item_id = %s AND ref = %s",
            (self.pipeline, item_id, ref),
        )
        if not rows:
            raise StateFileError(self.describe(item_id), f"stored output {ref!r} is missing")
        return decode_output(ref, str(rows[0][0]))

    def delete_output(self, item_id: str, ref: str) -> None:
        # Fenced: a new holder may have written the same output (same ref) and refer to it.
        self._fenced(
            item_id,
            "DELETE FROM pipekit_outputs WHERE pipeline = %s AND item_id = %s AND ref = %s",
            (self.pipeline, item_id, ref),
        )

    def load_checkpoints(self, item_id: str, phase: str) -> dict[str, Any]:
        rows = self._query(
            "SELECT key, value FROM pipekit_checkpoints WHERE pipeline = %s AND item_id = %s AND phase = %s",
            (self.pipeline, item_id, phase),
        )
        return {key: value for key, value in rows}

    def save_checkpoint(self, item_id: str, phase: str, key: str, value: Any) -> None:
        from psycopg.types.json import Jsonb

        self._fenced(
            item_id,
            """INSERT INTO pipekit_checkpoints (pipeline, item_id, phase, key, value) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (pipeline, item_id, phase, key) DO UPDATE SET value = excluded.value""",
            (self.pipeline, item_id, phase, key, Jsonb(value)),
        )

    def save_checkpoints(self, item_id: str, phase: str, values: Mapping[str, Any]) -> None:
        """The batch in one statement (one transaction, one commit)."""
        from psycopg.types.json import Jsonb

        if not values:
            return
        self._fenced(
            item_id,
            """INSERT INTO pipekit_checkpoints (pipeline, item_id, phase, key, value)
               SELECT %s, %s, %s, batch.key, batch.value FROM jsonb_each(%s) AS batch
               ON CONFLICT (pipeline, item_id, phase, key) DO UPDATE SET value = excluded.value""",
            (self.pipeline, item_id, phase, Jsonb(dict(values))),
        )

    def drop_checkpoints(self, item_id: str, phase: str) -> None:
        self._fenced(item_id, DROP_CHECKPOINTS, (self.pipeline, item_id, phase))

    def item_ids(self) -> Iterator[str]:
        for (item_id,) in self._query("SELECT item_id FROM pipekit_items WHERE pipeline = %s", (self.pipeline,)):
            yield item_id

    def load_many(
        self, item_ids: Iterable[str], chunk: int = 1000
    ) -> Iterator[tuple[str, dict[str, Any] | None | StateFileError]]:
        for part in in_chunks(item_ids, chunk):
            rows = dict(
                self._query(
                    "SELECT item_id, state FROM pipekit_items WHERE pipeline = %s AND item_id = ANY(%s)",
                    (self.pipeline, part),
                )
            )
            for item_id in part:
                document = rows.get(item_id)
                if document is None or isinstance(document, dict):
                    yield item_id, document
                else:
                    yield item_id, StateFileError(self.describe(item_id), "not a JSON object")

    def load_all(self, errors: list[StateFileError] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        rows = self._stream(
            "pipekit_load_all", 1000, "SELECT item_id, state FROM pipekit_items WHERE pipeline = %s", (self.pipeline,)
        )
        for item_id, document in rows:
            if isinstance(document, dict):
                yield item_id, document
            elif errors is not None:
                errors.append(StateFileError(self.describe(item_id), "not a JSON object"))

    def _stream(self, name: str, batch: int, query: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``query``, from a server-side cursor on a connection of its own
        (one snapshot, and the store's connection stays free for the caller), fetched
        ``batch`` at a time: fetching every row at once held every document, 1.7 GB
        for 100,000 items."""
        try:
            reader = self._connect()
        except self._psycopg.Error as exc:
            raise StateWriteError(self.location, str(exc).strip()) from exc
        try:
            with reader.cursor(name=name) as cursor:
                cursor.itersize = batch
                cursor.execute(query, params)
                yield from cursor
        except self._psycopg.Error as exc:
            raise StateWriteError(self.location, str(exc).strip()) from exc
        finally:
            reader.close()

    def finished_items(self, phase_names: Collection[str]) -> dict[str, FinishedItem]:
        return dict(self._finished_rows(phase_names))

    def iter_finished(self, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]]:
        return self._finished_rows(phase_names)

    def _finished_rows(self, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]]:
        rows = self._stream(
            "pipekit_finished",
            2000,
            """SELECT item_id, metadata, cost_usd, stale_key FROM pipekit_items
               WHERE pipeline = %s AND next_phase IS NULL AND done_names @> %s
                 AND jsonb_typeof(state) = 'object' AND state ? 'schema_version' AND state ? 'phases'""",
            (self.pipeline, sorted(phase_names)),
        )
        self._statements["finished"] += 1
        count = 0
        try:
            for item_id, metadata, cost, key in rows:
                count += 1
                yield item_id, FinishedItem(metadata if isinstance(metadata, dict) else {}, float(cost), key)
        finally:
            self._statements["finished_rows"] += count

    def unfinished_item_ids(self) -> Iterator[str]:
        rows = self._query(
            "SELECT item_id FROM pipekit_items WHERE pipeline = %s AND next_phase IS NOT NULL", (self.pipeline,)
        )
        for (item_id,) in rows:
            yield item_id

    def __del__(self) -> None:
        # A command that forgot close() must not leave an open connection behind.
        # No module global here: at interpreter exit they may be gone already.
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110
            pass

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._save_lock:
            if self._saver is not None and not self._saver.closed:
                self._saver.close()
        with self._lock:
            if self._db.closed:
                return
            # (the heartbeat's thread may be deleting released ones right now: whatever it
            # leaves, this statement deletes)
            if self._held or self._releasing or self._heartbeat is not None:
                self._statements["release"] += 1
                self._query("DELETE FROM pipekit_leases WHERE owner = %s", (self.owner,))
                self._held.clear()
                self._releasing.clear()
            self._leased.clear()
            self._db.close()
            self._count_statements()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)

    def iter_fresh_finished_of(
        self, item_ids: Collection[str], phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]]:
        """The finished rows of ``item_ids`` only, by primary key (``FINISHED_OF``),
        1,000 ids a statement, on the store's own connection: a few rows need no
        cursor or connection of their own."""
        accepted = asked_once(fresh)
        for part in in_chunks(sorted(set(item_ids)), 1000):
            rows = self._query(FINISHED_OF, (self.pipeline, part, sorted(phase_names)))
            self._statements["finished"] += 1
            self._statements["finished_rows"] += len(rows)
            for item_id, metadata, cost, key in rows:
                if accepted(key):
                    yield item_id, float(cost), metadata if isinstance(metadata, dict) else {}
