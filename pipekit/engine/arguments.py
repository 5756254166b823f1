"""The arguments a handler asks for by name, like pytest fixtures: ``item_id``,
``metadata``, ``previous_outputs``, ``ctx``, ``output_dir`` and earlier phases' outputs."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.outputs import received
from pipekit.pipeline.phases import Injector
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import PipelineState


def handler_arguments(
    phases: Sequence[PhaseDefinition],
    state: PipelineState,
    phase: PhaseDefinition,
    ctx: PhaseContext,
    func: Callable[..., Any],
    injectors: dict[str, Injector],
) -> dict[str, Any]:
    """The keyword arguments to call ``func`` (``phase``'s handler, or a function
    it hands to the context) with; ``injectors`` caches each function's signature."""
    key = f"{phase.num}:{id(func)}"
    injector = injectors.get(key)
    if injector is None:
        injector = injectors[key] = Injector.for_function(func)
    every = injector.takes_kwargs
    outputs = state.phase_outputs
    available: dict[str, Any] = {"item_id": state.item_id, "metadata": ctx.metadata, "ctx": ctx}
    if every or "previous_outputs" in injector.wanted:
        # Copies (``received``): what a handler changes in a value stays its own.
        available["previous_outputs"] = {n: received(o) for n, o in outputs.items() if n < phase.num}
    for earlier in phases:
        if earlier.num >= phase.num:
            break
        if every or earlier.name in injector.wanted:
            available[earlier.name] = received(outputs.get(earlier.num), injector.models.get(earlier.name))
    arguments = injector.arguments(available)
    if injector.takes_kwargs or "output_dir" in injector.wanted:
        arguments["output_dir"] = ctx.output_dir
    return arguments
