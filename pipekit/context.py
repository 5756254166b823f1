"""What a handler sees while it runs (``ctx``) and what a finished phase reports."""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from pathlib import Path
from typing import Any

from pipekit.phases import PhaseDefinition


@dataclass(frozen=True)
class PhaseOutcome:
    """A completed phase, as ``pipekit_phase_complete`` receives it."""

    output: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    duration_seconds: float
    attempt: int
    output_file: str | None = None
    executor: str = ""


class PhaseContext:
    """The ``ctx`` argument of a handler: who it runs for, where to write, what it spent.

    :param item_id: the item's id.
    :param metadata: the item's metadata.
    :param phase: the phase's definition.
    :param attempt: executions of this phase so far, this one included, across runs
        (1 the first time; a retry or a resumed run counts up).
    :param output_dir: a folder private to this item, created when first asked for.
    """

    def __init__(
        self,
        item_id: str,
        metadata: dict[str, Any],
        phase: PhaseDefinition,
        attempt: int,
        output_dir: Path,
    ) -> None:
        self.item_id = item_id
        self.metadata = metadata
        self.phase = phase
        self.attempt = attempt
        self._output_dir = output_dir
        #: Who or what ran the phase (a model name, a worker); recorded in the state.
        self.executor: str = phase.executor
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0

    @property
    def output_dir(self) -> Path:
        """This item's own folder for files (created on first use)."""
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    @property
    def idempotency_key(self) -> str:
        """A key stable for this item, phase and attempt, for external side effects.

        Phases run at least once: the attempt in flight when a process or a
        worker dies runs again. Give this key to an API that deduplicates
        requests so a repeated delivery of the same attempt does no harm.
        """
        digest = hashlib.sha256(f"{self.item_id}\0{self.phase.name}\0{self.attempt}".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:32]

    def record_cost(self, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add usage to this phase; it counts even if the attempt later fails."""
        self.tokens_in += int(tokens_in)
        self.tokens_out += int(tokens_out)
        self.cost_usd += float(cost_usd)

    def __repr__(self) -> str:
        return f"<PhaseContext item={self.item_id!r} phase={self.phase.name!r} attempt={self.attempt}>"
