"""One ``run`` command from arguments to exit code: options, plugins, items,
state location, the run itself, and teardown (pytest's ``wrap_session``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import IO
from typing import Any

import platformdirs

from pipekit.cli.main import ArgumentParser
from pipekit.cli.projectconfig import load_project_config
from pipekit.config import Config
from pipekit.config import Parser
from pipekit.display.streams import stdout_reserved_for_events
from pipekit.engine.preflight import prepare_stale_policy
from pipekit.engine.runner import Run
from pipekit.engine.runner import RunResult
from pipekit.engine.selection import has_failed_phase
from pipekit.manager import make_plugin_manager
from pipekit.manager import register_pipeline_module
from pipekit.notify import HookNotifier
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.items import ItemSpec
from pipekit.pipeline.items import normalize_items
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id


PROGRESS_MODES = ("auto", "rich", "simple", "none")


def build_run_parser() -> ArgumentParser:
    """The core options of ``pipekit run`` (CONTRACT §4); plugins add theirs."""
    parser = ArgumentParser(
        prog="pipekit run",
        description="Run a pipeline over its items, resuming where the last run stopped.",
        add_help=False,
    )
    parser.add_argument("module", nargs="?", metavar="MODULE", help="dotted module name or path to a .py file")
    items = parser.add_argument_group("items")
    items.add_argument("--item", action="append", default=[], metavar="ID", help="an item id (repeatable)")
    items.add_argument(
        "--items", action="append", default=[], metavar="FILE", help="items file: .txt, .jsonl or .csv (repeatable)"
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "-j", "--workers", type=_positive_int, default=1, metavar="N", help="items processed concurrently (default 1)"
    )
    run.add_argument(
        "--executor", default="local", metavar="NAME", help="where phases execute: local (default), processes, dask"
    )
    run.add_argument("--force", action="store_true", help="rerun every phase, ignoring completed state and caches")
    run.add_argument(
        "--max-cost",
        type=_dollars,
        metavar="USD",
        help="stop starting phases once the selected items have recorded this many dollars "
        "(across runs); the same command with a higher cap continues",
    )
    run.add_argument(
        "--rerun-stale",
        action="store_true",
        help="also re-run completed phases whose code, version or inputs changed (see `pipekit plan`)",
    )
    run.add_argument(
        "--from-phase", type=int, metavar="N", help="reset phases >= N to pending for the selected items, then run"
    )
    run.add_argument(
        "--failed-only", action="store_true", help="only the selected items that have a failed phase (retry failures)"
    )
    where = parser.add_argument_group("state and outputs")
    where.add_argument("--state-dir", metavar="DIR", help="this pipeline's state directory, used as is")
    where.add_argument(
        "--output-dir", metavar="DIR", help="root of each item's ctx.output_dir (default <state dir>/outputs)"
    )
    where.add_argument(
        "--store",
        metavar="URL",
        help="where state lives: json:DIR, sqlite:PATH or postgresql://...; wins over --state-dir",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="progress display on stderr")
    out.add_argument("--jsonl", action="store_true", help="one JSON event per line on stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    plugins = parser.add_argument_group("plugins")
    plugins.add_argument(
        "-p", dest="plugins", action="append", default=[], metavar="NAME", help="load plugin NAME; -p no:NAME blocks it"
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def _dollars(text: str) -> float:
    value = float(text.lstrip("$"))
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number of dollars, 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def execute_run(
    args: list[str],
    plugins: list[Any],
    *,
    items: list[Any] | None = None,
    keep_states: bool = False,
) -> RunResult:
    """Run ``pipekit run ARGS`` in this process and return its result.

    Usage errors raise ``UsageError`` (the CLI prints them and exits 4).
    """
    return asyncio.run(aexecute_run(args, plugins, items=items, keep_states=keep_states))


async def aexecute_run(
    args: list[str],
    plugins: list[Any],
    *,
    items: list[Any] | None = None,
    keep_states: bool = False,
) -> RunResult:
    """The coroutine behind ``execute_run``, for callers already in an event loop."""
    # During a run stdout carries only --jsonl events: the module's and the
    # handlers' prints, subprocesses and workers write to stderr.
    with stdout_reserved_for_events() as stdout:
        return await _execute_run(stdout, args, plugins, items=items, keep_states=keep_states)


async def _execute_run(
    stdout: IO[str], args: list[str], plugins: list[Any], *, items: list[Any] | None, keep_states: bool
) -> RunResult:
    parser = build_run_parser()
    option, pm, pipeline = parse_with_plugins(parser, args, plugins)
    if option.help:
        parser.print_help(stdout)
        return RunResult(ExitCode.OK)
    if pipeline is None:
        raise UsageError("pipekit run: give the pipeline MODULE (a dotted name or a .py path)")
    config = Config(option, pm, pipeline)
    config.stdout = stdout
    try:
        config.do_configure()
        specs = _collect_items(config, pipeline, items)
        if not specs:
            HookNotifier.of(pm).report(f"no {pipeline.item_noun} to process", "notice")
            return RunResult(ExitCode.NO_ITEMS)
        store = open_store(option, pipeline)
        config.add_cleanup(store.close)
        HookNotifier.of(pm).report(f"state: {store.location}", "notice")
        if option.failed_only:
            specs = [spec for spec in specs if has_failed_phase(store, spec[0])]
            if not specs:
                HookNotifier.of(pm).report(f"no {pipeline.item_noun} with a failed phase", "notice")
                return RunResult(ExitCode.NO_ITEMS)
        executor = config.hook.pipekit_make_executor(config=config, pipeline=pipeline, name=option.executor)
        if executor is None:
            raise UsageError(f"unknown --executor {option.executor!r} (built in: local, processes, dask)")
        output_root = _output_root(option, store)
        stale_policy = prepare_stale_policy(pipeline, store, specs, output_root, option)
        check_from_phase(pipeline, option.from_phase)
        run = Run(
            config,
            pipeline,
            specs,
            store,
            output_root=output_root,
            workers=option.workers,
            force=option.force,
            from_phase=option.from_phase,
            executor=executor,
            keep_states=keep_states,
            stale_policy=stale_policy,
            max_cost=option.max_cost,
        )
        await run.execute()
        return run.result()
    finally:
        config.ensure_unconfigure()


def check_from_phase(pipeline: Pipeline, from_phase: int | None) -> None:
    """A usage error when ``--from-phase`` names no phase and no later one."""
    if from_phase is not None and not any(p.num >= from_phase for p in pipeline.phases):
        numbers = ", ".join(str(p.num) for p in pipeline.phases)
        raise UsageError(f"--from-phase {from_phase}: no phase has that num or a later one ({numbers})")


def parse_with_plugins(
    parser: ArgumentParser, args: list[str], plugins: list[Any]
) -> tuple[argparse.Namespace, Any, Pipeline | None]:
    """Plugins, the pipeline module (a plugin too) and their options, then the
    parsed command line: how ``run`` and ``plan`` start. Returns the options,
    the plugin manager and the pipeline (None when no MODULE was given).
    """
    project = load_project_config()
    project.apply(parser)
    args = project.plugin_args() + list(args)
    known, _ = parser.parse_known_args(args)
    pm = make_plugin_manager(args, plugins)
    pipeline: Pipeline | None = None
    if known.module:
        pipeline = load(known.module)
        register_pipeline_module(pm, pipeline.module)
    pm.hook.pipekit_addoption.call_historic(kwargs={"parser": Parser(parser)})
    return parser.parse_args(args), pm, pipeline


def _collect_items(config: Config, pipeline: Pipeline, items: list[Any] | None) -> list[ItemSpec]:
    if items is not None:
        return normalize_items(items, "items passed to pipekit.run")
    found = config.hook.pipekit_collect_items(config=config, pipeline=pipeline)
    if found is None:
        raise UsageError(
            f"no items for {pipeline.name}: give --item/--items, or define items() in {pipeline.path}"
        )
    origin = "--item/--items" if config.getoption("item") or config.getoption("items") else "items()"
    return normalize_items(found, origin)


def default_state_dir(pipeline_name: str) -> Path:
    """``$PIPEKIT_STATE_DIR/<pipeline>``, else the user state dir of pipekit ``/<pipeline>``."""
    root = os.environ.get("PIPEKIT_STATE_DIR") or platformdirs.user_state_dir("pipekit")
    return Path(root) / _folder_name(pipeline_name)


def _folder_name(name: str) -> str:
    """``name`` itself when it is a plain folder name, else its safe encoding."""
    plain = name not in (".", "..") and not name.startswith(".") and not any(c in name for c in "/\\\0")
    return name if plain and len(name.encode("utf-8", "surrogatepass")) <= 200 else encode_item_id(name)


def open_store(option: argparse.Namespace, pipeline: Pipeline) -> StateStore:
    """The store chosen by ``--store``, ``PIPEKIT_STORE``, ``--state-dir`` or the default.

    On the command line ``--store`` wins over ``--state-dir``; a ``--state-dir``
    given there wins over a store from ``PIPEKIT_STORE`` or ``[tool.pipekit]``.
    """
    configured = getattr(option, "configured_defaults", None) or {}
    store_given = option.store is not None and option.store != configured.get("store")
    dir_given = option.state_dir is not None and option.state_dir != configured.get("state_dir")
    url = option.store if store_given or not dir_given else None
    if url is None and not dir_given:
        url = os.environ.get("PIPEKIT_STORE")
    if url:
        from pipekit.state.open import open_store_url

        return open_store_url(url, pipeline=pipeline.name)
    if option.state_dir:
        return JsonDirStore(Path(option.state_dir).expanduser())
    return JsonDirStore(default_state_dir(pipeline.name))


def _output_root(option: argparse.Namespace, store: StateStore) -> Path:
    chosen = option.output_dir or os.environ.get("PIPEKIT_OUTPUT_DIR")
    if chosen:
        return Path(chosen).expanduser().resolve()
    if isinstance(store, JsonDirStore):
        base = store.state_dir
    else:
        # A database file keeps its outputs beside it; a server has no folder of its own.
        path = getattr(store, "path", None)
        base = path.parent if isinstance(path, Path) else Path(".")
    return (base / "outputs").resolve()
