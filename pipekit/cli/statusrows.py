"""What ``pipekit status`` shows of each item, read straight from saved documents.

Building a full ``PipelineState`` (a dataclass per phase) for each of 100,000
items cost more than parsing their JSON. A ``StatusRow`` keeps the saved phase
objects as they are instead. Every document is checked by the parser every
reader uses (``pipekit.state.document.read_document``), so a corrupt one raises
the same ``StateFileError`` as anywhere else; only one whose phases are the
pipeline's takes the short way, any other (older phases, renamed ones, unknown
fields) goes through ``PipelineState.from_document`` and ``reconcile``, so both
ways show the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import contextlib
from dataclasses import MISSING
from dataclasses import fields
import gc
import json
import multiprocessing
import os
import threading
from typing import Any

from pipekit.cli.target import Target
from pipekit.cli.target import _Where
from pipekit.outcomes import StateFileError
from pipekit.state.document import read_document
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.model import COMPLETED
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import SKIPPED
from pipekit.state.model import WAITING
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.state.model import is_finished


#: Every field of a saved phase with its default, in ``PhaseState`` order
#: (``phase`` and ``name`` have none: a phase without them is malformed).
PHASE_DEFAULTS: dict[str, Any] = {f.name: None if f.default is MISSING else f.default for f in fields(PhaseState)}
_PHASE_KEYS = frozenset(PHASE_DEFAULTS)
#: From this many state files on, a JSON directory is read by worker processes:
#: parsing JSON holds the GIL, and below this starting them costs more than it saves.
PARALLEL_FILES = 20_000
#: At most this many worker processes.
MAX_WORKERS = 2
#: State files per task handed to a worker.
CHUNK_FILES = 2_000

_encode = json.JSONEncoder(ensure_ascii=False).encode


class StatusRow:
    """One item as status shows it: its status, totals, and per pipeline phase
    (in the pipeline's order) its status and cost.

    ``phases`` holds the phases with ``PhaseState``'s fields (a field missing
    from the saved document has its default) until ``forget_phases`` or
    ``encode`` keeps only what a view shows.
    """

    __slots__ = (
        "item_id",
        "status",
        "total_tokens_in",
        "total_tokens_out",
        "total_cost_usd",
        "statuses",
        "costs",
        "phases",
        "_detail",
        "_note",
        "_encoded",
    )

    def __init__(
        self,
        item_id: str,
        saved_status: str,
        metadata: dict[str, Any],
        started_at: str,
        last_updated: str,
        totals: tuple[int, int, float],
        phases: list[dict[str, Any]],
    ) -> None:
        self.item_id = item_id
        self.total_tokens_in, self.total_tokens_out, self.total_cost_usd = totals
        self.phases = phases
        self.statuses = tuple([p.get("status", PENDING) for p in phases])
        self.costs = tuple([p.get("cost_usd", 0.0) for p in phases])
        self.status = row_status(self.statuses)
        self._detail: tuple[str, dict[str, Any], str, str] | None = (saved_status, metadata, started_at, last_updated)
        self._note: str | None = None
        self._encoded: str | None = None

    @classmethod
    def from_state(cls, state: PipelineState) -> StatusRow:
        """The row of a state already parsed (and reconciled)."""
        return cls(
            state.item_id,
            state.status,
            state.metadata,
            state.started_at,
            state.last_updated,
            (state.total_tokens_in, state.total_tokens_out, state.total_cost_usd),
            [dict(vars(p)) for _, p in sorted(state.phases.items())],
        )

    def last_note(self) -> str:
        """The last failure (``2 draft: error``), else the last hand-made skip reason."""
        if self._note is None:
            self._note = phases_note(self.phases)
        return self._note

    def forget_phases(self) -> None:
        """Keep only what the matrix and the summary show: less memory, and far
        fewer objects for the cyclic GC to scan and for the end to free."""
        statuses = self.statuses
        self._note = phases_note(self.phases) if FAILED in statuses or SKIPPED in statuses else ""
        self.phases = []
        self._detail = None

    def record(self) -> dict[str, Any]:
        """The machine-readable picture of the item (outputs left out: see ``export``)."""
        assert self._detail is not None, "record() of a row without its phases"
        saved_status, metadata, started_at, last_updated = self._detail
        return {
            "item_id": self.item_id,
            "status": self.status,
            "saved_status": saved_status,
            "metadata": metadata,
            "started_at": started_at,
            "last_updated": last_updated,
            "total_tokens_in": self.total_tokens_in,
            "total_tokens_out": self.total_tokens_out,
            "total_cost_usd": self.total_cost_usd,
            "phases": [{**PHASE_DEFAULTS, **p} for p in self.phases],
        }

    def json(self) -> str:
        """``record()`` as JSON text (json's C encoder: no indent)."""
        return self._encoded if self._encoded is not None else _encode(self.record())

    def encode(self) -> None:
        """Keep the record as JSON text instead of its phases (``--json``): a third
        of the memory, and far fewer objects to scan and free."""
        self._encoded = _encode(self.record())
        self.phases = []
        self._detail = None

    def to_wire(self) -> tuple[Any, ...]:
        """What a worker process sends back: plain values, quick to pickle."""
        return (
            self.item_id,
            self.status,
            self.total_tokens_in,
            self.total_tokens_out,
            self.total_cost_usd,
            self.statuses,
            self.costs,
            self._note,
            self._encoded,
        )

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> StatusRow:
        """The row ``to_wire`` sent (without ``phases``)."""
        row = cls.__new__(cls)
        (
            row.item_id,
            row.status,
            row.total_tokens_in,
            row.total_tokens_out,
            row.total_cost_usd,
            row.statuses,
            row.costs,
            row._note,
            row._encoded,
        ) = wire
        row.phases = []
        row._detail = None
        return row


def row_status(statuses: Iterable[Any]) -> str:
    """What an item whose phases have ``statuses`` looks like now: failed,
    in_progress, waiting (for a provider's batch), completed or pending."""
    statuses = set(statuses)
    if FAILED in statuses:
        return FAILED
    if IN_PROGRESS in statuses:
        return IN_PROGRESS
    if WAITING in statuses:
        return WAITING
    if is_finished(statuses):
        return COMPLETED
    return PENDING


def phases_note(phases: list[dict[str, Any]]) -> str:
    """The last failure among ``phases`` (in order), else the last hand-made skip reason."""
    for phase in reversed(phases):
        if phase.get("status", PENDING) == FAILED:
            error = phase.get("error") or phase.get("reason") or "failed"
            return f"{phase['phase']} {phase['name']}: {error}"
    for phase in phases:
        reason = phase.get("reason")
        if phase.get("status", PENDING) == SKIPPED and reason and reason != "cache":
            return f"{phase['phase']} {phase['name']} skipped: {reason}"
    return ""


class RowReader:
    """Turns the saved documents of ``target``'s store into ``StatusRow``s."""

    def __init__(self, target: Target, *, full: bool = False) -> None:
        """:param full: keep every phase for ``record`` (``--json``); else only
        what the matrix and the summary show."""
        self.target = target
        self.full = full
        #: The pipeline's phases as a saved document keys them: {"1": ("research", 1)}.
        self._expected = {str(p.num): (p.name, p.num) for p in target.pipeline.phases}
        self._order = [str(p.num) for p in sorted(target.pipeline.phases, key=lambda p: p.num)]

    def rows(self, errors: list[StateFileError] | None = None) -> list[StatusRow]:
        """A row for every saved item, unordered; a broken document goes to
        ``errors`` when given (raised otherwise)."""
        store = self.target.store
        if not isinstance(store, JsonDirStore):
            return self._rows(store.load_all(errors), errors)
        paths = store.state_files()
        workers = worker_count(len(paths))
        if workers > 1 and errors is not None:
            try:
                return self._rows_in_processes(paths, errors, workers)
            except BrokenProcessPool:
                pass  # a worker died (out of memory?): read them here
        return self._rows(store.load_files(paths, errors), errors)

    def _rows(
        self, documents: Iterable[tuple[str, dict[str, Any]]], errors: list[StateFileError] | None
    ) -> list[StatusRow]:
        rows = []
        # Millions of small acyclic objects: the cyclic GC would rescan the growing
        # heap over and over.
        with gc_paused():
            for item_id, document in documents:
                try:
                    row = self.row(item_id, document)
                except StateFileError as exc:
                    if errors is None:
                        raise
                    errors.append(exc)
                    continue
                if self.full:
                    row.encode()
                else:
                    row.forget_phases()
                rows.append(row)
        return rows

    def _rows_in_processes(self, paths: list[str], errors: list[StateFileError], workers: int) -> list[StatusRow]:
        """``rows`` with the files shared out to forked ``workers``, in order (so
        errors come in the order one process meets them)."""
        global _forked
        starts = range(0, len(paths), CHUNK_FILES)
        rows: list[StatusRow] = []
        found: list[StateFileError] = []
        _forked = (self, paths)  # what the forked workers read, without pickling it
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=context) as pool, gc_paused():
                from_wire = StatusRow.from_wire
                for wires, problems in pool.map(_read_chunk, starts):
                    rows += [from_wire(wire) for wire in wires]
                    found += [StateFileError(path, problem) for path, problem in problems]
        finally:
            _forked = None
        errors += found
        return rows

    def row(self, item_id: str, document: dict[str, Any]) -> StatusRow:
        """The row of one saved document. Raises ``StateFileError`` as ``PipelineState`` does."""
        read_document(document, _Where(self.target.store, item_id))
        row = self._plain_row(document)
        if row is None:
            row = StatusRow.from_state(self.target.from_document(item_id, document))
        return row

    def _plain_row(self, document: dict[str, Any]) -> StatusRow | None:
        """The row of a document ``read_document`` accepted and whose phases are
        the pipeline's, or None for the full way (``reconcile``)."""
        saved = document["phases"]
        expected = self._expected
        if len(saved) != len(expected):
            return None
        for key, phase in saved.items():
            want = expected.get(key)
            if (
                want is None
                or phase["name"] != want[0]
                or phase["phase"] != want[1]
                or not phase.keys() <= _PHASE_KEYS
            ):
                return None  # reconcile
        return StatusRow(
            document["item_id"],
            document["status"],
            dict(document.get("metadata") or {}),
            document["started_at"],
            document["last_updated"],
            (
                document.get("total_tokens_in", 0),
                document.get("total_tokens_out", 0),
                float(document.get("total_cost_usd", 0.0)),
            ),
            [saved[key] for key in self._order],
        )


#: The reader of the parent process and its state files, inherited by the workers it forks.
_forked: tuple[RowReader, list[str]] | None = None


def _read_chunk(start: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """In a worker: the rows of ``CHUNK_FILES`` state files from ``start``, as
    ``to_wire`` tuples, and their problems as (path, problem)."""
    assert _forked is not None
    reader, paths = _forked
    store = reader.target.store
    assert isinstance(store, JsonDirStore)
    errors: list[StateFileError] = []
    rows = reader._rows(store.load_files(paths[start : start + CHUNK_FILES], errors), errors)
    # StateFileError does not survive pickling (its arguments are not its message).
    return [row.to_wire() for row in rows], [(str(e.path), e.problem) for e in errors]


def worker_count(files: int) -> int:
    """How many processes should read ``files`` state files (1: this one alone)."""
    if files < PARALLEL_FILES or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if threading.active_count() > 1:
        return 1  # forking a process with threads can deadlock the child
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC (as it was afterwards)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
