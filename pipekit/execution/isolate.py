"""Hard timeouts for sync code: ``@phase(..., isolate="process")``.

With the default ``local`` executor such a phase runs in a worker process
(``pipekit.execution.pool``) instead of a thread. When the runner abandons the call
(its timeout, an interruption) the worker is killed, so the phase really stops
and may be retried in the same run; a fresh worker takes its place. Workers
import the pipeline module themselves; the arguments and the return value
travel pickled (``pipekit.execution.remote``), and a phase whose arguments or result
cannot be pickled fails with an error naming it. What the handler records with
``ctx.record_cost`` comes back with the result; what it reports while it
runs (``ctx.progress``, finished sub-items) reaches the hooks as it happens.

The trade-off against a thread: a worker process to start (once, then reused),
the module's top level run again in it, and pickling both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import functools
import sys
from typing import Any

from pipekit.execution.pool import ProcessPool
from pipekit.execution.remote import apply_outcome
from pipekit.execution.remote import build_call
from pipekit.execution.remote import replay_event
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition


#: Isolated calls in flight at once are bounded by ``-j`` already; this only caps the pool.
MAX_WORKERS = 1024


class IsolatedCalls:
    """Runs isolated phases of the ``local`` executor in worker processes started on demand."""

    def __init__(self) -> None:
        self._pool: ProcessPool | None = None

    def start(
        self,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None,
    ) -> asyncio.Future[Any]:
        """Run ``func(**kwargs)`` in a worker; cancelling the future kills the worker."""
        if self._pool is None:
            self._pool = ProcessPool(MAX_WORKERS)
        return asyncio.ensure_future(self._run(self._pool, phase, func, kwargs, ctx))

    async def _run(
        self,
        pool: ProcessPool,
        phase: PhaseDefinition,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
        ctx: PhaseContext | None,
    ) -> Any:
        call = build_call(module_reference(func), phase, func, kwargs)
        return apply_outcome(await pool.run(call, functools.partial(replay_event, ctx=ctx)), ctx)

    def close(self) -> None:
        """Stop the idle workers."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def module_reference(func: Callable[..., Any]) -> str:
    """How a worker imports ``func``'s module: its file for a top-level module
    (loaded from a path, as the loader does), its dotted name inside a package."""
    name = func.__module__
    path = getattr(sys.modules.get(name), "__file__", None)
    return path if path and "." not in name else name
