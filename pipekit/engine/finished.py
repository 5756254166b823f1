"""The items a run skips unread: the finished ones, streamed from the store's index.

A resume over a million items must not hold a million rows, nor make an
object per finished item: the store streams its finished, fresh rows
(``StateStore.iter_fresh_finished``, each stale key decided once), and each
row only takes its item out of the selected ones (``Finished.others``). The
finished items are then counted, with the cost they had recorded; the run
loops over the others only (``unfinished``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.store import StateStore


#: One selected item: its id and metadata (``pipekit.pipeline.items.ItemSpec``).
_Spec = tuple[str, dict[str, Any]]


@dataclass
class Finished:
    """The selected items with nothing to do: counted, not held one by one."""

    #: How many selected items are finished (fresh, same metadata).
    count: int
    #: The cost their states had recorded (earlier runs).
    cost_usd: float
    #: Every other selected item, by id with its metadata: looked at under its lock.
    others: dict[str, dict[str, Any]]

    def __contains__(self, item_id: object) -> bool:
        """True when ``item_id`` (a selected item) is finished."""
        return item_id not in self.others

    def add(self, item_id: str, cost_usd: float) -> None:
        """Count the selected item ``item_id`` (one of ``others``) as finished."""
        del self.others[item_id]
        self.count += 1
        self.cost_usd += cost_usd


def find_finished(
    store: StateStore,
    phases: Iterable[PhaseDefinition],
    items: Iterable[_Spec],
    fresh: Callable[[str | None], bool] | None = None,
) -> Finished | None:
    """The selected ``items`` that the store's index shows finished, with the
    same metadata and a stale key ``fresh`` accepts (every key without it);
    None when the store has no index. One streamed query; no state is read,
    and no row is held past its turn."""
    others = dict(items)
    rows = _matching(store, phases, others, fresh or _any_key)
    if rows is None:
        return None
    selected = len(others)
    count, cost_usd = 0, 0.0
    for item_id, cost in rows:
        del others[item_id]
        count += 1
        cost_usd += cost
    if count > selected // 2:
        others = dict(others)  # a dict never shrinks as keys go: a million-slot table for a few items
    return Finished(count, cost_usd, others)


def finished_among(
    store: StateStore, phases: Iterable[PhaseDefinition], items: dict[str, dict[str, Any]]
) -> dict[str, float] | None:
    """Those of ``items`` (a few: the ones a run waits for) that the store's index
    shows finished with the same metadata, with the cost each recorded; None
    when the store has no index. Only their rows are read
    (``StateStore.iter_fresh_finished_of``), however many others are finished."""
    rows = store.iter_fresh_finished_of(list(items), [p.name for p in phases], _any_key)
    return None if rows is None else dict(_same_metadata(rows, items))


def _matching(
    store: StateStore,
    phases: Iterable[PhaseDefinition],
    items: dict[str, dict[str, Any]],
    fresh: Callable[[str | None], bool],
) -> Iterator[tuple[str, float]] | None:
    """The finished, fresh rows of the store's index for ``items`` with the same
    metadata, as ``(item_id, cost)``, streamed; None when the store has no index."""
    rows = store.iter_fresh_finished([p.name for p in phases], fresh)
    return None if rows is None else _same_metadata(rows, items)


def _same_metadata(
    rows: Iterable[tuple[str, float, dict[str, Any]]], items: dict[str, dict[str, Any]]
) -> Iterator[tuple[str, float]]:
    """``(item_id, cost)`` of the ``rows`` of ``items`` whose saved metadata holds
    theirs (another item of the same id otherwise)."""
    wanted = items.get
    for item_id, cost, saved in rows:
        metadata = wanted(item_id)
        if metadata is None:
            continue  # not selected
        if metadata and any(saved.get(k) != v for k, v in metadata.items()):
            continue
        yield item_id, cost


def unfinished(
    items: Sequence[_Spec], finished: Finished | None, *, per_item: bool = False
) -> tuple[Iterator[tuple[int, _Spec]], int, float]:
    """The selected items to look at, with their 1-based position, beside the
    number of finished ones skipped and the cost they had recorded.

    The finished items are counted at once, not looped over one by one; when
    none is left the selection is not even walked. With ``per_item`` (each
    finished item's state is kept, ``pipekit.run``) nothing is skipped here.
    """
    if finished is None or not finished.count or per_item:
        return enumerate(items, 1), 0, 0.0
    others = finished.others
    if not others:
        return iter(()), finished.count, finished.cost_usd
    specs = ((index, spec) for index, spec in enumerate(items, 1) if spec[0] in others)
    return specs, finished.count, finished.cost_usd


def _any_key(key: str | None) -> bool:
    return True
