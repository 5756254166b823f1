"""Per-item pipeline state (the seed's Pattern 1): data and transitions.

The data of one item's state and the rules of its transitions; changing and
saving it is ``pipekit.state.manager``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
import copy
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
import time
from typing import Any

from pipekit.state.document import COMPLETED
from pipekit.state.document import DONE_STATUSES
from pipekit.state.document import FAILED
from pipekit.state.document import IN_PROGRESS
from pipekit.state.document import PENDING
from pipekit.state.document import SCHEMA_VERSION
from pipekit.state.document import SKIPPED
from pipekit.state.document import WAITING
from pipekit.state.document import read_document
from pipekit.state.encoded import Document
from pipekit.state.encoded import PhaseRecord


__all__ = [
    "COMPLETED",
    "COMPLETED_WITH_ERRORS",
    "DONE_STATUSES",
    "FAILED",
    "INLINE_OUTPUT_LIMIT",
    "IN_PROGRESS",
    "PENDING",
    "PHASE_FIELDS",
    "SCHEMA_VERSION",
    "SKIPPED",
    "WAITING",
    "PhaseState",
    "PipelineState",
    "is_finished",
    "item_outcome",
    "state_outcome",
    "phase_pairs",
    "utc_now",
]


#: Outputs longer than this many UTF-8 bytes live in a file beside the state.
INLINE_OUTPUT_LIMIT = 8 * 1024


def is_finished(statuses: Iterable[Any]) -> bool:
    """True when every one of an item's phase ``statuses`` is completed or skipped:
    the one definition of a finished item (or, given one status, of a phase that
    is done), for states, raw documents and index rows alike."""
    return all(status in DONE_STATUSES for status in statuses)


#: An item whose critical phases all completed (or were skipped) while a
#: non-critical one failed: finished, with errors (a run counts it completed).
COMPLETED_WITH_ERRORS = "completed_with_errors"


def item_outcome(phases: Iterable[tuple[str, bool]]) -> str:
    """What an item is, from its phases' ``(status, critical)`` in the pipeline's
    order: the one classification the run, its summary, ``status``, ``report``
    and ``export`` share.

    ``failed`` when a critical phase failed; else ``in_progress`` when a phase
    is (or was, until its process died) running; else ``waiting`` when a phase
    waits for a provider's batch; else ``completed`` when every
    phase is completed or skipped, ``completed_with_errors`` when only
    non-critical phases failed and the rest is done; else ``pending`` (work left).
    """
    failed_noncritical = unfinished = running = waiting = False
    for status, critical in phases:
        if status == FAILED:
            if critical:
                return FAILED
            failed_noncritical = True
        elif status == IN_PROGRESS:
            running = True
        elif status == WAITING:
            waiting = True
        elif status not in DONE_STATUSES:
            unfinished = True
    if running:
        return IN_PROGRESS
    if waiting:
        return WAITING
    if unfinished:
        return PENDING
    return COMPLETED_WITH_ERRORS if failed_noncritical else COMPLETED


def state_outcome(state: PipelineState, definitions: Iterable[Any]) -> str:
    """``item_outcome`` of a state, over the pipeline's phase ``definitions``
    (anything with ``num`` and ``critical``; phases the state lacks are left out)."""
    phases = state.phases
    return item_outcome((phases[d.num].status, d.critical) for d in definitions if d.num in phases)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds (``2026-11-29T11:45:26.964+00:00``)."""
    # Formatted by hand from one cached prefix per second: a write stamps a few
    # times, and datetime.now(...).isoformat(...) was 4 % of a phase's CPU.
    global _stamp
    now = time.time()
    second = int(now)
    stamp = _stamp  # (second, its text), replaced as a whole: safe across threads
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{stamp[1]}.{int((now - second) * 1000):03d}+00:00"


_stamp = (-1, "")


@dataclass
class PhaseState:
    """State of a single phase."""

    phase: int
    name: str
    status: str = PENDING  # "pending" | "in_progress" | "completed" | "failed" | "skipped"
    executor: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    duration_seconds: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    output_file: str | None = None
    error: str | None = None
    #: Executions of this phase, across runs.
    attempts: int = 0
    #: Why it was skipped or failed: ``cache``, ``timeout``, ``interrupted``, ``error``, ...
    reason: str | None = None
    #: Full traceback of the last failure.
    traceback: str | None = None
    #: What produced the completed result (``pipekit.stale.fingerprint``); None when
    #: unknown (written before fingerprints existed, or skipped by a cache).
    #: Replaced as a whole, never changed in place (saved documents share it).
    fingerprint: dict[str, Any] | None = None
    #: ``attempts`` when the phase was last reset: ``@phase(max_attempts=N)``
    #: counts from here (0 in states written before it existed).
    attempts_at_reset: int = 0


PHASE_FIELDS = frozenset(f.name for f in fields(PhaseState))


@dataclass
class PipelineState:
    """Complete pipeline state for an item."""

    item_id: str
    metadata: dict[str, Any]
    status: str
    current_phase: int
    started_at: str
    last_updated: str
    phases: dict[int, PhaseState]
    #: By phase num: a ``str`` or any JSON value (``pipekit.state.values``).
    phase_outputs: dict[int, Any] = field(default_factory=dict)
    total_tokens_in: int = 0
    total_tokens_out: int = 0
    total_cost_usd: float = 0.0
    #: Path of the pipeline module that last ran this item.
    pipeline_module: str | None = None
    #: Phases no longer in the pipeline, by name: ``{"state": {...}, "output": str | None}``.
    #: Kept so that work is not lost when a phase is removed and added back.
    retired_phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A batch phase's requests and answers by phase num (as text), while it waits
    #: (``pipekit.engine.batching.cell``); left out of the document when empty.
    batch_requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_done(self) -> bool:
        """True when every phase is completed or skipped."""
        return is_finished(p.status for p in self.phases.values())

    def to_document(
        self, output_refs: dict[int, str], *, records: dict[int, PhaseRecord] | None = None
    ) -> dict[str, Any]:
        """The JSON document saved for this state; large outputs go by reference.

        A snapshot a writer thread can encode while this state changes: the
        containers that change in place are copied; immutable values and the
        phases' fingerprints (replaced, never changed) are shared. Built from
        the instances' ``__dict__`` rather than with ``dataclasses.asdict``
        (which deep-copies recursively): one is built per durable write.

        :param records: the phase records of the previous document, by num,
            updated in place: a phase equal to its record keeps it (and the JSON
            text and check worked out for it, ``pipekit.state.encoded``).
        """
        document: dict[str, Any]
        if records is None:
            document = {"schema_version": SCHEMA_VERSION}
            document.update(vars(self))
            document["phases"] = {str(num): _phase_document(p) for num, p in sorted(self.phases.items())}
        else:
            document = Document(_records(self.phases, records))
            document["schema_version"] = SCHEMA_VERSION
            document.update(vars(self))
            document["phases"] = {key: record.fields for key, record in document.records.items()}
        document["metadata"] = _copied(self.metadata)
        document["phase_outputs"] = {
            str(num): text for num, text in sorted(self.phase_outputs.items()) if num not in output_refs
        }
        document["retired_phases"] = _copied(self.retired_phases)
        if self.batch_requests:
            document["batch_requests"] = _copied(self.batch_requests)
        else:
            del document["batch_requests"]
        document["phase_output_files"] = {str(num): ref for num, ref in sorted(output_refs.items())}
        return document

    @classmethod
    def from_document(cls, document: Any, where: object) -> tuple[PipelineState, dict[int, str]]:
        """Parse a saved document; returns the state (outputs by reference not
        yet read) and the references. Raises ``StateFileError`` naming ``where``
        and the field (``pipekit.state.document.read_document``).
        """
        document = read_document(document, where)
        known = PHASE_FIELDS
        phases = {
            # the common case (no unknown keys) skips the filtering: status reads 100,000 files
            int(num): PhaseState(**raw)
            if raw.keys() <= known
            else PhaseState(**{k: v for k, v in raw.items() if k in known})
            for num, raw in document["phases"].items()
        }
        state = cls(
            item_id=document["item_id"],
            metadata=dict(document.get("metadata") or {}),
            status=document["status"],
            current_phase=document["current_phase"],
            started_at=document["started_at"],
            last_updated=document["last_updated"],
            phases=phases,
            phase_outputs={int(k): v for k, v in document.get("phase_outputs", {}).items()},
            total_tokens_in=document.get("total_tokens_in", 0),
            total_tokens_out=document.get("total_tokens_out", 0),
            total_cost_usd=float(document.get("total_cost_usd", 0.0)),
            pipeline_module=document.get("pipeline_module"),
            retired_phases=dict(document.get("retired_phases") or {}),
            batch_requests=dict(document.get("batch_requests") or {}),
        )
        refs = {int(k): v for k, v in document.get("phase_output_files", {}).items()}
        return state, refs


def _copied(value: Any) -> Any:
    return copy.deepcopy(value) if value and isinstance(value, (dict, list)) else value


def _phase_document(phase: PhaseState) -> dict[str, Any]:
    # ``fingerprint`` is shared, not copied: it is replaced, never changed in place.
    return dict(vars(phase))


def _records(phases: dict[int, PhaseState], records: dict[int, PhaseRecord]) -> dict[str, PhaseRecord]:
    """The records of ``phases`` by num as text, in order: the one in ``records`` when
    its fields equal the phase's, else a new one (put in ``records``)."""
    if records.keys() != phases.keys():
        for num in records.keys() - phases.keys():
            del records[num]
    by_key: dict[str, PhaseRecord] = {}
    for num, phase in sorted(phases.items()):
        record = records.get(num)
        fields = vars(phase)
        if record is None or record.fields != fields:
            record = records[num] = PhaseRecord(_phase_document(phase))
        by_key[str(num)] = record
    return by_key


def phase_pairs(phases: Iterable[Any]) -> list[tuple[int, str]]:
    pairs = []
    for p in phases:
        if isinstance(p, tuple):
            pairs.append((int(p[0]), str(p[1])))
        else:
            pairs.append((int(p.num), str(p.name)))
    return sorted(pairs)
