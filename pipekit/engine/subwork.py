"""A phase's ``ctx``, made for each attempt, and what it is given for
``ctx.progress`` and ``ctx.map``: the hooks that tell observers of progress
(on the event loop's thread, whatever thread the handler reports from) and
the code hash ``ctx.map`` keys its results by."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Sequence
import copy
from pathlib import Path
import threading
from typing import Any

from pipekit.notify import HookNotifier
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.limits import Gate
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.fingerprint import code_identity
from pipekit.stale.fingerprint import consumed_phases
from pipekit.state.digest import output_hash
from pipekit.state.manager import PipelineStateManager


def code_hash(fn: Callable[..., Any]) -> str | None:
    """``fn``'s code hash, as phase fingerprints count code (``pipekit.stale.fingerprint``)."""
    return code_identity(fn).hash


def phase_context(
    manager: PipelineStateManager,
    phases: Sequence[PhaseDefinition],
    phase: PhaseDefinition,
    attempt: int,
    output_dir: Path,
    price: Callable[..., float | None] | None,
    gate: Gate | None,
    reports: PhaseReports,
) -> PhaseContext:
    """The ``ctx`` of one attempt of ``phase`` of the item ``manager`` holds."""
    state = manager.state
    # A copy: what a handler does to its metadata must not leak into the saved state.
    metadata = copy.deepcopy(state.metadata) if state.metadata else {}
    outputs = state.phase_outputs
    return PhaseContext(
        state.item_id,
        metadata,
        phase,
        attempt,
        output_dir,
        price=price,
        checkpoints=Checkpoints(manager.store, state.item_id, phase.name),
        gate=gate,
        on_wait=reports.wait,
        consumed=lambda: {p.name: output_hash(outputs.get(p.num)) for p in consumed_phases(phase, phases)},
        last_error=state.phases[phase.num].error,
        on_progress=reports.progress,
        code_hash=code_hash,
        on_subitem=reports.subitem,
    )


def context_options(notify: HookNotifier, item: Any, phase: PhaseDefinition) -> dict[str, Any]:
    """The ``PhaseContext`` keywords for progress and sub-items of ``phase`` of ``item``."""
    reports = PhaseReports(notify, item, phase)
    return {"on_progress": reports.progress, "on_subitem": reports.subitem, "code_hash": code_hash}


class PhaseReports:
    """What a phase's ``ctx`` tells observers (progress, finished sub-items, waits),
    on the event loop's thread whatever thread the handler reports from.

    One small object per attempt, made on the driver's hot path: it holds the
    loop and its thread for the reports that come (few phases make any).
    """

    __slots__ = ("notify", "item", "phase", "loop", "loop_thread")

    def __init__(self, notify: HookNotifier, item: Any, phase: PhaseDefinition) -> None:
        self.notify, self.item, self.phase = notify, item, phase
        self.loop: asyncio.AbstractEventLoop | None = asyncio.events._get_running_loop()
        self.loop_thread = threading.get_ident()

    def _on_loop(self, hook: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is None or threading.get_ident() == self.loop_thread:
            hook(self.item, self.phase, *args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(hook, self.item, self.phase, *args)

    def progress(self, done: int, total: int | None, label: str | None) -> None:
        """``ctx.progress`` reached observers (``pipekit_phase_progress``)."""
        self._on_loop(self.notify.phase_progress, done, total, label)

    def subitem(self, label: str, key: str, status: str, error: str | None) -> None:
        """A sub-item of ``ctx.map`` finished and is stored (``pipekit_subitem_finish``)."""
        self._on_loop(self.notify.subitem_finish, label, key, status, error)

    def wait(self, reason: str, seconds: float | None) -> None:
        """The phase waits for a slot or a rate limit (``pipekit_phase_wait``); on the loop's thread."""
        self.notify.phase_wait(self.item, self.phase, reason, seconds)
