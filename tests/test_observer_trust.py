"""Observers cannot stop, hang or garble a run: plugins that exit, block, or
write to a closed stdout; engine messages go through the reporting hook."""

from __future__ import annotations

import json
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from pipekit import hookimpl
from pipekit.testing import PipeTester


TWO_PHASES = '''
    import os, sys, time
    from pathlib import Path
    import pipekit
    from pipekit import phase

    @phase(1)
    def first(item_id):
        return "first"

    @phase(2)
    def second(item_id):
        Path(f"second-{item_id}").write_text("ran")
        return "second"
'''


def wait_for(path: Path) -> None:
    for _ in range(600):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_a_plugin_raising_system_exit_in_item_finish_does_not_stop_the_other_items(
    pipetester: PipeTester,
) -> None:
    pipetester.make_pipeline(
        TWO_PHASES
        + '''
    @pipekit.hookimpl
    def pipekit_item_finish(item):
        if item.id in ("a", "b"):
            raise SystemExit(7) if item.id == "a" else KeyboardInterrupt()
    '''
    )
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--item", "b", "--item", "c", "-j", "2")
    assert result.ret == 0, result
    assert sorted(p["item_id"] for n, p in result.events if n == "item_finish") == ["a", "b", "c"]
    result.assert_outcomes(completed=6)
    assert result.stderr.count("plugin 'pipeline:pipeline' raised in pipekit_item_finish") == 1
    assert "SystemExit: 7" in result.stderr or "KeyboardInterrupt" in result.stderr
    assert "never retrieved" not in result.stderr


BLOCKING_HOOK = '''
    @pipekit.hookimpl
    def pipekit_phase_complete(item, phase, result):
        if os.environ.get("BLOCK") and phase.num == 1:
            Path("in-hook").write_text("x")
            time.sleep(600)
'''


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_a_run_stuck_in_an_observer_and_saves_state(
    pipetester: PipeTester, signum: int
) -> None:
    pipetester.make_pipeline(TWO_PHASES + BLOCKING_HOOK)
    proc = pipetester.popen("pipeline.py", "--item", "a", env={"BLOCK": "1"})
    wait_for(pipetester.path / "in-hook")  # the event loop is now blocked in the hook
    proc.send_signal(signum)
    time.sleep(0.5)
    assert proc.poll() is None  # the first signal waits for the loop
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "plugin 'pipeline:pipeline' blocked the run in pipekit_phase_complete" in err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "run_finish" and events[-1]["exit_status"] == 2
    state = json.loads((pipetester.path / "state" / "pipeline" / "a.json").read_text())
    assert state["phases"]["1"]["status"] == "completed"
    assert state["phases"]["2"]["status"] != "completed"  # recorded started with phase 1's end: interrupted
    assert not (pipetester.path / "second-a").exists()
    # the same command resumes: only phase 2 runs
    again = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert again.ret == 0, again
    assert [p["phase"] for n, p in again.events if n == "phase_start"] == [2]


def test_a_closed_stdout_ends_the_run_quietly(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        TWO_PHASES.replace('return "first"', 'time.sleep(0.05); return "first"')
    )
    items = [f"i{n}" for n in range(20)]
    pipetester.make_items(*items)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--items", "items.txt", "--jsonl"],
        cwd=pipetester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # what `| head -1` reads, then it exits
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert json.loads(first)["event"] == "run_start"
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 2, err
    assert "stdout closed" in err
    # what ran is saved: the same command resumes where it stopped
    done = [i for i in items if (pipetester.path / "state" / "pipeline" / f"{i}.json").exists()]
    assert len(done) < len(items)
    again = pipetester.run_subprocess("pipeline.py", "--items", "items.txt")
    assert again.ret == 0, again


class Messages:
    name = "messages"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def pipekit_report_message(self, message: str, level: str) -> bool:
        self.seen.append((level, message))
        return True


def test_engine_messages_go_through_the_reporting_hook(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(TWO_PHASES)
    state_dir = pipetester.path / "state" / "pipeline"
    state_dir.mkdir(parents=True)
    (state_dir / "bad.json").write_text("{not json")
    messages = Messages()
    result = pipetester.run(
        "run", "pipeline.py", "--item", "ok", "--item", "bad", "--progress", "none", plugins=[messages]
    )
    assert result.ret == 4, result
    levels = {level for level, _ in messages.seen}
    assert ("notice", f"state: {state_dir}") in messages.seen
    assert "error" in levels and any("bad" in m for lv, m in messages.seen if lv == "error")
    # the plugin took them: nothing of the engine reached stderr
    assert "pipekit: state:" not in result.stderr and "error" not in result.stderr, result


def test_without_the_reporter_messages_still_reach_stderr(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(TWO_PHASES)
    result = pipetester.run("run", "pipeline.py", "--item", "a", "-p", "no:progress")
    assert result.ret == 0, result
    result.fnmatch_lines(["pipekit: state: *"])


def test_quiet_hides_info_messages_and_the_recorder_sees_them(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(TWO_PHASES)
    loud = pipetester.run("run", "pipeline.py", "--item", "a", "--max-cost", "1", "--progress", "none")
    assert "pipekit: budget: $0.00 spent of --max-cost $1.00" in loud.stderr, loud
    assert {"message": "budget: $0.00 spent of --max-cost $1.00, $1.00 left", "level": "info"} in loud.calls(
        "pipekit_report_message"
    )
    quiet = pipetester.run("run", "pipeline.py", "--item", "b", "--max-cost", "1", "-q")
    assert quiet.ret == 0, quiet
    assert quiet.stderr.splitlines() == [f"pipekit: state: {quiet.state_dir}"]
