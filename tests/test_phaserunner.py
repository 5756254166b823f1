"""The per-phase protocol: cache, timeouts, retries, return values, arguments."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipekit import PhaseDefinition
from pipekit import PhaseRunner
from pipekit import PipelineStateManager
from pipekit import hookimpl
from pipekit.testing import PipeTester


def test_cache_hit_skips_the_phase_and_force_ignores_it(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        def cached(item_id, output_dir):
            marker = output_dir / "done.txt"
            return marker.read_text() if marker.exists() else False

        @phase(1, cache=cached)
        def expensive(item_id, ctx):
            (ctx.output_dir / "done.txt").write_text(f"made for {item_id}")
            return "computed"

        @phase(2)
        def after(expensive):
            return f"got {expensive}"
    ''')
    first = pipetester.run("pipeline.py", "--item", "a")
    assert first.state("a").phase_outputs[1] == "computed"
    again = pipetester.run("pipeline.py", "--item", "a", "--from-phase", "1")
    state = again.state("a")
    assert state.phases[1].status == "skipped"
    assert state.phases[1].reason == "cache"
    assert state.phase_outputs == {1: "made for a", 2: "got made for a"}
    assert again.event_names("a") == ["item_start", "phase_skip", "phase_start", "phase_complete", "item_finish"]
    forced = pipetester.run("pipeline.py", "--item", "a", "--force")
    assert forced.state("a").phases[1].status == "completed"
    assert forced.state("a").phase_outputs[1] == "computed"


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_timeout_fails_the_phase_without_waiting_for_it(pipetester: PipeTester, kind: str) -> None:
    body = "await asyncio.sleep(30)" if kind == "async" else "time.sleep(30)"
    pipetester.make_pipeline(f'''
        import asyncio, time
        from pipekit import phase

        @phase(1, timeout=0.3)
        {"async " if kind == "async" else ""}def slow(item_id):
            {body}
            return "late"
    ''')
    started = time.monotonic()
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "-j", "2")
    assert time.monotonic() - started < 10
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.reason) == ("failed", "timeout")
    assert phase.error == "phase 'slow' timed out after 0.3s"


def test_retries_with_backoff_count_attempts_and_fire_retry_hooks(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pathlib import Path
        from pipekit import phase

        @phase(1, retries=2, retry_backoff=0.01)
        def flaky(item_id, ctx):
            ctx.record_cost(cost_usd=1.0)
            counter = Path("attempts")
            n = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(n))
            if n < 3:
                raise ConnectionError(f"attempt {n} failed")
            return f"ok after {n}"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.attempts, phase.cost_usd) == ("completed", 3, 3.0)
    assert [c["attempt"] for c in result.calls("pipekit_phase_retry")] == [1, 2]
    assert result.event_names("a") == [
        "item_start", "phase_start", "phase_retry", "phase_retry", "phase_complete", "item_finish"
    ]


def test_last_failure_fires_fail_once_after_retries(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase, Fail

        @phase(1, retries=3, retry_backoff=0.01)
        def hopeless(item_id):
            raise Fail("bad input, do not retry")
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1
    assert result.event_names("a") == ["item_start", "phase_start", "phase_fail", "item_finish"]
    assert result.state("a").phases[1].attempts == 1


@pytest.mark.parametrize(
    ("returned", "message"),
    [("object()", "phase 'bad' returned builtins.object, which cannot be stored: a handler returns a str, "
      "a JSON value (dict, list, int, float, bool, None), a pydantic model or a PhaseResult"),
     ("sys.exit(3)", "handler raised SystemExit"),
     ("raise_keyboard_interrupt()", "handler raised KeyboardInterrupt")],
)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_bad_handler_endings_fail_the_phase_not_the_run(
    pipetester: PipeTester, returned: str, message: str, kind: str
) -> None:
    pipetester.make_pipeline(f'''
        import sys
        from pipekit import phase

        def raise_keyboard_interrupt():
            raise KeyboardInterrupt

        @phase(1, critical=False)
        {"async " if kind == "async" else ""}def bad(item_id):
            return {returned}

        @phase(2)
        def fine(item_id):
            return "fine"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    state = result.state("a")
    assert message in (state.phases[1].error or "")
    assert state.phases[2].status == "completed"


def test_phase_runner_works_without_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen = []

    async def research(item_id, metadata, previous_outputs, **kwargs):  # type: ignore[no-untyped-def]
        return f"notes for {metadata['title']}"

    def draft(item_id, metadata, previous_outputs, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(sorted(kwargs))
        return previous_outputs[0].upper()

    phases = [PhaseDefinition(0, "research", research), PhaseDefinition(1, "draft", draft, critical=False)]
    manager = PipelineStateManager("book-1", tmp_path)
    manager.create_state({"title": "Emma"}, phases)
    assert PhaseRunner(phases, manager).run() is True
    reloaded = PipelineStateManager("book-1", tmp_path)
    assert reloaded.load_state()
    assert reloaded.state.phase_outputs == {0: "notes for Emma", 1: "NOTES FOR EMMA"}
    assert reloaded.get_resume_phase() == 2
    assert seen == [["ctx", "output_dir", "research"]]


def test_an_interruption_between_two_phases_records_the_next_one_interrupted(pipetester: PipeTester) -> None:
    # The end of phase 1 and the start of phase 2 are one write; an interruption
    # that comes with it leaves phase 2 recorded like any phase in flight.
    pipetester.make_pipeline("""
        from pipekit import phase

        @phase(1)
        def one(item_id):
            return "1"

        @phase(2)
        def two(item_id):
            open("two-ran", "w").close()
            return "2"
    """)

    class InterruptAfterPhaseOne:
        run: Any = None

        @hookimpl
        def pipekit_run_start(self, run: Any) -> None:
            self.run = run

        @hookimpl
        def pipekit_phase_complete(self, item: Any, phase: Any, result: Any) -> None:
            if phase.num == 1:
                self.run.control.interrupted.set()

    result = pipetester.run("pipeline.py", "--item", "a", plugins=[InterruptAfterPhaseOne()])
    assert result.ret == 2, result
    assert not (pipetester.path / "two-ran").exists()
    state = result.state("a")
    assert state.phases[1].status == "completed"
    assert (state.phases[2].status, state.phases[2].reason, state.phases[2].attempts) == ("failed", "interrupted", 1)
    assert [name for name, _ in result.events if name.startswith("phase_")] == [
        "phase_start", "phase_complete", "phase_start", "phase_fail",
    ]

    resumed = pipetester.run("pipeline.py", "--item", "a")
    assert resumed.ret == 0, resumed
    assert (pipetester.path / "two-ran").exists()
    assert resumed.state("a").phases[2].attempts == 2


def test_sync_handlers_reuse_idle_threads_and_a_stuck_one_delays_nobody(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("""
        import threading, time
        from pipekit import phase

        def note(item_id):
            with open("threads.log", "a") as f:
                f.write(f"{item_id} {threading.get_native_id()}\\n")

        @phase(1, timeout=0.3, critical=False)
        def one(item_id):
            note(item_id)
            if item_id == "stuck":
                time.sleep(5)

        @phase(2)
        def two(item_id):
            note(item_id)
    """)
    items = ["stuck", *[f"item{n}" for n in range(20)]]
    pipetester.make_items(*items)
    result = pipetester.run("pipeline.py", "--items", "items.txt")
    assert result.ret == 0, result
    assert result.state("stuck").phases[1].reason == "timeout"
    lines = [line.split() for line in (pipetester.path / "threads.log").read_text().splitlines()]
    stuck_thread = next(ident for item, ident in lines if item == "stuck")
    others = {ident for item, ident in lines if item != "stuck"}
    assert len(lines) == 2 + 20 * 2
    assert stuck_thread not in others  # busy in its sleep: never handed another call
    assert len(others) <= 2  # -j 1: 41 calls, one thread reused (or two, around the stuck one)
