"""Which cells (item, phase) are stale, and what a run would do about it (#10).

Shared by ``pipekit run`` (the policy and the stale report at start),
``pipekit plan`` and ``pipekit why``. A completed phase is *stale* when its
recorded fingerprint (``pipekit.stale.fingerprint``) differs from the one it would
have now. A phase without a recorded fingerprint (state from before
fingerprints, or skipped by a cache) is *unknown*, never stale.

A run re-executes a stale phase only with ``--rerun-stale`` or when the phase
says ``@phase(on_change="rerun")``; ``--force`` re-executes everything. A stale
phase re-executed with a different output makes the phases that consume it
stale in turn (their recorded input hash no longer matches).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
import json
from pathlib import Path
import sys
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.fingerprint import SourceArchive
from pipekit.stale.fingerprint import code_identity
from pipekit.stale.fingerprint import input_hash
from pipekit.stale.fingerprint import output_hash
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import COMPLETED
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id


# Why a cell would run (or is stale).
PENDING_REASON = "pending"
FAILED_REASON = "failed"
INTERRUPTED_REASON = "interrupted"
FORCE_REASON = "--force"
FROM_PHASE_REASON = "--from-phase"
CODE_CHANGED = "code changed"
VERSION_BUMPED = "version bumped"
INPUT_CHANGED = "input changed"
UPSTREAM_RERUN = "upstream re-run"
#: An upstream phase is stale (not re-run): this cell would follow it.
UPSTREAM_STALE = "upstream stale"
STALE_REASONS = (CODE_CHANGED, VERSION_BUMPED, INPUT_CHANGED, UPSTREAM_RERUN, UPSTREAM_STALE)

# What plan says a cell does.
RUN = "run"
STALE = "stale"
SKIP = "skip"


@dataclass(frozen=True)
class Difference:
    """One part of a fingerprint that changed.

    :param reason: one of ``STALE_REASONS``.
    :param part: ``code``, ``version``, ``input`` or ``consumed``.
    :param then: the recorded value.
    :param now: the current value.
    :param upstream: for ``consumed``, the upstream phase's name.
    """

    reason: str
    part: str
    then: Any
    now: Any
    upstream: str | None = None


class StaleChecker:
    """Compares a pipeline's current fingerprints with those recorded in item states.

    :param pipeline: the loaded pipeline.
    :param output_root: root of the items' ``ctx.output_dir`` (for ``fingerprint=`` callables).
    """

    def __init__(self, pipeline: Pipeline, output_root: Path) -> None:
        self.pipeline = pipeline
        self.phases = list(pipeline.phases)
        self.output_root = output_root
        self._num_by_name = {p.name: p.num for p in self.phases}
        self._code = {p.num: code_identity(p.handler).hash for p in self.phases}
        self._fresh_keys: dict[str, bool] = {}

    def arguments(self, definition: PhaseDefinition, state: PipelineState) -> dict[str, Any]:
        """The values injected into a callable of ``definition`` for this item, as a run would."""
        previous = {n: o for n, o in state.phase_outputs.items() if n < definition.num}
        # Not ctx.output_dir: that creates the folder, and planning changes nothing.
        folder = self.output_root / encode_item_id(state.item_id)
        attempts = state.phases[definition.num].attempts
        available: dict[str, Any] = {
            "item_id": state.item_id,
            "metadata": state.metadata,
            "previous_outputs": previous,
            "ctx": PhaseContext(state.item_id, state.metadata, definition, attempts, folder),
            "output_dir": folder,
        }
        for earlier in self.phases:
            if earlier.num < definition.num:
                available[earlier.name] = previous.get(earlier.num)
        return available

    def current_input(self, definition: PhaseDefinition, state: PipelineState) -> str | None:
        """The ``fingerprint=`` hash now; raises what the callable raised."""
        return input_hash(definition, self.arguments(definition, state))

    def differences(
        self,
        definition: PhaseDefinition,
        state: PipelineState,
        *,
        upstream_rerun: Iterable[str] = (),
        upstream_stale: Iterable[str] = (),
    ) -> list[Difference]:
        """What changed since ``definition`` completed for this item; empty when
        it is not completed, not stale, or has no recorded fingerprint.

        :param upstream_rerun: names of earlier phases that will run again (plan).
        :param upstream_stale: names of earlier phases that are stale but will not run.
        """
        phase_state = state.phases.get(definition.num)
        if phase_state is None or phase_state.status != COMPLETED or not phase_state.fingerprint:
            return []
        recorded = phase_state.fingerprint
        found = []
        code_now = self._code[definition.num]
        if recorded.get("code") and code_now and recorded["code"] != code_now:
            found.append(Difference(CODE_CHANGED, "code", recorded["code"], code_now))
        if recorded.get("version") != definition.version:
            found.append(Difference(VERSION_BUMPED, "version", recorded.get("version"), definition.version))
        if definition.fingerprint is not None and recorded.get("input") is not None:
            try:
                now = self.current_input(definition, state)
            except Exception:
                now = None  # an input that cannot be computed now is unknown, not stale
            if now is not None and now != recorded["input"]:
                found.append(Difference(INPUT_CHANGED, "input", recorded["input"], now))
        rerun, stale = set(upstream_rerun), set(upstream_stale)
        for name, then in (recorded.get("consumed") or {}).items():
            num = self._num_by_name.get(name)
            if num is None:
                # The upstream phase was renamed or removed: what this phase would consume now differs.
                found.append(Difference(UPSTREAM_RERUN, "consumed", then, None, upstream=name))
                continue
            now = output_hash(state.phase_outputs.get(num))
            if name in rerun or now != then:
                found.append(Difference(UPSTREAM_RERUN, "consumed", then, now, upstream=name))
            elif name in stale:
                found.append(Difference(UPSTREAM_STALE, "consumed", then, now, upstream=name))
        return found

    def fresh_by_key(self, key: str | None) -> bool:
        """True when no completed phase of a state with this ``pipekit.stale.key``
        is stale, and none needs its ``fingerprint=`` callable run to tell: a
        finished item with it need not be read. False means "read the state"."""
        if key is None:
            return False
        fresh = self._fresh_keys.get(key)
        if fresh is None:
            fresh = self._fresh_keys[key] = self._key_is_fresh(key)
        return fresh

    def _key_is_fresh(self, key: str) -> bool:
        # The parts of ``differences`` that the key holds, in the same order.
        by_name = {p.name: p for p in self.phases}
        try:
            entries = json.loads(key)
            for name, code, version, has_input, consumed, unchanged in entries:
                definition = by_name.get(name)
                if definition is None:
                    continue  # retired: not checked
                code_now = self._code[definition.num]
                if code and code_now and code != code_now:
                    return False
                if version != definition.version:
                    return False
                if has_input and definition.fingerprint is not None:
                    return False
                if not unchanged or any(upstream not in by_name for upstream in consumed):
                    return False
        except (ValueError, TypeError):
            return False
        return True


class StalePolicy:
    """Decides during a run whether a completed phase is executed again.

    :param checker: the pipeline's ``StaleChecker``.
    :param rerun_stale: ``--rerun-stale`` was given.
    """

    def __init__(self, checker: StaleChecker, rerun_stale: bool) -> None:
        self.checker = checker
        self.rerun_stale = rerun_stale
        #: False when no phase can be re-run: the run then skips every check.
        self.active = rerun_stale or any(p.on_change == "rerun" for p in checker.phases)
        #: Items found at the start of the run with nothing to do, with their
        #: recorded cost (None: not known); the run skips them without reading them again.
        self.finished: dict[str, float] | None = None

    def includes(self, definition: PhaseDefinition) -> bool:
        """True when a stale ``definition`` is re-executed by this run."""
        return self.rerun_stale or definition.on_change == "rerun"

    def __call__(self, definition: PhaseDefinition, state: PipelineState) -> bool:
        """True when the completed ``definition`` must run again for this item."""
        if not self.active or not self.includes(definition):
            return False
        return bool(self.checker.differences(definition, state))

    def item_needs_rerun(self, state: PipelineState) -> bool:
        """True when some completed phase of this item will run again."""
        return self.active and any(self(d, state) for d in self.checker.phases)


@dataclass
class Cell:
    """What a run would do with one (item, phase)."""

    item_id: str
    num: int
    action: str
    reasons: list[str] = field(default_factory=list)


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

    def by_phase(self) -> dict[int, list[Cell]]:
        """Cells grouped by phase num, in phase order."""
        grouped: dict[int, list[Cell]] = {p.num: [] for p in self.pipeline.phases}
        for cell in self.cells:
            grouped[cell.num].append(cell)
        return grouped

    def estimate(self, num: int, count: int) -> tuple[float | None, float | None]:
        """Seconds and dollars for ``count`` executions of phase ``num`` (None: unknown)."""
        history = self.history.get(num) or PhaseHistory()
        duration, cost = history.mean_duration, history.mean_cost
        return (
            None if duration is None else duration * count,
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

    A phase downstream of one that will run is assumed to see a changed output.
    """
    cells = []
    running: list[str] = []
    stale: list[str] = []
    for definition in checker.phases:
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
            if not reasons:
                action = SKIP
            elif policy.includes(definition) and reasons != [UPSTREAM_STALE]:
                action = RUN
            else:
                action = STALE
        else:
            action = SKIP
        if action == RUN:
            running.append(definition.name)
        elif action == STALE:
            stale.append(definition.name)
        cells.append(Cell(item_id, definition.num, action, reasons))
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
    pipeline: Pipeline, store: StateStore, item_ids: Iterable[str], unreadable: dict[str, str]
) -> Iterator[tuple[str, PipelineState]]:
    """``(item_id, state)`` of each of ``item_ids`` with a saved state, reconciled
    with the pipeline (in memory only), one at a time; unreadable ones go into
    ``unreadable`` with their message."""
    # One query per batch of items on a database store, not one per item.
    for item_id, document in store.load_many(item_ids):
        manager = PipelineStateManager(item_id, store)
        try:
            if isinstance(document, StateFileError):
                raise document
            if not manager.load_document(document):
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
) -> Plan:
    """What a run of ``item_ids`` with these options would do; changes nothing.

    :param history_from_store: estimate from every item in the store, not only
        the selected ones.
    :param metadata: the items' metadata from their source, which a run saves
        over what the state holds (``fingerprint=`` callables may read it).
    """
    checker = StaleChecker(pipeline, output_root)
    policy = StalePolicy(checker, rerun_stale)
    selected = list(item_ids)
    states, unreadable = load_states(pipeline, store, selected)
    for item_id, fresh in (metadata or {}).items():
        if item_id in states:
            states[item_id].metadata.update(fresh)
    history: dict[int, PhaseHistory] = {p.num: PhaseHistory() for p in pipeline.phases}
    _add_history(history, states.values())
    if history_from_store and not all(h.costs for h in history.values()):
        # Some phase never completed among the selected items: learn from the rest
        # of the store (not always: listing the store reads every state once more).
        chosen = set(selected)
        others, _ = load_states(pipeline, store, (i for i in store.item_ids() if i not in chosen))
        _add_history(history, others.values())
    unknown = 0
    cells = []
    for item_id in selected:
        if item_id in unreadable:
            continue
        item_state = states.get(item_id)
        if item_state is not None:
            unknown += sum(1 for p in item_state.phases.values() if p.status == COMPLETED and not p.fingerprint)
        cells += plan_item(checker, policy, item_id, item_state, force=force, from_phase=from_phase)
    return Plan(pipeline, selected, cells, history, unreadable, unknown)


def _add_history(history: dict[int, PhaseHistory], states: Iterable[PipelineState]) -> None:
    for state in states:
        for num, phase_state in state.phases.items():
            if phase_state.status == COMPLETED and num in history:
                history[num].add(phase_state.duration_seconds, phase_state.cost_usd, phase_state.attempts)


# -- words -----------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """``1.5 s``, ``12 min``, ``3.2 h`` or ``unknown``."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_cost(dollars: float | None) -> str:
    """``$0.0123`` or ``unknown``."""
    return "unknown" if dollars is None else f"${dollars:.4f}"


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
            f"estimated {format_cost(dollars)}, {format_seconds(seconds)}"
        )
        if action == STALE:
            line += "; add --rerun-stale to include them (see `pipekit plan`, `pipekit why`)"
        lines.append(line)
    return lines


def print_stale_report(plan: Plan) -> None:
    """Print ``stale_report`` on stderr."""
    for line in stale_report(plan):
        print(f"pipekit: {line}", file=sys.stderr, flush=True)


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
        _add_history(history, (state,))
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
