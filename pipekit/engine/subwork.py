"""What a phase's ``ctx`` is given for ``ctx.progress`` and ``ctx.map``: the hook to
tell observers of progress (on the event loop's thread, whatever thread the
handler reports from) and the code hash ``ctx.map`` keys its results by."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import threading
from typing import Any

from pipekit.notify import HookNotifier
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.stale.fingerprint import code_identity


def code_hash(fn: Callable[..., Any]) -> str | None:
    """``fn``'s code hash, as phase fingerprints count code (``pipekit.stale.fingerprint``)."""
    return code_identity(fn).hash


def context_options(notify: HookNotifier, item: Any, phase: PhaseDefinition) -> dict[str, Any]:
    """The ``PhaseContext`` keywords for progress and sub-items of ``phase`` of ``item``."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    loop_thread = threading.get_ident()

    def on_loop(hook: Callable[..., None], *args: Any) -> None:
        if loop is None or threading.get_ident() == loop_thread:
            hook(item, phase, *args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(hook, item, phase, *args)

    def on_progress(done: int, total: int | None, label: str | None) -> None:
        on_loop(notify.phase_progress, done, total, label)

    def on_subitem(label: str, key: str, status: str, error: str | None) -> None:
        on_loop(notify.subitem_finish, label, key, status, error)

    return {"on_progress": on_progress, "on_subitem": on_subitem, "code_hash": code_hash}
