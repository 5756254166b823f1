"""``--jsonl``: one JSON event per line on stdout, flushed as it happens (CONTRACT §6)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from datetime import timezone
import json
import os
from typing import IO
from typing import Any

from pipekit.config import Config
from pipekit.engine.control import Item
from pipekit.engine.outcome import AttemptOutcome
from pipekit.engine.runner import Run
from pipekit.hookspecs import hookimpl
from pipekit.pipeline.context import PhaseOutcome
from pipekit.pipeline.phases import PhaseDefinition


class JsonlReporter:
    """Writes every lifecycle event as a JSON line to ``stream``."""

    name = "jsonl-reporter"

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        #: True once the reader of ``stream`` went away.
        self.closed = False
        self._run: Run | None = None

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line and flush it."""
        if self.closed:
            return
        record = {"event": event, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        record.update(fields)
        try:
            self.stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        """Stdout was closed (``| head -1``): stop the run as an interrupt does,
        quietly, as a Unix tool stops; what ran is saved and the same command resumes."""
        self.closed = True
        # The unwritten events stay buffered: later flushes (at exit too) go nowhere.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        run = self._run
        if run is not None and run.exit_status is None and not run.control.interrupted.is_set():
            run.notify.report("stdout closed: no one reads the events", "notice")
            run.interrupt()

    @staticmethod
    def _phase(item: Item, phase: PhaseDefinition) -> dict[str, Any]:
        return {"item_id": item.id, "phase": phase.num, "phase_name": phase.name}

    @staticmethod
    def _attempt(result: PhaseOutcome) -> dict[str, Any]:
        """Seconds since the phase's execution started, and the tokens and cost of the attempt."""
        return {
            "duration_seconds": round(result.duration_seconds, 6),
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "cost_usd": result.cost_usd,
        }

    @hookimpl
    def pipekit_run_start(self, run: Run) -> None:
        self._run = run
        self.emit(
            "run_start",
            pipeline=run.pipeline.name,
            total_items=run.total_items,
            phases=[{"num": p.num, "name": p.name} for p in run.pipeline.phases],
            state=run.state_location,
        )

    @hookimpl
    def pipekit_item_start(self, item: Item) -> None:
        self.emit("item_start", item_id=item.id, index=item.index)

    @hookimpl
    def pipekit_phase_wait(self, item: Item, phase: PhaseDefinition, reason: str, seconds: float | None) -> None:
        self.emit("phase_wait", **self._phase(item, phase), reason=reason, seconds=seconds)

    @hookimpl
    def pipekit_phase_start(self, item: Item, phase: PhaseDefinition) -> None:
        self.emit("phase_start", **self._phase(item, phase), attempt=item.state.phases[phase.num].attempts)

    @hookimpl
    def pipekit_phase_progress(
        self, item: Item, phase: PhaseDefinition, done: int, total: int | None, label: str | None
    ) -> None:
        self.emit("phase_progress", **self._phase(item, phase), done=done, total=total, label=label)

    @hookimpl
    def pipekit_subitem_finish(
        self, item: Item, phase: PhaseDefinition, label: str, key: str, status: str, error: str | None
    ) -> None:
        self.emit("subitem_finish", **self._phase(item, phase), label=label, key=key, status=status, error=error)

    @hookimpl
    def pipekit_phase_complete(self, item: Item, phase: PhaseDefinition, result: PhaseOutcome) -> None:
        self.emit("phase_complete", **self._phase(item, phase), **self._attempt(result), attempt=result.attempt)

    @hookimpl
    def pipekit_phase_retry(
        self, item: Item, phase: PhaseDefinition, error: BaseException, attempt: int, result: AttemptOutcome
    ) -> None:
        self.emit(
            "phase_retry",
            **self._phase(item, phase),
            **self._attempt(result),
            attempt=attempt,
            error=_describe(error),
        )

    @hookimpl
    def pipekit_phase_fail(
        self, item: Item, phase: PhaseDefinition, error: BaseException, result: AttemptOutcome
    ) -> None:
        self.emit(
            "phase_fail",
            **self._phase(item, phase),
            **self._attempt(result),
            attempt=result.attempt,
            error=result.message or _describe(error),
            reason=result.reason,
            critical=phase.critical,
        )

    @hookimpl
    def pipekit_phase_skip(self, item: Item, phase: PhaseDefinition, reason: str) -> None:
        self.emit("phase_skip", **self._phase(item, phase), reason=reason)

    @hookimpl
    def pipekit_item_finish(self, item: Item) -> None:
        state = item.state
        self.emit(
            "item_finish",
            item_id=item.id,
            status=state.status,
            tokens_in=state.total_tokens_in,
            tokens_out=state.total_tokens_out,
            cost_usd=state.total_cost_usd,
        )

    @hookimpl
    def pipekit_batch_event(
        self, event: str, provider: str, batch_id: str | None, requests: int, status: str, counts: dict[str, int]
    ) -> None:
        if event == "batch_waiting":  # a sleep between polls: for the displays, not a record
            return
        self.emit(event, provider=provider, batch_id=batch_id, requests=requests, status=status, counts=counts)

    @hookimpl
    def pipekit_budget_reached(self, run: Run, spent: float, cap: float) -> None:
        self.emit("budget_reached", spent_usd=round(spent, 6), cap_usd=cap)

    @hookimpl
    def pipekit_run_finish(self, run: Run, exitstatus: int) -> None:
        self.emit(
            "run_finish",
            exit_status=exitstatus,
            total_items=run.total_items,
            items_completed=run.items_completed,
            items_failed=run.items_failed,
            items_interrupted=run.items_interrupted,
            items_busy=run.items_busy,
            phases_completed=run.control.phases_completed,
            phases_failed=run.control.phases_failed,
            phases_skipped=run.control.phases_skipped,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            cost_usd=run.cost_usd,
            earlier_cost_usd=run.earlier_cost_usd,
            duration_seconds=round(run.elapsed_seconds, 6),
        )


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@hookimpl
def pipekit_configure(config: Config) -> None:
    """With ``--jsonl``, register the reporter on the real stdout."""
    if config.getoption("jsonl"):
        reporter = JsonlReporter(config.stdout)
        config.pluginmanager.register(reporter, JsonlReporter.name)
        config.add_cleanup(lambda: config.pluginmanager.unregister(reporter))
