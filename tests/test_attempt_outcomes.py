"""Each attempt of a phase is reported once, with its own usage, to the state and to every observer."""

from __future__ import annotations

from typing import Any

import pipekit
from pipekit.testing import PipeTester


PIPELINE = """
    from pipekit import phase

    @phase(1, retries=2, retry_backoff=0)
    def flaky(ctx):
        ctx.record_cost(tokens_in=10 * ctx.attempt, cost_usd=0.25 * ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return "ok"

    @phase(2, retries=1, retry_backoff=0, critical=False)
    def broken(ctx):
        ctx.record_cost(tokens_out=7, cost_usd=1.0)
        raise ValueError("never works")
"""


class Outcomes:
    """Records the ``result`` of every attempt's hook."""

    name = "outcomes"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    @pipekit.hookimpl
    def pipekit_phase_complete(self, phase: Any, result: Any) -> None:
        self.seen.append(("complete", phase.name, result))

    @pipekit.hookimpl
    def pipekit_phase_retry(self, phase: Any, error: BaseException, attempt: int, result: Any) -> None:
        assert result.error is error and result.attempt == attempt
        self.seen.append(("retry", phase.name, result))

    @pipekit.hookimpl
    def pipekit_phase_fail(self, phase: Any, error: BaseException, result: Any) -> None:
        assert result.error is error
        self.seen.append(("fail", phase.name, result))


def test_every_attempt_reports_its_own_usage_once(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    outcomes = Outcomes()

    result = pipetester.run("pipeline.py", "--item", "a", plugins=[outcomes])

    assert result.ret == 0
    seen = [(kind, name, r.attempt, r.tokens_in, r.tokens_out, r.cost_usd) for kind, name, r in outcomes.seen]
    assert seen == [
        ("retry", "flaky", 1, 10, 0, 0.25),
        ("retry", "flaky", 2, 20, 0, 0.5),
        ("complete", "flaky", 3, 30, 0, 0.75),
        ("retry", "broken", 1, 0, 7, 1.0),
        ("fail", "broken", 2, 0, 7, 1.0),
    ]
    fail = outcomes.seen[-1][2]
    assert (fail.reason, fail.message) == ("error", "ValueError: never works")
    state = result.state("a")
    assert state.phases[1].cost_usd == 1.5 and state.phases[2].cost_usd == 2.0
    assert state.phases[2].error == fail.message
    assert state.phases[2].duration_seconds == round(fail.duration_seconds, 6)


def test_jsonl_and_summary_add_up_to_what_the_state_recorded(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)

    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "-p", "no:progress")

    assert result.ret == 0, result.stderr
    attempts = [
        (event, fields["phase"], fields["attempt"], fields["tokens_in"], fields["tokens_out"], fields["cost_usd"])
        for event, fields in result.events
        if event in ("phase_complete", "phase_retry", "phase_fail")
    ]
    assert attempts == [
        ("phase_retry", 1, 1, 10, 0, 0.25),
        ("phase_retry", 1, 2, 20, 0, 0.5),
        ("phase_complete", 1, 3, 30, 0, 0.75),
        ("phase_retry", 2, 1, 0, 7, 1.0),
        ("phase_fail", 2, 2, 0, 7, 1.0),
    ]
    fail = dict(result.events)["phase_fail"]
    assert (fail["error"], fail["reason"], fail["critical"]) == ("ValueError: never works", "error", False)
    assert fail["duration_seconds"] == result.state("a").phases[2].duration_seconds
    result.fnmatch_lines(["1 flaky * 1 * 1 * 0 * 0 *  60 * 0  $1.50", "2 broken * 1 * 0 * 1 * 0 * 0 * 14  $2.00"])
