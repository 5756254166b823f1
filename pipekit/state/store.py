"""Where state lives: the store interface, and what every store shares (ids, encoding, atomic files, locks)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
from pathlib import Path
import sys
import time
from typing import Any
from typing import TypeVar

from pipekit.outcomes import StateFileError
from pipekit.state.escaping import UNSTORABLE
from pipekit.state.heldby import HeldBy
from pipekit.state.holder import LeaseLostError
from pipekit.state.indexed import FinishedItem
from pipekit.state.indexed import asked_once
from pipekit.state.indexed import summarize


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
#: Longest encoded id kept readable; longer ones are cut and end with a full hash.
_MAX_READABLE = 120
_tmp_counter = itertools.count()
#: flock errors meaning "this file system has no locks" rather than "someone holds it".
NO_LOCKING_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def encode_item_id(item_id: str) -> str:
    """A file name (without extension) for ``item_id``: injective, at most 200
    bytes, no ``/``, never ``.`` or ``..`` and never hidden.

    Bytes outside ``[A-Za-z0-9._-]`` become ``%XX``; a leading ``.`` too. Ids
    with capital letters end with ``~`` and a short hash, so that ids differing
    only in case get different files on case-insensitive file systems. Ids too
    long to stay readable are cut and end with ``~`` and their full SHA-256.
    """
    if not item_id:
        raise ValueError("item id must be a non-empty string")
    if _SAFE.issuperset(item_id) and item_id[0] != "." and len(item_id) <= _MAX_READABLE + 9 and item_id.islower():
        return item_id  # already a safe, readable file name
    parts = []
    for index, char in enumerate(item_id):
        if char in _SAFE and not (index == 0 and char == "."):
            parts.append(char)
        else:
            parts.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
    encoded = "".join(parts)
    long, upper = len(encoded) > _MAX_READABLE + 9, encoded.lower() != encoded
    if not (long or upper):
        return encoded  # the common case needs no hash
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()
    if long:
        return f"{encoded[:_MAX_READABLE]}~{digest}"
    return f"{encoded}~{digest[:8]}"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def encode_document(document: dict[str, Any], phases: Mapping[str, str] | None = None) -> bytes:
    """``document`` as UTF-8 JSON, one top-level key per line and one line per
    entry of a top-level object (each phase on its own line).

    Readable like ``indent=2`` but built with json's C encoder, which is used
    only without ``indent``; the indenting encoder is pure Python and was a
    third of the CPU cost of a save.

    :param phases: the JSON text of each of ``document["phases"]``, by num, when
        already known (``pipekit.state.encoded.phases_texts``): not encoded again.
    """
    lines = []
    for key, value in document.items():
        if phases is not None and key == "phases" and phases:
            inner = ",\n".join(f"    {_encode(k)}: {text}" for k, text in phases.items())
            lines.append(f"  {_encode(key)}: {{\n{inner}\n  }}")
        elif isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            inner = ",\n".join(f"    {_encode(k)}: {_encode(v)}" for k, v in value.items())
            lines.append(f"  {_encode(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {_encode(key)}: {_encode(value)}")
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (an id from a file name, say) has no UTF-8 form: escape it as \\udXXX.
        return json.dumps(document, ensure_ascii=True, indent=2).encode("ascii")


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that no reader ever sees a partial file.

    :param durable: fsync the file and its directory, so the write survives a
        power cut, not only a process crash.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


#: A temporary file this old belongs to a write that died (a kill during it).
STALE_TEMP_SECONDS = 3600


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temporary files of writes that died in ``folder`` (not below it).

    A kill during ``write_atomically`` leaves its hidden ``.*.tmp`` file; nothing
    reads it. A live write lasts milliseconds, so only files older than
    ``STALE_TEMP_SECONDS`` go. Returns how many were deleted.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
    return removed


class ItemLock:
    """An exclusive, non-blocking lock on one item; released on ``release`` or process death.

    :param locked: False for a stand-in on a file system without locks.
    """

    def __init__(self, fd: int, *, locked: bool = True) -> None:
        self._fd: int | None = fd
        self.locked = locked

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self.locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release_soon(self) -> None:
        """Release the lock without waiting here for a server (idempotent): a runner's
        release on its event loop's thread. A lock that is a database row (a lease) is
        deleted shortly by the store's own thread, and ``StateStore.close`` deletes what
        is left; this default (a lock file) releases at once, as ``release`` does."""
        self.release()


def _print_warning(message: str) -> None:
    print(f"pipekit: warning: {message}", file=sys.stderr, flush=True)


class StateStore(abc.ABC):
    """Where item states are kept. The runner, ``status`` and ``reset`` go through it."""

    #: Where the state lives, for humans (a path or a URL with no password).
    location: str
    #: Says a warning about the store to the user: ``(message)``. A run points it
    #: at its reporting hook; read-only commands leave it printing on stderr.
    warn: Callable[[str], None] = staticmethod(_print_warning)
    #: True when ``save`` may be called from several threads at once (for
    #: different items); the runner then writes states off its event loop.
    threadsafe_saves: bool = False
    #: True when ``save_many`` commits its documents together (one durable
    #: write for all of them) and may run on a thread while the event loop's
    #: thread uses the store: the runner then writes the states of all the
    #: items queued meanwhile in one call, off the event loop (group commit).
    batched_saves: bool = False
    #: True when ``try_lock`` and ``claim`` may run on a thread while the event loop's
    #: thread uses the store (lock files, or a store behind its own lock): the runner
    #: then takes locks off the event loop (``threadsafe_saves`` implies it).
    threadsafe_locks: bool = False

    @abc.abstractmethod
    def load(self, item_id: str) -> dict[str, Any] | None:
        """The saved document of ``item_id``, or None. Raises ``StateFileError``."""

    @abc.abstractmethod
    def save(self, item_id: str, document: dict[str, Any]) -> None:
        """Replace the document of ``item_id`` atomically."""

    @abc.abstractmethod
    def describe(self, item_id: str) -> str:
        """Where the state of ``item_id`` is, for error messages."""

    @abc.abstractmethod
    def write_output(self, item_id: str, phase_num: int, text: Any) -> str:
        """Store a large output; returns the reference saved in the state.

        Must never overwrite an output the saved state still refers to: the
        state that refers to the new output is saved only afterwards.
        """

    @abc.abstractmethod
    def read_output(self, item_id: str, ref: str) -> Any:
        """Read back an output stored by ``write_output``."""

    @abc.abstractmethod
    def delete_output(self, item_id: str, ref: str) -> None:
        """Forget an output stored by ``write_output`` once no saved state refers to it
        (missing is fine)."""

    @abc.abstractmethod
    def try_lock(self, item_id: str) -> ItemLock | None:
        """Take the item's lock without waiting; None when another process holds it."""

    def lock_holder(self, item_id: str) -> HeldBy | None:
        """Who holds (or last held) the item's lock and until when, as far as this store
        knows; None when it cannot tell. Read-only and lock-free: for messages, never
        for deciding whether the item may be taken (``try_lock`` decides)."""
        return None

    #: True when ``running_holder`` can tell whether a process works on an item now.
    knows_running: bool = False

    def running_holder(self, item_id: str) -> HeldBy | None:
        """The process working on the item now (as far as the store records it), or
        None when none is (``knows_running``) or the store cannot tell (it cannot)."""
        return None

    def reopen_url(self) -> str | None:
        """A ``--store`` URL by which another process opens this same store
        (``pipekit.state.open.open_store_url``), so that worker processes can keep
        checkpoints; None when no other process can. It may hold a password:
        never print it."""
        return None

    def fencing_token(self, item_id: str) -> str | None:
        """The token of this store's lease on ``item_id``, which a worker process's store
        fences that item's writes by (``fence_as``); None when this store has none to
        give (the flock stores: their lock is this process's, not a row to check)."""
        return None

    def fence_as(self, item_id: str, token: str) -> None:
        """Fence this store's writes for ``item_id`` by the lease ``token`` names
        (``fencing_token`` of the driver's store), without ever taking or releasing it.
        A no-op where ``fencing_token`` gives none."""
        return None

    @abc.abstractmethod
    def item_ids(self) -> Iterator[str]:
        """Ids of every item with saved state (unordered)."""

    def load_all(self, errors: list[StateFileError] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every saved ``(item_id, document)``, unordered, for readers of many items.

        Stores may override this with one pass over their data (``status`` reads
        100,000 items). Unreadable documents are appended to ``errors`` when it
        is given, else skipped.
        """
        for item_id in self.item_ids():
            try:
                document = self.load(item_id)
            except StateFileError as exc:
                if errors is not None:
                    errors.append(exc)
                continue
            if document is not None:
                yield item_id, document

    def load_many(self, item_ids: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | None | StateFileError]]:
        """``(item_id, document or None or the error)`` for each id, in order; database
        stores read them in a few queries instead of one per item."""
        for item_id in item_ids:
            try:
                yield item_id, self.load(item_id)
            except StateFileError as exc:
                yield item_id, exc

    def save_many(self, documents: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Save many ``(item_id, document)`` pairs (``migrate``); returns how many.

        Database stores write them in batches of one transaction each.
        """
        count = 0
        lost: list[LeaseLostError] = []
        for item_id, document in documents:
            try:
                self.save(item_id, document)
            except LeaseLostError as exc:  # the others are written all the same
                lost.append(exc)
                continue
            count += 1
        if lost:
            raise LeaseLostError(self.location, [i for exc in lost for i in exc.item_ids], released=lost[0].released)
        return count

    def finished_items(self, phase_names: Collection[str]) -> dict[str, FinishedItem] | None:
        """The items whose phases named ``phase_names`` are all completed or
        skipped, by id, answered by an index; None when this store has no such
        index (the runner then reads each item).
        """
        return None

    def iter_finished(self, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]] | None:
        """``finished_items`` as a stream of ``(item_id, FinishedItem)``, read in
        batches and never all held at once (a resume of a million items); None
        when this store has no such index."""
        finished = self.finished_items(phase_names)
        return None if finished is None else iter(finished.items())

    def iter_fresh_finished(
        self, phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]] | None:
        """The finished items (``iter_finished``) whose stale key ``fresh``
        accepts, streamed as ``(item_id, cost_usd, metadata)``: what a resume
        skips unread. ``fresh`` is asked once per distinct key, and rows of one
        metadata text may share one dict (not to be changed). None when this
        store has no index."""
        rows = self.iter_finished(phase_names)
        if rows is None:
            return None
        accepted = asked_once(fresh)
        return ((item_id, item.cost_usd, item.metadata) for item_id, item in rows if accepted(item.stale_key))

    def unfinished_item_ids(self) -> Iterator[str]:
        """Ids of the items with work left ("what is left"); an indexed query where the store has one."""
        for item_id, document in self.load_all():
            if summarize(document).next_phase is not None:
                yield item_id

    def close(self) -> None:  # noqa: B027  (most stores hold nothing to release)
        """Release connections and leases (idempotent). A store is usable until closed."""

    # Checkpoints inside a phase (``ctx.checkpoint``). They live beside the
    # item's state, never in it, so saving one costs the same however many
    # exist. The defaults keep them in memory (they survive retries within a
    # run, not a crash): a durable store overrides all three.

    def load_checkpoints(self, item_id: str, phase: str) -> dict[str, Any]:
        """The stored checkpoints of (``item_id``, phase named ``phase``), by key."""
        return dict(self._memory_checkpoints().get((item_id, phase), {}))

    def save_checkpoint(self, item_id: str, phase: str, key: str, value: Any) -> None:
        """Store one checkpoint's JSON-serialisable ``value`` durably, replacing any old one."""
        self._memory_checkpoints().setdefault((item_id, phase), {})[key] = value

    def drop_checkpoints(self, item_id: str, phase: str) -> None:
        """Forget every checkpoint of (``item_id``, ``phase``) (none is fine)."""
        self._memory_checkpoints().pop((item_id, phase), None)

    def save_checkpoints(self, item_id: str, phase: str, values: Mapping[str, Any]) -> None:
        """``save_checkpoint`` for several keys, in one durable write (one transaction,
        or one file), all or none (a batch of finished sub-items costs one write).
        Keep each key to one of the two methods: the JSON store reads a key's
        newest batch before its own file, whichever was written last."""
        for key, value in values.items():
            self.save_checkpoint(item_id, phase, key, value)

    def _memory_checkpoints(self) -> dict[tuple[str, str], dict[str, Any]]:
        memory: dict[tuple[str, str], dict[str, Any]] = self.__dict__.setdefault("_checkpoints_in_memory", {})
        return memory

    def save_group(self, documents: list[tuple[str, dict[str, Any]]], drops: list[tuple[str, str]]) -> None:
        """Write several items' ``(item_id, document)``, then drop the checkpoints
        those documents made useless (``drops``: ``(item_id, phase)``): the writer's
        group commit. A database store commits all of it in one transaction; a
        ``LeaseLostError`` names the items whose lease was lost, of which nothing
        was written (the others' documents and drops were)."""
        try:
            self.save_many(documents)
        except LeaseLostError as exc:
            lost = set(exc.item_ids)
            for item_id, phase in drops:
                if item_id not in lost:
                    self.drop_checkpoints(item_id, phase)
            raise
        for item_id, phase in drops:
            self.drop_checkpoints(item_id, phase)

    #: Items a run claims at once (``claim``); 1: it takes each item's lock as it starts it.
    claim_chunk: int = 1
    #: True: a run claims its next chunk while the last one's items wait to start (a slot
    #: seldom waits for a slow claim); False keeps its claims to what it can start soon.
    claim_ahead: bool = False

    def claim(self, item_ids: Sequence[str]) -> dict[str, ItemLock]:
        """Take the locks of those of ``item_ids`` that are free, without waiting, by id;
        the others are held by another process. A store that can takes them all in one
        statement; this default calls ``try_lock`` for each (the flocks of one machine)."""
        taken: dict[str, ItemLock] = {}
        try:
            for item_id in dict.fromkeys(item_ids):
                lock = self.try_lock(item_id)
                if lock is not None:
                    taken[item_id] = lock
        except BaseException:
            for lock in taken.values():
                lock.release()
            raise
        return taken

    def iter_fresh_finished_of(
        self, item_ids: Collection[str], phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]] | None:
        """``iter_fresh_finished`` of ``item_ids`` only, in any order: what a run asks
        at every try at the few items another process holds, so a store should read
        those items' rows, not every finished row. None when this store cannot tell
        without reading each item's state (no index). This default streams
        ``iter_fresh_finished`` and keeps the rows of ``item_ids``: correct for any
        store that has that, and as slow as it."""
        rows = self.iter_fresh_finished(phase_names, fresh)
        if rows is None:
            return None
        wanted = set(item_ids)
        return (row for row in rows if row[0] in wanted)


_T = TypeVar("_T")


def in_chunks(values: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``values`` in lists of ``size`` (the last one shorter): a database's statements
    take a bounded number of ids each."""
    part: list[_T] = []
    for value in values:
        part.append(value)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def item_id_problem(item_id: str) -> str | None:
    """Why no store may hold ``item_id``, or None; every item source is checked by it,
    so an id is refused before any phase runs, and the same on every store.

    Refused everywhere, though the JSON store could hold them: NUL (PostgreSQL
    keeps no NUL in text, and no command line can carry one, so ``--item`` could
    never name the item) and lone surrogates (no UTF-8 form: SQLite and
    PostgreSQL cannot take them). An id is a key, so it is never escaped: the
    same id must name the same item in every store, and after ``migrate``.
    """
    found = UNSTORABLE.search(item_id)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds NUL (U+0000), which no store keeps in an id"
    return f"holds a lone surrogate (U+{ord(found.group()):04X}), which is not Unicode text and no store keeps in an id"
