"""Graceful stop (SIGINT/SIGTERM, twice), abandoned sync handlers, retries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import signal
import time
from typing import Any

import pytest
from test_isolate import gone

from pipekit.engine.control import RunControl
from pipekit.engine.waiting import race
from pipekit.execution.base import LocalExecutor
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import PhaseTimeoutError
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.testing import PipeTester


STUCK = '''
    import asyncio, os, time
    from pathlib import Path
    import pipekit
    from pipekit import phase

    @phase(1)
    def first(item_id):
        return "first"

    @phase(2, timeout=None)
    def stuck(item_id):
        Path(f"started-{item_id}").write_text(str(os.getpid()))
        time.sleep(60)
        return "late"

    @phase(3, isolate="process", timeout=None)
    def isolated(item_id):
        Path(f"child-{item_id}").write_text(str(os.getpid()))
        time.sleep(60)
        return "late"

    @phase(4)
    def never(item_id):
        Path(f"never-{item_id}").write_text("ran")
        return "never"

    @pipekit.hookimpl
    def pipekit_phase_fail(item, phase, error):
        if os.environ.get("SLOW_HOOK"):
            Path("in-slow-hook").write_text("x")
            time.sleep(60)
'''


def wait_for(path: Path) -> None:
    """Until ``path`` has content (``write_text`` creates the file before it writes)."""
    for _ in range(600):
        if path.exists() and path.stat().st_size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def events_of(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_stuck_sync_and_isolated_phases_and_exits_2(
    pipetester: PipeTester, signum: int
) -> None:
    # item a gets stuck in a thread; item b moves past phase 2 by cache, to its isolated phase
    skip_b = "@phase(2, timeout=None, cache=lambda item_id: item_id == 'b')"
    pipetester.make_pipeline(STUCK.replace("@phase(2, timeout=None)", skip_b))
    proc = pipetester.popen("pipeline.py", "--item", "a", "--item", "b", "-j", "2")
    wait_for(pipetester.path / "started-a")
    wait_for(pipetester.path / "child-b")
    child = int((pipetester.path / "child-b").read_text())
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)  # far less than the handlers' 60 s
    assert proc.returncode == 2, err
    assert "interrupted: recording in-flight phases" in err
    events = events_of(out)
    assert events[-1]["event"] == "run_finish" and events[-1]["exit_status"] == 2
    assert sorted(e["item_id"] for e in events if e["event"] == "item_finish") == ["a", "b"]
    state_dir = pipetester.path / "state" / "pipeline"
    for item_id, num in (("a", 2), ("b", 3)):
        state = json.loads((state_dir / f"{item_id}.json").read_text())
        phase = state["phases"][str(num)]
        assert (phase["status"], phase["reason"], phase["error"]) == ("failed", "interrupted", "interrupted")
        assert state["phases"]["4"]["status"] == "pending"
    assert not list(pipetester.path.glob("never-*"))
    assert gone(child), "the isolated phase's process outlived the run"


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_even_inside_a_slow_hook(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(STUCK)
    proc = pipetester.popen("pipeline.py", "--item", "a", env={"SLOW_HOOK": "1"})
    wait_for(pipetester.path / "started-a")
    proc.send_signal(signal.SIGINT)
    wait_for(pipetester.path / "in-slow-hook")  # the loop is now blocked for 60 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "interrupted again: exiting now" in err
    state = json.loads((pipetester.path / "state" / "pipeline" / "a.json").read_text())
    assert state["phases"]["2"]["reason"] == "interrupted"  # saved before the hook ran
    assert state["phases"]["1"]["status"] == "completed"
    assert not [p for p in (pipetester.path / "state").rglob("*.tmp")]


@pytest.mark.slow
def test_a_stuck_sync_handler_is_abandoned_at_its_deadline(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import time
        from pathlib import Path
        from pipekit import phase

        @phase(1, timeout=0.5, retries=2)
        def stuck(item_id):
            time.sleep(30)
            Path("late-result").write_text("the thread went on")
            return "late"

        @phase(2, critical=False)
        def other(item_id):
            return "not reached for a"
    ''')
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", timeout=20)
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    # not retried in this run: its thread may still be running
    assert (phase.status, phase.reason, phase.attempts) == ("failed", "timeout", 1)
    assert result.state("a").phase_outputs == {}
    assert not (pipetester.path / "late-result").exists()


def test_a_late_result_of_an_abandoned_handler_is_discarded(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import time
        from pipekit import phase

        @phase(1, timeout=0.5, critical=False)
        def slow(item_id):
            time.sleep(1.0 if item_id == "a" else 0)
            return f"late for {item_id}"

        @phase(2)
        def wait_for_the_late_one(item_id):
            time.sleep(1.5 if item_id == "a" else 0)
            return "done"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    state = result.state("a")
    assert (state.phases[1].status, state.phases[1].reason) == ("failed", "timeout")
    assert 1 not in state.phase_outputs
    assert state.phases[2].status == "completed"  # finished after the late result came
    assert result.state("b").phase_outputs[1] == "late for b"
    assert result.event_names("a").count("phase_complete") == 1


# -- retries -------------------------------------------------------------------------


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts, recorded instead of slept."""
    from pipekit.engine.phaserunner import PhaseRunner

    recorded: list[float] = []

    async def no_sleep(self: PhaseRunner, seconds: float) -> bool:
        recorded.append(seconds)
        return False

    monkeypatch.setattr(PhaseRunner, "_interruptible_sleep", no_sleep)
    return recorded


def test_retry_after_waits_as_asked_and_does_not_use_up_retries(
    pipetester: PipeTester, waits: list[float]
) -> None:
    pipetester.make_pipeline('''
        from pathlib import Path
        from pipekit import phase, Retry

        @phase(1, retries=0)
        def rate_limited(item_id, ctx):
            ctx.record_cost(tokens_in=1)
            if ctx.attempt < 3:
                raise Retry(after=7.5)
            return f"ok on attempt {ctx.attempt}"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.attempts, phase.tokens_in) == ("completed", 3, 3)
    assert result.state("a").phase_outputs[1] == "ok on attempt 3"
    assert waits == [7.5, 7.5]
    assert [c["attempt"] for c in result.calls("pipekit_phase_retry")] == [1, 2]


def test_backoff_doubles_with_jitter_and_the_last_error_is_kept(
    pipetester: PipeTester, waits: list[float]
) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, retries=3, retry_backoff=2.0)
        def flaky(item_id, ctx):
            raise ConnectionError(f"refused on attempt {ctx.attempt}")
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1
    phase = result.state("a").phases[1]
    assert (phase.status, phase.attempts, phase.reason) == ("failed", 4, "error")
    assert phase.error == "ConnectionError: refused on attempt 4"
    assert "ConnectionError: refused on attempt 4" in (phase.traceback or "")
    assert len(waits) == 3
    for k, wait in enumerate(waits):
        assert 2.0 * 2**k * 0.8 <= wait <= 2.0 * 2**k * 1.2
    assert len(set(waits)) == 3
    fails = result.calls("pipekit_phase_fail")
    assert len(fails) == 1 and str(fails[0]["error"]) == "refused on attempt 4"


def test_retry_raised_in_an_isolated_phase_keeps_its_delay(
    pipetester: PipeTester, waits: list[float]
) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase, Retry, Fail

        @phase(1, isolate="process", retries=5)
        def limited(item_id, ctx):
            if ctx.attempt == 1:
                raise Retry(after=3)
            raise Fail("the input is bad")
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    phase = result.state("a").phases[1]
    assert (phase.status, phase.attempts, phase.error) == ("failed", 2, "the input is bad")
    assert waits == [3]
    assert [str(c["error"]) for c in result.calls("pipekit_phase_retry")] == ["retry requested (after 3s)"]


def test_a_phase_with_no_timeout_waits_for_its_handler_or_the_interruption() -> None:
    phase = PhaseDefinition(num=1, name="p", handler=lambda item_id: "", timeout_seconds=None)

    async def scenario() -> tuple[Any, ...]:
        control, executor, loop = RunControl(), LocalExecutor(), asyncio.get_running_loop()
        finished = loop.create_future()
        loop.call_later(0.01, finished.set_result, "out")
        failed = loop.create_future()
        failed.set_exception(ValueError("boom"))
        stuck = loop.create_future()
        loop.call_later(0.01, control.interrupted.set)
        return (
            await race(control, executor, phase, finished),
            await race(control, executor, phase, failed),
            await race(control, executor, phase, stuck),
            stuck.cancelled(),
        )

    done, failed, interrupted, abandoned = asyncio.run(scenario())
    assert done == ("out", None)
    assert isinstance(failed[1], ValueError)
    assert interrupted[0] is None and isinstance(interrupted[1], PhaseInterrupted)
    assert abandoned  # the handler's future is given up, as on a timeout


def test_a_handler_past_its_timeout_is_abandoned_and_named() -> None:
    phase = PhaseDefinition(num=1, name="slow", handler=lambda item_id: "", timeout_seconds=0.01)

    async def scenario() -> tuple[Any, ...]:
        control, loop = RunControl(), asyncio.get_running_loop()
        stuck = loop.create_future()
        on_time = loop.create_future()
        loop.call_later(0.001, on_time.set_result, "out")
        return await race(control, LocalExecutor(), phase, stuck), stuck.cancelled(), await race(
            control, LocalExecutor(), phase, on_time
        )

    (value, error), abandoned, on_time = asyncio.run(scenario())
    assert value is None and isinstance(error, PhaseTimeoutError) and "slow" in str(error)
    assert abandoned
    assert on_time == ("out", None)
