"""``@phase(..., isolate="process")``: sync code that can be stopped for real."""

from __future__ import annotations

import json
import os
import time

import pytest

from pipekit.testing import PipeTester


def gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (waits a little for the reaper)."""
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_isolated_phase_is_killed_at_its_timeout_and_retried(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os, time
        from pipekit import phase

        @phase(1, isolate="process")
        def warm_up(item_id):
            return "a worker is running"

        @phase(2, isolate="process", timeout=1, retries=1, retry_backoff=0.01)
        def stuck(item_id):
            with open("pids", "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(60)
            return "never"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    phase = result.state("a").phases[2]
    assert (phase.status, phase.reason, phase.attempts) == ("failed", "timeout", 2)
    assert phase.error == "phase 'stuck' timed out after 1s"
    # The first attempt reused phase 1's worker; the retry's fresh worker may not
    # have started the handler within 1 s on a loaded machine (start-up counts).
    pids = [int(line) for line in (pipetester.path / "pids").read_text().split()]
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert all(gone(pid) for pid in pids)
    assert result.event_names("a")[-4:] == ["phase_start", "phase_retry", "phase_fail", "item_finish"]


@pytest.mark.slow
def test_isolated_phase_returns_its_output_and_its_recorded_cost(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os
        from pipekit import phase, PhaseResult

        @phase(1, isolate="process")
        def measured(item_id, metadata, ctx):
            print("a handler's print never reaches stdout")
            ctx.record_cost(tokens_in=10, tokens_out=5, cost_usd=0.25)
            ctx.executor = "child"
            return PhaseResult(f"{item_id} {metadata['n']} from {os.getpid()}", tokens_in=1)

        @phase(2)
        def after(measured):
            return measured.upper()
    ''')
    pipetester.make_items({"id": "a", "n": 7}, name="items.jsonl")
    result = pipetester.run_subprocess("pipeline.py", "--items", "items.jsonl")
    assert result.ret == 0, result
    assert all(json.loads(line) for line in result.stdout.splitlines())
    assert "a handler's print never reaches stdout" in result.stderr
    state = result.state("a")
    output = state.phase_outputs[1]
    assert output.startswith("a 7 from ") and int(output.rsplit(" ", 1)[1]) != os.getpid()
    phase = state.phases[1]
    assert (phase.tokens_in, phase.tokens_out, phase.cost_usd, phase.executor) == (11, 5, 0.25, "child")
    assert state.total_cost_usd == 0.25
    assert state.phase_outputs[2] == output.upper()
    finish = [payload for name, payload in result.events if name == "run_finish"][0]
    assert finish["cost_usd"] == 0.25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return lambda: 1", "phase 'work' returned a value that cannot be sent back from the worker"),
        ("raise ValueError('bad row 3')", "ValueError: bad row 3"),
        ("sys.exit(3)", "handler raised SystemExit"),
        ("raise KeyboardInterrupt", "handler raised KeyboardInterrupt"),
        ("os._exit(7)", "died while running the phase (exit code 7)"),
        ("return {1, 2}", "phase 'work' returned builtins.set, which cannot be stored"),
    ],
)
def test_isolated_phase_failures_are_clear_and_the_run_goes_on(
    pipetester: PipeTester, body: str, message: str
) -> None:
    pipetester.make_pipeline(f'''
        import os, sys
        from pipekit import phase

        @phase(1, isolate="process", critical=False)
        def work(item_id):
            {body}

        @phase(2)
        def after(item_id):
            return "after"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    state = result.state("a")
    assert message in (state.phases[1].error or ""), state.phases[1]
    assert state.phases[1].attempts == 1
    assert state.phases[2].status == "completed"
    if "ValueError" in message:
        # the child's own traceback is kept
        assert "raise ValueError('bad row 3')" in (state.phases[1].traceback or "")


def test_arguments_that_cannot_be_pickled_name_the_phase() -> None:
    import asyncio
    import threading

    from pipekit.execution.isolate import IsolatedCalls
    from pipekit.pipeline.phases import PhaseDefinition

    def work(lock: object) -> str:
        return "never"

    phase = PhaseDefinition(1, "work", work, isolate="process")

    async def call() -> None:
        calls = IsolatedCalls()
        try:
            await calls.start(phase, work, {"lock": threading.Lock()}, None)
        finally:
            calls.close()

    with pytest.raises(TypeError, match="phase 'work': its arguments cannot be sent to a worker process"):
        asyncio.run(call())


@pytest.mark.slow
def test_the_child_dies_with_a_killed_run(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os, time
        from pathlib import Path
        from pipekit import phase

        @phase(1, isolate="process")
        def stuck(item_id):
            Path("child").write_text(str(os.getpid()))
            time.sleep(60)
    ''')
    proc = pipetester.popen("pipeline.py", "--item", "a")
    marker = pipetester.path / "child"
    for _ in range(600):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=30)
    assert gone(int(marker.read_text())), "the isolated phase's process outlived a kill -9 of the run"


def ended(pid: int) -> bool:
    """True once ``pid`` has ended, within a second (a zombie nobody reaped yet counts)."""
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("isolate", "args"), [('isolate="process", ', ()), ("", ("--executor", "processes"))], ids=["isolate", "processes"]
)
def test_a_hard_timeout_also_stops_the_subprocesses_the_handler_started(
    pipetester: PipeTester, isolate: str, args: tuple[str, ...]
) -> None:
    pipetester.make_pipeline(f'''
        import subprocess, time
        from pathlib import Path
        from pipekit import phase

        HERE = Path(__file__).parent

        @phase(1, {isolate}timeout=1)
        def spawns(item_id):
            child = subprocess.Popen(["sh", "-c", "sleep 2.5; echo late > late.txt"], cwd=HERE)
            (HERE / "child.pid").write_text(str(child.pid))
            time.sleep(60)
    ''')
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", *args)
    returned = time.monotonic()
    assert result.ret == 1, result
    assert result.state("a").phases[1].reason == "timeout"
    assert ended(int((pipetester.path / "child.pid").read_text())), "the handler's child outlived the run"
    time.sleep(max(0.0, 3.0 - (time.monotonic() - returned)))
    assert not (pipetester.path / "late.txt").exists()
