"""How one attempt of a phase ended, as the state records it and observers receive it."""

from __future__ import annotations

from dataclasses import dataclass

from pipekit.pipeline.context import PhaseOutcome
from pipekit.pipeline.phases import PhaseDefinition


@dataclass(frozen=True)
class AttemptOutcome(PhaseOutcome):
    """One attempt of a phase, built once when it ends, as pytest builds one
    report per test: the item's state records it, and ``pipekit_phase_complete``,
    ``pipekit_phase_retry`` and ``pipekit_phase_fail`` receive it as ``result``.

    ``tokens_in``, ``tokens_out`` and ``cost_usd`` are this attempt's alone;
    ``duration_seconds`` runs from the start of the phase's execution (its
    first attempt) to the end of this one.
    """

    #: The phase's definition.
    phase: PhaseDefinition | None = None
    #: The exception that ended the attempt; None when the phase completed.
    error: BaseException | None = None
    #: Why it failed (``error``, ``timeout``, ``max_cost``, ``interrupted``, ...); ``""`` when completed.
    reason: str = ""
    #: The error as the state records it (``PhaseState.error``); ``""`` when completed.
    message: str = ""
    #: The traceback recorded with a failure.
    traceback: str | None = None

    @property
    def usage(self) -> tuple[int, int, float]:
        """``(tokens_in, tokens_out, cost_usd)`` of this attempt."""
        return self.tokens_in, self.tokens_out, self.cost_usd
