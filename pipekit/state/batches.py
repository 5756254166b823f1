"""The durable records of a pipeline's provider batches, beside its items' states.

Each submission of requests to a provider's batch API is one record, written
before the upload (its deterministic key, which requests it holds under which
wire ids) and again after it (the provider's batch id), then at each poll;
the results of an ended batch are one more record. They live in the store's
checkpoint records under a name no item uses (JSON dir: one file per record,
written atomically; SQLite and PostgreSQL: rows of their checkpoints table),
so they survive a kill at any moment and are shared by every driver of the
store, as checkpoints are.
"""

from __future__ import annotations

from typing import Any

from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore


#: The reserved (item, phase) pair the records are kept under.
RECORDS_ITEM = "pipekit-batches"
SUBMISSIONS = "submissions"
RESULTS = "results"


class BatchRecords:
    """Submission records (by key) and fetched results (by key, then wire id) of one store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def submissions(self) -> dict[str, dict[str, Any]]:
        """Every submission record, by key (read from the store now)."""
        found = self.store.load_checkpoints(RECORDS_ITEM, SUBMISSIONS)
        return {key: record for key, record in found.items() if isinstance(record, dict)}

    def save_submission(self, record: dict[str, Any]) -> None:
        """Write one submission record durably (replacing its earlier version)."""
        self.store.save_checkpoint(RECORDS_ITEM, SUBMISSIONS, record["key"], record)

    def results(self, key: str) -> dict[str, Any]:
        """The fetched results of the batch ``key``, by wire id (empty if not fetched):
        what ``save_results`` wrote."""
        found = self.store.load_checkpoints(RECORDS_ITEM, f"{RESULTS}-{key}").get(RESULTS)
        held = found.get(RESULTS) if isinstance(found, dict) else None
        if not isinstance(held, dict):
            return {}
        return {wire: result for wire, result in held.items() if isinstance(result, dict)}

    def save_results(self, key: str, results: dict[str, Any]) -> None:
        """Write the results of the ended batch ``key`` at once (one checkpoint ``results``
        holding ``{"results": {wire id: result}}``)."""
        self.store.save_checkpoint(RECORDS_ITEM, f"{RESULTS}-{key}", RESULTS, {RESULTS: results})

    def lock(self, key: str) -> ItemLock | None:
        """The lock that lets one driver at a time submit the batch ``key`` (None: another holds it)."""
        return self.store.try_lock(f"{RECORDS_ITEM}-{key}")
