"""``--max-cost``, the cost forecast and ``@phase(max_cost=)``, through `pipekit run`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipekit.engine.budget import make_forecast
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.testing import PipeTester


PAID = '''
    import json
    from pipekit import phase

    def log(item_id, name):
        with open("executions.log", "a") as f:
            f.write(json.dumps([item_id, name]) + "\\n")

    @phase(1)
    def research(item_id, ctx):
        log(item_id, "research")
        ctx.record_cost(cost_usd=1.0)
        return "notes"

    @phase(2)
    async def write(item_id, ctx):
        log(item_id, "write")
        ctx.record_cost(cost_usd=2.0)
        return "text"
'''


def executions(tester: PipeTester) -> list[list[str]]:
    log = tester.path / "executions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_cap_stops_new_phases_and_a_higher_cap_continues(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PAID)
    pipetester.make_items("a", "b", "c")
    stopped = pipetester.run("pipeline.py", "--items", "items.txt", "--max-cost", "4")
    assert stopped.ret == 1, stopped
    # a: 1 + 2, b: research reaches 4; b's write and item c never start.
    # Left: b's write (mean 2) and c's research and write (means 1 and 2).
    assert executions(pipetester) == [["a", "research"], ["a", "write"], ["b", "research"]]
    assert stopped.state("b").status == "stopped"
    assert stopped.state("b").phases[2].status == "pending"
    assert not (stopped.state_dir / "c.json").exists()
    reached = [p for name, p in stopped.events if name == "budget_reached"]
    assert reached == [{"spent_usd": 4.0, "cap_usd": 4.0}]
    names = stopped.event_names()
    assert names.index("budget_reached") > names.index("phase_complete")
    stopped.fnmatch_lines(
        [
            "pipekit: budget: $0.00 spent of --max-cost $4.00, $4.00 left",
            "pipekit: budget reached: $4.00 spent of --max-cost $4.00; no new phase starts, phases in flight finish",
            "pipekit: stopped by --max-cost: $4.00 spent of $4.00 ($0.00 left); ~$5.00 to finish 2 items *"
            "To continue, run the same command with a higher cap, e.g. --max-cost 9",
            "items: 3 selected: 1 completed, 0 failed, 2 remaining, 1 stopped by --max-cost",
            "budget: --max-cost $4.00 reached ($4.00 spent)",
        ]
    )

    again = pipetester.run("pipeline.py", "--items", "items.txt", "--max-cost", "4")
    assert again.ret == 1, again
    assert len(executions(pipetester)) == 3
    assert again.calls("pipekit_budget_reached")[0]["spent"] == 4.0

    finished = pipetester.run("pipeline.py", "--items", "items.txt", "--max-cost", "10")
    assert finished.ret == 0, finished
    assert executions(pipetester)[3:] == [["b", "write"], ["c", "research"], ["c", "write"]]
    finished.fnmatch_lines(
        [
            "pipekit: forecast: ~$5.00 to finish 2 items (mean cost per phase of 3 completed executions)",
            "pipekit: budget: $4.00 spent of --max-cost $10.00, $6.00 left",
        ]
    )
    assert not finished.calls("pipekit_budget_reached")


@pytest.mark.slow
def test_phases_in_flight_finish_when_the_cap_is_reached(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        PAID.replace('log(item_id, "research")', 'log(item_id, "research"); __import__("time").sleep(0.3)')
    )
    pipetester.make_items("a", "b", "c", "d")
    result = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-j", "2", "--max-cost", "1")
    assert result.ret == 1, result
    # a and b start research together; the first to finish reaches the cap, the other still finishes.
    assert sorted(executions(pipetester)) == [["a", "research"], ["b", "research"]]
    assert [result.state(i).phases[1].status for i in "ab"] == ["completed", "completed"]
    assert [result.state(i).status for i in "ab"] == ["stopped", "stopped"]
    assert result.events[-1][1]["cost_usd"] == 2.0
    assert "budget_reached" in result.event_names()


def test_no_forecast_without_history_and_a_bad_cap_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PAID)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert "pipekit: forecast" not in result.stderr
    assert pipetester.run("pipeline.py", "--item", "a", "--max-cost", "-1").ret == 4
    assert pipetester.run("pipeline.py", "--item", "a", "--max-cost", "lots").ret == 4


def test_phase_max_cost_fails_the_execution_that_goes_over(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1, max_cost=0.5, retries=3, retry_backoff=0.01)
        def runaway(ctx):
            for call in range(10):
                ctx.record_cost(tokens_in=100, cost_usd=0.2)
            return "never"
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    assert phase.status == "failed"
    assert phase.reason == "max_cost"
    assert phase.error == "phase 'runaway' recorded $0.6000 in this execution, over its max_cost $0.5"
    assert phase.attempts == 1  # not retried
    assert abs(phase.cost_usd - 0.6) < 1e-9  # what was spent counts


def test_the_forecast_uses_the_mean_cost_of_completed_executions(tmp_path: Any) -> None:
    store = JsonDirStore(tmp_path)
    phases = [PhaseDefinition(1, "one", print), PhaseDefinition(2, "two", print), PhaseDefinition(3, "three", print)]
    for item_id, cost in (("a", 1.0), ("b", 3.0)):
        manager = PipelineStateManager(item_id, store)
        manager.create_state({}, phases)
        manager.start_phase(1)
        manager.complete_phase(1, "", cost_usd=cost)
    manager.start_phase(2)
    manager.complete_phase(2, "", cost_usd=5.0)
    forecast = make_forecast(store, ["a", "b", "new"], phases)
    assert forecast.spent_usd == 9.0
    assert forecast.items_left == 3
    # one: the new item at mean 2; two: a and the new item at 5 each; three: no history.
    assert forecast.cost_usd == 12.0
    assert forecast.unknown_phases == ["three"]
    assert forecast.describe() == (
        "~$12.00 to finish 3 items (mean cost per phase of 3 completed executions; no history yet for 'three')"
    )
    forced = make_forecast(store, ["a", "b"], phases, rerun=lambda p: True)
    assert forced.cost_usd == 2 * 2.0 + 2 * 5.0


RETRY_UNDER_CAP = '''
    import os, time
    from pathlib import Path
    from pipekit import Retry, phase

    @phase(1)
    def call(item_id, ctx):
        if item_id == "paid":
            time.sleep(float(os.environ.get("PAID_AFTER", "0")))
            ctx.record_cost(cost_usd=1.0)
            return "paid"
        time.sleep(float(os.environ.get("RETRY_AFTER", "0")))
        tries = Path("limited.tries")
        tries.write_text(str(int(tries.read_text() if tries.exists() else "0") + 1))
        if tries.read_text() == "1":
            raise Retry(after=2.0, message="rate limited")
        return "limited"
'''


@pytest.mark.parametrize(
    "timing",
    [{"PAID_AFTER": "0.3"}, {"RETRY_AFTER": "0.3"}],
    ids=["cap-reached-during-the-wait", "cap-reached-before-the-retry"],
)
def test_a_retry_waiting_when_the_cap_stops_the_run_is_left_pending(
    pipetester: PipeTester, timing: dict[str, str]
) -> None:
    pipetester.make_pipeline(RETRY_UNDER_CAP)
    pipetester.make_items("paid", "limited")
    stopped = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.txt", "-j", "2", "--max-cost", "1", env=timing
    )
    assert stopped.ret == 1, stopped
    # Work not started is not a failure: the phase is pending, the summary counts no failure.
    assert "items: 2 selected: 1 completed, 0 failed, 1 remaining" in stopped.stderr, stopped.stderr
    assert stopped.state("limited").phases[1].status == "pending"
    status = pipetester.run("status", "pipeline.py")
    assert "total: 2 items: 1 completed, 0 failed, 0 in progress, 1 pending" in status.stdout, status.stdout
    resumed = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "--max-cost", "5")
    assert resumed.ret == 0, resumed
    assert resumed.state("limited").phases[1].status == "completed"
    assert resumed.state("limited").phase_outputs[1] == "limited"
    assert (pipetester.path / "limited.tries").read_text() == "2"  # the Retry's attempt, then one more
