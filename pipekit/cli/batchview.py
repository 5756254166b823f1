"""What ``status``, ``report`` and ``reset`` show of a pipeline's provider batches
(the submission records of ``pipekit.state.batches``), read only."""

from __future__ import annotations

from datetime import datetime
from datetime import timezone
from typing import Any

from pipekit.display.format import duration
from pipekit.pipeline.loader import Pipeline
from pipekit.state.batches import BatchRecords
from pipekit.state.model import WAITING
from pipekit.state.store import StateStore


def has_batches(pipeline: Pipeline) -> bool:
    """True when one of the pipeline's phases goes through a batch API."""
    return any(p.batch is not None for p in pipeline.phases)


def with_waiting(order: tuple[str, ...], pipeline: Pipeline) -> tuple[str, ...]:
    """The statuses a view lists, with ``waiting`` for a pipeline that has batch phases."""
    return (*order, WAITING) if has_batches(pipeline) else order


def batch_records(store: StateStore, pipeline: Pipeline) -> list[dict[str, Any]]:
    """This pipeline's submission records, oldest first, without their payloads."""
    records = [r for r in BatchRecords(store).submissions().values() if r.get("pipeline") == pipeline.name]
    records.sort(key=lambda r: str(r.get("created_at")))
    return [
        {
            "provider": r.get("provider"),
            "batch_id": r.get("batch_id"),
            "key": r.get("key"),
            "status": r.get("status"),
            "ended": bool(r.get("ended")),
            "collected": bool(r.get("collected")),
            "counts": dict(r.get("counts") or {}),
            "requests": len(r.get("requests") or ()),
            "created_at": r.get("created_at"),
            "polled_at": r.get("polled_at"),
        }
        for r in records
    ]


def age(stamp: Any, now: datetime | None = None) -> str:
    """How long ago ``stamp`` (ISO 8601) was, as durations are written."""
    try:
        then = datetime.fromisoformat(str(stamp))
    except ValueError:
        return "-"
    return duration(((now or datetime.now(timezone.utc)) - then).total_seconds())


def batch_lines(records: list[dict[str, Any]]) -> list[str]:
    """The ``batches`` section of ``status``: one line per batch not collected, then a count of the rest."""
    if not records:
        return []
    lines = ["batches:"]
    collected = [r for r in records if r["collected"]]
    for record in records:
        if record["collected"]:
            continue
        counts = ", ".join(f"{k} {v}" for k, v in sorted(record["counts"].items()))
        lines.append(
            f"  {record['provider']}  {record['batch_id'] or '(not sent yet)'}  {record['status']}  "
            f"{record['requests']} requests" + (f" ({counts})" if counts else "") + f"  age {age(record['created_at'])}"
        )
    if collected:
        held = sum(r["requests"] for r in collected)
        lines.append(f"  {len(collected)} ended and collected ({held} requests)")
    return lines


def batches_of_cell(store: StateStore, pipeline: Pipeline, item_id: str, num: int) -> list[dict[str, Any]]:
    """The submission records (in full) that hold requests of the item's phase ``num``, not collected."""
    found = []
    for record in BatchRecords(store).submissions().values():
        if record.get("pipeline") != pipeline.name or record.get("collected") or not record.get("batch_id"):
            continue
        if any(entry[1] == item_id and entry[2] == num for entry in record.get("requests", ())):
            found.append(record)
    return found


def waiting_cell_notes(store: StateStore, pipeline: Pipeline, item_id: str, num: int, cancel: bool) -> list[str]:
    """What ``reset`` says of a waiting cell's provider batches: polled now, cancelled only when asked."""
    notes = []
    for record in batches_of_cell(store, pipeline, item_id, num):
        provider = pipeline.batches.get(record["provider"])
        where = f"batch {record['batch_id']} at {record['provider']!r}"
        if provider is None:
            notes.append(f"{where}: no provider of that name in BATCHES now; not polled")
            continue
        status = provider.poll(record["batch_id"])
        held = len(record["requests"])
        if status.ended:
            notes.append(f"{where} has ended ({status.provider_status}); its results are no longer used for this phase")
        elif cancel:
            provider.cancel(record["batch_id"])
            notes.append(
                f"{where} cancelled ({held} requests; other items' requests in it are sent again by the next run)"
            )
        else:
            notes.append(
                f"{where} is still running ({status.provider_status}, {held} requests) and will be paid for; "
                "add --cancel to cancel it"
            )
    return notes
