"""``--executor processes``: phases in worker processes on this machine, for CPU-bound work."""

from __future__ import annotations

from pipekit.execution.base import RemoteExecutor
from pipekit.execution.pool import ProcessPool
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome


class ProcessExecutor(RemoteExecutor):
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

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        return await self.pool.run(call)

    async def aclose(self) -> None:
        self.pool.close()
