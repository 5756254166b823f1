"""Which cells (item, phase) are stale (#10).

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
from dataclasses import dataclass
import json
from pathlib import Path
from typing import Any

from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.fingerprint import input_hash
from pipekit.stale.fingerprint import phase_code
from pipekit.state.digest import output_hash
from pipekit.state.model import COMPLETED
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id
from pipekit.state.stored import StoredOutput


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
    :param store: where a state loaded by reference keeps its large outputs: a
        ``fingerprint=`` callable is given their values, read from it.
    """

    def __init__(self, pipeline: Pipeline, output_root: Path, store: StateStore | None = None) -> None:
        self.pipeline = pipeline
        self.store = store
        self.phases = list(pipeline.phases)
        self.output_root = output_root
        self._num_by_name = {p.name: p.num for p in self.phases}
        self._code = {p.num: phase_code(p).hash for p in self.phases}
        self._fresh_keys: dict[str, bool] = {}

    def arguments(self, definition: PhaseDefinition, state: PipelineState) -> dict[str, Any]:
        """The values injected into a callable of ``definition`` for this item, as a run would."""
        previous = {n: self._value(o) for n, o in state.phase_outputs.items() if n < definition.num}
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

    def _value(self, output: Any) -> Any:
        if type(output) is not StoredOutput:
            return output
        if self.store is None:
            raise RuntimeError(f"output {output.ref!r} is in the run's store, but this check has no store")
        return output.read_from(self.store)

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
        """True when no completed phase of a state with this ``pipekit.state.stalekey``
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


