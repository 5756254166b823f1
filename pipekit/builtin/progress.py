"""Progress on stderr, driven by the hooks: a plain line per event.

``--progress`` is a core option (it is accepted even when ``-p no:progress``
removed this plugin); ``none`` silences it.
"""

from __future__ import annotations

import sys
from typing import IO

from pipekit.config import Config
from pipekit.context import PhaseOutcome
from pipekit.hookspecs import hookimpl
from pipekit.phaserunner import Item
from pipekit.phases import PhaseDefinition
from pipekit.runner import Run


class LineProgress:
    """One plain line per meaningful event, no escape codes: for logs and pipes."""

    name = "progress-lines"

    def __init__(self, stream: IO[str], verbose: int = 0) -> None:
        self.stream = stream
        self.verbose = verbose
        self.total_items = 0
        self.total_phases = 0
        self.noun = "items"

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _where(self, item: Item, phase: PhaseDefinition | None = None) -> str:
        text = f"[{item.index}/{self.total_items}] {item.id}"
        if phase is not None:
            position = phase.num
            text += f" phase {position} {phase.name}"
        return text

    @hookimpl
    def pipekit_run_start(self, run: Run) -> None:
        self.total_items = run.total_items
        self.total_phases = run.total_phases
        self.noun = run.pipeline.item_noun
        self._line(f"pipekit: {run.pipeline.name}: {run.total_items} {self.noun}, {run.total_phases} phases, -j {run.workers}")

    @hookimpl
    def pipekit_phase_start(self, item: Item, phase: PhaseDefinition) -> None:
        if self.verbose > 0:
            self._line(f"{self._where(item, phase)} started")

    @hookimpl
    def pipekit_phase_complete(self, item: Item, phase: PhaseDefinition, result: PhaseOutcome) -> None:
        cost = f" ${result.cost_usd:.4f}" if result.cost_usd else ""
        self._line(f"{self._where(item, phase)} done {result.duration_seconds:.2f}s{cost}")

    @hookimpl
    def pipekit_phase_retry(self, item: Item, phase: PhaseDefinition, error: BaseException, attempt: int) -> None:
        self._line(f"{self._where(item, phase)} attempt {attempt} failed, retrying: {error}")

    @hookimpl
    def pipekit_phase_fail(self, item: Item, phase: PhaseDefinition, error: BaseException) -> None:
        kind = "FAILED" if phase.critical else "failed (non-critical)"
        message = item.state.phases[phase.num].error or str(error)
        self._line(f"{self._where(item, phase)} {kind}: {message}")

    @hookimpl
    def pipekit_phase_skip(self, item: Item, phase: PhaseDefinition, reason: str) -> None:
        self._line(f"{self._where(item, phase)} skipped ({reason})")

    @hookimpl
    def pipekit_item_finish(self, item: Item) -> None:
        self._line(f"{self._where(item)} {item.state.status}")


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register the display chosen by ``--progress``."""
    mode = config.getoption("progress") or "auto"
    if mode == "none" or config.getoption("quiet"):
        return
    reporter = LineProgress(sys.stderr, verbose=config.getoption("verbose") or 0)
    config.pluginmanager.register(reporter, LineProgress.name)
    config.add_cleanup(lambda: config.pluginmanager.unregister(reporter))


