"""Per-item locks as lock files on one machine (the JSON and SQLite stores): an
``flock`` on ``<locks_dir>/<encoded id>.lock``, which dies with its process, and
the holder's record written into the file for ``status`` and the report."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from pipekit.state.heldby import HeldBy
from pipekit.state.heldby import read_lock_record
from pipekit.state.heldby import running_holder
from pipekit.state.heldby import write_lock_record
from pipekit.state.holder import this_holder
from pipekit.state.itemfence import ItemFence
from pipekit.state.store import ItemLock
from pipekit.state.store import encode_item_id


#: Items whose lock files a run takes in one ``claim`` (``FlockedItems.claim_chunk``).
FLOCK_CLAIM_CHUNK = 64


def flock_item(locks_dir: Path, item_id: str) -> ItemLock | None:
    """Take ``item_id``'s lock file in ``locks_dir`` without waiting (flock: it dies with the process)."""
    path = locks_dir / f"{encode_item_id(item_id)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the folder is made by the first lock (or again if removed), not per item
        locks_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    write_lock_record(fd, this_holder())
    return ItemLock(fd)


class FlockedItems:
    """``try_lock`` and ``lock_holder`` by ``flock_item`` lock files in ``locks_dir``;
    the store's writes of an item are fenced by its ``_fence`` from the lock's release on."""

    locks_dir: Path
    _fence: ItemFence
    #: A lock file touches nothing else of the store: it may be taken on any thread, and
    #: a run takes a chunk's (at most ``-j``) in one call off its event loop, the next
    #: chunk's while the last one's items start (creating one can wait behind an fsync).
    threadsafe_locks = True
    claim_chunk = FLOCK_CLAIM_CHUNK
    claim_ahead = True

    def try_lock(self, item_id: str) -> ItemLock | None:
        """Take the item's lock file without waiting (fencing this store's writes of it
        from its release on: ``pipekit.state.itemfence``); None when another process holds it."""
        return self._fence.take(item_id, flock_item(self.locks_dir, item_id))

    def lock_holder(self, item_id: str) -> HeldBy | None:
        """Who wrote the item's lock file last: its holder, while it is held."""
        return read_lock_record(self.locks_dir / f"{encode_item_id(item_id)}.lock")

    knows_running = True

    def running_holder(self, item_id: str) -> HeldBy | None:
        """Who holds the item's lock file now, or None when no process does."""
        return running_holder(self.locks_dir / f"{encode_item_id(item_id)}.lock")
