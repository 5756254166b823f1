"""The live display: a rich view of the items in flight, redrawn a few times a second."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from pipekit.display.batches import live_line
from pipekit.display.format import clock
from pipekit.display.format import money
from pipekit.display.format import running
from pipekit.display.format import tokens
from pipekit.display.tracking import BaseProgress
from pipekit.display.tracking import Clock


if TYPE_CHECKING:
    from rich.console import Console
    from rich.console import RenderableType
    from rich.live import Live


#: Provider batches listed by the live display before "... and N more".
BATCH_LINES = 8


class ProgressTracker(BaseProgress):
    """A live rich display on a terminal, redrawn a few times a second.

    Shows a bar of items done in ``item_noun``, phases done, elapsed time, ETA,
    tokens, cost (this run and earlier runs), failures in red, and one line
    per item in flight with its phase and how long it has been running, and one
    per provider batch outstanding with its status, counts, age and next poll.

    :param console: a ``rich.console.Console`` (stderr when None).
    :param clock: seconds, monotonic (injectable for tests).
    :param refresh_per_second: redraws per second.
    """

    def __init__(
        self,
        total_items: int,
        total_phases: int,
        item_noun: str = "items",
        show_cost: bool = True,
        *,
        console: Console | None = None,
        clock: Clock = time.monotonic,
        title: str = "",
        refresh_per_second: float = 4.0,
    ) -> None:
        super().__init__(total_items, total_phases, item_noun, show_cost, clock=clock, title=title)
        if console is None:
            from rich.console import Console

            console = Console(file=sys.stderr)
        self.console = console
        self.refresh_per_second = refresh_per_second
        self._live: Live | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the clock and the live display (it redraws on its own thread)."""
        super().start()
        from rich.live import Live

        self._live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=self.refresh_per_second,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()

    def stop(self) -> None:
        """Draw the last frame and leave it on the screen."""
        live, self._live = self._live, None
        self._stopped = True  # the last frame shows no ETA for work this run will not do
        if live is not None:
            live.stop()

    def render(self) -> RenderableType:
        """The display as it is now (what each refresh draws)."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        s = self.state
        done = s.completed_items + s.failed_items
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True)
        counts = Text(f"{done:,}/{s.total_items:,} {s.item_noun}")
        if s.failed_items:
            counts.append(f"  {s.failed_items} failed", style="bold red")
        head.add_row(
            Text(self.title or "pipekit", style="bold"),
            ProgressBar(total=max(1, s.total_items), completed=done),
            counts,
        )
        facts = Text(
            f"phases {s.executed_phases + s.skipped_phases:,}/{s.total_work:,}"
            f"  elapsed {clock(self.elapsed)}"
            f"  ETA {clock(None if self._stopped and s.phases_left else self.eta)}"
        )
        if s.failed_phases:
            facts.append(f"  failed phases {s.failed_phases}", style="red")
        lines: list[RenderableType] = [head, facts]
        if self.show_cost:
            usage = f"tokens {tokens(s.total_tokens_in)} in / {tokens(s.total_tokens_out)} out"
            usage += f"  cost {money(s.total_cost_usd)}"
            if s.earlier_cost_usd:
                usage += f"  (+{money(s.earlier_cost_usd)} in earlier runs)"
            lines.append(Text(usage))
        lines.extend(self._in_flight_lines())
        lines.extend(self._batch_lines())
        return Group(*lines)

    def _in_flight_lines(self) -> list[RenderableType]:
        from rich.table import Table
        from rich.text import Text

        items = list(self.in_flight.values())
        if not items:
            return []
        room = max(1, self.console.height - 5)
        shown = items if len(items) <= room else items[: room - 1]
        now = self.clock()
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=max(10, self.console.width // 3))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, justify="right")
        for item in shown:
            phase = f"phase {item.phase}/{self.state.total_phases} {item.phase_name}" if item.phase else "starting"
            took = running(now - item.phase_started) if item.phase_started is not None else ""
            if item.progress:
                phase += f"  {item.progress}"
            table.add_row(Text(f"  {item.label}", style="cyan"), phase, took)
        lines: list[RenderableType] = [table]
        if len(shown) < len(items):
            lines.append(Text(f"  ... and {len(items) - len(shown)} more in flight", style="dim"))
        return lines

    def _batch_lines(self) -> list[RenderableType]:
        """One line per provider batch outstanding: provider, id, status, counts, age, next poll."""
        from rich.text import Text

        batches = list(self.batches.values())  # (a copy: events change it on another thread)
        shown = batches[:BATCH_LINES] if len(batches) > BATCH_LINES + 1 else batches
        now = self.clock()
        lines: list[RenderableType] = []
        for view in shown:
            text, poll = live_line(view, now)
            line = Text(f"  {text}", style="magenta", no_wrap=True, overflow="ellipsis")
            if poll:
                line.append(f"  {poll}", style="dim")
            lines.append(line)
        if len(shown) < len(batches):
            lines.append(Text(f"  ... and {len(batches) - len(shown)} more batches", style="dim"))
        return lines
