"""Kept so that ``pipekit.executor.PhaseExecutor``, which plugins name, still imports."""
from __future__ import annotations

from pipekit.execution.base import PhaseExecutor


__all__ = ["PhaseExecutor"]
