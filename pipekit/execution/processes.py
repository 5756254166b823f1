"""``--executor processes``: phases in worker processes on this machine, for CPU-bound work."""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

from pipekit.execution.base import RemoteExecutor
from pipekit.execution.pool import ProcessPool
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome
from pipekit.execution.remote import apply_outcome
from pipekit.execution.remote import replay_event
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition


class ProcessExecutor(RemoteExecutor):
    """Runs every handler in a pool of worker processes (``-j`` of them).

    The driver keeps each item's phase sequence and writes all state; a
    worker that dies fails only its phase (reason ``worker_lost``) and is
    replaced; a phase past its timeout has its worker killed. What a handler
    reports while it runs (``ctx.progress``, finished sub-items) reaches the
    driver's hooks as it happens.

    :param module_path: the pipeline module, imported by each worker.
    :param workers: number of worker processes.
    """

    name = "processes"
    hard_timeouts = True

    def __init__(self, module_path: str, workers: int) -> None:
        self.module_path = module_path
        self.pool = ProcessPool(workers)

    async def _run(
        self, phase: PhaseDefinition, func: Callable[..., Any], kwargs: dict[str, Any], ctx: PhaseContext | None
    ) -> Any:
        call = self.remote_call(phase, func, kwargs)
        return apply_outcome(await self.pool.run(call, functools.partial(replay_event, ctx=ctx)), ctx)

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        return await self.pool.run(call)

    async def aclose(self) -> None:
        self.pool.close()
