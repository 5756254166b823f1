"""What ``pipekit status`` shows of each item, read straight from saved documents.

Building a full ``PipelineState`` (a dataclass per phase) for each of 100,000
items cost more than parsing their JSON. A ``StatusRow`` keeps the saved phase
objects as they are instead. Only a document in the shape ``PipelineState``
writes and matching the pipeline's phases takes that short way; any other
(older phases, renamed ones, odd or broken fields) goes through
``PipelineState.from_document`` and ``reconcile`` exactly as before, so both
ways show the same thing and a corrupt document raises the same
``StateFileError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING
from dataclasses import fields
import gc
from typing import Any

from pipekit.commands.target import Target
from pipekit.outcomes import StateFileError
from pipekit.state import COMPLETED
from pipekit.state import DONE_STATUSES
from pipekit.state import FAILED
from pipekit.state import IN_PROGRESS
from pipekit.state import PENDING
from pipekit.state import SCHEMA_VERSION
from pipekit.state import SKIPPED
from pipekit.state import PhaseState
from pipekit.state import PipelineState


#: Every field of a saved phase with its default, in ``PhaseState`` order
#: (``phase`` and ``name`` have none: a phase without them is malformed).
PHASE_DEFAULTS: dict[str, Any] = {
    f.name: None if f.default is MISSING else f.default for f in fields(PhaseState)
}
_PHASE_KEYS = frozenset(PHASE_DEFAULTS)


class StatusRow:
    """One item as status shows it.

    ``phases`` holds one dict per pipeline phase, in the pipeline's order, with
    ``PhaseState``'s fields (a field missing from the saved document has its default).
    """

    __slots__ = (
        "item_id",
        "status",
        "saved_status",
        "metadata",
        "started_at",
        "last_updated",
        "total_tokens_in",
        "total_tokens_out",
        "total_cost_usd",
        "phases",
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
        self.saved_status = saved_status
        self.metadata = metadata
        self.started_at = started_at
        self.last_updated = last_updated
        self.total_tokens_in, self.total_tokens_out, self.total_cost_usd = totals
        self.phases = phases
        self.status = row_status(phases)

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

    def phase_status(self, index: int) -> Any:
        """The status of the pipeline's ``index``-th phase (a str unless hand-edited)."""
        return self.phases[index].get("status", PENDING)

    def last_note(self) -> str:
        """The last failure (``2 draft: error``), else the last hand-made skip reason."""
        return phases_note(self.phases)

    def record(self) -> dict[str, Any]:
        """The machine-readable picture of the item (outputs left out: see ``export``)."""
        return {
            "item_id": self.item_id,
            "status": self.status,
            "saved_status": self.saved_status,
            "metadata": self.metadata,
            "started_at": self.started_at,
            "last_updated": self.last_updated,
            "total_tokens_in": self.total_tokens_in,
            "total_tokens_out": self.total_tokens_out,
            "total_cost_usd": self.total_cost_usd,
            "phases": [{**PHASE_DEFAULTS, **p} for p in self.phases],
        }


def row_status(phases: Iterable[dict[str, Any]]) -> str:
    """What the item looks like now: failed, in_progress, completed or pending."""
    statuses = {p.get("status", PENDING) for p in phases}
    if FAILED in statuses:
        return FAILED
    if IN_PROGRESS in statuses:
        return IN_PROGRESS
    if statuses <= DONE_STATUSES:
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

    def __init__(self, target: Target) -> None:
        self.target = target
        #: The pipeline's phases as a saved document keys them: {"1": ("research", 1)}.
        self._expected = {str(p.num): (p.name, p.num) for p in target.pipeline.phases}
        self._order = [str(p.num) for p in sorted(target.pipeline.phases, key=lambda p: p.num)]

    def rows(self, errors: list[StateFileError] | None = None) -> list[StatusRow]:
        """A row for every saved item, unordered; a broken document goes to
        ``errors`` when given (raised otherwise)."""
        rows = []
        # Millions of small acyclic objects: the cyclic GC would rescan the growing
        # heap over and over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for item_id, document in self.target.store.load_all(errors):
                document.pop("phase_outputs", None)  # never shown; memory holds rows only
                try:
                    rows.append(self.row(item_id, document))
                except StateFileError as exc:
                    if errors is None:
                        raise
                    errors.append(exc)
        finally:
            if collecting:
                gc.enable()
        return rows

    def row(self, item_id: str, document: dict[str, Any]) -> StatusRow:
        """The row of one saved document. Raises ``StateFileError`` as ``PipelineState`` does."""
        try:
            row = self._plain_row(document)
        except (KeyError, TypeError, ValueError, AttributeError):
            row = None
        if row is None:
            row = StatusRow.from_state(self.target.from_document(item_id, document))
        return row

    def _plain_row(self, document: dict[str, Any]) -> StatusRow | None:
        """The row of a document in the usual shape, or None for the full way.

        Every check and conversion of ``PipelineState.from_document`` that could
        fail or change a value is made here too, so a document accepted here is
        one it accepts, read the same.
        """
        version = document.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            return None
        saved = document["phases"]
        expected = self._expected
        if type(saved) is not dict or len(saved) != len(expected):
            return None
        for key, phase in saved.items():
            want = expected.get(key)
            if (
                want is None
                or type(phase) is not dict
                or phase.get("name") != want[0]
                or phase.get("phase") != want[1]
                or not phase.keys() <= _PHASE_KEYS
            ):
                return None  # reconcile, or let from_document name what is wrong
        int(document["current_phase"])
        {int(k): str(v) for k, v in document.get("phase_output_files", {}).items()}
        dict(document.get("retired_phases") or {})
        return StatusRow(
            document["item_id"],
            document["status"],
            dict(document.get("metadata") or {}),
            document["started_at"],
            document["last_updated"],
            (
                int(document.get("total_tokens_in", 0)),
                int(document.get("total_tokens_out", 0)),
                float(document.get("total_cost_usd", 0.0)),
            ),
            [saved[key] for key in self._order],
        )
