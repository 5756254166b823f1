"""pipekit: multi-phase, resumable batch pipelines of plain functions."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any


if TYPE_CHECKING:
    from pipekit.api import arun
    from pipekit.api import run
    from pipekit.display.progress import ProgressState
    from pipekit.display.progress import ProgressTracker
    from pipekit.display.progress import SimpleProgress
    from pipekit.display.progress import create_progress_tracker
    from pipekit.engine.control import Item
    from pipekit.engine.phaserunner import PhaseRunner
    from pipekit.engine.result import RunResult
    from pipekit.engine.runner import Run
    from pipekit.hookspecs import hookimpl
    from pipekit.hookspecs import hookspec
    from pipekit.outcomes import ExitCode
    from pipekit.outcomes import Fail
    from pipekit.outcomes import PhaseTimeoutError
    from pipekit.outcomes import Retry
    from pipekit.outcomes import StateFileError
    from pipekit.outcomes import UsageError
    from pipekit.pipeline.batch import BatchProvider
    from pipekit.pipeline.batch import BatchRequest
    from pipekit.pipeline.batch import BatchResult
    from pipekit.pipeline.batch import BatchStatus
    from pipekit.pipeline.context import PhaseContext
    from pipekit.pipeline.context import PhaseOutcome
    from pipekit.pipeline.limits import Limit
    from pipekit.pipeline.loader import Pipeline
    from pipekit.pipeline.loader import load
    from pipekit.pipeline.phases import PhaseDefinition
    from pipekit.pipeline.phases import PhaseResult
    from pipekit.pipeline.phases import phase
    from pipekit.state.manager import PipelineStateManager
    from pipekit.state.model import PhaseState
    from pipekit.state.model import PipelineState


#: Where each public name lives. ``import pipekit`` imports none of them, so
#: a command line or a phase module that needs only ``phase`` does not pay for
#: asyncio, the runner and the display (``import pipekit`` stays well under
#: 100 ms); each is imported on first use.
_LAZY = {
    "arun": "pipekit.api",
    "run": "pipekit.api",
    "PhaseContext": "pipekit.pipeline.context",
    "PhaseOutcome": "pipekit.pipeline.context",
    "hookimpl": "pipekit.hookspecs",
    "hookspec": "pipekit.hookspecs",
    "Limit": "pipekit.pipeline.limits",
    "BatchProvider": "pipekit.pipeline.batch",
    "BatchRequest": "pipekit.pipeline.batch",
    "BatchResult": "pipekit.pipeline.batch",
    "BatchStatus": "pipekit.pipeline.batch",
    "Pipeline": "pipekit.pipeline.loader",
    "load": "pipekit.pipeline.loader",
    "ExitCode": "pipekit.outcomes",
    "Fail": "pipekit.outcomes",
    "PhaseTimeoutError": "pipekit.outcomes",
    "Retry": "pipekit.outcomes",
    "StateFileError": "pipekit.outcomes",
    "UsageError": "pipekit.outcomes",
    "Item": "pipekit.engine.control",
    "PhaseRunner": "pipekit.engine.phaserunner",
    "PhaseDefinition": "pipekit.pipeline.phases",
    "PhaseResult": "pipekit.pipeline.phases",
    "phase": "pipekit.pipeline.phases",
    "ProgressState": "pipekit.display.progress",
    "ProgressTracker": "pipekit.display.progress",
    "SimpleProgress": "pipekit.display.progress",
    "create_progress_tracker": "pipekit.display.progress",
    "Run": "pipekit.engine.runner",
    "RunResult": "pipekit.engine.result",
    "PhaseState": "pipekit.state.model",
    "PipelineState": "pipekit.state.model",
    "PipelineStateManager": "pipekit.state.manager",
}


__all__ = [
    "BatchProvider",
    "BatchRequest",
    "BatchResult",
    "BatchStatus",
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
