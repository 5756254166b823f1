"""The start of a run: one read of each unfinished item's state, shared by the stale check and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from pipekit.stale.plan import print_stale_report
from pipekit.state.model import COMPLETED
from pipekit.state.store import StateStore


def prepare_stale_policy(
    pipeline: Pipeline,
    store: StateStore,
    items: Sequence[tuple[str, Any]],
    output_root: Path,
    option: Any,
) -> StalePolicy | None:
    """At the start of a run: keep the phases' sources for ``pipekit why``, say
    on stderr which completed cells are stale, and return the run's policy
    (None with ``--force``, which re-runs everything anyway)."""
    SourceArchive.for_store(store).save_pipeline(pipeline.phases)
    if getattr(option, "force", False):
        return None
    rerun_stale = bool(getattr(option, "rerun_stale", False))
    policy = StalePolicy(StaleChecker(pipeline, output_root), rerun_stale)
    plan, finished = _plan_run(pipeline, store, items, policy, getattr(option, "from_phase", None))
    print_stale_report(plan)
    if getattr(option, "from_phase", None) is None:
        policy.finished = finished
    return policy


def _plan_run(
    pipeline: Pipeline,
    store: StateStore,
    items: Sequence[tuple[str, Any]],
    policy: StalePolicy,
    from_phase: int | None,
) -> tuple[Plan, dict[str, float]]:
    """``make_plan`` for the start of a run, reading each state at most once and
    holding none: the plan keeps only the stale cells its report needs. Also
    returns the items with nothing to do, with their recorded cost, so that the
    run need not read them again.

    Finished items that the store's index shows to be fresh are not read at all
    (``fresh_finished_items``); the estimates of the report then come from the
    items that were read, stale ones among them.
    """
    checker = policy.checker
    history: dict[int, PhaseHistory] = {p.num: PhaseHistory() for p in pipeline.phases}
    cells: list[Cell] = []
    unreadable: dict[str, str] = {}
    finished: dict[str, float] = {}
    unknown = 0
    metadata = dict(items)
    if from_phase is None:
        finished = fresh_finished_items(pipeline, store, metadata, checker)
    unread = (item_id for item_id in metadata if item_id not in finished)
    for item_id, state in iter_states(pipeline, store, unread, unreadable):
        fresh = metadata[item_id]
        same_metadata = all(state.metadata.get(k) == v for k, v in fresh.items())
        state.metadata.update(fresh)
        add_history(history, (state,))
        unknown += sum(1 for p in state.phases.values() if p.status == COMPLETED and not p.fingerprint)
        item_cells = plan_item(checker, policy, item_id, state, from_phase=from_phase)
        cells += (c for c in item_cells if c.reasons and set(c.reasons) <= set(STALE_REASONS))
        if same_metadata and state.is_done and all(c.action != RUN for c in item_cells):
            finished[item_id] = state.total_cost_usd
    return Plan(pipeline, [item_id for item_id, _ in items], cells, history, unreadable, unknown), finished


def fresh_finished_items(
    pipeline: Pipeline, store: StateStore, metadata: dict[str, dict[str, Any]], checker: StaleChecker
) -> dict[str, float]:
    """The items of ``metadata`` that the store's index shows finished, fresh
    (``StaleChecker.fresh_by_key``) and with the same metadata, with their
    recorded cost; empty when the store has no index. One query, no state read."""
    indexed = store.finished_items([p.name for p in pipeline.phases])
    found: dict[str, float] = {}
    if not indexed:
        return found
    for item_id, fresh in metadata.items():
        item = indexed.get(item_id)
        if item is None or not checker.fresh_by_key(item.stale_key):
            continue
        if fresh and any(item.metadata.get(k) != v for k, v in fresh.items()):
            continue
        found[item_id] = item.cost_usd
    return found
