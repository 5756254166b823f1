"""The pipetester helper itself."""

from __future__ import annotations

import signal
import subprocess
import sys

from pipekit.testing import PipeTester
from pipekit.testing import _read_events


def test_kill_at_sees_an_event_that_arrived_with_others() -> None:
    # Two events in one write, then silence: the second must still trigger the kill.
    code = (
        "import sys, time\n"
        "sys.stdout.write('{\"event\": \"run_start\"}\\n{\"event\": \"phase_start\", \"phase\": 1}\\n')\n"
        "sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        lines, killed = _read_events(proc, 30, ("phase_start", None, 1), signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert killed
    assert [line.strip() for line in lines] == ['{"event": "run_start"}', '{"event": "phase_start", "phase": 1}']
    assert proc.returncode == -signal.SIGKILL



def test_processes_a_test_left_running_are_stopped(pipetester: PipeTester) -> None:
    # What the fixture does when a test fails before it waited for its process.
    pipetester.make_pipeline("""
        import time
        from pipekit import phase

        @phase(1)
        def stuck(item_id):
            time.sleep(60)
    """)
    finished = pipetester.popen("status", "pipeline.py")
    finished.communicate(timeout=60)
    running = pipetester.popen("pipeline.py", "--item", "a")
    pipetester.stop_processes()
    assert running.returncode == -signal.SIGKILL
    assert running.stdout is not None and running.stdout.closed
    assert finished.returncode == 0
