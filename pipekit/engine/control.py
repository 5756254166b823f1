"""What a run shares with the runner of each item: the item as hooks see it, stop flags, counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from pipekit.notify import HookNotifier
from pipekit.pipeline.limits import Gate
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import PipelineState


@dataclass
class Item:
    """One item as hooks see it: ``id``, ``metadata``, ``state``, ``index``."""

    id: str
    metadata: dict[str, Any]
    manager: PipelineStateManager
    #: Position of the item in this run's selection (1-based).
    index: int = 0

    @property
    def state(self) -> PipelineState:
        """The item's ``PipelineState``, as last saved."""
        return self.manager.state


#: The notifier of a ``PhaseRunner`` made without one: it calls nothing.
no_notify = HookNotifier(None)


@dataclass
class RunControl:
    """What one run shares with every ``PhaseRunner``: stop flags and counters."""

    #: Set on SIGINT/SIGTERM: in-flight phases are abandoned and recorded ``interrupted``.
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    #: True when no new phase may start (a budget, an interruption).
    stop_new_phases: bool = False
    #: Set by a budget when it sets ``stop_new_phases``: phases waiting for a
    #: slot or a rate limit give up instead of starting.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    phases_started: int = 0
    phases_completed: int = 0
    phases_failed: int = 0
    phases_skipped: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    #: Per-phase concurrency and rate limits (``pipekit.pipeline.limits``); None: no waiting.
    gate: Gate | None = None
    #: What this machine declares (``--resources``) for the gate to cap phases
    #: by; None when the executor places phases by their resources itself.
    resources: dict[str, float] | None = None
    #: Called after every ``add_usage`` (the budget cap watches spending here).
    on_usage: Callable[[RunControl], None] | None = None
    #: Called when an item's phases end, with the error that failed it in this
    #: run (or None) and whether it went to its end (``pipekit.engine.failfast``).
    on_item_end: Callable[[BaseException | None, bool], None] | None = None
    _interruption: asyncio.Future[Any] | None = field(default=None, init=False, repr=False)

    def interruption(self) -> asyncio.Future[Any]:
        """An awaitable that ends when ``interrupted`` is set, shared by every
        phase in flight (one per run, not a task per phase); never cancel it."""
        waiting = self._interruption
        if waiting is None or waiting.get_loop() is not asyncio.get_running_loop() or (
            waiting.done() and not self.interrupted.is_set()
        ):
            waiting = self._interruption = asyncio.ensure_future(self.interrupted.wait())
        return waiting

    def close(self) -> None:
        """Stop waiting for an interruption (at the end of the run)."""
        if self._interruption is not None:
            self._interruption.cancel()
            self._interruption = None

    def add_usage(self, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        """Count usage spent in this run."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost_usd += cost_usd
        if self.on_usage is not None:
            self.on_usage(self)

