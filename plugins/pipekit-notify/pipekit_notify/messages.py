"""What the notifications say: plain text a person reads on a phone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """One notification: a title, a body and Apprise's type (info, success, warning, failure)."""

    title: str
    body: str
    kind: str = "info"


#: Exit status -> (how the run ended, Apprise notification type).
OUTCOMES = {
    0: ("finished", "success"),
    1: ("finished with unfinished items", "failure"),
    2: ("was interrupted", "warning"),
    3: ("stopped on an internal error", "failure"),
    4: ("finished with unreadable state files", "warning"),
}


@dataclass(frozen=True)
class Failure:
    """A phase that failed for good."""

    item_id: str
    num: int
    name: str
    error: str
    critical: bool

    def line(self) -> str:
        """``item 'b' phase 2 (draft): ValueError: boom``."""
        kind = "" if self.critical else " (non-critical)"
        return f"item {self.item_id!r} phase {self.num} ({self.name}){kind}: {self.error}"


def finish_message(run: Any, exitstatus: int, failures: list[Failure], failure_count: int) -> Message:
    """The message sent when a run ends: outcome, counts, cost, the first failures."""
    outcome, kind = OUTCOMES.get(exitstatus, (f"ended with exit status {exitstatus}", "failure"))
    name = run.pipeline.name
    items = [f"{run.total_items} total", f"{run.items_completed} completed", f"{run.items_failed} failed"]
    for attribute, label in (
        ("items_interrupted", "interrupted"),
        ("items_stopped", "stopped (budget)"),
        ("items_busy", "busy in another process"),
        ("items_already_done", "already done before this run"),
    ):
        if getattr(run, attribute, 0):
            items.append(f"{getattr(run, attribute)} {label}")
    lines = [
        f"pipeline: {name} (exit status {exitstatus})",
        f"{run.pipeline.item_noun}: {', '.join(items)}",
    ]
    control = getattr(run, "control", None)
    if control is not None:
        lines.append(
            f"phases this run: {control.phases_completed} completed, {control.phases_failed} failed, "
            f"{control.phases_skipped} skipped"
        )
    lines += [
        f"tokens: {run.tokens_in:,} in, {run.tokens_out:,} out; cost: ${run.cost_usd:,.4f}",
        f"time: {_duration(run.elapsed_seconds)}",
        f"state: {run.state_location}",
    ]
    if failures:
        lines.append(f"first failures ({len(failures)} of {failure_count}):")
        lines += [f"  - {failure.line()}" for failure in failures]
    title = f"pipekit: {name} {outcome}: {run.items_completed}/{run.total_items} completed, ${run.cost_usd:,.2f}"
    return Message(title, "\n".join(lines), kind)


def failure_message(pipeline: str, failure: Failure, last: bool = False) -> Message:
    """The message sent when an item fails a critical phase."""
    body = f"pipeline: {pipeline}\n{failure.line()}\nthe item stops here; the run goes on"
    if last:
        body += "\n(further failures are only listed when the run finishes)"
    return Message(f"pipekit: {pipeline}: item {failure.item_id!r} failed phase {failure.num}", body, "failure")


def stall_message(run: Any, quiet_seconds: float, in_flight: dict[str, Any]) -> Message:
    """The message sent when no phase started or ended for a long time."""
    name = run.pipeline.name
    lines = [f"pipeline: {name}", f"no phase started or ended for {_duration(quiet_seconds)}; in flight:"]
    for item_id, item in list(in_flight.items())[:10]:
        running = [f"{n} ({p.name})" for n, p in sorted(item.state.phases.items()) if p.status == "in_progress"]
        lines.append(f"  - item {item_id!r}, phase {', '.join(running) or '?'}")
    if len(in_flight) > 10:
        lines.append(f"  ... and {len(in_flight) - 10} more")
    title = f"pipekit: {name} looks stalled ({_duration(quiet_seconds)} without progress)"
    return Message(title, "\n".join(lines), "warning")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
