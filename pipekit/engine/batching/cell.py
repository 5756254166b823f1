"""One item's batch phase: ask the handler for its requests once, then complete
the phase from the answers the run's ``Batcher`` collected.

The cell's record (``PipelineState.batch_requests[str(num)]``) holds the
requests by the handler's own ``custom_id``, the answers so far, and for each
request how often it was sent again (``rounds``): a request is identified on
the wire by its tag ``(item, phase, gen, custom_id, round)``, where ``gen`` is
the phase's attempts when the handler ran, so a reset phase never meets the
answers of its earlier requests.
"""

from __future__ import annotations

from collections.abc import Mapping
import time
from typing import TYPE_CHECKING
from typing import Any

from pipekit.engine import attempts
from pipekit.engine.attempts import as_result
from pipekit.engine.waiting import no_release
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import DONE_STATUSES
from pipekit.state.model import WAITING


if TYPE_CHECKING:
    from pipekit.engine.batching.batcher import Batcher

#: The item's ``pipekit.engine.phaserunner.PhaseRunner`` (not imported: it imports this module).
PhaseRunner = Any


class BatchRequestError(ValueError):
    """The requests a batch phase's handler returned cannot be sent."""


def checked_requests(provider: Any, value: Any, phase: PhaseDefinition) -> dict[str, dict[str, Any]]:
    """The handler's ``value`` as ``{custom_id: payload}``, each checked by the provider."""
    if not isinstance(value, list):
        raise BatchRequestError(
            f"batch phase {phase.name!r} must return a list of requests, not {type(value).__name__}"
        )
    found: dict[str, dict[str, Any]] = {}
    for index, request in enumerate(value):
        if not isinstance(request, Mapping):
            raise BatchRequestError(f"request {index} of phase {phase.name!r} is not a mapping: {request!r:.60}")
        try:
            custom_id, payload = provider.check_request(request)
        except ValueError as exc:
            raise BatchRequestError(f"request {index} of phase {phase.name!r}: {exc}") from None
        if custom_id in found:
            raise BatchRequestError(f"duplicate custom_id {custom_id!r} in the requests of phase {phase.name!r}")
        found[custom_id] = payload
    return found


async def run_batch_phase(runner: PhaseRunner, phase: PhaseDefinition, batcher: Batcher, prestarted: bool) -> bool:
    """Run a batch phase of one item; True unless it failed (a waiting phase is True)."""
    cell = runner.state.state.batch_requests.get(str(phase.num))
    if cell is None or cell.get("done"):
        return await _ask(runner, phase, batcher, prestarted)
    return await _collect(runner, phase, batcher, cell)


async def _ask(runner: PhaseRunner, phase: PhaseDefinition, batcher: Batcher, prestarted: bool) -> bool:
    manager = runner.state
    if not prestarted:
        manager.start_phase(phase.num, executor=phase.executor)
        await runner._saved()
    runner._announce_start(phase)
    outcome, _ = await runner._attempt(phase, no_release, time.monotonic())
    if outcome.error is None:
        try:
            requests = checked_requests(batcher.provider(phase), outcome.output, phase)
        except BatchRequestError as exc:
            outcome = attempts.failed(phase, outcome.attempt, exc, outcome.usage)
    if outcome.error is not None:
        return bool(await runner._fail(outcome))
    recorded = manager.state.phases[phase.num]
    cell = {
        "provider": phase.batch,
        "gen": recorded.attempts,
        "requests": requests,
        "order": list(requests),
        "rounds": {},
        "answers": {},
        "errors": {},
        "handler_usage": list(outcome.usage),
    }
    manager.state.batch_requests[str(phase.num)] = cell
    recorded.status = manager.state.status = WAITING
    manager.save_state()
    await runner._saved()
    return await _collect(runner, phase, batcher, cell)


async def _collect(runner: PhaseRunner, phase: PhaseDefinition, batcher: Batcher, cell: dict[str, Any]) -> bool:
    """Take in what the collected batches answered; complete, fail or go on waiting."""
    manager = runner.state
    state = manager.state
    recorded = state.phases[phase.num]
    changed = recorded.status != WAITING  # a failed cell taken up again: its answers are kept
    if changed:
        recorded.status = state.status = WAITING
        cell["errors"] = {}
    unsent: list[tuple[str, int]] = []
    failure: tuple[str, str] | None = None
    for custom_id in cell["order"]:
        if custom_id in cell["answers"]:
            continue
        round_ = cell["rounds"].get(custom_id, 0)
        found = batcher.result_for((state.item_id, phase.num, cell["gen"], custom_id, round_))
        if found is None:
            unsent.append((custom_id, round_))
            continue
        if found is batcher.IN_FLIGHT:
            continue
        changed = True
        if found["outcome"] == "succeeded":
            cell["answers"][custom_id] = batcher.answer(phase, found)
            continue
        if found["outcome"] == "errored":
            errors = cell["errors"][custom_id] = cell["errors"].get(custom_id, 0) + 1
            if errors > phase.retries:
                failure = failure or (custom_id, str(found.get("error") or "errored"))
                cell["rounds"][custom_id] = round_ + 1  # sent again if the phase is taken up again
                continue
        cell["rounds"][custom_id] = round_ + 1  # errored with retries left, expired or canceled: sent again
        unsent.append((custom_id, round_ + 1))
    if failure is not None:
        return await _fail(runner, phase, cell, failure)
    if len(cell["answers"]) == len(cell["order"]):
        return await _complete(runner, phase, batcher, cell)
    if changed:
        manager.save_state()
        await runner._saved()
    batcher.wait_for(state.item_id, phase, cell, unsent)
    return True


def _usage(cell: dict[str, Any]) -> tuple[int, int, float]:
    """What the phase has cost so far: its handler's usage and every answer's."""
    tokens_in, tokens_out, cost = cell["handler_usage"]
    for answer in cell["answers"].values():
        tokens_in += answer["tokens_in"]
        tokens_out += answer["tokens_out"]
        cost += answer["cost_usd"]
    return tokens_in, tokens_out, cost


def _unrecorded(cell: dict[str, Any]) -> tuple[int, int, float]:
    """The usage the phase's record does not hold yet; from now on it holds all of ``_usage``
    (saved with the record that adds it, so a phase failed and later completed counts each
    answer once)."""
    total = _usage(cell)
    held = cell.get("recorded_usage") or (0, 0, 0.0)
    cell["recorded_usage"] = list(total)
    return total[0] - held[0], total[1] - held[1], total[2] - held[2]


async def _fail(runner: PhaseRunner, phase: PhaseDefinition, cell: dict[str, Any], failure: tuple[str, str]) -> bool:
    custom_id, text = failure
    error = RuntimeError(f"batch request {custom_id!r} failed: {text}")
    # The requests answered so far were paid for: a failed phase records their usage, as a failed attempt does.
    attempt = runner.state.state.phases[phase.num].attempts
    return bool(await runner._fail(attempts.failed(phase, attempt, error, _unrecorded(cell))))


async def _complete(runner: PhaseRunner, phase: PhaseDefinition, batcher: Batcher, cell: dict[str, Any]) -> bool:
    state = runner.state.state
    output = {custom_id: cell["answers"][custom_id]["body"] for custom_id in cell["order"]}
    total = _usage(cell)
    usage = _unrecorded(cell)
    fingerprint, _ = await runner._fingerprint(phase)
    state.phases[phase.num].fingerprint = fingerprint
    discount = batcher.provider(phase).discount or 1.0
    batch_cost = total[2] - cell["handler_usage"][2]
    state.batch_requests[str(phase.num)] = {
        "done": True,
        "provider": cell["provider"],
        "requests": len(cell["order"]),
        "cost_usd": batch_cost,
        "online_cost_usd": batch_cost / discount,
    }
    if state.phases[phase.num].status not in DONE_STATUSES:
        runner._announce_start(phase)
    outcome = attempts.completed(phase, state.phases[phase.num].attempts, as_result(phase, output), usage, 0.0, "")
    return bool(await runner._complete(outcome))
