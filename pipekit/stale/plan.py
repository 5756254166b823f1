"""What a run would do with each (item, phase), and why.

The plan that ``pipekit plan``, ``pipekit why`` and the start of a run share.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from pipekit.display.format import estimate
from pipekit.display.format import money_exact
from pipekit.outcomes import StateFileError
from pipekit.pipeline.loader import Pipeline
from pipekit.stale.checker import FAILED_REASON
from pipekit.stale.checker import FORCE_REASON
from pipekit.stale.checker import FROM_PHASE_REASON
from pipekit.stale.checker import INTERRUPTED_REASON
from pipekit.stale.checker import PENDING_REASON
from pipekit.stale.checker import RUN
from pipekit.stale.checker import SKIP
from pipekit.stale.checker import STALE
from pipekit.stale.checker import STALE_REASONS
from pipekit.stale.checker import UPSTREAM_STALE
from pipekit.stale.checker import StaleChecker
from pipekit.stale.checker import StalePolicy
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import COMPLETED
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore


@dataclass
class Cell:
    """What a run would do with one (item, phase)."""

    item_id: str
    num: int
    action: str
    reasons: list[str] = field(default_factory=list)
    #: Stale only through upstream phases that have not run yet: it runs again
    #: only if their new output differs (estimates assume it does).
    conditional: bool = False


@dataclass
class PhaseHistory:
    """Mean duration and cost of completed executions of one phase."""

    durations: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)

    def add(self, duration: float | None, cost_usd: float, attempts: int) -> None:
        """Count one completed phase (its cost is spread over its executions)."""
        if duration is not None:
            self.durations.append(duration)
        self.costs.append(cost_usd / max(attempts, 1))

    @property
    def mean_duration(self) -> float | None:
        """Mean seconds per execution, None without history."""
        return sum(self.durations) / len(self.durations) if self.durations else None

    @property
    def mean_cost(self) -> float | None:
        """Mean dollars per execution, None without history."""
        return sum(self.costs) / len(self.costs) if self.costs else None


@dataclass
class Plan:
    """What a run with given options would do, cell by cell."""

    pipeline: Pipeline
    items: list[str]
    cells: list[Cell]
    history: dict[int, PhaseHistory]
    #: Items whose state could not be read, with the message.
    unreadable: dict[str, str] = field(default_factory=dict)
    #: Completed cells without a recorded fingerprint (not checked).
    unknown: int = 0
    #: Items a run processes at once (``-j``): the time estimates divide by it.
    workers: int = 1

    def by_phase(self) -> dict[int, list[Cell]]:
        """Cells grouped by phase num, in phase order."""
        grouped: dict[int, list[Cell]] = {p.num: [] for p in self.pipeline.phases}
        for cell in self.cells:
            grouped[cell.num].append(cell)
        return grouped

    def concurrency(self, num: int, count: int) -> int:
        """How many of ``count`` executions of phase ``num`` a run has at once:
        its workers, limited by ``count`` and by the phase's ``concurrency=``."""
        limits = [self.workers, count]
        limits += [p.concurrency for p in self.pipeline.phases if p.num == num and p.concurrency]
        return max(1, min(limits))

    def estimate(self, num: int, count: int) -> tuple[float | None, float | None]:
        """Seconds (of the run's wall time) and dollars for ``count`` executions of
        phase ``num`` (None: unknown)."""
        history = self.history.get(num) or PhaseHistory()
        duration, cost = history.mean_duration, history.mean_cost
        return (
            None if duration is None else duration * count / self.concurrency(num, count),
            None if cost is None else cost * count,
        )

    def estimate_counts(self, counts: dict[int, int]) -> tuple[float | None, float | None]:
        """Seconds and dollars for ``counts[num]`` executions of each phase (None:
        some phase has no history)."""
        seconds: float | None = 0.0
        dollars: float | None = 0.0
        for num, count in counts.items():
            duration, cost = self.estimate(num, count)
            seconds = None if seconds is None or duration is None else seconds + duration
            dollars = None if dollars is None or cost is None else dollars + cost
        return seconds, dollars

    def upper_bound(self, action: str) -> bool:
        """Whether the estimate for cells with ``action`` counts conditional ones
        (``Cell.conditional``): then it is the most they would cost."""
        return any(c.conditional for c in self.cells if c.action == action)

    def totals(self, action: str) -> tuple[int, float | None, float | None]:
        """Cells with ``action``, their seconds and dollars (None when unknown)."""
        counts = {num: sum(1 for c in cells if c.action == action) for num, cells in self.by_phase().items()}
        counts = {num: n for num, n in counts.items() if n}
        return (sum(counts.values()), *self.estimate_counts(counts))


def plan_item(
    checker: StaleChecker,
    policy: StalePolicy,
    item_id: str,
    state: PipelineState | None,
    *,
    force: bool = False,
    from_phase: int | None = None,
) -> list[Cell]:
    """What a run would do with each phase of one item (``state`` None: a new item).

    A completed phase that will run again is assumed to change its output, so
    the phases consuming it follow it (an upper bound: the run compares the real
    output). A failed, interrupted or pending phase run again changes nothing a
    consumer recorded: the consumer's fingerprint already holds that output
    (none), and it becomes stale only if the new output differs, which the run
    checks when it gets there.
    """
    cells = []
    running: list[str] = []
    stale: list[str] = []
    for definition in checker.phases:
        conditional = False
        phase_state = None if state is None else state.phases.get(definition.num)
        status = PENDING if phase_state is None else phase_state.status
        reasons: list[str] = []
        if force:
            action, reasons = RUN, [FORCE_REASON]
        elif from_phase is not None and definition.num >= from_phase and status != PENDING:
            action, reasons = RUN, [FROM_PHASE_REASON]
        elif status == PENDING:
            action, reasons = RUN, [PENDING_REASON]
        elif status == IN_PROGRESS or (status == FAILED and phase_state and phase_state.reason == "interrupted"):
            action, reasons = RUN, [INTERRUPTED_REASON]
        elif status == FAILED:
            action, reasons = RUN, [FAILED_REASON]
        elif status == COMPLETED and state is not None:
            found = checker.differences(definition, state, upstream_rerun=running, upstream_stale=stale)
            reasons = list(dict.fromkeys(d.reason for d in found))
            # Nothing it consumed has changed yet: only upstream phases still to run.
            conditional = bool(found) and all(
                d.part == "consumed" and d.then == d.now and d.upstream in running + stale for d in found
            )
            if not reasons:
                action = SKIP
            elif policy.includes(definition) and reasons != [UPSTREAM_STALE]:
                action = RUN
            else:
                action = STALE
        else:
            action = SKIP
        if action == RUN and status == COMPLETED:
            running.append(definition.name)
        elif action == STALE:
            stale.append(definition.name)
        cells.append(Cell(item_id, definition.num, action, reasons, conditional))
    return cells


def load_states(
    pipeline: Pipeline, store: StateStore, item_ids: Iterable[str]
) -> tuple[dict[str, PipelineState], dict[str, str]]:
    """States of ``item_ids`` reconciled with the pipeline (in memory only), and
    the unreadable ones with their message."""
    unreadable: dict[str, str] = {}
    states = dict(iter_states(pipeline, store, item_ids, unreadable))
    return states, unreadable


def iter_states(
    pipeline: Pipeline,
    store: StateStore,
    item_ids: Iterable[str],
    unreadable: dict[str, str],
    *,
    by_reference: bool = False,
) -> Iterator[tuple[str, PipelineState]]:
    """``(item_id, state)`` of each of ``item_ids`` with a saved state, reconciled
    with the pipeline (in memory only), one at a time; unreadable ones go into
    ``unreadable`` with their message. ``by_reference``: large outputs are left
    in the store (``PipelineStateManager.load_document``)."""
    # One query per batch of items on a database store, not one per item.
    for item_id, document in store.load_many(item_ids):
        manager = PipelineStateManager(item_id, store)
        try:
            if isinstance(document, StateFileError):
                raise document
            if not manager.load_document(document, by_reference=by_reference):
                continue
        except StateFileError as exc:
            unreadable[item_id] = str(exc)
            continue
        manager.reconcile(pipeline.phases)
        yield item_id, manager.state


def make_plan(
    pipeline: Pipeline,
    store: StateStore,
    item_ids: Sequence[str],
    output_root: Path,
    *,
    rerun_stale: bool = False,
    force: bool = False,
    from_phase: int | None = None,
    history_from_store: bool = True,
    metadata: dict[str, dict[str, Any]] | None = None,
    workers: int = 1,
) -> Plan:
    """What a run of ``item_ids`` with these options would do; changes nothing.

    :param history_from_store: estimate from every item in the store, not only
        the selected ones.
    :param metadata: the items' metadata from their source, which a run saves
        over what the state holds (``fingerprint=`` callables may read it).
    :param workers: items the run would process at once (``-j``).
    """
    checker = StaleChecker(pipeline, output_root)
    policy = StalePolicy(checker, rerun_stale)
    selected = list(item_ids)
    states, unreadable = load_states(pipeline, store, selected)
    for item_id, fresh in (metadata or {}).items():
        if item_id in states:
            states[item_id].metadata.update(fresh)
    history: dict[int, PhaseHistory] = {p.num: PhaseHistory() for p in pipeline.phases}
    add_history(history, states.values())
    if history_from_store and not all(h.costs for h in history.values()):
        # Some phase never completed among the selected items: learn from the rest
        # of the store (not always: listing the store reads every state once more).
        chosen = set(selected)
        others, _ = load_states(pipeline, store, (i for i in store.item_ids() if i not in chosen))
        add_history(history, others.values())
    unknown = 0
    cells = []
    for item_id in selected:
        if item_id in unreadable:
            continue
        item_state = states.get(item_id)
        if item_state is not None:
            unknown += sum(1 for p in item_state.phases.values() if p.status == COMPLETED and not p.fingerprint)
        cells += plan_item(checker, policy, item_id, item_state, force=force, from_phase=from_phase)
    return Plan(pipeline, selected, cells, history, unreadable, unknown, workers)


def add_history(history: dict[int, PhaseHistory], states: Iterable[PipelineState]) -> None:
    for state in states:
        for num, phase_state in state.phases.items():
            if phase_state.status == COMPLETED and num in history:
                history[num].add(phase_state.duration_seconds, phase_state.cost_usd, phase_state.attempts)


# -- words -----------------------------------------------------------------------


def reason_counts(cells: Iterable[Cell]) -> dict[str, int]:
    """How many cells have each reason, in first-seen order."""
    counts: dict[str, int] = {}
    for cell in cells:
        for reason in cell.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def stale_report(plan: Plan) -> list[str]:
    """The lines a run prints at start about stale cells (none when there are none)."""
    lines = []
    grouped = plan.by_phase()
    names = {p.num: p.name for p in plan.pipeline.phases}
    for action, intro in ((STALE, "not re-run"), (RUN, "re-run")):
        parts = []
        for num, cells in grouped.items():
            chosen = [
                c for c in cells if c.action == action and c.reasons and set(c.reasons) <= set(STALE_REASONS)
            ]
            if chosen:
                why = ", ".join(f"{r} {n}" for r, n in reason_counts(chosen).items())
                parts.append((num, len(chosen), f"{names[num]} ({why})"))
        if not parts:
            continue
        count = sum(n for _, n, _ in parts)
        seconds, dollars = plan.estimate_counts({num: n for num, n, _ in parts})
        noun = "cell is" if count == 1 else "cells are"
        line = (
            f"{count} completed {noun} stale, {intro}: {'; '.join(p for _, _, p in parts)}; "
            f"estimated {money_exact(dollars)}, {estimate(seconds)}"
        )
        if action == STALE:
            line += "; add --rerun-stale to include them (see `pipekit plan`, `pipekit why`)"
        lines.append(line)
    return lines
