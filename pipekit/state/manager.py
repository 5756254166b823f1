"""Changing one item's state and saving it after every change (the seed's ``PipelineStateManager``).

The manager saves through a store (``pipekit.state.store``); it does no locking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from datetime import timezone
from os import PathLike
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.state import subitems
from pipekit.state.digest import ref_digest
from pipekit.state.encoded import PhaseRecord
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.model import COMPLETED
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import PHASE_FIELDS
from pipekit.state.model import SKIPPED
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.state.model import is_finished
from pipekit.state.model import phase_pairs
from pipekit.state.model import utc_now
from pipekit.state.store import StateStore
from pipekit.state.stored import StoredOutput
from pipekit.state.values import kept_apart
from pipekit.state.writer import IMMEDIATE
from pipekit.state.writer import PendingWrite
from pipekit.state.writer import Writer
from pipekit.state.writer import write_now


class PipelineStateManager:
    """Changes and persists one item's ``PipelineState``; saves after every change.

    :param item_id: the item's id (any non-empty string).
    :param state_dir: the state directory, or a ``StateStore``.
    """

    def __init__(self, item_id: str, state_dir: str | PathLike[str] | StateStore) -> None:
        self.item_id = item_id
        self.store: StateStore = state_dir if isinstance(state_dir, StateStore) else JsonDirStore(state_dir)
        self._state: PipelineState | None = None
        #: Phase outputs already written to their own file, by num.
        self._output_refs: dict[int, str] = {}
        #: Output files to delete once a saved state no longer refers to them.
        self._unreferenced: list[str] = []
        #: Who writes this manager's saves, and when (``pipekit.state.writer``): at
        #: once by default; a runner's ``StateWriter`` holds it to write them off the
        #: event loop before it tells any observer.
        self._writer: Writer = IMMEDIATE
        self._pending = False
        #: Phases whose checkpoints go once the state that completes them is written.
        self._checkpoints_to_drop: list[str] = []
        #: The phase records of the latest document, kept while a phase is unchanged
        #: so that a save encodes and checks only the phases that changed.
        self._records: dict[int, PhaseRecord] = {}

    @property
    def state(self) -> PipelineState:
        """The item's state; ``create_state`` or ``load_state`` must come first."""
        if self._state is None:
            raise RuntimeError(f"no state for item {self.item_id!r}: call load_state or create_state")
        return self._state

    @state.setter
    def state(self, value: PipelineState) -> None:
        self._state = value

    # -- creating, loading, saving --------------------------------------

    def create_state(self, metadata: dict[str, Any], phases: Iterable[Any]) -> PipelineState:
        """Initialise the state with every phase ``pending`` and save it.

        :param phases: ``PhaseDefinition`` objects or ``(num, name)`` pairs.
        """
        now = utc_now()
        pairs = phase_pairs(phases)
        self._state = PipelineState(
            item_id=self.item_id,
            metadata=dict(metadata),
            status=PENDING,
            current_phase=pairs[0][0] if pairs else 0,
            started_at=now,
            last_updated=now,
            phases={num: PhaseState(phase=num, name=name) for num, name in pairs},
        )
        self._output_refs = {}
        self.save_state()
        return self._state

    def load_state(self, *, by_reference: bool = False) -> bool:
        """Load the saved state; False when there is none. Raises ``StateFileError``.

        :param by_reference: as for ``load_document``."""
        return self.load_document(self.store.load(self.item_id), by_reference=by_reference)

    def load_document(self, document: dict[str, Any] | None, *, by_reference: bool = False) -> bool:
        """``load_state`` from a document already read (``StateStore.load_many``).

        :param by_reference: leave each output kept apart in the store, as a
            ``StoredOutput`` that whoever needs its value reads (a run whose
            workers read the store themselves); else read each one now."""
        if document is None:
            return False
        where = self.store.describe(self.item_id)
        state, refs = PipelineState.from_document(document, where)
        if state.item_id != self.item_id:
            raise StateFileError(where, f"holds item {state.item_id!r}, not {self.item_id!r}")
        for num, ref in refs.items():
            digest = ref_digest(ref) if by_reference else None
            # Without its hash in its name, a reference could not stand for the value in fingerprints.
            if digest is not None:
                state.phase_outputs[num] = StoredOutput(self.item_id, ref, digest)
            else:
                state.phase_outputs[num] = self.store.read_output(self.item_id, ref)
        self._state = state
        self._output_refs = refs
        return True

    def save_state(self) -> None:
        """Save the state atomically (at once, unless a ``StateWriter`` holds this
        manager); large outputs are stored once, beside it, before it."""
        self.state.last_updated = utc_now()
        self._pending = True  # the document is built when written: several changes cost one
        self._writer.changed(self)

    @property
    def defer_saves(self) -> bool:
        """True while a ``StateWriter`` holds this manager (its saves wait for a flush)."""
        return self._writer is not IMMEDIATE

    def save_through(self, writer: Writer | None) -> Writer:
        """Let ``writer`` write this manager's saves from now on (None: at once);
        returns the writer before. Called by ``StateWriter.hold`` and ``release``."""
        previous, self._writer = self._writer, writer or IMMEDIATE
        return previous

    @property
    def has_pending_save(self) -> bool:
        """True when a save was asked for and is not yet written (``defer_saves``)."""
        return self._pending

    def take_pending_write(self) -> PendingWrite:
        """The write of the latest saved state, for any thread to ``run``; whoever
        runs it calls ``saved`` with it afterwards, on the thread that changes the state."""
        state = self.state
        refs = self._output_refs
        large = [(num, value) for num, value in state.phase_outputs.items() if num not in refs and kept_apart(value)]
        # The large ones leave the document now; the write stores them and names their files in it.
        document = state.to_document(
            {**refs, **{num: "" for num, _ in large}} if large else refs, records=self._records
        )
        if large:
            document["phase_output_files"] = {key: ref for key, ref in document["phase_output_files"].items() if ref}
        drops, self._checkpoints_to_drop = self._checkpoints_to_drop, []
        unreferenced, self._unreferenced = self._unreferenced, []
        self._pending = False
        return PendingWrite(self.store, self.item_id, document, drops, unreferenced, large)

    def write_pending(self) -> None:
        """Write the pending save here and now."""
        write_now(self)

    def saved(self, write: PendingWrite) -> None:
        """After ``write`` landed: remember the outputs it stored, delete the
        output files it no longer refers to."""
        for num, text, ref in write.outputs_written:
            if num not in self._output_refs and self.state.phase_outputs.get(num) == text:
                self._output_refs[num] = ref
            else:  # changed while it was written: the next write stops referring to it
                self._unreferenced.append(ref)
        # Only now that the saved state no longer refers to them (a crash before
        # this point leaves a stray file, never a state pointing at nothing), and
        # only if no change since refers to them again (outputs are named by content).
        if write.outputs_unreferenced:
            kept = set(self._output_refs.values())
            for ref in write.outputs_unreferenced:
                if ref not in kept:
                    self.store.delete_output(self.item_id, ref)

    # -- transitions ----------------------------------------------------

    def _phase(self, phase_num: int) -> PhaseState:
        try:
            return self.state.phases[phase_num]
        except KeyError:
            raise KeyError(f"item {self.item_id!r} has no phase {phase_num}") from None

    def _add_usage(self, phase: PhaseState, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        state = self.state
        phase.tokens_in += tokens_in
        phase.tokens_out += tokens_out
        phase.cost_usd += cost_usd
        state.total_tokens_in += tokens_in
        state.total_tokens_out += tokens_out
        state.total_cost_usd += cost_usd

    def start_phase(self, phase_num: int, executor: str = "") -> None:
        """Mark the phase ``in_progress``, count the attempt, record the time, save."""
        phase = self._phase(phase_num)
        phase.status = IN_PROGRESS
        phase.started_at = utc_now()
        phase.completed_at = None
        phase.attempts += 1
        phase.reason = None
        if executor:
            phase.executor = executor
        self.state.status = IN_PROGRESS
        self.state.current_phase = phase_num
        self.save_state()

    def complete_phase(
        self,
        phase_num: int,
        output: Any,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        *,
        duration_seconds: float | None = None,
        output_file: str | None = None,
        executor: str | None = None,
    ) -> None:
        """Mark the phase ``completed``, store its output (a ``str`` or JSON value,
        ``None`` included: ``pipekit.state.values``), add its usage, save."""
        phase = self._phase(phase_num)
        phase.status = COMPLETED
        phase.completed_at = utc_now()
        phase.duration_seconds = duration_seconds if duration_seconds is not None else _elapsed(phase.started_at)
        phase.error = None
        phase.reason = None
        phase.traceback = None
        phase.output_file = output_file
        if executor:
            phase.executor = executor
        self._add_usage(phase, tokens_in, tokens_out, cost_usd)
        self._set_output(phase_num, output, is_output=True)
        self._refresh_item_status()
        self._checkpoints_to_drop.append(phase.name)
        self.save_state()

    def fail_phase(
        self,
        phase_num: int,
        error: str,
        *,
        reason: str = "error",
        traceback: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        duration_seconds: float | None = None,
        critical: bool = True,
    ) -> None:
        """Mark the phase ``failed`` with its error (usage of the failed attempt counts), save."""
        phase = self._phase(phase_num)
        phase.status = FAILED
        phase.completed_at = utc_now()
        phase.duration_seconds = duration_seconds if duration_seconds is not None else _elapsed(phase.started_at)
        phase.error = error
        phase.reason = reason
        phase.traceback = traceback
        self._add_usage(phase, tokens_in, tokens_out, cost_usd)
        self._refresh_item_status(failed_critical=critical)
        self.save_state()

    def record_failed_attempt(
        self,
        phase_num: int,
        error: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Record an attempt that failed and will be retried: its error and usage, save."""
        phase = self._phase(phase_num)
        phase.error = error
        self._add_usage(phase, tokens_in, tokens_out, cost_usd)
        self.save_state()

    def skip_phase(self, phase_num: int, reason: str, output: str | None = None) -> None:
        """Mark the phase ``skipped`` with its reason (and an output, if one exists), save."""
        phase = self._phase(phase_num)
        phase.status = SKIPPED
        phase.reason = reason
        phase.error = None
        phase.completed_at = utc_now()
        self._set_output(phase_num, output)
        self._refresh_item_status()
        self._checkpoints_to_drop.append(phase.name)
        self.save_state()

    def reset_phase(self, phase_num: int, *, keep_subitems: bool = False) -> None:
        """Set the phase back to ``pending`` and drop its output, save.

        Tokens, cost and attempts stay: they were spent. Its sub-items
        (``ctx.map``) go too unless ``keep_subitems`` (a stale phase re-runs
        reusing the sub-items whose element and code did not change).
        """
        self.reset_phases([phase_num], keep_subitems=keep_subitems)

    def reset_phases(self, phase_nums: Iterable[int], *, keep_subitems: bool = False) -> None:
        """``reset_phase`` for several phases, saved once."""
        for phase_num in phase_nums:
            phase = self._phase(phase_num)
            phase.status = PENDING
            phase.started_at = None
            phase.completed_at = None
            phase.duration_seconds = None
            phase.error = None
            phase.reason = None
            phase.traceback = None
            phase.output_file = None
            phase.attempts_at_reset = phase.attempts  # a cap on attempts counts afresh
            self._set_output(phase_num, None)
            self.state.batch_requests.pop(str(phase_num), None)  # its requests are asked for again
            # Before the save: a reset phase must never find its old checkpoints.
            self.store.drop_checkpoints(self.item_id, phase.name)
            if not keep_subitems:
                subitems.drop(self.store, self.item_id, phase.name)
        self._refresh_item_status()
        self.save_state()

    def reconcile(self, phases: Iterable[Any]) -> bool:
        """Match the saved phases to the pipeline's current ones by name.

        Phases are re-keyed to their current num and a new name is ``pending``.
        A phase gone from the pipeline is not run and not counted, but kept, with
        its output, under ``retired_phases``: if its name comes back, so does its
        state. Returns True when anything changed (not saved).
        """
        state = self.state
        pairs = phase_pairs(phases)
        if [(n, p.name) for n, p in sorted(state.phases.items())] == pairs:
            return False
        by_name = {p.name: p for p in state.phases.values()}
        current_names = {name for _, name in pairs}
        outputs: dict[int, str] = {}
        refs: dict[int, str] = {}
        new_phases: dict[int, PhaseState] = {}
        for gone in by_name.values():
            if gone.name not in current_names:
                output = state.phase_outputs.get(gone.phase)
                if type(output) is StoredOutput:  # loaded by reference: a retired output is kept inline
                    output = output.read_from(self.store)
                state.retired_phases[gone.name] = {"state": asdict(gone), "output": output}
                ref = self._output_refs.get(gone.phase)
                if ref is not None:
                    self._unreferenced.append(ref)  # its text is kept inline now
        for num, name in pairs:
            old = by_name.get(name)
            if old is None and name in state.retired_phases:
                retired = state.retired_phases.pop(name)
                old = PhaseState(**{k: v for k, v in retired["state"].items() if k in PHASE_FIELDS})
                if retired.get("output") is not None:
                    outputs[num] = retired["output"]
            elif old is not None:
                if old.phase in state.phase_outputs:
                    outputs[num] = state.phase_outputs[old.phase]
                if old.phase in self._output_refs:
                    refs[num] = self._output_refs[old.phase]
            if old is None:
                new_phases[num] = PhaseState(phase=num, name=name)
                continue
            old.phase = num
            new_phases[num] = old
        state.phases = new_phases
        state.phase_outputs = outputs
        self._output_refs = refs
        state.current_phase = _first_not_done(state)
        return True

    # -- questions --------------------------------------------------------

    def get_next_pending_phase(self) -> int | None:
        """The first phase (by num) whose status is ``pending``, or None."""
        for num in sorted(self.state.phases):
            if self.state.phases[num].status == PENDING:
                return num
        return None

    def get_resume_phase(self) -> int:
        """Where to resume: "last completed + 1" when phases finished in order.

        It is the first phase (by num) that is neither completed nor skipped, so
        it never points past unfinished work; with every phase done it is the
        last num + 1 (and 0 with no phases).
        """
        nums = sorted(self.state.phases)
        for num in nums:
            if not is_finished((self.state.phases[num].status,)):
                return num
        return nums[-1] + 1 if nums else 0

    # -- helpers ------------------------------------------------------------

    def _set_output(self, phase_num: int, output: Any, is_output: bool = False) -> None:
        """Replace the phase's output; ``None`` drops it unless ``is_output`` (a handler returned None)."""
        outputs = self.state.phase_outputs
        ref = self._output_refs.pop(phase_num, None)
        if ref is not None:
            self._unreferenced.append(ref)
        if output is None and not is_output:
            outputs.pop(phase_num, None)
        else:
            outputs[phase_num] = output
            if type(output) is StoredOutput:  # a worker stored it: the state refers to it as it is
                self._output_refs[phase_num] = output.ref

    def _refresh_item_status(self, failed_critical: bool = False) -> None:
        """Derive the item's status from its phases; the runner sets the final word."""
        state = self.state
        statuses = [p.status for p in state.phases.values()]
        if failed_critical:
            state.status = FAILED
        elif is_finished(statuses):
            state.status = COMPLETED
        elif IN_PROGRESS in statuses:
            state.status = IN_PROGRESS
        elif not (state.status == FAILED and FAILED in statuses):
            # work is left; a critical failure stays visible until its phase runs again
            state.status = PENDING
        state.current_phase = _first_not_done(state)


def _first_not_done(state: PipelineState) -> int:
    for num in sorted(state.phases):
        if not is_finished((state.phases[num].status,)):
            return num
    return max(state.phases, default=0)



def _elapsed(started_at: str | None) -> float | None:
    if started_at is None:
        return None
    started = datetime.fromisoformat(started_at)
    return round((datetime.now(timezone.utc) - started).total_seconds(), 6)
