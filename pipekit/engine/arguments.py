"""The arguments a handler asks for by name, like pytest fixtures: ``item_id``,
``metadata``, ``previous_outputs``, ``ctx``, ``output_dir`` and earlier phases' outputs.

An earlier output a worker stored itself (a ``StoredOutput``) is read here only
when the function runs on this side; an executor whose workers read the store
(``PhaseExecutor.takes_stored_outputs``) is given the reference and the
outputs as JSON, and its worker builds what the handler receives."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.outputs import received
from pipekit.pipeline.phases import Injector
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore
from pipekit.state.stored import StoredOutput


def handler_arguments(
    phases: Sequence[PhaseDefinition],
    state: PipelineState,
    phase: PhaseDefinition,
    ctx: PhaseContext,
    func: Callable[..., Any],
    injectors: dict[str, Injector],
    executor: object = None,
) -> dict[str, Any]:
    """The keyword arguments to call ``func`` (``phase``'s handler, or a function
    it hands to the context) with; ``injectors`` caches each function's signature.
    ``executor`` runs it: outputs go to it by reference when its workers read the store."""
    key = f"{phase.num}:{id(func)}"
    injector = injectors.get(key)
    if injector is None:
        injector = injectors[key] = Injector.for_function(func)
    every = injector.takes_kwargs
    outputs = state.phase_outputs
    remote = getattr(executor, "takes_stored_outputs", False) and func in (phase.handler, phase.cache_check)
    give = _as_sent if remote else _reader(ctx)
    available: dict[str, Any] = {"item_id": state.item_id, "metadata": ctx.metadata, "ctx": ctx}
    if every or "previous_outputs" in injector.wanted:
        # Copies (``received``): what a handler changes in a value stays its own.
        available["previous_outputs"] = {n: give(o, None) for n, o in outputs.items() if n < phase.num}
    for earlier in phases:
        if earlier.num >= phase.num:
            break
        if every or earlier.name in injector.wanted:
            available[earlier.name] = give(outputs.get(earlier.num), injector.models.get(earlier.name))
    arguments = injector.arguments(available)
    if injector.takes_kwargs or "output_dir" in injector.wanted:
        arguments["output_dir"] = ctx.output_dir
    return arguments


def _as_sent(value: Any, model: type[Any] | None) -> Any:
    # Pickled on its way, so a copy already; the worker reads a StoredOutput and builds models.
    return value


def _reader(ctx: PhaseContext) -> Callable[[Any, type[Any] | None], Any]:
    """What a handler run on this side receives for an output: a ``StoredOutput`` read from the run's store."""

    def give(value: Any, model: type[Any] | None) -> Any:
        if type(value) is StoredOutput:
            checkpoints = ctx._checkpoints
            if checkpoints is None:
                raise RuntimeError(f"output {value.ref!r} is in the run's store, but this call has no store")
            value = value.read_from(checkpoints.store)
        return received(value, model)

    return give


def with_values(state: PipelineState, store: StateStore) -> PipelineState:
    """``state`` with each output a worker stored (``StoredOutput``) read from ``store``:
    what the caller of ``pipekit.run`` is given (the state on disk refers to them as before)."""
    outputs = state.phase_outputs
    for num, value in outputs.items():
        if type(value) is StoredOutput:
            outputs[num] = value.read_from(store)
    return state
