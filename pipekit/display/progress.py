"""Progress display (the seed's Pattern 2): a live rich view on a terminal, plain lines elsewhere.

``create_progress_tracker`` picks the implementation::

    tracker = create_progress_tracker(total_items=10, total_phases=5, item_noun="books")
    tracker.start()
    for i, item in enumerate(items, 1):
        tracker.start_item(i, item.label)
        for phase_num, phase in enumerate(phases, 1):
            tracker.start_phase(phase_num, phase.name)
            result = execute(phase, item)
            tracker.complete_phase(tokens_in=result.tokens_in, cost_usd=result.cost)
        tracker.complete_item()
    tracker.stop()

Several items may be in flight at once: pass ``key=`` (any hashable, e.g.
the item id) to the item and phase methods; without it they act on the item
started last. Both classes only update counters on an event; the rich one
redraws on its own timer, so a run with many items and workers stays cheap.
``rich`` is imported only when the rich display is used.
"""

from __future__ import annotations

import sys
from typing import IO
from typing import Any

from pipekit.display.live import ProgressTracker
from pipekit.display.simple import SimpleProgress
from pipekit.display.tracking import ProgressState


__all__ = ["ProgressState", "ProgressTracker", "SimpleProgress", "create_progress_tracker", "is_rich_supported"]


def is_rich_supported(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (stderr by default) is a terminal that rich can drive."""
    stream = stream if stream is not None else sys.stderr
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    from rich.console import Console

    console = Console(file=stream)
    return console.is_terminal and not console.is_dumb_terminal


def create_progress_tracker(
    total_items: int,
    total_phases: int,
    item_noun: str = "items",
    show_cost: bool = True,
    force_simple: bool = False,
    **options: Any,
) -> ProgressTracker | SimpleProgress:
    """The rich ``ProgressTracker`` when stderr is a terminal rich supports, else ``SimpleProgress``.

    :param options: passed to the chosen class (``clock``, ``title``, and
        ``console`` or ``stream``/``verbose``/``heartbeat_seconds``); those the
        chosen class does not take are ignored.
    """
    if force_simple or not is_rich_supported():
        simple = {k: v for k, v in options.items() if k in ("clock", "title", "stream", "verbose", "heartbeat_seconds")}
        return SimpleProgress(total_items, total_phases, item_noun, show_cost, **simple)
    rich = {k: v for k, v in options.items() if k in ("clock", "title", "console", "refresh_per_second")}
    return ProgressTracker(total_items, total_phases, item_noun, show_cost, **rich)
