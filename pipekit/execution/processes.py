"""``--executor processes``: phases in worker processes on this machine, for CPU-bound work.

Large outputs stay where the work is, as with Dask: the worker stores an output
over ``SHARED_OUTPUT_THRESHOLD`` in the run's store itself and sends back only
its reference, and a later phase's worker is given that reference and reads
the value there (``pipekit.execution.remote``), so a large output never
crosses the driver's pipes, nor is it read on the driver when a run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

from pipekit.execution.base import RemoteExecutor
from pipekit.execution.pool import ProcessPool
from pipekit.execution.remote import InputsUnreachable
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome
from pipekit.execution.remote import apply_outcome
from pipekit.execution.remote import replay_event
from pipekit.execution.routes import StoreRoutes
from pipekit.execution.routes import send_values
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition


class ProcessExecutor(RemoteExecutor):
    """Runs every handler in a pool of worker processes (``-j`` of them).

    The driver keeps each item's phase sequence and writes all state but large
    outputs, which the workers read and write in the run's store themselves; a
    worker that dies fails only its phase (reason ``worker_lost``) and is
    replaced; a phase past its timeout has its worker killed. What a handler
    reports while it runs (``ctx.progress``, finished sub-items) reaches the
    driver's hooks as it happens.

    :param module_path: the pipeline module, imported by each worker.
    :param workers: number of worker processes.
    """

    name = "processes"
    hard_timeouts = True
    takes_stored_outputs = True

    def __init__(self, module_path: str, workers: int) -> None:
        self.module_path = module_path
        self.pool = ProcessPool(workers)
        # The workers share this machine's files: no marker needed to tell them the store is theirs.
        self._routes = StoreRoutes(markers=False)

    async def _run(
        self, phase: PhaseDefinition, func: Callable[..., Any], kwargs: dict[str, Any], ctx: PhaseContext | None
    ) -> Any:
        call = self.remote_call(phase, func, kwargs)
        call.output_route = self._routes.route(phase, ctx)
        call.inputs_by_reference = True
        if call.output_route is None:  # a store no other process opens: the values go with the call
            send_values(call, ctx)
        on_event = functools.partial(replay_event, ctx=ctx)
        outcome = await self.pool.run(call, on_event)
        if isinstance(outcome.error, InputsUnreachable) and send_values(call, ctx):
            # The worker could not open the store, and ran nothing: the values go with the call.
            outcome = await self.pool.run(call, on_event)
        return apply_outcome(outcome, ctx)

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        return await self.pool.run(call)

    async def aclose(self) -> None:
        self.pool.close()
        self._routes.close()
