"""A plugin of its own: time every phase, print the slowest, optionally save them.

Load it for one run with ``-p phase_timer`` (the module must be importable:
``PYTHONPATH=examples/plugin``), or install it (``pip install
examples/plugin``): its entry point in the ``pipekit`` group then loads it in
every run, and ``-p no:phase-timer`` blocks it.
"""

from __future__ import annotations

from collections import defaultdict
import json
from pathlib import Path
import sys
from typing import Any

from pipekit import hookimpl


__version__ = "0.1.0"


# --8<-- [start:plugin]
class PhaseTimer:
    """Collects each phase's duration; reports when the run finishes."""

    def __init__(self, save_to: str | None) -> None:
        self.save_to = save_to
        self.seconds: dict[str, list[float]] = defaultdict(list)

    @hookimpl
    def pipekit_phase_complete(self, item: Any, phase: Any, result: Any) -> None:
        self.seconds[phase.name].append(result.duration_seconds)

    @hookimpl
    def pipekit_run_finish(self, run: Any, exitstatus: int) -> None:
        totals = {name: round(sum(times), 4) for name, times in self.seconds.items()}
        if totals:
            slowest = max(totals, key=lambda name: totals[name])
            print(f"phase-timer: slowest phase: {slowest} ({totals[slowest]:.2f}s in total)", file=sys.stderr)
        if self.save_to:
            report = {name: {"runs": len(self.seconds[name]), "seconds": totals[name]} for name in totals}
            Path(self.save_to).write_text(json.dumps(report, indent=2) + "\n")


@hookimpl
def pipekit_addoption(parser: Any) -> None:
    group = parser.getgroup("phase-timer")
    group.addoption("--timings", metavar="FILE", help="save each phase's total seconds as JSON")


@hookimpl
def pipekit_configure(config: Any) -> None:
    timer = PhaseTimer(config.getoption("timings"))
    config.pluginmanager.register(timer, "phase-timer-collector")
    config.add_cleanup(lambda: config.pluginmanager.unregister(timer))


# --8<-- [end:plugin]
