"""The SQLite store: one database file for a whole run (``sqlite:PATH``).

One row per item holds the state document as JSON plus indexed columns (status,
next phase, the names of finished phases, metadata), so "what is left" is a
query, not a scan. Large outputs live in their own table. WAL journal with
``synchronous=FULL``: a committed change survives kill -9 and power loss.
Several pipekit processes on one machine may share the file: writers take
``BEGIN IMMEDIATE`` and wait on the busy timeout. Per-item locks are flock'ed
files in ``PATH.locks/`` (they die with the process that holds them, and
never expire while it lives, so a paused process resumes still holding its
items and writes need no fencing token; the database refuses network file
systems, where a server might drop a lock). Only the order within this
process matters: a write for an item after this store released its lock is
refused (``pipekit.state.itemfence``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
import os
from pathlib import Path
import sqlite3
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

from pipekit.outcomes import StateFileError
from pipekit.outcomes import StateWriteError
from pipekit.outcomes import UsageError
from pipekit.state.digest import text_hash
from pipekit.state.encoded import document_text
from pipekit.state.escaping import json_text
from pipekit.state.escaping import json_value
from pipekit.state.flocks import FlockedItems
from pipekit.state.holder import LeaseLostError
from pipekit.state.indexed import FinishedItem
from pipekit.state.indexed import index_columns
from pipekit.state.itemfence import ItemFence
from pipekit.state.localdisk import check_local
from pipekit.state.sqlitefinished import finished_rows
from pipekit.state.sqlitefinished import fresh_finished_rows
from pipekit.state.sqlitefinished import fresh_finished_rows_of
from pipekit.state.sqliteschema import ADD_KEY
from pipekit.state.sqliteschema import INDEXES
from pipekit.state.sqliteschema import SCHEMA
from pipekit.state.sqliteschema import UPSERT
from pipekit.state.sqliteschema import statements
from pipekit.state.store import StateStore
from pipekit.state.store import in_chunks
from pipekit.state.values import decode_output
from pipekit.state.values import encode_output
from pipekit.state.values import output_ref


class SqliteStore(FlockedItems, StateStore):
    """Every item of a run in one SQLite database.

    :param path: the database file (created with its folder).
    :param synchronous: SQLite ``synchronous`` pragma; ``FULL`` survives power loss. By
        default ``FULL``, or ``NORMAL`` (survives a crash of the process) with ``PIPEKIT_FSYNC=0``.
    :param busy_timeout: seconds a writer waits for another process's transaction.
    :param create: create the database (and its folder) when missing; when false
        a missing one is a ``UsageError`` naming it, and nothing is created.
    """

    # One connection behind a lock: usable from the writer's thread, and many
    # items' states are committed in one transaction (``save_many``).
    batched_saves = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str | None = None,
        busy_timeout: float = 60.0,
        create: bool = True,
    ) -> None:
        if synchronous is None:
            synchronous = "NORMAL" if os.environ.get("PIPEKIT_FSYNC", "1") == "0" else "FULL"
        self.path = Path(path).expanduser().absolute()
        self.locks_dir = self.path.with_name(self.path.name + ".locks")
        self.location = f"sqlite:{self.path}"
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise UsageError(f"sqlite store: synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        if not create and not self.path.is_file():
            raise UsageError(f"sqlite store {self.path} does not exist (no state was ever saved there)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateWriteError(self.path, exc.strerror or str(exc)) from exc
        check_local(self.path.parent)
        self._lock = threading.RLock()
        #: ``load``'s own connection (made at the first load) and its lock.
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._busy_timeout = busy_timeout
        self._fence = ItemFence(self.location)
        connection: sqlite3.Connection | None = None
        try:
            connection = self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            _retry_while_busy(self._prepare, busy_timeout)
        except sqlite3.DatabaseError as exc:
            if connection is not None:
                connection.close()
            raise UsageError(f"sqlite store {self.path} cannot be opened: {exc}") from None

    def _prepare(self) -> None:
        """Switch to WAL and create or migrate the schema (idempotent, so it can be retried)."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={self.synchronous}")
        with self._transaction() as db:
            for statement in statements(SCHEMA):
                db.execute(statement)
            if "stale_digest" not in {row[1] for row in db.execute("PRAGMA table_info(items)")}:
                db.execute("ALTER TABLE items ADD COLUMN stale_digest TEXT")
            for statement in statements(INDEXES):
                db.execute(statement)

    def reopen_url(self) -> str:
        return f"sqlite:{self.path}?synchronous={self.synchronous}"

    @classmethod
    def from_url(cls, rest: str, *, create: bool = True) -> SqliteStore:
        """``PATH[?synchronous=NORMAL]`` after ``sqlite:``."""
        path, _, query = rest.partition("?")
        options = dict(parse_qsl(query))
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise UsageError(f"sqlite store: unknown option(s) {', '.join(sorted(unknown))}")
        return cls(path, synchronous=options.get("synchronous"), create=create)

    # -- transactions -------------------------------------------------------

    class _Tx:
        def __init__(self, store: SqliteStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                # IMMEDIATE takes the write lock now, so a busy database waits here
                # (busy timeout) instead of failing at COMMIT.
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
            try:
                self.store._db.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _transaction(self) -> SqliteStore._Tx:
        return SqliteStore._Tx(self)

    def _write(self, where: object, action: Any) -> None:
        try:
            with self._transaction() as db:
                action(db)
        except sqlite3.Error as exc:
            raise StateWriteError(where, str(exc)) from exc

    def _fenced_write(self, item_id: str, action: Any) -> None:
        """``_write`` for ``item_id``: ``LeaseLostError`` once this store released its lock."""
        with self._fence.writing_one(item_id):
            self._write(self.describe(item_id), action)

    # -- the interface --------------------------------------------------------

    def describe(self, item_id: str) -> str:
        return f"{self.location} item {item_id!r}"

    def load(self, item_id: str) -> dict[str, Any] | None:
        # On a connection of its own: the runner loads items on the event loop's
        # thread, which would otherwise wait for the writer thread's commit (its
        # fsync) to free the connection. In WAL a reader never waits for a writer.
        with self._read_lock:
            row = self._reading().execute("SELECT state FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else self._parse(item_id, row[0])

    def _reading(self) -> sqlite3.Connection:
        """The connection ``load`` and ``load_many`` read on (hold ``_read_lock``)."""
        if self._reader is None:
            self._reader = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        return self._reader

    def _parse(self, item_id: str, raw: Any) -> dict[str, Any]:
        try:
            document = json_value(raw)
        except (ValueError, TypeError) as exc:
            raise StateFileError(self.describe(item_id), f"not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise StateFileError(self.describe(item_id), "not a JSON object")
        return document

    @staticmethod
    def _row(item_id: str, document: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[str, str] | None]:
        """The item's row, and its stale key as ``(digest, key)`` (None: unknown)."""
        summary, key = index_columns(document)
        pair = None if key is None else (text_hash(key), key)
        row = (
            item_id,
            document_text(document),
            summary.status,
            summary.next_phase,
            json_text(summary.done_names),
            json_text(summary.metadata),
            summary.cost_usd,
            None if pair is None else pair[0],
        )
        return row, pair

    def save(self, item_id: str, document: dict[str, Any]) -> None:
        self.save_group([(item_id, document)], [])

    def save_many(self, documents: Iterable[tuple[str, dict[str, Any]]], batch: int = 2000) -> int:
        count = 0
        lost: list[str] = []
        for part in in_chunks(documents, batch):
            try:
                self.save_group(part, [])
            except LeaseLostError as exc:  # the others of the part were written
                lost.extend(exc.item_ids)
            count += len(part)
        if lost:
            raise self._fence.lost(lost)
        return count - len(lost)

    def save_group(self, documents: list[tuple[str, dict[str, Any]]], drops: list[tuple[str, str]]) -> None:
        # One transaction (one fsync) for the documents and the checkpoints they end:
        # inside it, a DELETE that finds nothing costs an index probe, not a commit.
        # Fenced (pipekit.state.itemfence): the items whose lock this store released are left out.
        with self._fence.writing([item_id for item_id, _ in documents]) as lost:
            rows: list[tuple[Any, ...]] = []
            keys: set[tuple[str, str]] = set()
            for item_id, document in documents:
                if item_id in lost:
                    continue
                row, key = self._row(item_id, document)
                rows.append(row)
                if key is not None:
                    keys.add(key)
            ends = [drop for drop in drops if drop[0] not in lost] if lost else drops

            def action(db: sqlite3.Connection) -> None:
                if keys:
                    db.executemany(ADD_KEY, keys)
                db.executemany(UPSERT, rows)
                if ends:
                    db.executemany("DELETE FROM checkpoints WHERE item_id = ? AND phase = ?", ends)

            if rows or ends:
                self._write(self.location if len(rows) != 1 else self.describe(rows[0][0]), action)
        if lost:
            raise self._fence.lost(lost)

    def write_output(self, item_id: str, phase_num: int, text: Any) -> str:
        # Named by content: the output the saved state refers to is never overwritten.
        ref = output_ref(phase_num, text)
        self._write(
            self.describe(item_id),
            lambda db: db.execute(
                "INSERT OR REPLACE INTO outputs (item_id, ref, text) VALUES (?, ?, ?)",
                (item_id, ref, encode_output(text)),
            ),
        )
        return ref

    def read_output(self, item_id: str, ref: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT text FROM outputs WHERE item_id = ? AND ref = ?", (item_id, ref)).fetchone()
        if row is None:
            raise StateFileError(self.describe(item_id), f"stored output {ref!r} is missing")
        return decode_output(ref, str(row[0]))

    def delete_output(self, item_id: str, ref: str) -> None:
        # Fenced: a new holder may have written the same output (same ref) and refer to it.
        self._fenced_write(
            item_id, lambda db: db.execute("DELETE FROM outputs WHERE item_id = ? AND ref = ?", (item_id, ref))
        )

    def load_checkpoints(self, item_id: str, phase: str) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM checkpoints WHERE item_id = ? AND phase = ?", (item_id, phase)
            ).fetchall()
        return {key: json_value(value) for key, value in rows}

    def save_checkpoint(self, item_id: str, phase: str, key: str, value: Any) -> None:
        text = json_text(value)
        self._fenced_write(
            item_id,
            lambda db: db.execute(
                "INSERT OR REPLACE INTO checkpoints (item_id, phase, key, value) VALUES (?, ?, ?, ?)",
                (item_id, phase, key, text),
            ),
        )

    def drop_checkpoints(self, item_id: str, phase: str) -> None:
        # Asked at every phase end: a read answers the common "none" without a
        # write transaction (and its fsync).
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM checkpoints WHERE item_id = ? AND phase = ? LIMIT 1", (item_id, phase)
            ).fetchone()
        if found is None:
            return
        self._fenced_write(
            item_id, lambda db: db.execute("DELETE FROM checkpoints WHERE item_id = ? AND phase = ?", (item_id, phase))
        )

    def save_checkpoints(self, item_id: str, phase: str, values: Mapping[str, Any]) -> None:
        rows = [(item_id, phase, key, json_text(value)) for key, value in values.items()]
        self._fenced_write(
            item_id,
            lambda db: db.executemany(
                "INSERT OR REPLACE INTO checkpoints (item_id, phase, key, value) VALUES (?, ?, ?, ?)", rows
            ),
        )

    def item_ids(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM items").fetchall()
        for (item_id,) in rows:
            yield item_id

    def load_many(
        self, item_ids: Iterable[str], chunk: int = 500
    ) -> Iterator[tuple[str, dict[str, Any] | None | StateFileError]]:
        for part in in_chunks(item_ids, chunk):
            marks = ",".join("?" * len(part))
            # On the reading connection too: a run reads the items it claims as it takes
            # them, and the writer's connection may be in a group commit's fsync.
            with self._read_lock:
                query = f"SELECT item_id, state FROM items WHERE item_id IN ({marks})"
                rows = dict(self._reading().execute(query, part))
            for item_id in part:
                raw = rows.get(item_id)
                try:
                    yield item_id, None if raw is None else self._parse(item_id, raw)
                except StateFileError as exc:
                    yield item_id, exc

    def load_all(self, errors: list[StateFileError] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        # Streamed from a read-only connection of its own (one snapshot, and the
        # store's connection stays free for the caller): fetching every row at
        # once held every document's text, 680 MB for 100,000 items.
        try:
            reader = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateFileError(self.location, f"cannot be read ({exc})") from None
        try:
            for item_id, raw in reader.execute("SELECT item_id, state FROM items"):
                try:
                    yield item_id, self._parse(item_id, raw)
                except StateFileError as exc:
                    if errors is not None:
                        errors.append(exc)
        finally:
            reader.close()

    def finished_items(self, phase_names: Collection[str]) -> dict[str, FinishedItem]:
        return dict(self._finished_rows(phase_names))

    def iter_finished(self, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]]:
        return self._finished_rows(phase_names)

    def _finished_rows(self, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]]:
        return finished_rows(self.path, self.location, phase_names)

    def iter_fresh_finished(
        self, phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]]:
        return fresh_finished_rows(self.path, self.location, phase_names, fresh)

    def unfinished_item_ids(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM items WHERE next_phase IS NOT NULL").fetchall()
        for (item_id,) in rows:
            yield item_id

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()

    def iter_fresh_finished_of(
        self, item_ids: Collection[str], phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]]:
        return fresh_finished_rows_of(self.path, self.location, item_ids, phase_names, fresh)


def _retry_while_busy(action: Callable[[], None], timeout: float) -> None:
    """Run ``action``, again while another process holds the database, for up to ``timeout`` s.

    Needed for opening only: while a new database is still in rollback-journal
    mode, SQLite answers ``SQLITE_BUSY`` at once instead of calling the busy
    handler when waiting could deadlock (two processes switching it to WAL at
    the same moment), so processes started together would fail to open it.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is None:
        return "database is locked" in str(exc)
    return bool(code & 0xFF == _SQLITE_BUSY)


_SQLITE_BUSY = 5
