"""What a run returns to the library API: ``RunResult``."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from pipekit.outcomes import ExitCode
from pipekit.state.model import PipelineState


@dataclass
class RunResult:
    """What ``pipekit.run`` returns: the exit status, final states and totals."""

    exit_status: ExitCode
    #: Final state of every selected item whose state could be read, by id
    #: (left out of the repr: a run of 100,000 items would print them all).
    states: dict[str, PipelineState] = field(default_factory=dict, repr=False)
    items_total: int = 0
    items_completed: int = 0
    items_failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
