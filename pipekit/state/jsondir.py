"""The JSON directory store: one human-readable ``.json`` file per item.

Every write goes to a temporary file (never named ``*.json``), is fsynced, then
renamed over the old file, so a reader or a crash sees the old or the new file whole."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
import contextlib
import errno
import fcntl
import os
from pathlib import Path
import shutil
import threading
import time
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.outcomes import StateWriteError
from pipekit.state.batchfiles import BatchFiles
from pipekit.state.encoded import phases_texts
from pipekit.state.escaping import escape
from pipekit.state.escaping import json_text
from pipekit.state.escaping import json_value
from pipekit.state.escaping import needs_escape
from pipekit.state.flocks import FlockedItems
from pipekit.state.heldby import write_lock_record
from pipekit.state.holder import this_holder
from pipekit.state.indexed import UNREADABLE
from pipekit.state.indexed import asked_once
from pipekit.state.indexed import index_columns
from pipekit.state.itemfence import ItemFence
from pipekit.state.store import NO_LOCKING_ERRNOS
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore
from pipekit.state.store import encode_document
from pipekit.state.store import encode_item_id
from pipekit.state.store import remove_stale_temp_files
from pipekit.state.store import write_atomically
from pipekit.state.values import decode_output
from pipekit.state.values import encode_output
from pipekit.state.values import output_name


#: Names a file of checkpoints written together (``save_checkpoints``); no key's own
#: file starts so (``encode_item_id`` never begins a name with ``~``).
BATCH_PREFIX = "~batch-"
#: The batch files of the folders this process writes to, and which still count.
_BATCH_FILES = BatchFiles()
_last_stamp = 0
_stamp_lock = threading.Lock()


def _stamp() -> int:
    """A batch's order: wall-clock nanoseconds, rising in this process (driver
    and worker write one item's checkpoints one after the other, not at once)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


class JsonDirStore(FlockedItems, StateStore):
    """One JSON file per item in a directory (the default store).

    :param state_dir: the directory, created on first write.
    :param durable: fsync every write, so it survives a power cut, not only a
        crash of the process. By default true unless ``PIPEKIT_FSYNC=0``.
    """

    threadsafe_saves = True

    def __init__(self, state_dir: str | os.PathLike[str], *, durable: bool | None = None) -> None:
        # Absolute, so a handler that changes the current folder cannot lose state.
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.locks_dir = self.state_dir / ".locks"
        self.location = str(self.state_dir)
        self.durable = durable if durable is not None else os.environ.get("PIPEKIT_FSYNC", "1") != "0"
        self._ready = False
        self._locks_ready = False
        self._last_path: tuple[str, Path] | None = None
        self._warned_no_locking = False
        self._fence = ItemFence(self.location)

    def _prepare(self) -> None:
        if not self._ready:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateWriteError(self.state_dir, exc.strerror or str(exc)) from exc
            self._ready = True
            remove_stale_temp_files(self.state_dir)

    def reopen_url(self) -> str:
        return f"json:{self.state_dir}"

    def path_for(self, item_id: str) -> Path:
        """The state file of ``item_id``."""
        last = self._last_path
        if last is not None and last[0] == item_id:
            return last[1]  # loading an item asks for its path twice (load, describe)
        path = self.state_dir / f"{encode_item_id(item_id)}.json"
        self._last_path = (item_id, path)
        return path

    def describe(self, item_id: str) -> str:
        return str(self.path_for(item_id))

    def load(self, item_id: str) -> dict[str, Any] | None:
        path = self.path_for(item_id)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(path, f"cannot be read ({exc.strerror})") from None
        return self._parse(path, raw)

    @staticmethod
    def _parse(path: Path | str, raw: bytes) -> dict[str, Any]:
        try:
            document = json_value(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateFileError(path, f"not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise StateFileError(path, "not a JSON object")
        return document

    def save(self, item_id: str, document: dict[str, Any]) -> None:
        self._prepare()
        data = encode_document(document, phases_texts(document))
        if needs_escape(data):  # a surrogate, or a string that looks escaped: see pipekit.state.escaping
            data = encode_document(escape(document))
        path = self.path_for(item_id)
        try:
            with self._fence.writing_one(item_id):
                write_atomically(path, data, durable=self.durable)
        except OSError as exc:
            raise StateWriteError(path, exc.strerror or str(exc)) from exc

    def _outputs_dir(self, item_id: str) -> Path:
        return self.state_dir / f"{encode_item_id(item_id)}.outputs"

    def write_output(self, item_id: str, phase_num: int, text: Any) -> str:
        self._prepare()
        folder = self._outputs_dir(item_id)
        # Named by content, so the file the saved state refers to is never overwritten.
        path = folder / output_name(phase_num, text)
        try:
            if folder.exists():
                remove_stale_temp_files(folder)
            folder.mkdir(exist_ok=True)
            write_atomically(path, encode_output(text).encode("utf-8"), durable=self.durable)
        except OSError as exc:
            raise StateWriteError(path, exc.strerror or str(exc)) from exc
        return str(path.relative_to(self.state_dir))

    def read_output(self, item_id: str, ref: str) -> Any:
        path = (self.state_dir / ref).resolve()
        if self.state_dir.resolve() not in path.parents:
            raise StateFileError(self.path_for(item_id), f"output reference {ref!r} leaves the state dir")
        try:
            # not read_text: it would turn \r into \n
            return decode_output(ref, path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise StateFileError(path, f"output file cannot be read ({exc.strerror})") from None

    def delete_output(self, item_id: str, ref: str) -> None:
        path = (self.state_dir / ref).resolve()
        if self.state_dir in path.parents:
            # Fenced: a new holder may have written the same output (same name) and refer to it.
            with self._fence.writing_one(item_id), contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _checkpoint_dir(self, item_id: str, phase: str) -> Path:
        return self.state_dir / f"{encode_item_id(item_id)}.checkpoints" / encode_item_id(phase)

    def load_checkpoints(self, item_id: str, phase: str) -> dict[str, Any]:
        folder = self._checkpoint_dir(item_id, phase)
        while True:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return {}
            found = self._read_checkpoints(folder, entries)
            if found is not None:
                return found
            # A batch file went while it was read: the one that superseded it
            # was durable before, so a second look sees it.

    def _read_checkpoints(self, folder: Path, entries: list[os.DirEntry[str]]) -> dict[str, Any] | None:
        """The winning record of each key in ``entries``; None when a file went meanwhile."""
        found: dict[str, Any] = {}
        # A key's own file (``save_checkpoint``) counts as older than every batch
        # (``save_checkpoints``); batches are ordered by their stamp.
        winners: dict[str, tuple[int, str]] = {}
        batches = []
        for entry in entries:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                path = Path(entry.path)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    return None
                record = self._parse(path, data)
                values = record.get("values")
                stamp = record.get("stamp")
                if entry.name.startswith(BATCH_PREFIX) and isinstance(values, dict) and isinstance(stamp, int):
                    pairs = list(values.items())
                    batches.append(entry.name)
                elif isinstance(record.get("key"), str) and "value" in record:
                    pairs, stamp = [(record["key"], record["value"])], -1
                else:
                    continue
                for key, value in pairs:
                    if winners.get(key, (-2, ""))[0] < stamp:
                        winners[key] = (stamp, entry.name)
                        found[key] = value
        if batches:
            _BATCH_FILES.loaded(str(folder), winners, batches)
        return found

    def save_checkpoint(self, item_id: str, phase: str, key: str, value: Any) -> None:
        self._prepare()
        folder = self._checkpoint_dir(item_id, phase)
        path = folder / f"{encode_item_id(key)}.json"
        data = json_text({"key": key, "value": value}).encode("utf-8")
        try:
            with self._fence.writing_one(item_id):
                folder.mkdir(parents=True, exist_ok=True)
                write_atomically(path, data + b"\n", durable=self.durable)
        except OSError as exc:
            raise StateWriteError(path, exc.strerror or str(exc)) from exc

    def save_checkpoints(self, item_id: str, phase: str, values: Mapping[str, Any]) -> None:
        """One file for the batch, written and fsynced once, stamped: a later batch
        supersedes it, and it supersedes the keys' own files (``save_checkpoint``),
        so a key is kept by one of the two ways (sub-items by batches)."""
        if not values:
            return
        self._prepare()
        folder = self._checkpoint_dir(item_id, phase)
        if not _BATCH_FILES.knows(str(folder)):
            self.load_checkpoints(item_id, phase)  # which files hold what: see pipekit.state.batchfiles
            if not _BATCH_FILES.knows(str(folder)):
                _BATCH_FILES.loaded(str(folder), {}, ())  # no batch yet
        with self._fence.writing_one(item_id):
            stamp = _stamp()
            path = folder / f"{BATCH_PREFIX}{stamp}-{os.getpid()}.json"
            data = json_text({"stamp": stamp, "values": dict(values)}).encode("utf-8")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                write_atomically(path, data + b"\n", durable=self.durable)
            except OSError as exc:
                raise StateWriteError(path, exc.strerror or str(exc)) from exc
            # Only now that the new batch is durable: the files it leaves without a record that counts.
            for name in _BATCH_FILES.written(str(folder), path.name, stamp, values):
                with contextlib.suppress(OSError):
                    (folder / name).unlink()

    def drop_checkpoints(self, item_id: str, phase: str) -> None:
        # Called at every phase end: the common answer ("none") costs one stat of a str path.
        if not os.path.isdir(f"{self.location}{os.sep}{encode_item_id(item_id)}.checkpoints"):
            return
        folder = self._checkpoint_dir(item_id, phase)
        if not folder.is_dir():
            return
        with self._fence.writing_one(item_id):
            _BATCH_FILES.forget(str(folder))
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # only when no other phase has checkpoints

    def try_lock(self, item_id: str) -> ItemLock | None:
        """Take the item's ``flock`` in ``.locks/``.

        The kernel drops an flock when its process dies, however it dies, so a
        lock file left behind never blocks a later run (lock files are never
        deleted: deleting one while another process waits on it would let two
        processes hold "the" lock). On a file system without locking (some NFS
        mounts answer ENOLCK) items are run unlocked, with one warning.

        Writes need no fencing token here, unlike the PostgreSQL store's
        leases (only order within this process: a write after the release is
        refused, ``pipekit.state.itemfence``): an flock does not expire. A
        process paused for an hour (SIGSTOP, a closed laptop lid, a paused VM)
        still holds it when it resumes, so no other driver can have taken the
        item meanwhile, and the only way to lose the lock is to die, after
        which nothing writes. (A lock on NFS is kept by the server, which may
        drop it when a client is cut off past its lease, about 90 s; state
        shared between hosts belongs in PostgreSQL.)
        """
        self._prepare()
        path = self.locks_dir / f"{encode_item_id(item_id)}.lock"
        try:
            if not self._locks_ready:  # one mkdir per run, not per item
                path.parent.mkdir(exist_ok=True)
                self._locks_ready = True
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateWriteError(path, exc.strerror or str(exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                return None
            if exc.errno in NO_LOCKING_ERRNOS:
                self._warn_no_locking(exc)
                return self._fence.take(item_id, ItemLock(fd, locked=False))
            os.close(fd)
            raise StateWriteError(path, exc.strerror or str(exc)) from exc
        write_lock_record(fd, this_holder())  # so that a run waiting for the item can name its holder
        return self._fence.take(item_id, ItemLock(fd))

    def _warn_no_locking(self, exc: OSError) -> None:
        if not self._warned_no_locking:
            self._warned_no_locking = True
            self.warn(
                f"{self.state_dir} does not support file locks "
                f"({exc.strerror}); items are run unlocked: do not start two runs on it at once"
            )

    def item_ids(self) -> Iterator[str]:
        for item_id, _ in self.load_all():
            yield item_id

    def load_all(self, errors: list[StateFileError] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        # One read and one parse per file (item_ids() followed by load() would be two).
        yield from self.load_files(self.state_files(), errors)

    def state_files(self) -> list[str]:
        """The paths of every item's state file (unordered)."""
        if not self.state_dir.is_dir():
            return []
        return [
            entry.path
            for entry in os.scandir(self.state_dir)
            if entry.name.endswith(".json") and not entry.name.startswith(".")
        ]

    def load_files(
        self, paths: Iterable[str], errors: list[StateFileError] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``load_all`` over these state files (``status`` shares a big batch out to processes)."""
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    document = self._parse(path, handle.read())
            except OSError as exc:
                problem = StateFileError(path, f"cannot be read ({exc.strerror})")
                if errors is not None:
                    errors.append(problem)
                continue
            except StateFileError as exc:
                if errors is not None:
                    errors.append(exc)
                continue
            item_id = document.get("item_id")
            if isinstance(item_id, str):
                yield item_id, document
            elif errors is not None:
                errors.append(StateFileError(path, "has no item_id"))

    def iter_fresh_finished_of(
        self, item_ids: Collection[str], phase_names: Collection[str], fresh: Callable[[str | None], bool]
    ) -> Iterator[tuple[str, float, dict[str, Any]]]:
        """No index to ask, but a few state files are cheap to read: those of
        ``item_ids`` are read and summarised as a database store indexes them (a
        missing or unreadable one is not finished: a run reads it under its lock)."""
        wanted = set(phase_names)
        accepted = asked_once(fresh)
        for item_id, document in self.load_many(sorted(set(item_ids))):
            if not isinstance(document, dict):
                continue
            summary, key = index_columns(document)
            if summary is UNREADABLE or summary.next_phase is not None or not wanted.issubset(summary.done_names):
                continue
            if accepted(key):
                yield item_id, summary.cost_usd, summary.metadata
