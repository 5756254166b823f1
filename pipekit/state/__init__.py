"""What is on disk: the state document, its manager, the writer and the stores.

``pipekit.state.PipelineState`` and its companions stay importable from here,
as they were before the state modules became a package.
"""

from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.state.model import PipelineStateManager


__all__ = ["PhaseState", "PipelineState", "PipelineStateManager"]
