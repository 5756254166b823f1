"""What one attempt's value or error means: the phase's result, whether it is tried again, its reason and message."""

from __future__ import annotations

from typing import Any

from pipekit.execution.base import PhaseExecutor
from pipekit.execution.remote import RemoteError
from pipekit.outcomes import Fail
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import PhaseTimeoutError
from pipekit.pipeline.context import CostCapExceeded
from pipekit.pipeline.context import check_usage
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.phases import PhaseResult


def as_result(phase: PhaseDefinition, value: Any) -> PhaseResult:
    if isinstance(value, PhaseResult):
        if not isinstance(value.output, str):
            raise TypeError(f"phase {phase.name!r} returned a PhaseResult whose output is not a str")
        try:
            check_usage(value.tokens_in, value.tokens_out, value.cost_usd)
        except ValueError as exc:
            raise TypeError(f"phase {phase.name!r} returned a PhaseResult with bad usage: {exc}") from None
        return value
    if value is None:
        return PhaseResult("")
    if isinstance(value, str):
        return PhaseResult(value)
    raise TypeError(
        f"phase {phase.name!r} returned {type(value).__name__}; "
        f"a handler returns a str, None or a PhaseResult"
    )


def is_retriable(phase: PhaseDefinition, error: BaseException, executor: PhaseExecutor) -> bool:
    if isinstance(error, (Fail, PhaseInterrupted)):
        return False
    if isinstance(error, PhaseTimeoutError):
        # The thread of a timed-out sync handler may still be running: do not start a second one.
        return phase.is_async or phase.isolate == "process" or executor.hard_timeouts
    return True


def failure_reason(error: BaseException) -> str:
    if isinstance(error, CostCapExceeded):
        return "max_cost"
    if isinstance(error, PhaseTimeoutError):
        return "timeout"
    if isinstance(error, PhaseInterrupted):
        return "interrupted"
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else "error"


def failure_message(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    if isinstance(error, (PhaseTimeoutError, PhaseInterrupted, Fail, RemoteError)):
        return text or name
    return f"{name}: {text}" if text else name
