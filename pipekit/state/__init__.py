"""What is on disk: the state document, its manager, the writer and the stores.

``pipekit.state.PipelineState`` and its companions stay importable from here,
as they were before the state modules became a package.
"""

from __future__ import annotations

from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState


__all__ = ["PhaseState", "PipelineState", "PipelineStateManager"]
