"""The library API: drive a pipeline from Python (scripts, notebooks, tests).

A library run starts as ``pipekit run`` does (the same options, plugins and
``[tool.pipekit]`` defaults) and goes through the same ``wrap_run``; where the
command line prints an error and exits, the library raises it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from os import PathLike
from types import ModuleType
from typing import Any

from pipekit.builtin.executors import DaskClient
from pipekit.cli.run import build_run_parser
from pipekit.cli.run import prepare
from pipekit.engine.runner import RunResult
from pipekit.engine.session import wrap_run


def _arguments(
    module_or_path: str | PathLike[str] | ModuleType,
    state_dir: str | PathLike[str] | None,
    workers: int,
    force: bool,
    progress: str,
) -> list[str]:
    target = module_or_path.__name__ if isinstance(module_or_path, ModuleType) else str(module_or_path)
    args = [target, "-j", str(workers), "--progress", progress]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    if force:
        args.append("--force")
    return args


def run(
    module_or_path: str | PathLike[str] | ModuleType,
    items: Iterable[Any] | None = None,
    *,
    state_dir: str | PathLike[str] | None = None,
    workers: int = 1,
    force: bool = False,
    plugins: Iterable[Any] = (),
    progress: str = "auto",
    client: Any = None,
) -> RunResult:
    """Run a pipeline as ``pipekit run`` does and return its ``RunResult``.

    :param module_or_path: a dotted module name, a ``.py`` path or a module.
    :param items: ids, ``(id, metadata)`` pairs or dicts with ``"id"``; by
        default the items come from the hooks or the module's ``items()``.
    :param state_dir: the state directory (default as for the CLI).
    :param workers: items processed concurrently.
    :param force: rerun every phase, ignoring completed state and caches.
    :param plugins: plugin objects to register for this run.
    :param progress: ``auto``, ``rich``, ``simple`` or ``none``.
    :param client: a ``distributed.Client`` to run the phases on (``--executor dask``); left open.
    :raises pipekit.UsageError: for a bad module, bad items or bad options.
    """
    return asyncio.run(
        arun(
            module_or_path,
            items,
            state_dir=state_dir,
            workers=workers,
            force=force,
            plugins=plugins,
            progress=progress,
            client=client,
        )
    )


async def arun(
    module_or_path: str | PathLike[str] | ModuleType,
    items: Iterable[Any] | None = None,
    *,
    state_dir: str | PathLike[str] | None = None,
    workers: int = 1,
    force: bool = False,
    plugins: Iterable[Any] = (),
    progress: str = "auto",
    client: Any = None,
) -> RunResult:
    """The coroutine twin of ``run``, for code already inside an event loop (Jupyter)."""
    args = _arguments(module_or_path, state_dir, workers, force, progress)
    if client is not None:  # a Dask client means the dask executor, on it
        args, plugins = [*args, "--executor", "dask"], [*plugins, DaskClient(client)]
    outcome = await wrap_run(
        prepare(build_run_parser(), args, list(plugins)),
        items=None if items is None else list(items),
        keep_states=True,
    )
    if outcome.error is not None:
        raise outcome.error
    return outcome.result
