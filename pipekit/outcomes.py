"""Exit codes and the exceptions that carry an outcome through pipekit."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a pipekit command tells its caller, as pytest's exit codes do."""

    #: Every selected item finished with no critical failure.
    OK = 0
    #: Some selected item did not finish (a critical phase failed, or a budget stopped it).
    ITEMS_FAILED = 1
    #: Interrupted by SIGINT or SIGTERM; in-flight phases were recorded and state saved.
    INTERRUPTED = 2
    #: pipekit itself failed.
    INTERNAL_ERROR = 3
    #: The command, the module, an items file or a state file is unusable.
    USAGE_ERROR = 4
    #: There were no items to process.
    NO_ITEMS = 5
    #: Nothing was left to do but wait for a provider's batch (``@phase(batch=...)``); state saved.
    WAITING = 6

    def __str__(self) -> str:
        # The number, as on Python 3.11+, also on 3.10 (where it would be "ExitCode.OK").
        return str(self.value)


#: When several outcomes apply, the first of these wins (CONTRACT §4).
EXIT_PRIORITY = (
    ExitCode.INTERNAL_ERROR,
    ExitCode.INTERRUPTED,
    ExitCode.USAGE_ERROR,
    ExitCode.ITEMS_FAILED,
    ExitCode.WAITING,
)


def worst_exit_code(codes: set[ExitCode]) -> ExitCode:
    """Return the exit code that wins among ``codes`` (OK when none applies)."""
    for code in EXIT_PRIORITY:
        if code in codes:
            return code
    return ExitCode.NO_ITEMS if ExitCode.NO_ITEMS in codes else ExitCode.OK


class UsageError(Exception):
    """A mistake of the user's: bad option, bad module, bad items file, bad phases."""


class StateFileError(UsageError):
    """A state file that cannot be read; it is named and left untouched."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"corrupt state file {path}: {problem} (left untouched)")
        self.path = path
        self.problem = problem


class PhaseTimeoutError(TimeoutError):
    """A phase ran past its ``timeout``."""

    def __init__(self, phase_name: str, timeout: float) -> None:
        super().__init__(f"phase {phase_name!r} timed out after {timeout:g}s")
        self.phase_name = phase_name
        self.timeout = timeout


class PhaseInterrupted(Exception):
    """The run was interrupted while this phase was in flight."""

    def __init__(self) -> None:
        super().__init__("interrupted")


class Retry(Exception):
    """Raise from a handler to ask for another attempt after ``after`` seconds.

    A ``Retry`` is not counted as an error: it does not use up ``retries``.
    Use it for rate-limited APIs that answer with a Retry-After.
    """

    def __init__(self, after: float | None = None, message: str = "") -> None:
        super().__init__(message or f"retry requested (after {after}s)")
        self.after = after

    def __reduce__(self) -> tuple[type[Retry], tuple[float | None, str]]:
        # Keeps ``after`` when pickled (an isolated phase's child sends it back).
        return (type(self), (self.after, str(self)))


class Fail(Exception):
    """Raise from a handler to fail the phase at once, with no retry."""


class StateWriteError(Exception):
    """State could not be written (disk full, read-only); the previous state is intact."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"cannot write state {path}: {problem} (the previous state is intact)")
        self.path = path
