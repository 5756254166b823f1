"""Failing fast: ``--maxfail N`` (``-x``) and ``--maxfail-same K``.

A breaker watches how items end. Once ``N`` items have failed in this run, or
the same error (exception type and first line of its message) has failed
``K`` items in a row, it stops the run the way a budget does: no new item or
phase starts, phases in flight finish and are saved, and the items left are
pending for the next run (exit code 1).

Only failures of this run count: an item whose phase has given up
(``@phase(max_attempts=N)``) spends nothing and does not trip the breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipekit.engine.control import RunControl
from pipekit.outcomes import PhaseInterrupted


class Breaker:
    """Stops a run after too many failed items.

    :param control: the run's stop flags (set when the breaker trips).
    :param say: reports why the run stopped (once).
    :param maxfail: failed items that stop the run (None: no limit).
    :param maxfail_same: items in a row failed by the same error that stop it.
    """

    def __init__(
        self,
        control: RunControl,
        say: Callable[[str, str], None],
        maxfail: int | None = None,
        maxfail_same: int | None = None,
    ) -> None:
        self.control = control
        self.say = say
        self.maxfail = maxfail
        self.maxfail_same = maxfail_same
        self.failed = 0
        #: The error of the last failed items in a row, and how many it failed.
        self._streak: tuple[str, int] = ("", 0)
        #: Why the run stopped; None while it has not.
        self.reason: str | None = None
        #: The option that stopped it (``--maxfail`` or ``--maxfail-same``).
        self.tripped_by: str | None = None

    @classmethod
    def of(cls, config: Any, control: RunControl, say: Callable[[str, str], None]) -> Breaker | None:
        """The breaker asked for by the run's options (watching ``control``), or None."""
        maxfail = config.getoption("maxfail", None)
        same = config.getoption("maxfail_same", None)
        if maxfail is None and same is None:
            return None
        breaker = cls(control, say, maxfail, same)
        control.on_item_end = breaker.item_ended
        return breaker

    def item_ended(self, failure: BaseException | None, ok: bool) -> None:
        """An item's phases ended: ``failure`` failed it in this run, else it
        finished (``ok``) or stopped without failing (neither counts)."""
        if failure is None:
            if ok:
                self._streak = ("", 0)
            return
        if isinstance(failure, PhaseInterrupted) or self.reason is not None:
            return
        self.failed += 1
        key = error_key(failure)
        count = self._streak[1] + 1 if self._streak[0] == key else 1
        self._streak = (key, count)
        if self.maxfail is not None and self.failed >= self.maxfail:
            noun = "item" if self.failed == 1 else "items"
            self._trip("--maxfail", f"stopped after {self.failed} failed {noun} (--maxfail {self.maxfail})")
        elif self.maxfail_same is not None and count >= self.maxfail_same:
            self._trip(
                "--maxfail-same",
                f"stopped: the same error on {count} items in a row (--maxfail-same {self.maxfail_same}): {key}"
            )

    def _trip(self, option: str, reason: str) -> None:
        self.reason, self.tripped_by = reason, option
        self.control.stop_new_phases = True
        self.control.stopping.set()
        self.say(reason + "; no new item starts, phases in flight finish", "notice")


def error_key(error: BaseException) -> str:
    """What makes two failures "the same error": the exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    name = type(error).__name__
    return f"{name}: {first}" if first else name
