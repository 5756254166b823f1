"""pipekit: multi-phase, resumable batch pipelines of plain functions."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any


if TYPE_CHECKING:
    from pipekit.api import arun
    from pipekit.api import run
    from pipekit.context import PhaseContext
    from pipekit.context import PhaseOutcome
    from pipekit.hookspecs import hookimpl
    from pipekit.hookspecs import hookspec
    from pipekit.limits import Limit
    from pipekit.loader import Pipeline
    from pipekit.loader import load
    from pipekit.outcomes import ExitCode
    from pipekit.outcomes import Fail
    from pipekit.outcomes import PhaseTimeoutError
    from pipekit.outcomes import Retry
    from pipekit.outcomes import StateFileError
    from pipekit.outcomes import UsageError
    from pipekit.phaserunner import Item
    from pipekit.phaserunner import PhaseRunner
    from pipekit.phases import PhaseDefinition
    from pipekit.phases import PhaseResult
    from pipekit.phases import phase
    from pipekit.progress import ProgressState
    from pipekit.progress import ProgressTracker
    from pipekit.progress import SimpleProgress
    from pipekit.progress import create_progress_tracker
    from pipekit.runner import Run
    from pipekit.runner import RunResult
    from pipekit.state import PhaseState
    from pipekit.state import PipelineState
    from pipekit.state import PipelineStateManager


#: Where each public name lives. ``import pipekit`` imports none of them, so
#: a command line or a phase module that needs only ``phase`` does not pay for
#: asyncio, the runner and the display (``import pipekit`` stays well under
#: 100 ms); each is imported on first use.
_LAZY = {
    "arun": "pipekit.api",
    "run": "pipekit.api",
    "PhaseContext": "pipekit.context",
    "PhaseOutcome": "pipekit.context",
    "hookimpl": "pipekit.hookspecs",
    "hookspec": "pipekit.hookspecs",
    "Limit": "pipekit.limits",
    "Pipeline": "pipekit.loader",
    "load": "pipekit.loader",
    "ExitCode": "pipekit.outcomes",
    "Fail": "pipekit.outcomes",
    "PhaseTimeoutError": "pipekit.outcomes",
    "Retry": "pipekit.outcomes",
    "StateFileError": "pipekit.outcomes",
    "UsageError": "pipekit.outcomes",
    "Item": "pipekit.phaserunner",
    "PhaseRunner": "pipekit.phaserunner",
    "PhaseDefinition": "pipekit.phases",
    "PhaseResult": "pipekit.phases",
    "phase": "pipekit.phases",
    "ProgressState": "pipekit.progress",
    "ProgressTracker": "pipekit.progress",
    "SimpleProgress": "pipekit.progress",
    "create_progress_tracker": "pipekit.progress",
    "Run": "pipekit.runner",
    "RunResult": "pipekit.runner",
    "PhaseState": "pipekit.state",
    "PipelineState": "pipekit.state",
    "PipelineStateManager": "pipekit.state",
}


__all__ = [
    "ExitCode",
    "Fail",
    "Item",
    "Limit",
    "PhaseContext",
    "PhaseDefinition",
    "PhaseOutcome",
    "PhaseResult",
    "PhaseRunner",
    "PhaseState",
    "PhaseTimeoutError",
    "Pipeline",
    "PipelineState",
    "PipelineStateManager",
    "ProgressState",
    "ProgressTracker",
    "Retry",
    "Run",
    "RunResult",
    "SimpleProgress",
    "StateFileError",
    "UsageError",
    "arun",
    "create_progress_tracker",
    "hookimpl",
    "hookspec",
    "load",
    "phase",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("pipekit")
    raise AttributeError(f"module 'pipekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
