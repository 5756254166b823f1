"""The columns database stores index beside each document: what a run, ``status``
and a resume read without parsing the document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import functools
from typing import Any
from typing import NamedTuple

from pipekit.outcomes import StateFileError
from pipekit.state.document import read_document
from pipekit.state.encoded import phase_records
from pipekit.state.model import is_finished
from pipekit.state.stalekey import key_of_read


class FinishedItem(NamedTuple):
    """What the runner needs to know of an item that is finished, without its state.

    A named tuple: a store makes one per finished item (100,000 on a big resume),
    and a frozen dataclass costs several times more to build and to hold.
    """

    metadata: dict[str, Any]
    cost_usd: float
    #: Its ``pipekit.state.stalekey`` (None: unknown, the stale check reads the state).
    stale_key: str | None = None


@dataclass(frozen=True)
class Summary:
    """The indexed columns database stores keep beside each document."""

    status: str | None
    #: First phase (by num) neither completed nor skipped; None when all are.
    next_phase: int | None
    #: Names of the phases completed or skipped, sorted.
    done_names: tuple[str, ...]
    metadata: dict[str, Any]
    cost_usd: float


#: The summary of a document ``read_document`` refuses: never finished, so a run reads it and reports it.
UNREADABLE = Summary(None, None, (), {}, 0.0)


def summarize(document: Any) -> Summary:
    """The ``Summary`` of a saved document (``UNREADABLE`` for a malformed one, which is stored as is)."""
    try:
        read_document(document, "the document")
    except StateFileError:
        return UNREADABLE
    return _summary_of_read(document)


def index_columns(document: Any) -> tuple[Summary, str | None]:
    """``summarize`` and ``stale_key`` of a document about to be saved, with one
    ``read_document`` for both (a save is checked once, not once per column), which
    skips the phase records an earlier save of the item already checked."""
    records = phase_records(document)
    checked = () if records is None else {key for key, record in records.items() if record.checked}
    try:
        read_document(document, "the document", checked=checked)
    except StateFileError:
        return UNREADABLE, None
    if records is not None:
        for record in records.values():
            record.checked = True
    return _summary_of_read(document), key_of_read(document, records)


def _summary_of_read(document: dict[str, Any]) -> Summary:
    pending: list[int] = []
    done: list[str] = []
    for num, phase in document["phases"].items():
        if is_finished((phase.get("status"),)):
            done.append(phase["name"])
        else:
            pending.append(int(num))
    return Summary(
        document["status"],
        min(pending) if pending else None,
        tuple(sorted(done)),
        document.get("metadata") or {},
        float(document.get("total_cost_usd", 0.0)),
    )


def asked_once(fresh: Callable[[str | None], bool]) -> Callable[[str | None], bool]:
    """``fresh`` (does a stale key still hold?) asked once per distinct key: a run's
    items share few keys, and each answer compares fingerprints."""
    return functools.cache(fresh)
