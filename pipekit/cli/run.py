"""``pipekit [run] MODULE [options]``: the run's options, and how a run starts.

``prepare`` turns arguments into a ``Config`` the way every run starts, from
the command line or from ``pipekit.run``; ``engine.session.wrap_run`` does the
rest and decides the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import IO
from typing import Any

from pipekit.cli.failure import print_error
from pipekit.cli.parsing import PROGRESS_MODES
from pipekit.cli.parsing import ArgumentParser
from pipekit.cli.parsing import add_item_options
from pipekit.cli.parsing import command_parser
from pipekit.cli.projectconfig import load_project_config
from pipekit.config import Config
from pipekit.config import Parser
from pipekit.engine.session import Prepare
from pipekit.engine.session import wrap_run
from pipekit.manager import PipekitPluginManager
from pipekit.manager import make_plugin_manager
from pipekit.manager import register_pipeline_module
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.pipeline.resources import parse_resources


def run_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit [run] MODULE [options]``."""
    outcome = asyncio.run(wrap_run(prepare(build_run_parser(), args, plugins)))
    if outcome.error is not None:
        print_error(outcome.error)
    return outcome.result.exit_status


def prepare(parser: ArgumentParser, args: list[str], plugins: list[Any]) -> Prepare:
    """How a run (or ``plan``) starts: plugins, the module and their options, parsed."""

    def start(stdout: IO[str]) -> Config | None:
        option, pm, pipeline = parse_with_plugins(parser, args, plugins)
        if option.help:
            parser.print_help(stdout)
            return None
        if pipeline is None:
            raise UsageError(f"{parser.prog}: give the pipeline MODULE (a dotted name or a .py path)")
        return Config(option, pm, pipeline)

    return start


def parse_with_plugins(
    parser: ArgumentParser, args: list[str], plugins: list[Any]
) -> tuple[argparse.Namespace, PipekitPluginManager, Pipeline | None]:
    """Plugins, the pipeline module (a plugin too) and their options, then the
    parsed command line. Returns the options, the plugin manager and the
    pipeline (None when no MODULE was given).
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


def build_run_parser() -> ArgumentParser:
    """The core options of ``pipekit run`` (CONTRACT §4); plugins add theirs."""
    parser = command_parser("pipekit run", "Run a pipeline over its items, resuming where the last run stopped.")
    add_item_options(parser)
    run = parser.add_argument_group("run")
    run.add_argument(
        "-j", "--workers", type=_positive_int, default=1, metavar="N", help="items processed concurrently (default 1)"
    )
    run.add_argument(
        "--executor", default="local", metavar="NAME", help="where phases execute: local (default), processes, dask"
    )
    run.add_argument(
        "--resources",
        action="append",
        type=parse_resources,
        metavar="NAME=N,...",
        help="what this machine has for @phase(resources=...), e.g. GPU=1,MEM=16 (repeatable; "
        "local and processes executors: a phase starts once its share is free)",
    )
    run.add_argument("--force", action="store_true", help="rerun every phase, ignoring completed state and caches")
    _add_stop_options(run)
    run.add_argument(
        "--rerun-stale",
        action="store_true",
        help="also re-run completed phases whose code, version or inputs changed (see `pipekit plan`)",
    )
    run.add_argument(
        "--from-phase", type=int, metavar="N", help="reset phases >= N to pending for the selected items, then run"
    )
    run.add_argument(
        "--wait", dest="batch_wait", action="store_true",
        help="wait for the provider batches of batch phases (polling) instead of exiting 6",
    )
    run.add_argument(
        "--poll-interval", type=float, metavar="SECONDS",
        help="seconds between polls under --wait (default: the provider's, with backoff)",
    )
    run.add_argument(
        "--failed-only", action="store_true", help="only the selected items that have a failed phase (retry failures)"
    )
    _add_place_options(parser)
    _add_output_options(parser)
    return parser


def _add_stop_options(run: Any) -> None:
    """What stops a run early: a budget, failed items, items other processes hold."""
    run.add_argument(
        "--max-cost",
        type=_dollars,
        metavar="USD",
        help="stop starting phases once the selected items have recorded this many dollars "
        "(across runs); the same command with a higher cap continues",
    )
    run.add_argument(
        "--maxfail",
        type=_positive_int,
        metavar="N",
        help="stop after N failed items: no new item starts, phases in flight finish, the rest stay pending",
    )
    run.add_argument("-x", "--exitfirst", dest="maxfail", action="store_const", const=1, help="same as --maxfail 1")
    run.add_argument(
        "--maxfail-same",
        type=_positive_int,
        metavar="K",
        help="stop when the same error (type and first line) has failed K items in a row",
    )
    run.add_argument(
        "--skip-busy",
        action="store_true",
        help="skip items another pipekit process is running instead of waiting for them (the run then exits 1)",
    )


def _add_place_options(parser: ArgumentParser) -> None:
    """Where state and outputs go."""
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


def _add_output_options(parser: ArgumentParser) -> None:
    """What the run shows, and its plugins."""
    out = parser.add_argument_group("output")
    out.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="progress display on stderr")
    out.add_argument("--jsonl", action="store_true", help="one JSON event per line on stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    plugins = parser.add_argument_group("plugins")
    plugins.add_argument(
        "-p", dest="plugins", action="append", default=[], metavar="NAME", help="load plugin NAME; -p no:NAME blocks it"
    )


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
