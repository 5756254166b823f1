"""A run with batch phases: passes over the items, with batches sent, polled and
collected between them, until nothing is left but waiting (exit 6) or, with
``--wait``, until every batch has ended and its items went on."""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from pipekit.display.format import count_of
from pipekit.engine.batching.batcher import Batcher
from pipekit.engine.waiting import interruptible_sleep
from pipekit.state.model import WAITING
from pipekit.state.model import PipelineState


__all__ = ["WAITING", "Batcher", "batcher_for", "drive", "waits"]

#: Under ``--wait``, the interval between polls grows to at most this many times the first.
MAX_BACKOFF = 10.0


def batcher_for(run: Any) -> Batcher | None:
    """The run's ``Batcher``, or None when the pipeline has no batch phase."""
    if not any(p.batch is not None for p in run.pipeline.phases):
        return None
    return Batcher(
        run.pipeline.name,
        run.pipeline.batches,
        run.store,
        say=run._say,
        price=run.config.hook.pipekit_price_usage,
        event=lambda name, record: _event(run, name, record),
    )


def _event(run: Any, name: str, record: dict[str, Any]) -> None:
    """Tell the observers of a batch's event; say each submission."""
    run.notify.batch_event(run, name, record)
    if name == "batch_submitted":
        run.notify.report(_event_line(name, record), "info")


def waits(state: PipelineState) -> bool:
    """True when one of the item's phases waits for a batch."""
    return any(p.status == WAITING for p in state.phases.values())


async def drive(run: Any, process_all: Callable[[], Awaitable[None]]) -> None:
    """``process_all`` (one pass over the run's items) as often as the batches need."""
    batcher: Batcher | None = run.batches
    if batcher is None:
        await process_all()
        return
    await batcher.resume()
    await process_all()
    wait = bool(run.config.getoption("batch_wait", False))
    interval = run.config.getoption("poll_interval", None)
    items = run.items
    try:
        while True:
            await batcher.submit_gathered()
            if not run.items_waiting or run.control.stop_new_phases:
                return
            if not wait:
                run._say(batcher.pending_message(), "notice")
                return
            if not await _wait_for_results(run, batcher, interval):
                return  # interrupted
            again = [spec for spec in items if spec[0] in batcher.waiting_items]
            batcher.waiting_items.clear()
            run.items, run.items_waiting = again, 0
            await process_all()
    finally:
        run.items = items


async def _wait_for_results(run: Any, batcher: Batcher, interval: float | None) -> bool:
    """Poll until some batch's results are in; False if the run was interrupted first."""
    providers = [batcher.providers[r["provider"]] for r in batcher.pending() if r["provider"] in batcher.providers]
    first = interval or min((p.poll_interval for p in providers), default=60.0)
    delay = first
    while True:
        for record in batcher.pending():  # (the displays show them: pipekit/builtin/progress.py)
            run.notify.batch_event(run, "batch_waiting", record, next_poll=delay)
        if await interruptible_sleep(run.control, delay):
            return False
        if await batcher.poll() or not batcher.pending():
            return True
        delay = min(delay * 1.5, first * MAX_BACKOFF)


def _event_line(name: str, record: dict[str, Any]) -> str:
    held = count_of(len(record["requests"]), "requests")
    return f"sent {held} in batch {record['batch_id']} at {record['provider']!r}"
