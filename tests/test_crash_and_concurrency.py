"""What a user sees when a run is killed, interrupted, or started twice."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipekit.testing import PipeTester


#: Every test here runs against each store.
pytestmark = pytest.mark.usefixtures("any_store")


SLOW = '''
    import asyncio, json, os, time
    from pathlib import Path
    from pipekit import phase

    def log(item_id, name):
        with open("executions.log", "a") as f:
            f.write(json.dumps([item_id, name, os.getpid()]) + "\\n")

    @phase(1)
    async def fetch(item_id):
        log(item_id, "fetch")
        return f"fetched {item_id}"

    @phase(2)
    def slow(item_id, fetch):
        log(item_id, "slow")
        if os.environ.get("SLOW_ITEM", item_id) == item_id:
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0.2")))
        return fetch + " slowly"

    @phase(3)
    async def finish(slow):
        return slow + "!"
'''


def executions(tester: PipeTester) -> list[tuple[str, str]]:
    log = tester.path / "executions.log"
    return [tuple(json.loads(line)[:2]) for line in log.read_text().splitlines()]


def wait_for_execution(tester: PipeTester, entry: tuple[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tester.path / "executions.log").exists() and entry in executions(tester):
            return
        time.sleep(0.02)
    raise AssertionError(f"{entry} never started")


@pytest.mark.slow
def test_kill_9_mid_phase_loses_no_completed_phase(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SLOW)
    pipetester.make_items("a", "b", "c")
    proc = pipetester.popen("pipeline.py", "--items", "items.txt", env={"SLOW_SECONDS": "30", "SLOW_ITEM": "b"})
    wait_for_execution(pipetester, ("b", "slow"))
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    resumed = pipetester.run_subprocess("pipeline.py", "--items", "items.txt")
    assert resumed.ret == 0, resumed
    runs = executions(pipetester)
    assert runs.count(("a", "fetch")) == 1 and runs.count(("a", "slow")) == 1
    assert runs.count(("b", "fetch")) == 1
    assert runs.count(("b", "slow")) == 2  # the phase in flight at the kill runs again
    state_b = resumed.state("b")
    assert state_b.phases[2].attempts == 2
    assert state_b.phase_outputs[3] == "fetched b slowly!"
    # the resumed run did not start what was already complete
    assert [e for e in resumed.events if e[0] == "phase_start" and e[1]["item_id"] == "a"] == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_records_in_flight_phases_and_the_same_command_resumes(
    pipetester: PipeTester, signum: int
) -> None:
    pipetester.make_pipeline(SLOW)
    pipetester.make_items("a", "b", "c", "d")
    stopped = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.txt", "-j", "2",
        kill_at=("phase_start", None, 2), signal=signum, env={"SLOW_SECONDS": "3"},
    )
    assert stopped.ret == 2, stopped
    assert "interrupted: recording in-flight phases" in stopped.stderr
    interrupted = [
        (i, p.phase) for i in "abcd" if stopped.has_state(i)
        for p in stopped.state(i).phases.values() if p.reason == "interrupted"
    ]
    assert interrupted, stopped
    for item_id, num in interrupted:
        phase = stopped.state(item_id).phases[num]
        assert phase.status == "failed"
    names = stopped.event_names()
    assert names[-1] == "run_finish"
    assert stopped.events[-1][1]["exit_status"] == 2
    resumed = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-j", "2")
    assert resumed.ret == 0, resumed
    assert all(resumed.state(i).status == "completed" for i in "abcd")


@pytest.mark.slow
def test_two_processes_never_run_the_same_item(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SLOW)
    pipetester.make_items(*[f"item-{n}" for n in range(8)])
    env = {"SLOW_SECONDS": "0.3"}
    first = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "2", env=env)
    time.sleep(0.3)
    second = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "2", env=env)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    runs = executions(pipetester)
    assert sorted(runs) == sorted(set(runs)), "a phase ran twice"
    assert len(runs) == 16
    # The second waited for the items the first held, naming it, and ended when all were finished.
    holder = f"(host {socket.gethostname()}, pid {first.pid}, since "
    assert f"is being run by another pipekit process {holder}" in outs[1][1]
    assert "; waiting for it" in outs[1][1], outs
    check = subprocess.run(
        [sys.executable, "-m", "pipekit", "pipeline.py", "--items", "items.txt", "--jsonl"],
        cwd=pipetester.path, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0
    events = [json.loads(line)["event"] for line in check.stdout.splitlines()]
    assert events == ["run_start", "run_finish"]


@pytest.mark.slow
def test_stdout_carries_only_events_whatever_prints(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os, subprocess, sys
        from pipekit import phase

        print("module-level print")

        @phase(1)
        def noisy(item_id):
            print("handler print")
            subprocess.run(["echo", "subprocess output"], check=True)
            os.write(1, b"raw fd 1 write\\n")
            return "ok"
    ''')
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert result.ret == 0, result
    for line in result.stdout.splitlines():
        json.loads(line)
    for text in ("module-level print", "handler print", "subprocess output", "raw fd 1 write"):
        assert text in result.stderr
    help_result = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--help"],
        cwd=pipetester.path, capture_output=True, text=True, timeout=60,
    )
    assert "--from-phase" in help_result.stdout
