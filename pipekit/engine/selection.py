"""Choosing items and phases from saved state: globs, failures, phase names.

Shared by ``run --failed-only`` and the commands that operate on a batch
(``status``, ``reset``, ``skip``, ``export``, ``report``).
"""

from __future__ import annotations

from collections.abc import Iterable
import fnmatch
import re
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import FAILED
from pipekit.state.store import StateStore


_GLOB_CHARS = frozenset("*?[")
_DIGITS = re.compile(r"(\d+)")


def natural_key(item_id: str) -> tuple[str, str]:
    """Sort key putting ``book-2`` before ``book-10`` (case-insensitive first)."""
    # One regex pass with zero-padded digit runs: sorting 100,000 ids stays cheap.
    return _DIGITS.sub(_pad_digits, item_id.lower()), item_id


def _pad_digits(match: re.Match[str]) -> str:
    return match.group().rjust(24, "0")


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` has glob characters (``*``, ``?``, ``[``)."""
    return any(char in _GLOB_CHARS for char in pattern)


def has_failed_phase(store: StateStore, item_id: str) -> bool:
    """True when the item's saved state has a failed phase (or cannot be read:
    the run then reports the file)."""
    try:
        document = store.load(item_id)
    except StateFileError:
        return True
    if document is None:
        return False
    phases = document.get("phases")
    return isinstance(phases, dict) and any(isinstance(p, dict) and p.get("status") == FAILED for p in phases.values())


def select_item_ids(store: StateStore, patterns: Iterable[str], known: Iterable[str] | None = None) -> list[str]:
    """Ids matching ``patterns`` (literal ids or globs, a pattern always matching
    the id spelled the same), naturally sorted.

    A literal id without saved state, or a glob matching nothing, is a usage
    error. A literal id whose state file is corrupt is returned (the caller
    decides what to do with it). ``known`` saves listing the store again.
    """
    patterns = list(patterns)
    chosen: set[str] = set()
    globs = [p for p in patterns if is_glob(p)]
    if globs:
        ids = list(known) if known is not None else list(store.item_ids())
        present = set(ids)
        for pattern in globs:
            # An id may itself contain glob characters ("book[1]"): it always matches itself.
            matched = fnmatch.filter(ids, pattern) + ([pattern] if pattern in present else [])
            if not matched:
                raise UsageError(f"no saved item matches {pattern!r}")
            chosen.update(matched)
    for item_id in patterns:
        if is_glob(item_id):
            continue
        try:
            exists = store.load(item_id) is not None
        except StateFileError:
            exists = True
        if not exists:
            raise UsageError(f"unknown item {item_id!r}: no saved state in {store.location}")
        chosen.add(item_id)
    return sorted(chosen, key=natural_key)


def resolve_phase(pipeline: Pipeline, text: str | int) -> PhaseDefinition:
    """The phase given by num or name; a usage error listing the phases otherwise."""
    for definition in pipeline.phases:
        if str(definition.num) == str(text).strip() or definition.name == text:
            return definition
    listing = ", ".join(f"{p.num} {p.name}" for p in pipeline.phases)
    raise UsageError(f"unknown phase {text!r} in {pipeline.name} (phases: {listing})")


def chosen_item_ids(store: StateStore, patterns: Iterable[str], unreadable: list[StateFileError]) -> list[str]:
    """The ids ``patterns`` select (``select_item_ids``), or with none every item of
    the store, naturally sorted. Read through ``load_all``, not ``item_ids``: a file
    too broken to name its item is added to ``unreadable``, for the caller to report."""
    patterns = list(patterns)
    if patterns:
        return select_item_ids(store, patterns)
    return sorted((item_id for item_id, _ in store.load_all(unreadable)), key=natural_key)


def select_among(
    patterns: Iterable[str], specs: list[tuple[str, dict[str, Any]]], store: StateStore
) -> list[tuple[str, dict[str, Any]]]:
    """The ``specs`` (the items a run's sources select) whose ids ``patterns``
    match, literal ids or globs, in their order. A literal id they lack is
    taken from the saved state as ``select_item_ids`` takes it (a usage error
    without state); a glob matching none of them is a usage error."""
    ids = [item_id for item_id, _ in specs]
    present = set(ids)
    chosen: set[str] = set()
    saved: list[str] = []
    for pattern in patterns:
        if pattern in present:
            chosen.add(pattern)
        elif is_glob(pattern):
            matched = fnmatch.filter(ids, pattern)
            if not matched:
                raise UsageError(f"no selected item matches {pattern!r}")
            chosen.update(matched)
        else:
            saved += select_item_ids(store, [pattern])
    return [spec for spec in specs if spec[0] in chosen] + [(item_id, {}) for item_id in dict.fromkeys(saved)]
