"""SIGINT and SIGTERM during a run: the first stops it and keeps its state, the second exits at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import os
import signal
from typing import Any

from pipekit.engine.control import RunControl
from pipekit.outcomes import ExitCode


class Interrupter:
    """The interruption of one run.

    :param control: the run's stop flags (set by the first interruption).
    :param say: writes one line on stderr (``say(message, level)``).
    :param signal_handler: makes the ``signal.signal`` handler that calls
        ``interrupt`` on the loop (``HookNotifier.signal_handler``: it can also
        stop an observer hook that blocks the loop).
    """

    def __init__(
        self,
        control: RunControl,
        say: Callable[..., None],
        signal_handler: Callable[[asyncio.AbstractEventLoop, Callable[[], None]], Callable[[int, Any], None]],
    ) -> None:
        self.control = control
        self._say = say
        self._signal_handler = signal_handler
        self._interrupts = 0
        self._signals: list[signal.Signals] = []

    def interrupt(self) -> None:
        """Stop as SIGINT does: abandon in-flight phases (recorded interrupted), start none."""
        self._interrupts += 1
        if self._interrupts > 1:
            self._exit_now()
        self._say("interrupted: recording in-flight phases and saving state (again to exit at once)", "notice")
        self._exit_on_next_signal()
        self.control.stop_new_phases = True
        self.control.interrupted.set()

    def _exit_now(self, *args: Any) -> None:
        self._say("interrupted again: exiting now (state files are intact)", "notice")
        os._exit(int(ExitCode.INTERRUPTED))

    def _exit_on_next_signal(self) -> None:
        """The loop may be stuck in a slow hook when the second Ctrl-C comes: a plain
        signal handler runs between the main thread's bytecodes, the loop's does not."""
        for signum in self._signals:
            try:
                signal.signal(signum, self._exit_now)
            except (ValueError, RuntimeError):
                pass  # not the main thread

    def install(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM on the running loop; returns what puts the previous handlers back."""
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            try:
                signal.signal(signum, self._signal_handler(loop, self.interrupt))
            except (ValueError, RuntimeError, NotImplementedError):
                continue  # not the main thread: the caller owns signals
            installed.append((signum, previous))
        self._signals = [signum for signum, _ in installed]

        def restore() -> None:
            # Give a host program (pipekit used as a library) its own handlers back.
            for signum, previous in installed:
                if previous is not None:
                    signal.signal(signum, previous)

        return restore
