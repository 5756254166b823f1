"""Spending: the cost forecast at the start of a run and the ``--max-cost`` cap.

The cap is on what the selected items have recorded, this run and earlier
ones (what ``pipekit status`` shows), so running the same command again does
not spend the cap a second time: it stops at once, and the same command with
a higher cap continues where the last one stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
import math
from typing import TYPE_CHECKING
from typing import Any

from pipekit.display.format import money_cents
from pipekit.outcomes import StateFileError
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.model import COMPLETED
from pipekit.state.model import PipelineState
from pipekit.state.model import is_finished
from pipekit.state.store import StateStore


if TYPE_CHECKING:
    from pipekit.engine.control import RunControl

#: Without ``--max-cost``, runs over more items than this skip the forecast
#: (it reads every item's state once more before the run).
FORECAST_ITEM_LIMIT = 10_000


@dataclass
class Forecast:
    """What the selected items spent so far and what finishing them should cost."""

    #: Dollars the selected items have recorded, across runs.
    spent_usd: float = 0.0
    #: Estimated dollars to run every phase left (phases with history only).
    cost_usd: float = 0.0
    #: Items with a phase left to run.
    items_left: int = 0
    #: Completed phase executions the means come from.
    executions: int = 0
    #: Names of phases left to run that have no completed execution to learn from.
    unknown_phases: list[str] = field(default_factory=list)

    def describe(self, noun: str = "items") -> str:
        """``~$41.20 to finish 212 items (mean cost per phase of 88 completed executions)``."""
        text = f"~{money_cents(self.cost_usd)} to finish {self.items_left} {noun}"
        text += f" (mean cost per phase of {self.executions} completed executions"
        if self.unknown_phases:
            text += "; no history yet for " + ", ".join(repr(n) for n in self.unknown_phases)
        return text + ")"


class ForecastTally:
    """Adds up a forecast one item at a time, from its phases' statuses and costs.

    :param phases: the pipeline's phases.
    :param rerun: phases that run again whatever their state (``--force``,
        ``--from-phase``).
    """

    def __init__(
        self, phases: Sequence[PhaseDefinition], rerun: Callable[[PhaseDefinition], bool] = lambda phase: False
    ) -> None:
        self.phases = phases
        self._rerun = {phase.num for phase in phases if rerun(phase)}
        self._costs: dict[str, list[float]] = {p.name: [] for p in phases}
        self._left: dict[str, int] = dict.fromkeys(self._costs, 0)
        self._result = Forecast()

    def add(self, spent: float, phases: dict[str, tuple[Any, float]]) -> None:
        """One item: what it recorded, and ``{phase name: (status, cost)}`` of its saved phases."""
        self._result.spent_usd += spent
        unfinished = False
        for phase in self.phases:
            status, cost = phases.get(phase.name, (None, 0.0))
            if status == COMPLETED:
                self._costs[phase.name].append(cost)
            if phase.num in self._rerun or not is_finished((status,)):
                self._left[phase.name] += 1
                unfinished = True
        self._result.items_left += unfinished

    def add_unsaved(self, count: int) -> None:
        """``count`` items with no saved state: every phase is left."""
        self._result.items_left += count
        for name in self._left:
            self._left[name] += count

    def add_state(self, state: PipelineState) -> None:
        """One item's (reconciled) state."""
        self.add(state.total_cost_usd, {p.name: (p.status, p.cost_usd) for p in state.phases.values()})

    def forecast(self) -> Forecast:
        """The forecast of the items added so far."""
        result = Forecast(self._result.spent_usd, 0.0, self._result.items_left)
        for name, count in self._left.items():
            if not count:
                continue
            costs = self._costs[name]
            if costs:
                result.cost_usd += count * sum(costs) / len(costs)
            else:
                result.unknown_phases.append(name)
        result.executions = sum(len(c) for c in self._costs.values())
        return result


def make_forecast(
    store: StateStore,
    item_ids: Iterable[str],
    phases: Sequence[PhaseDefinition],
    *,
    rerun: Callable[[PhaseDefinition], bool] = lambda phase: False,
) -> Forecast:
    """Read the items' saved states: spending so far, and the mean cost of each
    phase's completed executions times the executions left.

    :param rerun: phases that run again whatever their state (``--force``,
        ``--from-phase``).
    """
    tally = ForecastTally(phases, rerun)
    for item_id in item_ids:
        try:
            document = store.load(item_id)
        except StateFileError:
            continue  # reported by the run itself
        saved = {
            name: (raw.get("status"), _number(raw.get("cost_usd"))) for name, raw in _phases_by_name(document).items()
        }
        tally.add(_number(document.get("total_cost_usd")) if document else 0.0, saved)
    return tally.forecast()


def _phases_by_name(document: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not document or not isinstance(document.get("phases"), dict):
        return {}
    return {p["name"]: p for p in document["phases"].values() if isinstance(p, dict) and "name" in p}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


class Budget:
    """The ``--max-cost`` cap of one run, watching its spending.

    :param cap: the cap in dollars.
    :param spent_before: what the selected items had recorded when the run started.
    :param on_reached: called once (soon after, on the event loop) when the cap is reached.
    """

    def __init__(self, cap: float, spent_before: float, on_reached: Callable[[float], None]) -> None:
        self.cap = cap
        self.spent_before = spent_before
        self.reached = False
        self._on_reached = on_reached
        self._run_cost = 0.0

    @property
    def spent(self) -> float:
        """Dollars recorded by the selected items, earlier runs included."""
        return self.spent_before + self._run_cost

    @property
    def left(self) -> float:
        """Dollars left under the cap (never negative)."""
        return max(0.0, self.cap - self.spent)

    def watch(self, control: RunControl) -> None:
        """``RunControl.on_usage``: stop new phases once the cap is reached."""
        self._run_cost = control.cost_usd
        if self.reached or self.spent < self.cap:
            return
        self.reached = True
        control.stop_new_phases = True
        control.stopping.set()
        # Let the observers of the phase that crossed the cap hear of it first.
        asyncio.get_running_loop().call_soon(self._on_reached, self.spent)

    def stop_message(self, forecast: Forecast | None, noun: str = "items") -> str:
        """The last words of a run the cap stopped: spent, left, how to go on."""
        text = (
            f"stopped by --max-cost: {money_cents(self.spent)} spent of {money_cents(self.cap)} "
            f"({money_cents(self.left)} left)"
        )
        if forecast is not None and forecast.items_left:
            text += f"; {forecast.describe(noun)}"
        # From what is already spent: retries and phases in flight may have gone past the cap.
        base = max(self.spent, self.cap)
        suggestion = base + max(forecast.cost_usd if forecast else 0.0, self.cap * 0.5, 0.01)
        return text + f". To continue, run the same command with a higher cap, e.g. --max-cost {_round_up(suggestion)}"


def _round_up(value: float) -> str:
    if value >= 10:
        return str(math.ceil(value))
    return f"{math.ceil(value * 100) / 100:g}"


class Spending:
    """The forecast and the budget of one run, as the runner uses them.

    :param control: the run's stop flags and counters (the cap watches them).
    :param max_cost: the ``--max-cost`` cap, or None.
    :param say: writes one line on stderr.
    :param noun: what the pipeline calls its items (``"items"``, ``"papers"``).
    :param forecast_now: reads the items' states again and forecasts what is left
        (for the last words of a run the cap stopped).
    :param on_reached: tells observers that the cap was reached: ``(spent, cap)``.
    """

    def __init__(
        self,
        control: RunControl,
        max_cost: float | None,
        say: Callable[..., None],
        *,
        noun: str,
        forecast_now: Callable[[], Forecast],
        on_reached: Callable[[float, float], None],
    ) -> None:
        self.control = control
        self.max_cost = max_cost
        self._say = say
        self._noun = noun
        self._forecast_now = forecast_now
        self._on_reached = on_reached
        self.budget: Budget | None = None
        self.forecast: Forecast | None = None

    def start(self, forecast: Forecast | None) -> None:
        """Before ``pipekit_run_start``: print the forecast, arm the cap.

        :param forecast: what the start-of-run read found (None: not made, so
            there is no cap either).
        """
        if forecast is None:
            return
        self.forecast = forecast
        if forecast.executions and forecast.items_left:
            self._say(f"forecast: {forecast.describe(self._noun)}")
        if self.max_cost is None:
            return
        budget = self.budget = Budget(self.max_cost, forecast.spent_usd, self._reached)
        line = (
            f"budget: {money_cents(budget.spent)} spent of --max-cost {money_cents(budget.cap)}, "
            f"{money_cents(budget.left)} left"
        )
        if forecast.executions and forecast.cost_usd > budget.left:
            line += " (less than the forecast: the cap will stop this run)"
        self._say(line)
        self.control.on_usage = budget.watch

    def check_at_start(self) -> None:
        """After ``pipekit_run_start``: an earlier run may already have spent the cap."""
        budget = self.budget
        if budget is None or self.forecast is None or not self.forecast.items_left:
            return
        if budget.spent >= budget.cap:
            budget.reached = True
            self.control.stop_new_phases = True
            self.control.stopping.set()
            self._reached(budget.spent)

    def _reached(self, spent: float) -> None:
        assert self.budget is not None
        self._say(
            f"budget reached: {money_cents(spent)} spent of --max-cost {money_cents(self.budget.cap)}; "
            "no new phase starts, phases in flight finish", "notice"
        )
        self._on_reached(spent, self.budget.cap)

    def finish(self) -> None:
        """At the end of the run: say what the cap stopped and how to continue."""
        if self.budget is None or not self.budget.reached or self.control.interrupted.is_set():
            return
        forecast = self._forecast_now()
        if forecast.items_left:
            self._say(self.budget.stop_message(forecast, self._noun), "notice")
