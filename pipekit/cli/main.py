"""The command line: ``pipekit [run] MODULE``, ``pipekit plugins``, ...

``main(args, plugins)`` is the in-process entry point and returns an
``ExitCode``; ``console_main`` is the console script.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
import contextlib
import importlib
import os
import sys
import traceback
from typing import Any
from typing import NoReturn

from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateWriteError
from pipekit.outcomes import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _command_parser(prog: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=description, add_help=False)


def _add_help(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")


def main(args: Sequence[str] | None = None, plugins: Iterable[Any] = ()) -> ExitCode:
    """Run a pipekit command in this process; returns its exit code.

    :param args: the command line without the program name (``sys.argv[1:]`` by default).
    :param plugins: plugin objects to register for this command (tests, embedding).
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(TOP_HELP)
            return ExitCode.OK if argv else ExitCode.USAGE_ERROR
        if argv[0] == "--version":
            from pipekit import __version__

            print(f"pipekit {__version__}")
            return ExitCode.OK
        command = COMMANDS.get(argv[0])
        if command is None:
            command, rest = COMMANDS["run"], argv
        else:
            rest = argv[1:]
        return command(rest, list(plugins))
    except UsageError as exc:
        print(f"pipekit: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    except StateWriteError as exc:
        print(f"pipekit: error: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL_ERROR
    except BrokenPipeError:
        # `pipekit status ... | head`: the reader left, which is not an error.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        print("pipekit: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:
        print("pipekit: internal error:\n" + traceback.format_exc(), file=sys.stderr)
        return ExitCode.INTERNAL_ERROR


def console_main() -> int:
    """The ``pipekit`` console script."""
    code = main()
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return int(code)


# -- run -----------------------------------------------------------------------


def run_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit [run] MODULE [options]``."""
    from pipekit.engine.session import execute_run

    return execute_run(args, plugins).exit_status


# -- plan, why -------------------------------------------------------------------


def plan_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit plan MODULE [run options] [--json]``."""
    from pipekit.cli.plan import plan_command as command

    return command(args, plugins)


def why_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit why MODULE ITEM PHASE``."""
    from pipekit.cli.plan import why_command as command

    return command(args, plugins)


# -- plugins ---------------------------------------------------------------------


def plugins_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit plugins [MODULE] [--all] [--hook NAME]``: what is registered, from where."""
    from pipekit.manager import make_plugin_manager
    from pipekit.manager import register_pipeline_module
    from pipekit.pipeline.loader import load

    parser = _command_parser("pipekit plugins", "List registered plugins and where they came from.")
    parser.add_argument("module", nargs="?", help="also show the hooks of this pipeline module")
    parser.add_argument("--all", action="store_true", help="include built-in plugins")
    parser.add_argument("--hook", metavar="NAME", help="only plugins implementing this hook")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME")
    _add_help(parser)
    option = parser.parse_args(args)
    if option.help:
        parser.print_help()
        return ExitCode.OK
    pm = make_plugin_manager(args, plugins)
    if option.module:
        register_pipeline_module(pm, load(option.module).module)
    hook_filter = option.hook
    if hook_filter and not hook_filter.startswith("pipekit_"):
        hook_filter = f"pipekit_{hook_filter}"
    if hook_filter and not hasattr(pm.hook, hook_filter):
        known = ", ".join(sorted(n for n in vars(pm.hook) if n.startswith("pipekit_")))
        raise UsageError(f"pipekit plugins: unknown hook {option.hook!r} (hooks: {known})")
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked with -p no:NAME
            continue
        source = pm.sources.get(name, "registered at run time")
        if source == "built-in" and not option.all:
            continue
        hooks = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.name.startswith("pipekit_")
        )
        if hook_filter and hook_filter not in hooks:
            continue
        rows.append((name, pm.plugin_version(name), source, hooks))
    if not rows:
        print("no plugins" + ("" if option.all else " (built-ins hidden; --all shows them)"))
    for name, version, source, hooks in rows:
        label = f"{name} {version}".strip()
        print(f"{label}  [{source}]")
        print(f"    hooks: {', '.join(hooks) or '-'}")
    return ExitCode.OK


def _command_module(name: str) -> Callable[[list[str], list[Any]], ExitCode]:
    """A command implemented by ``pipekit.cli.<name>``, imported when used."""

    def command(args: list[str], plugins: list[Any]) -> ExitCode:
        module = importlib.import_module(f"pipekit.cli.{name}")
        result: ExitCode = getattr(module, f"{name}_command")(args, plugins)
        return result

    command.__name__ = f"{name}_command"
    return command


COMMANDS: dict[str, Callable[[list[str], list[Any]], ExitCode]] = {
    "run": run_command,
    "status": _command_module("status"),
    "reset": _command_module("reset"),
    "skip": _command_module("skip"),
    "export": _command_module("export"),
    "report": _command_module("report"),
    "new": _command_module("new"),
    "migrate": _command_module("migrate"),
    "plugins": plugins_command,
    "plan": plan_command,
    "why": why_command,
}

TOP_HELP = """\
usage: pipekit [run] MODULE [options]     run a pipeline (see `pipekit run --help`)
       pipekit status MODULE [--item ID]... [--failed] [--pending] [--all] [--json]
       pipekit reset MODULE [--item ID]... [--phase N]... [--downstream] [--failed] [--all] [--dry-run]
       pipekit skip MODULE --item ID [--phase N] --reason TEXT
       pipekit export MODULE --phase N|NAME (-o DIR | --jsonl)
       pipekit report MODULE -o report.html
       pipekit new NAME
       pipekit plugins [MODULE] [--all] [--hook NAME]
       pipekit plan MODULE [run options] [--json]
       pipekit why MODULE ITEM PHASE
       pipekit migrate --from URL --to URL [--pipeline NAME]

Multi-phase, resumable batch pipelines. MODULE is a dotted module name or a
path to a .py file whose functions are marked with @pipekit.phase.

commands:
  run       run the pipeline over its items; resumes where the last run stopped
            (--failed-only retries just the items with a failed phase)
  status    items x phases with glyphs, costs and last errors; --item ID tells one item's story
  reset     set phases of the selected items back to pending (it never prompts)
  skip      mark phases of an item skipped by hand, with a reason (reset undoes it)
  export    write one phase's outputs: one file per item (-o DIR) or JSON lines (--jsonl)
  report    write a self-contained HTML report: matrix, timeline, costs, failures
  new       write a runnable pipeline NAME.py, an items file and a test for it
  plugins   list plugins, their versions, where they came from and their hooks
  plan      what a run would do and why (pending, failed, stale), with estimated time and cost
  why       the story of one (item, phase): attempts, errors, what changed since it ran
  migrate   copy a run's state between stores (json:DIR, sqlite:PATH, postgresql://...), verified

Run options can default from [tool.pipekit] in the nearest pyproject.toml
(workers, state_dir, output_dir, store, plugins, progress, executor).

exit codes: 0 ok, 1 items unfinished, 2 interrupted, 3 internal error,
            4 usage error, 5 no items"""
