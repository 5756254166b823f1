"""The one place a command's exit code is decided (CONTRACT §4).

The runner reports its verdict over the items it ran; ``decide_exit_code``
combines it with whatever stopped the command before or after the items (an
exception, no items at all). It imports nothing heavy: every verb uses it.
"""

from __future__ import annotations

from typing import Any

from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.outcomes import worst_exit_code


def decide_exit_code(
    run_status: ExitCode | None = None, error: BaseException | None = None, *, no_items: bool = False
) -> ExitCode:
    """The exit code of a command: the first of 3, 2, 4, 1, 6 that applies wins, then 5, then 0.

    :param run_status: the runner's verdict over its items (None: no items ran).
    :param error: the exception that stopped the command, if one did.
    :param no_items: there was nothing to process.
    """
    codes = set()
    if run_status is not None:
        codes.add(run_status)
    if error is not None:
        codes.add(exit_code_for(error))
    if no_items:
        codes.add(ExitCode.NO_ITEMS)
    return worst_exit_code(codes)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code an exception that ends a pipekit command stands for."""
    if isinstance(error, UsageError):
        return ExitCode.USAGE_ERROR
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, BrokenPipeError):
        # `pipekit status ... | head`: the reader left, which is not an error.
        return ExitCode.OK
    return ExitCode.INTERNAL_ERROR


def items_exit_code(run: Any) -> ExitCode:
    """The runner's verdict over its items (``pipekit.engine.runner.Run``): a bug or a
    failed write 3, an interrupt 2, an unreadable state 4, an item not finished 1 (a
    failed one, one a budget stopped, one another process held), one left waiting
    for a provider's batch 6."""
    codes = set()
    if run.fatal_error is not None:
        codes.add(ExitCode.INTERNAL_ERROR)
    if run.control.interrupted.is_set():
        codes.add(ExitCode.INTERRUPTED)
    if run.items_unreadable:
        codes.add(ExitCode.USAGE_ERROR)
    unfinished = run.total_items - run.items_completed - run.items_unreadable - run.items_waiting
    if run.items_failed or run.items_stopped or unfinished > 0:  # busy items (--skip-busy) too
        codes.add(ExitCode.ITEMS_FAILED)
    if run.items_waiting:
        codes.add(ExitCode.WAITING)
    return worst_exit_code(codes)
