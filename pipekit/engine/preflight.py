"""The start of a run: one read of each unfinished item's state, shared by the
stale report, the cost forecast and the runner (``Preflight``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipekit.engine.budget import FORECAST_ITEM_LIMIT
from pipekit.engine.budget import Forecast
from pipekit.engine.budget import ForecastTally
from pipekit.engine.finished import Finished
from pipekit.engine.finished import find_finished
from pipekit.pipeline.loader import Pipeline
from pipekit.stale.checker import RUN
from pipekit.stale.checker import STALE_REASONS
from pipekit.stale.checker import StaleChecker
from pipekit.stale.checker import StalePolicy
from pipekit.stale.fingerprint import SourceArchive
from pipekit.stale.plan import Cell
from pipekit.stale.plan import PhaseHistory
from pipekit.stale.plan import Plan
from pipekit.stale.plan import add_history
from pipekit.stale.plan import iter_states
from pipekit.stale.plan import plan_item
from pipekit.state.model import COMPLETED
from pipekit.state.store import StateStore


def prepare_stale_policy(pipeline: Pipeline, store: StateStore, output_root: Path, option: Any) -> StalePolicy | None:
    """Before a run: keep the phases' sources for ``pipekit why`` and return the
    run's stale policy (None with ``--force``, which re-runs everything anyway).
    Nothing is read here: the run reads the states once, in ``preflight``."""
    SourceArchive.for_store(store).save_pipeline(pipeline.phases)
    if getattr(option, "force", False):
        return None
    return StalePolicy(StaleChecker(pipeline, output_root, store), bool(getattr(option, "rerun_stale", False)))


@dataclass
class Preflight:
    """What the start of a run found in the selected items' states, read once."""

    #: Items with nothing to do (finished, fresh, same metadata), counted with
    #: their recorded cost: the run skips them unread. None: the run looks at
    #: every item itself (``--force``, ``--from-phase``, or nothing was read).
    finished: Finished | None
    #: The stale report's plan (None without a stale policy).
    plan: Plan | None
    #: The cost forecast (None when not made: too many items without
    #: ``--max-cost``, or nothing left to do).
    forecast: Forecast | None
    #: States read, to plan and to forecast.
    read: int = 0


def preflight(
    pipeline: Pipeline,
    store: StateStore,
    items: Sequence[tuple[str, Any]],
    policy: StalePolicy | None,
    *,
    force: bool = False,
    from_phase: int | None = None,
    max_cost: float | None = None,
) -> Preflight:
    """Read each selected item's state at most once, holding none: the plan
    keeps only the stale cells its report needs, the forecast only sums.

    Finished items that the store's index shows to be fresh are not read for
    the plan (``fresh_finished_items``); they are read for the forecast only
    when one is made and some item has work left (its means come from every
    item's completed phases), as the forecast read them before.
    """
    forecasting = max_cost is not None or len(items) <= FORECAST_ITEM_LIMIT
    tally = ForecastTally(pipeline.phases, lambda p: force or (from_phase is not None and p.num >= from_phase))
    finished: Finished | None = None
    plan: Plan | None = None
    nothing_to_do: dict[str, float] = {}
    if policy is not None:
        if from_phase is None:
            finished = fresh_finished_items(pipeline, store, items, policy.checker)
        metadata = dict(items) if finished is None else finished.others
        plan, nothing_to_do, read = _plan_run(pipeline, store, items, metadata, policy, from_phase, tally)
    elif forecasting:
        read = _tally_states(pipeline, store, [item_id for item_id, _ in items], tally)
    else:
        read = 0
    forecast: Forecast | None = None
    if forecasting and not (finished is not None and len(finished.others) == len(nothing_to_do) and max_cost is None):
        if finished is not None and finished.count:  # the items the index found: not read yet
            read += _tally_states(pipeline, store, [i for i, _ in items if i in finished], tally)
        forecast = tally.forecast()
    if finished is not None:
        for item_id, cost in nothing_to_do.items():
            finished.add(item_id, cost)
    return Preflight(finished, plan, forecast, read)


def _plan_run(
    pipeline: Pipeline,
    store: StateStore,
    items: Sequence[tuple[str, Any]],
    metadata: dict[str, dict[str, Any]],
    policy: StalePolicy,
    from_phase: int | None,
    tally: ForecastTally,
) -> tuple[Plan, dict[str, float], int]:
    """``make_plan`` for the start of a run over the selected ``items`` whose
    metadata by id is in ``metadata`` (the others have nothing to do), adding
    each state read to ``tally``: the plan, the items with nothing to do with
    their recorded cost, and the number of states read."""
    checker = policy.checker
    history: dict[int, PhaseHistory] = {p.num: PhaseHistory() for p in pipeline.phases}
    cells: list[Cell] = []
    unreadable: dict[str, str] = {}
    nothing_to_do: dict[str, float] = {}
    unknown = read = 0
    unread = list(metadata)
    # No large output is read: what the plan needs of one is its hash (a fingerprint= callable reads it).
    for item_id, state in iter_states(pipeline, store, unread, unreadable, by_reference=True):
        read += 1
        fresh = metadata[item_id]
        same_metadata = all(state.metadata.get(k) == v for k, v in fresh.items())
        state.metadata.update(fresh)
        add_history(history, (state,))
        tally.add_state(state)
        unknown += sum(1 for p in state.phases.values() if p.status == COMPLETED and not p.fingerprint)
        item_cells = plan_item(checker, policy, item_id, state, from_phase=from_phase)
        cells += (c for c in item_cells if c.reasons and set(c.reasons) <= set(STALE_REASONS))
        if same_metadata and state.is_done and all(c.action != RUN for c in item_cells):
            nothing_to_do[item_id] = state.total_cost_usd
    tally.add_unsaved(len(unread) - read - len(unreadable))
    plan = Plan(pipeline, [item_id for item_id, _ in items], cells, history, unreadable, unknown)
    return plan, nothing_to_do, read + len(unreadable)


def _tally_states(pipeline: Pipeline, store: StateStore, item_ids: list[str], tally: ForecastTally) -> int:
    """Add the items' states to ``tally``; the number read."""
    unreadable: dict[str, str] = {}  # reported by the run itself
    read = 0
    for _, state in iter_states(pipeline, store, item_ids, unreadable, by_reference=True):
        read += 1
        tally.add_state(state)
    tally.add_unsaved(len(item_ids) - read - len(unreadable))
    return read + len(unreadable)


def fresh_finished_items(
    pipeline: Pipeline, store: StateStore, items: Sequence[tuple[str, Any]], checker: StaleChecker
) -> Finished:
    """The selected ``items`` that the store's index shows finished, fresh
    (``StaleChecker.fresh_by_key``) and with the same metadata, counted with
    their recorded cost; none when the store has no index. One streamed
    query, no state read."""
    found = find_finished(store, pipeline.phases, items, checker.fresh_by_key)
    return found if found is not None else Finished(0, 0.0, dict(items))
