"""Checkpoints inside a phase: ``ctx.checkpoint(key, fn, *args)``.

A summarise phase killed at chapter 30 of 40 must not pay for chapters 1-30
again. Each checkpoint runs ``fn`` once per (item, phase, key), stores its
JSON result through the state store before returning it, and returns the
stored result on every later attempt without calling ``fn``. The store keeps
checkpoints beside the item's state, never inside it, so saving one costs the
same however many exist. A phase's checkpoints are dropped when it completes
or is reset (``--force``, ``--from-phase``, ``pipekit reset``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
import inspect
import json
import threading
from typing import Any

from pipekit.state.store import StateStore


class CheckpointError(TypeError):
    """A checkpoint's result cannot be stored (it is not JSON-serialisable)."""


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
        self._values: dict[str, Any] | None = None
        # Sync handlers run in threads and may checkpoint from several of them.
        self._lock = threading.Lock()
        #: Keys whose ``fn`` ran in this attempt (the others came from the store).
        self.computed: list[str] = []

    def _loaded(self) -> dict[str, Any]:
        if self._values is None:
            self._values = dict(self.store.load_checkpoints(self.item_id, self.phase_name))
        return self._values

    def lookup(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when ``key`` is stored, else ``(False, None)``."""
        _check_key(key)
        with self._lock:
            values = self._loaded()
            return (True, values[key]) if key in values else (False, None)

    def store_result(self, key: str, value: Any) -> Any:
        """Store ``value`` durably under ``key``; returns it as it will be read back."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {key!r} of phase {self.phase_name!r}: the result is not JSON-serialisable "
                f"({type(value).__name__}: {exc}); return str, numbers, bools, None, lists or dicts"
            ) from None
        stored = json.loads(text)
        with self._lock:
            self.store.save_checkpoint(self.item_id, self.phase_name, key, stored)
            self._loaded()[key] = stored
            self.computed.append(key)
        return stored

    def checkpoint(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """What ``ctx.checkpoint`` does: an awaitable for a coroutine function, else the value."""
        if inspect.iscoroutinefunction(fn):
            return self._checkpoint_async(key, fn, *args)
        found, value = self.lookup(key)
        if found:
            return value
        return self.store_result(key, fn(*args))

    async def _checkpoint_async(self, key: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # The store's reads and durable writes run in a thread: on the event
        # loop each one would stop every other item for the length of an fsync.
        found, value = await asyncio.to_thread(self.lookup, key)
        if found:
            return value
        return await asyncio.to_thread(self.store_result, key, await fn(*args))


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"a checkpoint key is a non-empty str, not {key!r}")
