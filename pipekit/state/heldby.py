"""Who holds an item and until when, as a waiting run names them.

A store's ``lock_holder`` answers with a ``HeldBy`` read from what the holder
wrote when it took the item: the lease row of the PostgreSQL store, the lock
file of the flock stores (JSON directory, SQLite). It is a description for a
person, read without any lock, never a decision: whether an item may be taken
stays with ``try_lock``.
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime
import errno
import fcntl
import functools
import json
import os
import time
from typing import Any

from pipekit.state.holder import Holder
from pipekit.state.holder import holder_is_gone


@dataclass(frozen=True)
class HeldBy:
    """The holder of an item's lock, as far as the store knows (None: not known)."""

    host: str | None = None
    pid: int | None = None
    #: When it took the item (seconds since the epoch).
    since: float | None = None
    #: When its lease expires unless renewed; None for a lock that never expires (flock).
    expires_at: float | None = None

    def describe(self) -> str:
        """``host H, pid P, since 12:00:01, lease until 12:01:01``; what is known of it."""
        parts = []
        if self.host is not None:
            parts.append(f"host {self.host}")
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.since is not None:
            parts.append(f"since {_clock(self.since)}")
        if self.expires_at is not None:
            parts.append(f"lease until {_clock(self.expires_at)}")
        else:
            parts.append("until it ends (its lock has no expiry)")
        return ", ".join(parts)


def _clock(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def holder_record(holder: Holder, since: float | None = None) -> str:
    """``holder``'s identity with the time it took the item, as written beside a lock
    (``Holder.from_json`` reads it back: the extra ``since`` is ignored there)."""
    identity = _identity(holder)  # one encoding per process: a run takes a lock per item
    return f'{identity[:-1]}, "since": {time.time() if since is None else since!r}}}'


@functools.lru_cache(maxsize=4)
def _identity(holder: Holder) -> str:
    return holder.to_json()


def read_holder_record(text: str | None, expires_at: float | None = None) -> HeldBy | None:
    """The ``HeldBy`` of a ``holder_record``; None when there is none or it is unreadable."""
    holder = Holder.from_json(text)
    if holder is None:
        return None
    since: Any = json.loads(text or "{}").get("since")
    return HeldBy(holder.host, holder.pid, float(since) if isinstance(since, (int, float)) else None, expires_at)


#: Bytes a lock file's record is padded to with spaces (JSON ignores them), so that a
#: new record overwrites the last one in place: truncating a file on ext4 first costs
#: a quarter of a millisecond per lock (its delayed-allocation flush at truncation).
LOCK_RECORD_BYTES = 512


def write_lock_record(fd: int, holder: Holder) -> None:
    """Write ``holder`` into the lock file ``fd`` just locked (over the last holder's).

    Best effort: naming the holder is for people; a full disk must not stop a run.
    """
    data = holder_record(holder).encode().ljust(LOCK_RECORD_BYTES)
    try:
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size > len(data):  # after an unusually long record (a very long host name)
            os.ftruncate(fd, len(data))
    except OSError:
        pass


def flock_is_held(path: str | os.PathLike[str]) -> bool:
    """True when a process holds the ``flock`` of the lock file at ``path`` now.

    Tried with a shared lock, released at once: a run taking the item in that
    instant finds it busy and waits, as for any held item; nothing is written.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody ever took the item
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def running_holder(path: str | os.PathLike[str]) -> HeldBy | None:
    """Who holds the lock file at ``path`` now (as its record says), or None when no one does."""
    if not flock_is_held(path):
        return None
    return read_lock_record(path) or HeldBy()


def read_lock_record(path: str | os.PathLike[str]) -> HeldBy | None:
    """Who wrote the lock file at ``path`` last (for a held lock: who holds it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return read_holder_record(file.read(4096))
    except OSError:
        return None


class LeaseRowHolder:
    """``lock_holder`` for a store whose leases are rows of ``pipekit_leases`` (PostgreSQL)."""

    pipeline: str

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # the store's own

    knows_running = True

    def running_holder(self, item_id: str) -> HeldBy | None:
        """The holder of a lease on the item that has not expired (by the server's
        clock), unless that holder certainly died on this machine; None otherwise."""
        row = self._lease_row(item_id, " AND expires_at > now()")
        return None if row is None or holder_is_gone(Holder.from_json(row[1])) else row[0]

    def lock_holder(self, item_id: str) -> HeldBy | None:
        """The lease row's holder and expiry; None when no one holds a lease on the item."""
        row = self._lease_row(item_id, "")
        return None if row is None else row[0]

    def _lease_row(self, item_id: str, condition: str) -> tuple[HeldBy, str | None] | None:
        """The item's lease row (``condition`` narrows it) as a ``HeldBy``, with its holder record."""
        rows = self._query(
            "SELECT host, pid, holder, extract(epoch FROM expires_at) FROM pipekit_leases "
            "WHERE pipeline = %s AND item_id = %s" + condition,
            (self.pipeline, item_id),
        )
        if not rows:
            return None
        host, pid, text, expires_at = rows[0]
        recorded = read_holder_record(text)  # None from older drivers: no "since"
        return HeldBy(str(host), int(pid), recorded.since if recorded else None, float(expires_at)), text
