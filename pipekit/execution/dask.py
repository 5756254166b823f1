"""``--executor dask``: phases as tasks on a Dask cluster, the driver the single writer.

Needs the ``pipekit[dask]`` extra. With no scheduler address a ``LocalCluster``
of ``-j`` single-threaded worker processes is started. Each result is gathered
as soon as it is ready and its future dropped, so Dask never recomputes a
finished phase behind pipekit's back.

Every execution of a handler is an attempt pipekit knows of, whatever the
cluster's configuration. Dask runs a task again when the worker running it
dies (up to ``distributed.scheduler.allowed-failures`` times), so each task
first claims a token the driver put in a Dask queue, an atomic take on the
scheduler: a task that finds the token gone ran before, and reports its
worker lost instead of running the handler a second time. The phase then
fails with reason ``worker_lost`` and its own ``retries`` decide whether to
submit it again. A task that claimed its token tells the driver it started
(a Dask event), and the phase's timeout counts from then, not from a wait in
the cluster's queue. The cluster pipekit starts also runs without work
stealing, and with ``allowed-failures`` 0, so a lost worker is reported at once.

Each task's key names the pipeline, the phase, the item and the attempt, so
the dashboard says what runs where; the run's id and a counter keep it unique.
Environment variables the driver forwards (``--env``) are set on the worker
before the pipeline's code loads and before every task, since a worker started
apart from the driver does not inherit its environment. A phase's
``resources`` go with its task, so the scheduler runs it only on a worker
started with them; one that no worker has is a usage error when the run connects.

What a handler reports while it runs (``ctx.progress``, the sub-items of a
``ctx.map``) comes back as Dask events on the same topic, replayed onto the
driver's ``ctx`` as they arrive; a task's outcome says how many it sent, and
the driver waits for them (a few seconds at most) before it records the phase.
A task whose driver died (its client gone, so the scheduler cancelled the
task) starts no more sub-items: the next run would pay for them again.

Large outputs stay where the work is: a worker that reaches the run's store
writes an output over the threshold there, and a later phase's worker reads it
from there (``pipekit.execution.remote``); the scheduler and the driver carry
only its reference. Inputs travel as JSON, and the worker builds the model
instances a handler asks for from the classes of the code it loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Sequence
import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any
import uuid

from pipekit.execution.base import RemoteExecutor
from pipekit.execution.code import PipelineCode
from pipekit.execution.remote import Event
from pipekit.execution.remote import InputsUnreachable
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import RemoteOutcome
from pipekit.execution.remote import WorkerLost
from pipekit.execution.remote import apply_outcome
from pipekit.execution.remote import execute_call
from pipekit.execution.remote import replay_event
from pipekit.execution.routes import StoreRoutes
from pipekit.execution.routes import send_values
from pipekit.outcomes import UsageError
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.resources import unplaceable


_keys = itertools.count()

#: A task's key: ``(pipeline.phase, item id, attempt, unique tag)``.
TaskKey = tuple[str, str, int, str]

#: Where the executor says things (``HookNotifier.report``): a message and its level.
Say = Callable[[str, str], None]

#: Seconds the driver waits, after a task's outcome, for the reports the task sent before it.
EVENTS_GRACE_SECONDS = 10.0


class ForwardedEnv(dict[str, str]):
    """Environment variables sent to workers; shown by name only, so a value
    never reaches a log, a traceback or the dashboard."""

    def __repr__(self) -> str:
        return f"ForwardedEnv({', '.join(sorted(self))})"

    __str__ = __repr__

    @classmethod
    def from_driver(cls, names: list[str]) -> ForwardedEnv:
        """The driver's values of ``names``; a name it does not have is a usage error."""
        missing = [name for name in names if name not in os.environ]
        if missing:
            raise UsageError(f"--env {', '.join(missing)}: not set in this environment, so not sent to the workers")
        return cls({name: os.environ[name] for name in names})


class DaskExecutor(RemoteExecutor):
    """Submits every handler call to Dask distributed.

    :param module_path: the pipeline module; its source travels with every task
        (``pipekit.execution.code``), so workers need no copy of it.
    :param workers: size of the ``LocalCluster`` when no address is given.
    :param address: a running scheduler, e.g. ``tcp://host:8786``.
    :param shared_dir: a folder driver and workers both see; outputs over
        64 KiB come back through it instead of through the scheduler.
    :param pipeline_name: named in every task's key.
    :param scheduler_file: a running scheduler's file (``dask scheduler --scheduler-file``).
    :param client: a ``distributed.Client`` of the caller's, used and left open.
    :param env: environment variables set on the workers before their tasks.
    :param say: where the dashboard's link is said.
    :param phases: the pipeline's phases: one needing ``resources`` runs only on a
        worker started with them, and one that no worker could take is a usage error.
    """

    name = "dask"
    places_resources = True
    takes_stored_outputs = True

    def __init__(
        self,
        module_path: str,
        workers: int,
        address: str | None = None,
        shared_dir: str | None = None,
        *,
        pipeline_name: str = "pipekit",
        scheduler_file: str | None = None,
        client: Any = None,
        env: ForwardedEnv | None = None,
        say: Say | None = None,
        phases: Sequence[PhaseDefinition] = (),
    ) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--executor dask needs Dask: pip install 'pipekit[dask]'") from None
        sources = (("--dask-scheduler", address), ("--scheduler-file", scheduler_file), ("client=", client))
        given = [name for name, value in sources if value is not None]
        if len(given) > 1:
            raise UsageError(f"give one Dask scheduler, not {' and '.join(given)}")
        self.module_path = module_path
        self.workers = workers
        self.address = address or (_read_scheduler_file(scheduler_file) if scheduler_file else None)
        self.shared_dir = shared_dir
        self.pipeline_name = pipeline_name
        self.env = env or ForwardedEnv()
        self._say = say
        self.phases = list(phases)
        self._client: Any = None
        #: The caller's client, never closed by this executor.
        self._borrowed: Any = client
        self._run_id = uuid.uuid4().hex[:12]
        #: The Dask event topic on which this driver's tasks say they started.
        self._topic = f"pipekit-started-{self._run_id}"
        #: Per task key, done with the worker's address once the handler started.
        self._starts: dict[str, asyncio.Future[str]] = {}
        #: The future ``start`` returned -> its task's entry in ``_starts``.
        self._running: dict[asyncio.Future[Any], asyncio.Future[str]] = {}
        #: Per task key, the driver's ``ctx`` its reports are replayed onto, and how many came.
        self._reports: dict[str, _Reports] = {}
        self._cluster: Any = None
        #: Where each task's worker stores a large output and reads its inputs.
        self._routes = StoreRoutes(markers=True)
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

                if self._borrowed is not None:
                    self._client = await self._use_borrowed()
                elif self.address:
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
                await self._check_resources(self._client)
                self._client.subscribe_topic(self._topic, self._on_started)
                await self._client.run(_load_on_worker, self.pipeline_code(), self.env)
                link = await asyncio.to_thread(dashboard_link, self._client)
                if link and self._say is not None:
                    self._say(f"Dask dashboard: {link}", "notice")
        return self._client

    async def _use_borrowed(self) -> Any:
        """The caller's client when it runs on this event loop; else (a notebook's
        synchronous client, whose loop is another thread's) a connection of this
        run's own to its scheduler, with its security, closed at the end."""
        from distributed import Client

        client = self._borrowed
        if client.asynchronous and client.loop.asyncio_loop is asyncio.get_running_loop():
            return client
        return await Client(  # type: ignore[no-untyped-call]
            client.scheduler.address, security=client.security, asynchronous=True
        )

    async def _check_resources(self, client: Any, wait: float = 30.0) -> None:
        """A usage error naming each phase whose resources no worker of the cluster has."""
        if not any(p.resources for p in self.phases):
            return
        identity = await client.scheduler.identity(n_workers=-1)
        if not identity.get("workers"):  # a cluster just started: its workers are on their way
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await client.wait_for_workers(1, timeout=wait)
            identity = await client.scheduler.identity(n_workers=-1)
        held = [worker.get("resources") or {} for worker in identity.get("workers", {}).values()]
        problems = unplaceable(
            self.phases,
            held,
            "which no worker of the Dask cluster has (start one with dask worker --resources NAME=AMOUNT)",
            "more than any one worker of the Dask cluster has",
        )
        if problems:
            raise UsageError("phases need resources the Dask cluster does not have:\n  " + "\n  ".join(problems))

    async def astart(self) -> None:
        # Starting a cluster takes seconds: not inside the first phase's timeout.
        await self._get_client()

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None = None,
    ) -> asyncio.Future[Any]:
        key = self._new_key(phase.name, ctx.item_id if ctx else "", ctx.attempt if ctx else 0)
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._starts[key[-1]] = started
        future = asyncio.ensure_future(self._run_task(key, phase, func, kwargs, ctx))
        self._running[future] = started

        def forget(_: object) -> None:
            self._running.pop(future, None)
            self._starts.pop(key[-1], None)

        future.add_done_callback(forget)
        return future

    def running(self, future: asyncio.Future[Any]) -> asyncio.Future[Any] | None:
        return self._running.get(future)

    async def _run_task(
        self,
        key: TaskKey,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None,
    ) -> Any:
        call = self.remote_call(phase, func, kwargs)
        call.output_route = self._routes.route(phase, ctx)
        call.inputs_by_reference = True
        # A cache check is cheap and runs anywhere; the handler needs the phase's resources.
        resources = phase.resources if func is phase.handler else None
        reports = self._reports[key[-1]] = _Reports(ctx)
        keys = [key[-1]]
        try:
            outcome = await self._submit(key, call, resources)
            if isinstance(outcome.error, InputsUnreachable) and send_values(call, ctx):
                # That worker does not see the store, and ran nothing: the values went with the task.
                key = self._new_key(phase.name, key[1], key[2])
                self._reports[key[-1]] = reports
                keys.append(key[-1])
                outcome = await self._submit(key, call, resources)
            await reports.all_in(outcome.events, EVENTS_GRACE_SECONDS)
        finally:
            for done in keys:
                self._reports.pop(done, None)
        return apply_outcome(outcome, ctx)

    async def execute(self, call: RemoteCall) -> RemoteOutcome:
        context = call.context or {}
        key = self._new_key(call.phase_name, context.get("item_id", ""), context.get("attempt", 0))
        return await self._submit(key, call)

    def _new_key(self, phase_name: str, item_id: str, attempt: int) -> TaskKey:
        """``(pipeline.phase, item, attempt, tag)``: Dask groups the tasks of a phase by
        the first part; the tag, this run's id and a counter, is unique across drivers
        (two runs sharing a cluster must never share a task) and names the task's claim."""
        return (f"{self.pipeline_name}.{phase_name}", item_id, attempt, f"pipekit-{self._run_id}-{next(_keys)}")

    async def _submit(self, key: TaskKey, call: RemoteCall, resources: dict[str, float] | None = None) -> RemoteOutcome:
        """Run ``call`` as the task ``key``, which runs the handler only if it
        takes the one token put in its claim queue, on a worker that has ``resources``."""
        from distributed import KilledWorker
        from distributed import Queue

        client = await self._get_client()
        claim = await Queue(f"{key[-1]}-claim", client=client)  # type: ignore[no-untyped-call]
        try:
            await claim.put("run")
            future = client.submit(
                run_claimed, call, claim.name, self._topic, self.env, pure=False, key=key, resources=resources or None
            )
            try:
                outcome: RemoteOutcome = await future
            except KilledWorker:
                raise WorkerLost(self._lost_message(key)) from None
            finally:
                future.release()  # a held future would make Dask recompute it if its worker died
        finally:
            claim.close()
        if isinstance(outcome.error, _RunBefore):
            raise WorkerLost(self._lost_message(key))
        return outcome

    def _lost_message(self, key: TaskKey) -> str:
        started = self._starts.get(key[-1])
        worker = started.result() if started is not None and started.done() else "?"
        return f"the Dask worker {worker} running the phase died"

    def _on_started(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        if "event" in message:  # a report of the handler's (progress, a finished sub-item)
            reports = self._reports.get(message.get("key", ""))
            if reports is not None:
                reports.add(tuple(message["event"]))
            return
        started = self._starts.get(message.get("key", ""))
        if started is not None and not started.done():
            started.set_result(message.get("worker", "?"))

    def abandon(self, future: asyncio.Future[Any]) -> None:
        # Dask cannot interrupt a running task: its late result is dropped with the future.
        future.cancel()

    async def aclose(self) -> None:
        self._routes.close()
        if self._client is not None and self._client is self._borrowed:
            self._client.unsubscribe_topic(self._topic)
            return
        if self._cluster is not None:
            await self._cluster.close()
        if self._client is not None:
            await self._client.close()


def dashboard_link(client: Any, timeout: float = 2.0) -> str | None:
    """The link to the dashboard of ``client``'s scheduler, if it answers from here.

    A scheduler started with ``--no-dashboard`` still names one (its HTTP server
    keeps serving ``/health``), so the link is only given when it opens."""
    import urllib.error
    import urllib.request

    try:
        link = str(client.dashboard_link or "")
    except (KeyError, AttributeError):  # no HTTP server at all
        return None
    if not link.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(link, timeout=timeout) as answer:  # noqa: S310 (the scheduler's own link)
            return link if answer.status == 200 else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _read_scheduler_file(path: str) -> str:
    """The address in a scheduler file, as ``dask scheduler --scheduler-file`` writes it.

    Dask's own client waits for a missing file forever: here it is a usage error."""
    try:
        address = json.loads(Path(path).read_text(encoding="utf-8"))["address"]
    except FileNotFoundError:
        raise UsageError(f"--scheduler-file {path}: no such file (is the scheduler running?)") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--scheduler-file {path}: not a Dask scheduler file ({exc!r})") from None
    if not isinstance(address, str) or not address:
        raise UsageError(f"--scheduler-file {path}: not a Dask scheduler file (no address)")
    return address


def _load_on_worker(code: PipelineCode, env: dict[str, str]) -> None:
    from pipekit.execution.code import load

    os.environ.update(env)  # a module may read its settings when it is imported
    load(code)


class _Reports:
    """The reports of one task as they arrive: replayed onto the driver's ``ctx``, counted."""

    def __init__(self, ctx: PhaseContext | None) -> None:
        self.ctx = ctx
        self.received = 0
        self._changed = asyncio.Event()

    def add(self, event: Event) -> None:
        self.received += 1
        self._changed.set()
        replay_event(event, self.ctx)

    async def all_in(self, sent: int, timeout: float) -> None:
        """Until ``sent`` reports came (they travel apart from the result), or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.received < sent and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())


class _RunBefore(Exception):
    """The task found its claim taken: it ran before, on a worker that died."""


def run_claimed(call: RemoteCall, claim: str, topic: str, env: dict[str, str] | None = None) -> RemoteOutcome:
    """On a worker: run ``call`` if this task takes its claim's token, first
    telling the driver (on ``topic``) that the handler starts; else report
    that it ran before, and leave the decision to run it again to the driver.
    ``env`` is set first: a worker its nanny restarted has lost it."""
    from distributed import Queue
    from distributed import get_worker

    queue = Queue(claim)  # type: ignore[no-untyped-call]
    try:
        tokens = queue.get(batch=True)  # type: ignore[no-untyped-call]
    finally:
        queue.close()  # type: ignore[no-untyped-call]
    if not tokens:
        return RemoteOutcome(error=_RunBefore(claim))
    os.environ.update(env or {})
    worker = get_worker()
    tag = claim.removesuffix("-claim")
    worker.log_event(topic, {"key": tag, "worker": worker.address})
    task = worker.get_current_task()

    def emit(event: Event) -> None:
        worker.log_event(topic, {"key": tag, "event": list(event)})

    def driver_alive() -> bool:
        # The scheduler cancels the task when the client that wanted it is gone.
        state = worker.state.tasks.get(task)
        return state is not None and state.state not in ("cancelled", "released", "forgotten")

    return execute_call(call, emit, driver_alive)
