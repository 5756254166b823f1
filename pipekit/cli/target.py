"""What every state-reading command starts with: the pipeline and its store.

State is read only through the ``StateStore`` interface, so these commands
work on every store ``--store`` can name.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
import gc
import sys

from pipekit.cli.parsing import ArgumentParser
from pipekit.cli.projectconfig import load_project_config
from pipekit.engine.location import open_store
from pipekit.engine.selection import natural_key
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.loader import load
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import PipelineState
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

    def states(self, errors: list[StateFileError] | None = None) -> Iterator[PipelineState]:
        """Every saved state without its outputs, reconciled with the current phases,
        naturally sorted by id (``manager`` loads one item with its outputs).

        Documents are parsed as they come and their outputs dropped, so memory
        holds states, never every output of a big batch.
        """
        states = []
        # Millions of small acyclic objects: the cyclic GC would rescan the growing
        # heap over and over (6x the cost of parsing at 100,000 items).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for item_id, document in self.store.load_all(errors):
                document.pop("phase_outputs", None)
                try:
                    states.append(self.from_document(item_id, document))
                except StateFileError as exc:
                    if errors is None:
                        raise
                    errors.append(exc)
        finally:
            if collecting:
                gc.enable()
        states.sort(key=lambda state: natural_key(state.item_id))
        return iter(states)

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


class _Where:
    """Names an item's state in error messages, computed only when one is raised."""

    def __init__(self, store: StateStore, item_id: str) -> None:
        self.store, self.item_id = store, item_id

    def __str__(self) -> str:
        return self.store.describe(self.item_id)


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
