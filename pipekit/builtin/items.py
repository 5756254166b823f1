"""Where items come from: ``--item``/``--items`` first, the module's ``items()`` last."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
import inspect
from typing import Any

from pipekit.config import Config
from pipekit.hookspecs import hookimpl
from pipekit.outcomes import UsageError
from pipekit.pipeline.items import read_items_file
from pipekit.pipeline.items import select_from_files
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import user_traceback


@hookimpl(tryfirst=True)
def pipekit_collect_items(config: Config) -> Iterable[Any] | None:
    """Items named on the command line win over every other source."""
    ids: list[str] = config.getoption("item") or []
    files: list[str] = config.getoption("items") or []
    if not ids and not files:
        return None
    return _command_line_items(files, ids)


def _command_line_items(files: list[str], ids: list[str]) -> Iterable[Any]:
    if files:
        # --item with --items picks those items of the files, metadata and all.
        return select_from_files(_read_files(files), ids, ", ".join(files))
    return ids


def _read_files(files: list[str]) -> Iterator[Any]:
    for path in files:
        yield from read_items_file(path)


@hookimpl(trylast=True, specname="pipekit_collect_items")
def pipekit_collect_module_items(pipeline: Pipeline) -> Iterable[Any] | None:
    """The pipeline module's ``items()`` function, when it has one."""
    func = getattr(pipeline.module, "items", None)
    if func is None:
        return None
    if not callable(func):
        raise UsageError(f"items in {pipeline.path} must be a function returning the items")
    if inspect.iscoroutinefunction(func):
        raise UsageError(f"items() in {pipeline.path} must be a plain function (not async)")
    return _guarded(func, pipeline)


def _guarded(func: Any, pipeline: Pipeline) -> Iterator[Any]:
    """Yield what ``items()`` gives; its own errors are the user's, shown with their traceback."""
    try:
        yield from func()
    except Exception as exc:
        raise UsageError(user_traceback(exc, f"items() in {pipeline.path} raised")) from None
