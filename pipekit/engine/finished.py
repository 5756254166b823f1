"""The items a run skips unread: the finished ones, streamed from the store's index.

A resume over a million items must not hold a million rows: the store streams
its finished rows (``StateStore.iter_finished``) and only the selected items'
ids are kept, each with its recorded cost (what the run adds to the earlier
spending when it skips the item).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.store import FinishedItem
from pipekit.state.store import StateStore


#: Distinct costs shared between items (most finished items of a batch cost the same).
_SHARED_COSTS = 1000


def finished_costs(
    store: StateStore,
    phases: Iterable[PhaseDefinition],
    metadata: Mapping[str, dict[str, Any]],
    accept: Callable[[FinishedItem], bool] | None = None,
) -> dict[str, float] | None:
    """The items of ``metadata`` (the selected items' metadata by id) that the
    store's index shows finished, with the same metadata and ``accept``\\ed, with
    their recorded cost; None when the store has no index. One streamed query;
    no state is read and no row is held past its turn."""
    rows = store.iter_finished([p.name for p in phases])
    if rows is None:
        return None
    found: dict[str, float] = {}
    shared: dict[float, float] = {}
    for item_id, item in rows:
        fresh = metadata.get(item_id)
        if fresh is None or (accept is not None and not accept(item)):
            continue
        if fresh and any(item.metadata.get(k) != v for k, v in fresh.items()):
            continue
        cost = item.cost_usd
        if len(shared) < _SHARED_COSTS:
            cost = shared.setdefault(cost, cost)
        found[item_id] = cost
    return found
