"""``--executor dask``: phases as tasks on a Dask cluster, the driver the single writer.

Needs the ``pipekit[dask]`` extra. With no scheduler address a ``LocalCluster``
of ``-j`` single-threaded worker processes is started. Each result is gathered
as soon as it is ready and its future dropped, so Dask never recomputes a
finished phase behind pipekit's back; a task whose worker died is not rerun by
Dask (``allowed-failures`` 0 on a cluster pipekit starts) but failed with
reason ``worker_lost`` and retried by the phase's own ``retries``. That cluster
also runs without work stealing, which can start a task a second time. On a
cluster of your own (``--dask-scheduler``), set both in its Dask configuration.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from pipekit.execution.base import RemoteExecutor
from pipekit.execution.code import PipelineCode
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome
from pipekit.execution.remote import WorkerLost
from pipekit.execution.remote import execute_call
from pipekit.outcomes import UsageError


_keys = itertools.count()


class DaskExecutor(RemoteExecutor):
    """Submits every handler call to Dask distributed.

    :param module_path: the pipeline module; its source travels with every task
        (``pipekit.execution.code``), so workers need no copy of it.
    :param workers: size of the ``LocalCluster`` when no address is given.
    :param address: a running scheduler, e.g. ``tcp://host:8786``.
    :param shared_dir: a folder driver and workers both see; outputs over
        64 KiB come back through it instead of through the scheduler.
    """

    name = "dask"

    def __init__(
        self, module_path: str, workers: int, address: str | None = None, shared_dir: str | None = None
    ) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--executor dask needs Dask: pip install 'pipekit[dask]'") from None
        self.module_path = module_path
        self.workers = workers
        self.address = address
        self.shared_dir = shared_dir
        self._client: Any = None
        self._cluster: Any = None
        self._connecting: asyncio.Lock | None = None

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is None:
                import dask
                from distributed import Client
                from distributed import LocalCluster

                if self.address:
                    self._client = await Client(self.address, asynchronous=True)  # type: ignore[no-untyped-call]
                else:
                    # pipekit decides what runs where (-j); stealing only adds a way, through its
                    # races, to run a task twice, which can mean paying for a phase twice.
                    with dask.config.set(
                        {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.work-stealing": False}
                    ):
                        self._cluster = await LocalCluster(  # type: ignore[no-untyped-call]
                            n_workers=self.workers,
                            threads_per_worker=1,
                            processes=True,
                            asynchronous=True,
                            dashboard_address=":0",  # never collide with another cluster's 8787
                        )
                    self._client = await Client(self._cluster, asynchronous=True)  # type: ignore[no-untyped-call]
                await self._client.run(_load_on_worker, self.pipeline_code())
        return self._client

    async def astart(self) -> None:
        # Starting a cluster takes seconds: not inside the first phase's timeout.
        await self._get_client()

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        from distributed import KilledWorker

        client = await self._get_client()
        future = client.submit(execute_call, call, pure=False, key=f"pipekit-{call.phase_name}-{next(_keys)}")
        try:
            outcome: RemoteOutcome = await future
        except KilledWorker as exc:
            raise WorkerLost(f"the Dask worker running the phase died ({exc})") from None
        finally:
            future.release()  # a held future would make Dask recompute it if its worker died
        return outcome

    def abandon(self, future: asyncio.Future[Any]) -> None:
        # Dask cannot interrupt a running task: its late result is dropped with the future.
        future.cancel()

    async def aclose(self) -> None:
        if self._cluster is not None:
            await self._cluster.close()
        if self._client is not None:
            await self._client.close()


def _load_on_worker(code: PipelineCode) -> None:
    from pipekit.execution.code import load

    load(code)
