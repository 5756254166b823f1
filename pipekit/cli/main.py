"""The command line: ``pipekit [run] MODULE``, ``pipekit plugins``, ...

``main(args, plugins)`` is the in-process entry point and returns an
``ExitCode``; ``console_main`` is the console script. Each verb lives in
``pipekit.cli.<verb>`` as ``<verb>_command(args, plugins)``, imported when used.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
import contextlib
import importlib
import sys
from typing import Any

from pipekit.cli.failure import print_error
from pipekit.engine.exitcode import exit_code_for
from pipekit.outcomes import ExitCode


#: Each verb and the module that implements it (``pipekit MODULE`` means ``run``).
COMMANDS: dict[str, str] = {
    "run": "pipekit.cli.run",
    "status": "pipekit.cli.status",
    "reset": "pipekit.cli.reset",
    "skip": "pipekit.cli.skip",
    "export": "pipekit.cli.export",
    "report": "pipekit.cli.report",
    "new": "pipekit.cli.new",
    "migrate": "pipekit.cli.migrate",
    "plugins": "pipekit.cli.plugins",
    "plan": "pipekit.cli.plan",
    "why": "pipekit.cli.why",
}


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
            from importlib.metadata import version  # 40 ms: only when asked

            print(f"pipekit {version('pipekit')}")
            return ExitCode.OK
        name, rest = (argv[0], argv[1:]) if argv[0] in COMMANDS else ("run", argv)
        command = getattr(importlib.import_module(COMMANDS[name]), f"{name}_command")
        code: ExitCode = command(rest, list(plugins))
        return code
    except (Exception, KeyboardInterrupt) as exc:
        print_error(exc)
        return exit_code_for(exc)


def console_main() -> int:
    """The ``pipekit`` console script."""
    code = main()
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return int(code)


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

options: -h/--help this help; --version the installed version.

Run options can default from [tool.pipekit] in the nearest pyproject.toml
(workers, state_dir, output_dir, store, plugins, progress, executor).

exit codes: 0 ok, 1 items unfinished, 2 interrupted, 3 internal error,
            4 usage error, 5 no items"""
