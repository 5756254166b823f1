"""What every state-reading command starts with: the pipeline and its store.

State is read only through the ``StateStore`` interface, so these commands
work on every store ``--store`` can name.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
import gc
import sys
from typing import Any

from pipekit.cli.parsing import ArgumentParser
from pipekit.cli.projectconfig import load_project_config
from pipekit.config import Config
from pipekit.engine.location import open_store
from pipekit.engine.selection import natural_key
from pipekit.engine.selection import select_among
from pipekit.engine.session import source_items
from pipekit.manager import make_plugin_manager
from pipekit.manager import register_pipeline_module
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.pipeline.items import ItemSpec
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.pipeline.outputs import preview
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import COMPLETED
from pipekit.state.model import PENDING
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.state.model import phase_pairs
from pipekit.state.store import StateStore


def parse(parser: ArgumentParser, args: list[str]) -> argparse.Namespace | None:
    """Parse ``args`` with ``[tool.pipekit]`` defaults; None when ``--help`` was printed."""
    load_project_config().apply(parser)
    option = parser.parse_args(args)
    if option.help:
        parser.print_help(sys.stdout)
        return None
    if not option.module:
        raise UsageError(f"{parser.prog}: give the pipeline MODULE (a dotted name or a .py path)")
    return option


#: By item id and phase num: a one-line preview of each completed output.
Previews = dict[str, dict[int, str]]
#: Characters of an output's preview in the report.
PREVIEW_CHARS = 80


@dataclass
class Target:
    """A loaded pipeline and the store holding its state."""

    pipeline: Pipeline
    store: StateStore

    def __post_init__(self) -> None:
        self._pairs = [(p.num, p.name) for p in self.pipeline.phases]

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A command may run in-process (pipekit.testing, a notebook): leave no connection open.
        self.store.close()

    def states(
        self, errors: list[StateFileError] | None = None, previews: Previews | None = None
    ) -> Iterator[PipelineState]:
        """Every saved state without its outputs, reconciled with the current phases,
        naturally sorted by id (``manager`` loads one item with its outputs).

        Documents are parsed as they come and their outputs dropped, so memory
        holds states, never every output of a big batch; ``previews``, when
        given, gets a one-line preview of each completed output instead.
        """
        return iter(sorted(self._parsed(self.store.load_all(errors), errors, previews), key=_by_id))

    def selected_states(
        self, specs: list[ItemSpec], errors: list[StateFileError], previews: Previews | None = None
    ) -> list[PipelineState]:
        """``states`` of the selected items, in their order; one without state
        (never started) has every phase pending."""
        documents: list[tuple[str, dict[str, Any]]] = []
        unstarted = set()
        for item_id, document in self.store.load_many(item_id for item_id, _ in specs):
            if isinstance(document, StateFileError):
                errors.append(document)
            elif document is None:
                unstarted.add(item_id)
            else:
                documents.append((item_id, document))
        saved = {state.item_id: state for state in self._parsed(documents, errors, previews)}
        states = []
        for item_id, metadata in specs:
            if item_id in unstarted:
                states.append(never_started(item_id, metadata, self.pipeline.phases))
            elif item_id in saved:
                states.append(saved[item_id])
        return states

    def _parsed(
        self,
        documents: Iterable[tuple[str, dict[str, Any]]],
        errors: list[StateFileError] | None,
        previews: Previews | None,
    ) -> list[PipelineState]:
        states = []
        # Millions of small acyclic objects: the cyclic GC would rescan the growing
        # heap over and over (6x the cost of parsing at 100,000 items).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for item_id, document in documents:
                outputs = document.pop("phase_outputs", None)
                try:
                    state = self.from_document(item_id, document)
                except StateFileError as exc:
                    if errors is None:
                        raise
                    errors.append(exc)
                    continue
                states.append(state)
                if previews is not None:
                    previews[item_id] = self._previews(state, outputs, document.get("phase_output_files"))
        finally:
            if collecting:
                gc.enable()
        return states

    def _previews(self, state: PipelineState, inline: Any, files: Any) -> dict[int, str]:
        """A one-line preview of each completed phase's output (one in a file is read)."""
        found: dict[int, str] = {}
        for num, phase in state.phases.items():
            if phase.status != COMPLETED:
                continue
            if isinstance(inline, dict) and str(num) in inline:
                found[num] = preview(inline[str(num)], PREVIEW_CHARS)
            elif isinstance(files, dict) and isinstance(files.get(str(num)), str):
                try:
                    found[num] = preview(self.store.read_output(state.item_id, files[str(num)]), PREVIEW_CHARS)
                except (OSError, StateFileError):
                    found[num] = "(its output file cannot be read)"
        return found

    def from_document(self, item_id: str, document: dict[str, object]) -> PipelineState:
        """Parse one saved document and match its phases to the pipeline's."""
        state, _ = PipelineState.from_document(document, _Where(self.store, item_id))
        if [(num, phase.name) for num, phase in sorted(state.phases.items())] != self._pairs:
            manager = PipelineStateManager(item_id, self.store)
            manager.state = state
            manager.reconcile(self.pipeline.phases)
        return state

    def manager(self, item_id: str) -> PipelineStateManager:
        """A manager with the item's full state loaded (outputs too) and reconciled.

        Raises ``StateFileError`` for a corrupt file, ``UsageError`` when there is no state.
        """
        manager = PipelineStateManager(item_id, self.store)
        if not manager.load_state():
            raise UsageError(f"unknown item {item_id!r}: no saved state in {self.store.location}")
        manager.reconcile(self.pipeline.phases)
        return manager


def never_started(item_id: str, metadata: dict[str, Any], definitions: Iterable[Any]) -> PipelineState:
    """The state of a selected item that has none yet (never saved): every phase pending."""
    pairs = phase_pairs(definitions)
    return PipelineState(
        item_id=item_id,
        metadata=dict(metadata),
        status=PENDING,
        current_phase=pairs[0][0] if pairs else 0,
        started_at="",
        last_updated="",
        phases={num: PhaseState(phase=num, name=name) for num, name in pairs},
    )


def _by_id(state: PipelineState) -> tuple[str, str]:
    return natural_key(state.item_id)


class _Where:
    """Names an item's state in error messages, computed only when one is raised."""

    def __init__(self, store: StateStore, item_id: str) -> None:
        self.store, self.item_id = store, item_id

    def __str__(self) -> str:
        return self.store.describe(self.item_id)


def batch_items(option: argparse.Namespace, target: Target, plugins: list[Any]) -> list[ItemSpec] | None:
    """The items a command that reads a batch shows: those a run with the same
    ``--item``/``--items`` would select (``--items`` files, a plugin, the module's
    ``items()``; never-started ones included), or None when no source names any
    (then: every item with state). Without ``--items``, ``--item`` (globs
    allowed) narrows the module's items, or without them the items with state
    (None is returned and the caller filters as ``select_item_ids`` does).
    """
    pipeline = target.pipeline
    patterns = [] if option.items else list(option.item)
    pm = make_plugin_manager((), plugins)
    register_pipeline_module(pm, pipeline.module)
    sources = argparse.Namespace(**{**vars(option), "item": [] if patterns else option.item})
    specs = source_items(Config(sources, pm, pipeline), pipeline)
    if specs is None or not patterns:
        return specs
    return select_among(patterns, specs, target.store)


def open_target(option: argparse.Namespace) -> Target:
    """Load the pipeline named by ``option.module`` and open its store
    (``with open_target(option) as target:`` closes it)."""
    pipeline = load(option.module)
    return Target(pipeline, open_store(option, pipeline))


@dataclass
class Edits:
    """What a state-changing command could not do, for its exit status."""

    busy: int = 0
    unreadable: int = 0

    def exit_status(self) -> ExitCode:
        """4 when a state file could not be read, 1 when an item was busy, else 0."""
        if self.unreadable:
            return ExitCode.USAGE_ERROR
        return ExitCode.ITEMS_FAILED if self.busy else ExitCode.OK


def locked_items(
    target: Target, item_ids: list[str], edits: Edits
) -> Iterator[tuple[str, PipelineStateManager | StateFileError]]:
    """For each item, take its lock (as a run does) and yield its loaded manager,
    or the ``StateFileError`` of its corrupt file. Busy items are reported and left out.
    """
    for item_id in item_ids:
        lock = target.store.try_lock(item_id)
        if lock is None:
            edits.busy += 1
            print(f"pipekit: item {item_id!r} is being run by another pipekit process; left alone", file=sys.stderr)
            continue
        try:
            try:
                loaded: PipelineStateManager | StateFileError = target.manager(item_id)
            except StateFileError as exc:
                loaded = exc
            yield item_id, loaded
        finally:
            lock.release()
