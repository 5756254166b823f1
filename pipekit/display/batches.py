"""What the displays show of a batch phase's provider batches: one view per batch,
kept up to date from the ``pipekit_batch_event`` hook, and how it is written."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import math

from pipekit.display.format import count_of
from pipekit.display.format import duration


#: Batch ids longer than this are cut (OpenAI's are ~30 characters of which the first few tell them apart).
SHORT_ID = 16
#: Counts a provider reports for requests that will not be answered by this batch.
FAILED_COUNTS = ("errored", "expired", "canceled", "failed")


@dataclass
class BatchView:
    """One provider batch as a display shows it.

    :param since: clock reading at which the batch was recorded (its age counts from it).
    :param next_poll_at: clock reading of the next poll under ``--wait`` (None: not polled again soon).
    """

    provider: str
    batch_id: str | None
    requests: int
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    since: float = 0.0
    next_poll_at: float | None = None

    @property
    def done(self) -> int:
        """Requests answered."""
        return self.counts.get("succeeded", 0)

    @property
    def failed(self) -> int:
        """Requests errored, expired or cancelled."""
        return sum(self.counts.get(name, 0) for name in FAILED_COUNTS)


def short_id(batch_id: str | None) -> str:
    """The batch id, cut to ``SHORT_ID`` characters (``(not sent)`` before it has one)."""
    if not batch_id:
        return "(not sent)"
    return batch_id if len(batch_id) <= SHORT_ID else batch_id[: SHORT_ID - 1] + "…"


def status_line(view: BatchView) -> str:
    """``batch fake fakebatch-1: in_progress, 6 requests (processing 6)``: a plain line."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(view.counts.items()))
    held = count_of(view.requests, "requests")
    return f"batch {view.provider} {view.batch_id or '(not sent)'}: {view.status}, {held}" + (
        f" ({counts})" if counts else ""
    )


def live_line(view: BatchView, now: float) -> tuple[str, str]:
    """The batch's line in the live display, and its tail (when it is polled next):
    ``batch fake fakebatch-1  in_progress  12/40 done, 1 failed  age 2m03.4s``."""
    counts = f"{view.done}/{view.requests} done, {view.failed} failed"
    age = f"age {duration(max(0.0, now - view.since))}"
    if view.next_poll_at is None:
        poll = ""
    else:
        left = view.next_poll_at - now
        poll = f"next poll in {math.ceil(left)}s" if left > 0 else "polling"
    return f"batch {view.provider} {short_id(view.batch_id)}  {view.status}  {counts}  {age}", poll
