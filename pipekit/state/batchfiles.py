"""Which of a JSON checkpoint folder's batch files still hold a record that counts.

``JsonDirStore.save_checkpoints`` writes each batch of records (a map's finished
sub-items) as a new stamped file, and the newest stamp holding a key wins. A
record written again supersedes the old one, so a map run again leaves files of
which nothing counts any more. This index knows, per folder, which file holds
the winning record of each key; a file that holds none may go, since every one
of its keys has a newer record in a file already durable (the file with the
newest stamp of a key never goes, so deleting is safe whoever else deletes).

An index is built from what ``load_checkpoints`` read and kept up to date by
the writes of this process; a file it never saw (written by another process
since) is never deleted by it, and a file it takes for live only stays on disk
longer. It is kept for the folders used last (``FOLDERS_KEPT``); a folder
written without an index is read first (``JsonDirStore`` does that).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
import threading


#: Folders whose index is kept (about the items a run has in flight).
FOLDERS_KEPT = 256


@dataclass
class _Folder:
    #: Per key, the stamp and file name of the record that wins.
    winners: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: Per batch file, how many keys it wins.
    wins: dict[str, int] = field(default_factory=dict)
    #: Batch files that win no key: to delete at the folder's next write.
    dead: set[str] = field(default_factory=set)


class BatchFiles:
    """The index of every folder this process writes batches to; thread-safe."""

    def __init__(self, kept: int = FOLDERS_KEPT) -> None:
        self._kept = kept
        self._folders: OrderedDict[str, _Folder] = OrderedDict()
        self._lock = threading.Lock()

    def knows(self, folder: str) -> bool:
        """Whether ``folder`` has an index (else read it before writing)."""
        with self._lock:
            return folder in self._folders

    def loaded(self, folder: str, winners: Mapping[str, tuple[int, str]], batches: Iterable[str]) -> None:
        """What a read of ``folder`` found: the winning record of each key (a
        key's own file as stamp -1, never deleted) and every batch file's name."""
        entry = _Folder()
        for key, (stamp, name) in winners.items():
            entry.winners[key] = (stamp, name)
            entry.wins[name] = entry.wins.get(name, 0) + 1
        entry.dead = {name for name in batches if name not in entry.wins}
        with self._lock:
            self._folders[folder] = entry
            self._folders.move_to_end(folder)
            while len(self._folders) > self._kept:
                self._folders.popitem(last=False)

    def written(self, folder: str, name: str, stamp: int, keys: Iterable[str]) -> list[str]:
        """A batch file ``name`` with ``stamp`` holding ``keys`` is durable in
        ``folder``: the batch files that now win no key, to delete (empty when
        the folder has no index)."""
        with self._lock:
            entry = self._folders.get(folder)
            if entry is None:
                return []
            self._folders.move_to_end(folder)
            wins = entry.wins
            wins[name] = wins.get(name, 0)
            for key in keys:
                before = entry.winners.get(key)
                if before is not None and before[0] >= stamp:
                    continue  # a newer record (another thread's batch) landed first
                entry.winners[key] = (stamp, name)
                wins[name] += 1
                if before is not None:
                    wins[before[1]] -= 1
                    if not wins[before[1]] and before[0] >= 0:
                        del wins[before[1]]
                        entry.dead.add(before[1])
            if not wins[name]:
                del wins[name]
                entry.dead.add(name)
            dead, entry.dead = sorted(entry.dead), set()
            return dead

    def forget(self, folder: str) -> None:
        """``folder`` was removed (its checkpoints dropped)."""
        with self._lock:
            self._folders.pop(folder, None)
