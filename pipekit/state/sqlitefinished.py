"""The SQLite store's finished rows, read from its covering index (``items_finished``).

A resume of a million finished items runs these loops a million times, so a
row costs a few dict lookups: each distinct stale key, finished-names text and
metadata text is decided or parsed once, and no state document is read. The
rows stream from a read-only connection of their own (one snapshot, while the
caller keeps using the store): a million rows are never held.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterator
import contextlib
import json
from pathlib import Path
import sqlite3
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.state.escaping import json_value
from pipekit.state.indexed import FinishedItem
from pipekit.state.indexed import asked_once


#: Distinct metadata texts and costs kept parsed or shared (most rows of a batch repeat a few).
_SHARED = 1000

_FINISHED = "SELECT item_id, done_names, metadata, cost_usd, stale_digest FROM items WHERE next_phase IS NULL"


def finished_rows(path: Path, location: str, phase_names: Collection[str]) -> Iterator[tuple[str, FinishedItem]]:
    """``StateStore.iter_finished`` of the database at ``path``."""
    with _reader(path, location) as reader:
        keys = dict(reader.execute("SELECT digest, key FROM stale_keys"))
        for item_id, cost, metadata, digest in _complete(reader, phase_names):
            yield item_id, FinishedItem(metadata, cost, keys.get(digest))


def fresh_finished_rows(
    path: Path, location: str, phase_names: Collection[str], fresh: Callable[[str | None], bool]
) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """``StateStore.iter_fresh_finished`` of the database at ``path``: ``fresh``
    is asked once per stale key the database holds, never per row."""
    with _reader(path, location) as reader:
        decided = {digest: fresh(key) for digest, key in reader.execute("SELECT digest, key FROM stale_keys")}
        unknown = fresh(None)  # a row whose digest is NULL or missing from stale_keys
        for item_id, cost, metadata, digest in _complete(reader, phase_names):
            if decided.get(digest, unknown):
                yield item_id, cost, metadata


def _complete(
    reader: sqlite3.Connection, phase_names: Collection[str]
) -> Iterator[tuple[str, float, dict[str, Any], str | None]]:
    """``(item_id, cost, metadata, stale digest)`` of each row whose finished
    names include every one of ``phase_names``; rows of one metadata text
    share one dict, and rows of one cost one float."""
    wanted = set(phase_names)
    complete: dict[str, bool] = {}
    parsed: dict[str, dict[str, Any]] = {}
    shared: dict[float, float] = {}
    for item_id, done, metadata, cost, digest in reader.execute(_FINISHED):
        ok = complete.get(done)
        if ok is None:
            ok = complete[done] = wanted.issubset(json.loads(done))
        if not ok:
            continue
        value = parsed.get(metadata)
        if value is None:
            value = json_value(metadata)
            if len(parsed) < _SHARED:
                parsed[metadata] = value
        if len(shared) < _SHARED:
            cost = shared.setdefault(cost, cost)
        yield item_id, cost, value, digest


@contextlib.contextmanager
def _reader(path: Path, location: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the database, closed on leaving."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StateFileError(location, f"cannot be read ({exc})") from None
    try:
        yield db
    finally:
        db.close()


#: The finished rows of some items, with their stale keys (``fresh_finished_rows_of``).
_FINISHED_OF = """SELECT items.item_id, done_names, metadata, cost_usd, stale_keys.key
    FROM items LEFT JOIN stale_keys ON stale_keys.digest = items.stale_digest
    WHERE next_phase IS NULL AND items.item_id IN ({marks})"""


def fresh_finished_rows_of(
    path: Path,
    location: str,
    item_ids: Collection[str],
    phase_names: Collection[str],
    fresh: Callable[[str | None], bool],
    chunk: int = 500,
) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """``StateStore.iter_fresh_finished_of`` of the database at ``path``: the rows of
    ``item_ids`` only, by primary key, ``chunk`` ids a query (SQLite's limit on
    parameters is 999 in old versions)."""
    wanted = set(phase_names)
    accepted = asked_once(fresh)
    ids = sorted(set(item_ids))
    with _reader(path, location) as reader:
        for at in range(0, len(ids), chunk):
            part = ids[at : at + chunk]
            for item_id, done, metadata, cost, key in reader.execute(
                _FINISHED_OF.format(marks=",".join("?" * len(part))), part
            ):
                if not wanted.issubset(json.loads(done)):
                    continue
                if accepted(key):
                    yield item_id, cost, json_value(metadata)
