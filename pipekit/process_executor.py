"""``--executor processes``: phases in worker processes on this machine, for CPU-bound work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pipekit.context import PhaseContext
from pipekit.executor import PhaseExecutor
from pipekit.phases import PhaseDefinition
from pipekit.remote import apply_outcome
from pipekit.remote import build_call
from pipekit.workers import ProcessPool


class ProcessExecutor(PhaseExecutor):
    """Runs every handler in a pool of worker processes (``-j`` of them).

    The driver keeps each item's phase sequence and writes all state; a
    worker that dies fails only its phase (reason ``worker_lost``) and is
    replaced; a phase past its timeout has its worker killed.

    :param module_path: the pipeline module, imported by each worker.
    :param workers: number of worker processes.
    """

    name = "processes"
    hard_timeouts = True

    def __init__(self, module_path: str, workers: int) -> None:
        self.module_path = module_path
        self.pool = ProcessPool(workers)

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None = None,
    ) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._run(phase, func, kwargs, ctx))

    async def _run(
        self, phase: PhaseDefinition, func: Callable[..., Any], kwargs: dict[str, Any], ctx: PhaseContext | None
    ) -> Any:
        call = build_call(self.module_path, phase, func, kwargs)
        return apply_outcome(await self.pool.run(call), ctx)

    async def aclose(self) -> None:
        self.pool.close()
