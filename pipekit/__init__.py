"""pipekit: multi-phase, resumable batch pipelines of plain functions."""

from __future__ import annotations

from typing import Any

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
    if name == "__version__":
        from importlib.metadata import version

        return version("pipekit")
    raise AttributeError(f"module 'pipekit' has no attribute {name!r}")
