"""The library API: drive a pipeline from Python (scripts, notebooks, tests).

A library run starts as ``pipekit run`` does (the same options, plugins and
``[tool.pipekit]`` defaults) and goes through the same ``wrap_run``; where the
command line prints an error and exits, the library raises it. Each keyword
is turned into its command-line option, so the parser stays the one owner of
checking values and of how they combine with ``[tool.pipekit]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import concurrent.futures
from os import PathLike
import threading
from types import ModuleType
from typing import Any

from pipekit.builtin.executors import DaskClient
from pipekit.cli.run import build_run_parser
from pipekit.cli.run import prepare
from pipekit.engine.result import RunResult
from pipekit.engine.session import wrap_run
from pipekit.outcomes import UsageError
from pipekit.state.model import PipelineState


#: The keywords of ``run``/``arun`` that take a value, and their option of ``pipekit run``.
_VALUE_OPTIONS = {
    "state_dir": "--state-dir",
    "store": "--store",
    "output_dir": "--output-dir",
    "workers": "--workers",
    "executor": "--executor",
    "resources": "--resources",
    "max_cost": "--max-cost",
    "maxfail": "--maxfail",
    "maxfail_same": "--maxfail-same",
    "from_phase": "--from-phase",
    "limit": "--limit",
    "sample": "--sample",
    "seed": "--seed",
    "progress": "--progress",
}
#: The keywords that are flags.
_FLAG_OPTIONS = {"force": "--force", "rerun_stale": "--rerun-stale", "failed_only": "--failed-only"}


def _arguments(
    module_or_path: str | PathLike[str] | ModuleType,
    options: dict[str, Any],
    plugins: Iterable[Any],
    args: Sequence[str],
) -> tuple[list[str], list[Any]]:
    """The command line of ``pipekit run`` that ``options`` stand for, and the plugin objects.

    A keyword left at None is not given, so ``[tool.pipekit]`` or the option's
    default applies, as on the command line. A plugin given as a string is a
    module name for ``-p`` (``"no:NAME"`` blocks one).
    """
    target = module_or_path.__name__ if isinstance(module_or_path, ModuleType) else str(module_or_path)
    argv = [target]
    for keyword, value in options.items():
        if keyword in _FLAG_OPTIONS:
            if value:
                argv.append(_FLAG_OPTIONS[keyword])
        elif value is not None:
            if isinstance(value, Mapping):  # resources={"GPU": 1} -> --resources=GPU=1
                value = ",".join(f"{name}={amount}" for name, amount in value.items())
            # "--option=value": a value starting with "-" is never taken for an option.
            argv.append(f"{_VALUE_OPTIONS[keyword]}={value}")
    objects = []
    for plugin in plugins:
        if isinstance(plugin, str):
            argv.append(f"-p={plugin}")
        else:
            objects.append(plugin)
    return argv + list(args), objects


def run(
    module_or_path: str | PathLike[str] | ModuleType,
    items: Iterable[Any] | None = None,
    *,
    state_dir: str | PathLike[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    plugins: Iterable[Any] = (),
    progress: str | None = None,
    store: str | None = None,
    output_dir: str | PathLike[str] | None = None,
    executor: str | None = None,
    max_cost: float | None = None,
    maxfail: int | None = None,
    maxfail_same: int | None = None,
    from_phase: int | None = None,
    rerun_stale: bool = False,
    failed_only: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    seed: int | None = None,
    args: Sequence[str] = (),
    client: Any = None,
    resources: Mapping[str, float] | None = None,
    keep_states: bool = True,
    on_state: Callable[[PipelineState], None] | None = None,
) -> RunResult:
    """Run a pipeline as ``pipekit run`` does and return its ``RunResult``.

    Called where an event loop is already running (a Jupyter cell), the run
    gets its own loop in a worker thread and this call waits for it; SIGINT
    and SIGTERM are then left to the caller, and a ``KeyboardInterrupt``
    while waiting stops the run as an interrupt does (in-flight phases are
    recorded as interrupted) before it is raised again.

    Each option is the same as ``pipekit run``'s; one left at None takes its
    value from ``[tool.pipekit]``, else the command line's default.

    :param module_or_path: a dotted module name, a ``.py`` path or a module.
    :param items: ids, ``(id, metadata)`` pairs or dicts with ``"id"``; by
        default the items come from the hooks or the module's ``items()``.
    :param state_dir: the state directory (``--state-dir``).
    :param workers: items processed concurrently (``-j``, default 1).
    :param force: rerun every phase, ignoring completed state and caches.
    :param plugins: plugin objects to register for this run, or module names
        to load as ``-p NAME`` does (``"no:NAME"`` blocks a plugin).
    :param progress: ``auto`` (the default), ``rich``, ``simple`` or ``none``.
    :param store: where state lives (``--store``: ``json:DIR``,
        ``sqlite:PATH`` or ``postgresql://...``); wins over ``state_dir``.
    :param output_dir: root of each item's ``ctx.output_dir`` (``--output-dir``).
    :param executor: where phases execute: ``local`` (default), ``processes``, ``dask``.
    :param max_cost: stop starting phases once the items have recorded this
        many dollars, across runs (``--max-cost``).
    :param maxfail: stop after this many failed items (``--maxfail``; 1 is ``-x``).
    :param maxfail_same: stop when the same error failed this many items in a row.
    :param from_phase: reset phases from this one on to pending, then run.
    :param rerun_stale: also rerun completed phases whose code or inputs changed.
    :param failed_only: only the items that have a failed phase.
    :param limit: only the first this many items.
    :param sample: this many of the items at random; the summary projects the cost of all.
    :param seed: the seed of ``sample``.
    :param args: more command-line arguments, as for ``pipekit run`` (plugins'
        options such as ``["--dask-scheduler", "tcp://..."]``).
    :param client: a ``distributed.Client`` to run the phases on (``--executor dask``); left open.
    :param resources: what this machine has for ``@phase(resources=...)``, e.g.
        ``{"GPU": 1}`` (``--resources``; the local and processes executors).
    :param keep_states: keep every selected item's final state in ``RunResult.states``;
        False returns the totals only, so a run over a million items holds no state.
    :param on_state: called with each selected item's final state, one at a time, as
        the item finishes (or is found finished); with ``keep_states=False`` the
        caller streams the states instead of holding them all. An exception it
        raises stops the run (exit code 3) and is raised.
    :raises pipekit.UsageError: for a bad module, bad items or bad options.
    """
    options = {k: v for k, v in locals().items() if k in _VALUE_OPTIONS or k in _FLAG_OPTIONS}

    def main() -> Coroutine[Any, Any, RunResult]:
        return _arun(module_or_path, items, options, plugins, args, client, keep_states, on_state)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    return _run_in_worker_thread(main)


async def arun(
    module_or_path: str | PathLike[str] | ModuleType,
    items: Iterable[Any] | None = None,
    *,
    state_dir: str | PathLike[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    plugins: Iterable[Any] = (),
    progress: str | None = None,
    store: str | None = None,
    output_dir: str | PathLike[str] | None = None,
    executor: str | None = None,
    max_cost: float | None = None,
    maxfail: int | None = None,
    maxfail_same: int | None = None,
    from_phase: int | None = None,
    rerun_stale: bool = False,
    failed_only: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    seed: int | None = None,
    args: Sequence[str] = (),
    client: Any = None,
    resources: Mapping[str, float] | None = None,
    keep_states: bool = True,
    on_state: Callable[[PipelineState], None] | None = None,
) -> RunResult:
    """The coroutine twin of ``run`` (the same parameters), for code already
    inside an event loop; cancelling it stops the run as an interrupt does."""
    options = {k: v for k, v in locals().items() if k in _VALUE_OPTIONS or k in _FLAG_OPTIONS}
    return await _arun(module_or_path, items, options, plugins, args, client, keep_states, on_state)


async def _arun(
    module_or_path: str | PathLike[str] | ModuleType,
    items: Iterable[Any] | None,
    options: dict[str, Any],
    plugins: Iterable[Any],
    args: Sequence[str],
    client: Any = None,
    keep_states: bool = True,
    on_state: Callable[[PipelineState], None] | None = None,
) -> RunResult:
    argv, objects = _arguments(module_or_path, options, plugins, args)
    if client is not None:  # a Dask client means the dask executor, on it
        if options.get("executor") not in (None, "dask"):
            raise UsageError(f"client= runs on the dask executor, not executor={options['executor']!r}")
        argv, objects = [*argv, "--executor", "dask"], [*objects, DaskClient(client)]
    outcome = await wrap_run(
        prepare(build_run_parser(), argv, objects),
        items=None if items is None else list(items),
        keep_states=keep_states,
        on_state=on_state,
    )
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


def _run_in_worker_thread(main: Callable[[], Coroutine[Any, Any, RunResult]]) -> RunResult:
    """Run ``main()`` on a new event loop in a worker thread and wait for its result.

    The caller's thread is busy in its own loop (which this call blocks, as
    any blocking call in a cell does). Signal handlers can only be installed
    on the main thread, so the run installs none; a ``KeyboardInterrupt``
    raised here while waiting cancels the run, which records its in-flight
    phases as interrupted, and is raised again once the run has stopped.
    """
    done: concurrent.futures.Future[RunResult] = concurrent.futures.Future()
    started = threading.Event()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[RunResult]]] = []

    async def entry() -> RunResult:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        started.set()
        return await main()

    def target() -> None:
        try:
            done.set_result(asyncio.run(entry()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            done.set_exception(exc)
        finally:
            started.set()

    thread = threading.Thread(target=target, name="pipekit.run")
    thread.start()
    try:
        return done.result()
    except KeyboardInterrupt:
        started.wait()
        for loop, task in running:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the run has already ended and closed its loop
        thread.join()
        raise
