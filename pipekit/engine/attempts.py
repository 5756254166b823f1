"""What one attempt's value or error means: the phase's result, whether it is tried again, its reason and message."""

from __future__ import annotations

import dataclasses
import random
import traceback
from typing import Any

from pipekit.engine.outcome import AttemptOutcome
from pipekit.execution.base import PhaseExecutor
from pipekit.execution.remote import RemoteError
from pipekit.outcomes import Fail
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import PhaseTimeoutError
from pipekit.outcomes import Retry
from pipekit.pipeline.context import CostCapExceeded
from pipekit.pipeline.context import check_usage
from pipekit.pipeline.outputs import stored_value
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.phases import PhaseResult
from pipekit.state.model import FAILED
from pipekit.state.model import PhaseState


#: How many times one execution may ask for ``Retry`` before it counts as failed.
MAX_RETRY_REQUESTS = 100
#: What an attempt that recorded nothing spent (most phases record no usage).
NOTHING = (0, 0, 0.0)


def completed(
    phase: PhaseDefinition,
    attempt: int,
    result: PhaseResult,
    usage: tuple[int, int, float],
    duration: float,
    executor: str,
) -> AttemptOutcome:
    """The outcome of an attempt that completed: what ``ctx`` recorded plus what the result reports."""
    return AttemptOutcome(
        output=result.output,
        tokens_in=usage[0] + result.tokens_in,
        tokens_out=usage[1] + result.tokens_out,
        cost_usd=usage[2] + result.cost_usd,
        duration_seconds=duration,
        attempt=attempt,
        output_file=result.output_file,
        executor=executor,
        phase=phase,
    )


def failed(
    phase: PhaseDefinition,
    attempt: int,
    error: BaseException,
    usage: tuple[int, int, float] = NOTHING,
    duration: float = 0.0,
    prefix: str = "",
) -> AttemptOutcome:
    """The outcome of an attempt that ended with ``error`` (``prefix`` names what
    failed when it was not the handler: ``"cache check: "``)."""
    return AttemptOutcome(
        output="",
        tokens_in=usage[0],
        tokens_out=usage[1],
        cost_usd=usage[2],
        duration_seconds=duration,
        attempt=attempt,
        phase=phase,
        error=error,
        reason=failure_reason(error),
        message=prefix + failure_message(error),
        traceback=getattr(error, "remote_traceback", None)
        or "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    )


class Retries:
    """Whether, and after how long, a failed attempt of one execution is tried again.

    :param phase: the phase (``retries``, ``retry_backoff``).
    :param executor: where it runs (some time-outs may not be retried).
    """

    def __init__(self, phase: PhaseDefinition, executor: PhaseExecutor) -> None:
        self.phase = phase
        self.executor = executor
        self.failures = 0
        self.requests = 0

    def delay(self, error: BaseException, used: int = 0) -> float | None:
        """Seconds to wait before the next attempt (``used`` so far toward
        ``max_attempts``); None when there is none."""
        if isinstance(error, Retry) and self.requests < MAX_RETRY_REQUESTS:
            self.requests += 1
            return error.after or 0.0
        if self.phase.max_attempts is not None and used >= self.phase.max_attempts:
            return None
        if is_retriable(self.phase, error, self.executor) and self.failures < self.phase.retries:
            delay: float = self.phase.retry_backoff * 2**self.failures * random.uniform(0.8, 1.2)
            self.failures += 1
            return delay
        return None


def attempts_used(state: PhaseState) -> int:
    """Executions of a phase that count toward its ``max_attempts``: those since its last reset."""
    return max(0, state.attempts - state.attempts_at_reset)


def gave_up(phase: PhaseDefinition, state: PhaseState) -> bool:
    """True when a failed phase used up its ``max_attempts``: runs no longer execute it."""
    cap = phase.max_attempts
    return cap is not None and state.status == FAILED and attempts_used(state) >= cap


def as_result(phase: PhaseDefinition, value: Any) -> PhaseResult:
    """The handler's ``value`` as a ``PhaseResult`` whose output is as stored
    (``pipekit.pipeline.outputs.stored_value``: checked, validated against
    ``@phase(output=...)``, a model as its JSON).

    Raises ``TypeError`` naming the phase: ``InvalidOutput`` (reason
    ``invalid_output``) when the value does not fit the phase's model,
    ``OutputError`` when it cannot be stored.
    """
    if isinstance(value, PhaseResult):
        try:
            check_usage(value.tokens_in, value.tokens_out, value.cost_usd)
        except ValueError as exc:
            raise TypeError(f"phase {phase.name!r} returned a PhaseResult with bad usage: {exc}") from None
        return dataclasses.replace(value, output=stored_value(phase.name, value.output, phase.output))
    return PhaseResult(stored_value(phase.name, value, phase.output))


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
