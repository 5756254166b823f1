"""What each attempt of a phase spent, read from the item's state.

The state keeps running sums per phase (across attempts and runs); the
observers that report one attempt or one execution take differences from a
mark set when the phase started. Not a plugin (its name starts with ``_``).
"""

from __future__ import annotations

from pipekit.engine.control import Item
from pipekit.pipeline.phases import PhaseDefinition


Usage = tuple[int, int, float]


#: What an attempt that recorded nothing spent (most phases record no usage).
NOTHING: Usage = (0, 0, 0.0)


class AttemptUsage:
    """Marks of ``(tokens_in, tokens_out, cost_usd)`` by ``(item id, phase num)``.

    Called on every phase start and end, so each call is a dict operation and
    no more.
    """

    def __init__(self) -> None:
        self._marks: dict[tuple[str, int], Usage] = {}

    def mark(self, item: Item, phase: PhaseDefinition) -> None:
        """Remember the phase's sums (call on ``pipekit_phase_start``)."""
        num = phase.num
        state = item.state.phases[num]
        self._marks[item.id, num] = (state.tokens_in, state.tokens_out, state.cost_usd)

    def is_marked(self, item: Item, phase: PhaseDefinition) -> bool:
        """True if the phase started (a failed cache check fails it unstarted)."""
        return (item.id, phase.num) in self._marks

    def take(self, item: Item, phase: PhaseDefinition, *, last: bool = True) -> Usage:
        """Usage since the mark (nothing if unmarked); move the mark, or drop it when ``last``."""
        num = phase.num
        state = item.state.phases[num]
        now = (state.tokens_in, state.tokens_out, state.cost_usd)
        key = (item.id, num)
        before = self._marks.pop(key, now)
        if not last:
            self._marks[key] = now
        if before == now:
            return NOTHING
        return now[0] - before[0], now[1] - before[1], now[2] - before[2]
