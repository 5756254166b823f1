"""Keeping stdout for machine output while a run is in progress."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import sys
from typing import IO


@contextlib.contextmanager
def stdout_reserved_for_events() -> Iterator[IO[str]]:
    """Point everything that would print on stdout at stderr; yield the real stdout.

    ``--jsonl`` events go to the yielded stream and nothing else does. When
    stdout is the process's file descriptor 1, fd 1 itself is pointed at stderr
    too, so output of subprocesses, C code and worker processes started during
    the run cannot land between the events either.
    """
    real = sys.stdout
    try:
        fd = real.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd != 1:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
        return
    real.flush()
    saved = os.dup(1)
    events = open(saved, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    try:
        os.dup2(sys.stderr.fileno() if _has_fd(sys.stderr) else 2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield events
    finally:
        with contextlib.suppress(OSError, ValueError):
            events.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _has_fd(stream: IO[str]) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
