"""Checkpoints inside a phase: ``ctx.checkpoint(key, fn, *args)``.

A summarise phase killed at chapter 30 of 40 must not pay for chapters 1-30
again. Each checkpoint runs ``fn`` once per (item, phase, key), stores its
JSON result through the state store before returning it, and returns the
stored result on every later attempt without calling ``fn``. The store keeps
checkpoints beside the item's state, never inside it, so saving one costs the
same however many exist. A phase's checkpoints are dropped when it completes
or is reset (``--force``, ``--from-phase``, ``pipekit reset``).

The usage ``fn`` records (``ctx.record_cost``, ``ctx.record_usage``) is stored
with its result, in the same write, and counts exactly once in the phase's
totals. A checkpoint says which attempt's usage includes it (``counted_by``):
that attempt's end writes the usage into the item's state. An attempt that
dies (kill -9, a lost worker) writes nothing, so its checkpoints are released
(``counted_by`` set to None) before the phase runs again, and the attempt that
reuses a released checkpoint adds its usage and claims it, in one write,
before it goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from dataclasses import field
import inspect
import json
import threading
from typing import Any

from pipekit.state import subitems
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore


#: Marks a stored checkpoint that carries usage; a result without usage is stored as it is.
ENVELOPE = "pipekit.checkpoint"


class CheckpointError(TypeError):
    """A checkpoint's result cannot be stored (it is not JSON-serialisable)."""


@dataclass
class Tab:
    """Usage recorded while one checkpoint's ``fn`` runs (or stored with its result)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    #: ``record_usage`` calls left for the driver to price: ``(model, tokens_in, tokens_out)``.
    unpriced: list[tuple[str, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost_usd or self.unpriced)


#: The tabs of the checkpoints whose ``fn`` runs in this thread or task, outermost first.
_open_tabs: ContextVar[tuple[Tab, ...]] = ContextVar("pipekit_checkpoint_tabs", default=())


def charge(tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0, unpriced: Any = ()) -> None:
    """Add usage to every checkpoint whose ``fn`` is running here (``ctx`` calls this)."""
    for tab in _open_tabs.get():
        tab.tokens_in += tokens_in
        tab.tokens_out += tokens_out
        tab.cost_usd += cost_usd
        tab.unpriced.extend(unpriced)


@dataclass
class Entry:
    """A stored checkpoint, decoded."""

    value: Any
    usage: Tab | None = None
    #: The attempt whose usage includes ``usage``; None when no saved state includes it.
    counted_by: int | None = None

    def encoded(self) -> Any:
        """What the store keeps: the bare value when there is no usage to keep."""
        if self.usage is None and not (isinstance(self.value, dict) and ENVELOPE in self.value):
            return self.value
        usage = self.usage or Tab()
        return {
            ENVELOPE: 1,
            "value": self.value,
            "tokens_in": usage.tokens_in,
            "tokens_out": usage.tokens_out,
            "cost_usd": usage.cost_usd,
            "unpriced": [list(call) for call in usage.unpriced],
            "counted_by": self.counted_by,
        }

    @classmethod
    def decoded(cls, stored: Any) -> Entry:
        """The entry for what the store returned (a bare value, or one written before usage was kept)."""
        if not (isinstance(stored, dict) and stored.get(ENVELOPE) == 1 and "value" in stored):
            return cls(stored)
        usage = Tab(
            int(stored.get("tokens_in") or 0),
            int(stored.get("tokens_out") or 0),
            float(stored.get("cost_usd") or 0.0),
            [(str(m), int(i), int(o)) for m, i, o in stored.get("unpriced") or ()],
        )
        counted_by = stored.get("counted_by")
        return cls(stored["value"], usage if usage else None, counted_by if isinstance(counted_by, int) else None)


#: ``adopt(usage)``: add a reused checkpoint's usage to the attempt running now.
Adopt = Callable[[Tab], None]


class Checkpoints:
    """The checkpoints of one (item, phase), loaded from the store on first use.

    :param store: where they are kept.
    :param item_id: the item.
    :param phase_name: the phase (by name, so renumbering phases keeps them).
    """

    def __init__(self, store: StateStore, item_id: str, phase_name: str) -> None:
        self.store = store
        self.item_id = item_id
        self.phase_name = phase_name
        self._values: dict[str, Entry] | None = None
        # Sync handlers run in threads and may checkpoint from several of them.
        self._lock = threading.Lock()
        #: Keys whose ``fn`` ran in this attempt (the others came from the store).
        self.computed: list[str] = []

    def _loaded(self) -> dict[str, Entry]:
        if self._values is None:
            stored = self.store.load_checkpoints(self.item_id, self.phase_name)
            self._values = {key: Entry.decoded(value) for key, value in stored.items()}
        return self._values

    def lookup(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when ``key`` is stored, else ``(False, None)``."""
        found, value, _ = self.reuse(key, 0)
        return found, value

    def reuse(self, key: str, attempt: int) -> tuple[bool, Any, Tab | None]:
        """``(True, value, usage)`` when ``key`` is stored, else ``(False, None, None)``.

        ``usage`` is the stored usage that no saved state counts yet, now claimed
        by ``attempt`` (written before it is returned); None when there is none
        or when ``attempt`` is 0 (a look that claims nothing).
        """
        _check_key(key)
        with self._lock:
            entry = self._loaded().get(key)
            if entry is None:
                return False, None, None
            if entry.usage is None or entry.counted_by is not None or attempt <= 0:
                return True, entry.value, None
            claimed = Entry(entry.value, entry.usage, attempt)
            self.store.save_checkpoint(self.item_id, self.phase_name, key, claimed.encoded())
            self._loaded()[key] = claimed
            return True, entry.value, entry.usage

    def store_result(self, key: str, value: Any, usage: Tab | None = None, attempt: int = 0) -> Any:
        """Store ``value`` durably under ``key``, with the ``usage`` that computing it
        recorded in ``attempt``; returns the value as it will be read back."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {key!r} of phase {self.phase_name!r}: the result is not JSON-serialisable "
                f"({type(value).__name__}: {exc}); return str, numbers, bools, None, lists or dicts"
            ) from None
        entry = Entry(json.loads(text), usage or None, attempt if usage else None)
        with self._lock:
            self.store.save_checkpoint(self.item_id, self.phase_name, key, entry.encoded())
            self._loaded()[key] = entry
            self.computed.append(key)
        return entry.value

    def checkpoint(
        self, key: str, fn: Callable[..., Any], *args: Any, attempt: int = 0, adopt: Adopt | None = None
    ) -> Any:
        """What ``ctx.checkpoint`` does: an awaitable for a coroutine function, else the value.

        :param attempt: the attempt running (its usage will include what ``fn`` records).
        :param adopt: adds a reused checkpoint's usage that no saved state counts yet.
        """
        if inspect.iscoroutinefunction(fn):
            return self._checkpoint_async(key, fn, args, attempt, adopt)
        found, value, usage = self.reuse(key, attempt)
        if found:
            if usage is not None and adopt is not None:
                adopt(usage)
            return value
        tab = Tab()
        opened = _open_tabs.set((*_open_tabs.get(), tab))
        try:
            value = fn(*args)
        finally:
            _open_tabs.reset(opened)
        return self.store_result(key, value, tab, attempt)

    async def _checkpoint_async(
        self, key: str, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], attempt: int, adopt: Adopt | None
    ) -> Any:
        # The store's reads and durable writes run in a thread: on the event
        # loop each one would stop every other item for the length of an fsync.
        found, value, usage = await asyncio.to_thread(self.reuse, key, attempt)
        if found:
            if usage is not None and adopt is not None:
                adopt(usage)
            return value
        tab = Tab()
        opened = _open_tabs.set((*_open_tabs.get(), tab))
        try:
            value = await fn(*args)
        finally:
            _open_tabs.reset(opened)
        return await asyncio.to_thread(self.store_result, key, value, tab, attempt)


def release_attempt(store: StateStore, item_id: str, phase_name: str, attempt: int) -> None:
    """``attempt`` died before its usage reached the saved state: the usage of the
    checkpoints it computed or claimed is counted by no one yet. Mark them so;
    the next attempt that reuses one adds its usage."""
    for key, stored in store.load_checkpoints(item_id, phase_name).items():
        entry = Entry.decoded(stored)
        if entry.usage is not None and entry.counted_by == attempt:
            store.save_checkpoint(item_id, phase_name, key, Entry(entry.value, entry.usage).encoded())
    subitems.release(store, item_id, phase_name, attempt)  # ctx.map's sub-items count usage alike


def release_dead_attempts(store: StateStore, state: PipelineState) -> None:
    """Release the checkpoints of every phase found ``in_progress`` when an item's
    state is taken up to run: the process that ran it died (``release_attempt``).

    Done before the phase starts again, so a kill in between finds it
    ``in_progress`` still and does it again (it can be done twice)."""
    for phase in state.phases.values():
        if phase.status == IN_PROGRESS and phase.attempts:
            release_attempt(store, state.item_id, phase.name, phase.attempts)


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"a checkpoint key is a non-empty str, not {key!r}")
