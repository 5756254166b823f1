"""How the command line shows the exception that ended a command.

Which exit code it stands for is ``engine.session.exit_code_for``'s to say;
this module only prints.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

from pipekit.outcomes import StateWriteError
from pipekit.outcomes import UsageError


def print_error(error: BaseException) -> None:
    """Tell the user on stderr what stopped the command."""
    if isinstance(error, (UsageError, StateWriteError)):
        print(f"pipekit: error: {error}", file=sys.stderr)
    elif isinstance(error, BrokenPipeError):
        # The reader of stdout left: say nothing, and let no later flush fail.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    elif isinstance(error, KeyboardInterrupt):
        print("pipekit: interrupted", file=sys.stderr)
    else:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        print("pipekit: internal error:\n" + text, file=sys.stderr)
