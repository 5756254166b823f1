"""The run's store as a worker process opens it (``pipekit.execution.remote``).

A worker keeps one store object per driver's lease token, each fencing its
items' writes by that token (``StateStore.fence_as``): two drivers' calls for
one item in one worker process (a driver paused past its lease and the one
that took the item over, on a shared Dask cluster) then each write under their
own driver's lease, never under the other's. A call takes its store and gives
it back when it ends; a store no call uses stays open for the next (a
connection each on PostgreSQL), at most ``KEEP_IDLE`` of them, the least
recently used closed beyond that.
"""

from __future__ import annotations

from collections import Counter
from collections import OrderedDict
from pathlib import Path
import socket
import threading

from pipekit.state.store import StateStore


#: Stores no call uses kept open for the next calls.
KEEP_IDLE = 4

#: By (URL, lease token): the store, most recently taken last.
_open: OrderedDict[tuple[str, str | None], StateStore] = OrderedDict()
#: How many running calls use each store of ``_open``.
_users: Counter[tuple[str, str | None]] = Counter()
_lock = threading.Lock()


def take_store(url: str | None, token: str | None = None) -> StateStore:
    """The run's store at ``url`` (``StateStore.reopen_url``) as this worker opens it,
    for one call's writes fenced by ``token`` (the driver's ``fencing_token``; None
    for a call that only reads, or stores outputs named by content). The call
    hands it back with ``give_back_store``."""
    if url is None:
        raise RuntimeError(
            "ctx.checkpoint is not available in a worker process with this state store; use --executor local"
        )
    key = (url, token)
    with _lock:
        store = _open.get(key)
        if store is None:
            store = _open[key] = _opened(url)
        _open.move_to_end(key)
        _users[key] += 1
    return store


def give_back_store(url: str, token: str | None = None) -> None:
    """A call that took the store at ``url`` for ``token`` no longer uses it."""
    key = (url, token)
    with _lock:
        _users[key] -= 1
        if _users[key] <= 0:
            del _users[key]
        idle = [known for known in _open if known not in _users]
        closing = [_open.pop(known) for known in idle[: max(0, len(idle) - KEEP_IDLE)]]
    for store in closing:
        store.close()


def _opened(url: str) -> StateStore:
    scheme, _, folder = url.partition(":")
    if scheme == "json" and not Path(folder).is_dir():
        raise RuntimeError(
            f"ctx.checkpoint: the state directory {folder} cannot be reached from worker "
            f"{socket.gethostname()}; keep it in a folder every worker shares, or use --executor local"
        )
    from pipekit.state.open import open_store_url

    return open_store_url(url)
