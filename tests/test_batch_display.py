"""What a person sees of the provider batches while a run waits for them: a plain
line per status change, and a line per batch in the live display."""

from __future__ import annotations

import io
import re

from rich.console import Console
from test_batches import _run
from test_batches import _setup
from test_progress import FakeClock

from pipekit.display.batches import BatchView
from pipekit.display.live import ProgressTracker
from pipekit.display.simple import SimpleProgress
from pipekit.outcomes import ExitCode
from pipekit.testing import PipeTester


ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")


def test_simple_progress_prints_each_status_change_of_a_batch_once(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    result = _run(
        pipetester, "--wait", "--poll-interval", "0.02", "--progress", "simple", FAKE_OPTIONS={"finish_after_polls": 4}
    )
    assert result.ret == ExitCode.OK, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("batch ")]
    # Four polls said in_progress, the fifth ended it: two lines, not one per poll.
    assert lines == [
        "batch fake fakebatch-1: in_progress, 6 requests (processing 6)",
        "batch fake fakebatch-1: ended, 6 requests (succeeded 6)",
    ]
    assert "sent 6 requests in batch fakebatch-1 at 'fake'" in result.stderr


def test_the_live_display_shows_each_batch_with_its_counts_age_and_next_poll(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    result = _run(
        pipetester,
        "--wait", "--poll-interval", "0.6", "--progress", "rich",
        FAKE_OPTIONS={"finish_after_polls": 1}, TERM="xterm-256color", COLUMNS="120",
    )
    assert result.ret == ExitCode.OK, result.stderr
    screen = ANSI.sub("", result.stderr).replace("\r", "")
    line = r"batch fake fakebatch-1  in_progress  0/6 done, 0 failed  age \d\.\d\ds  next poll in 1s"
    assert re.search(line, screen), screen
    assert "batch fake fakebatch-1: in_progress" not in screen  # drawn on its line, not printed per poll
    last_frame = screen[screen.rindex("pipeline -j") :]
    assert "3/3 items" in last_frame and "fakebatch-1" not in last_frame  # collected: no longer outstanding
    assert "phases 9/9" in last_frame  # the items started again after the wait count their phases once


def _tracker(clock: FakeClock) -> ProgressTracker:
    console = Console(file=io.StringIO(), width=120, height=30, color_system=None, record=True)
    return ProgressTracker(2, 2, console=console, clock=clock, title="books")


def _screen(tracker: ProgressTracker) -> str:
    tracker.console.print(tracker.render())
    return tracker.console.export_text()


def test_the_live_batch_line_counts_down_to_the_next_poll_as_the_wait_grows() -> None:
    clock = FakeClock()
    tracker = _tracker(clock)
    tracker.batch_event("batch_submitted", BatchView("openai", "batch_6751f2a0c4e88190a1b2c3d4", 40, "submitted"))
    clock.advance(2)
    polled = BatchView("openai", "batch_6751f2a0c4e88190a1b2c3d4", 40, "in_progress")
    polled.counts = {"succeeded": 12, "errored": 1, "processing": 27}
    tracker.batch_event("batch_polled", polled)
    tracker.batch_event("batch_waiting", polled, next_poll=90)
    screen = _screen(tracker)
    line = r"batch openai batch_6751f2a0c…  in_progress  12/40 done, 1 failed  age 2\.00s  next poll in 90s"
    assert re.search(line, screen), screen
    clock.advance(89.5)
    assert "next poll in 1s" in _screen(tracker)
    clock.advance(1)
    assert re.search(r"age 1m32\.5s  polling", _screen(tracker))
    tracker.batch_event("batch_completed", BatchView("openai", "batch_6751f2a0c4e88190a1b2c3d4", 40, "completed"))
    assert "batch_6751" not in _screen(tracker)


def test_the_live_display_lists_a_few_batches_then_how_many_more() -> None:
    tracker = _tracker(FakeClock())
    for n in range(12):
        tracker.batch_event("batch_polled", BatchView("claude", f"msgbatch_{n:02d}", 100, "in_progress"))
    screen = _screen(tracker)
    assert "msgbatch_07" in screen and "msgbatch_08" not in screen
    assert "... and 4 more batches" in screen


def test_simple_progress_is_quiet_between_status_changes() -> None:
    stream = io.StringIO()
    simple = SimpleProgress(1, 1, stream=stream, heartbeat_seconds=0)
    for status, counts in [("validating", {}), ("in_progress", {"succeeded": 1}), ("in_progress", {"succeeded": 5})]:
        simple.batch_event("batch_polled", BatchView("openai", "b1", 9, status, counts))
        simple.batch_event("batch_waiting", BatchView("openai", "b1", 9, status, counts), next_poll=5)
    simple.batch_event("batch_polled", BatchView("openai", "b1", 9, "completed", {"succeeded": 9}))
    simple.batch_event("batch_completed", BatchView("openai", "b1", 9, "completed", {"succeeded": 9}))
    assert stream.getvalue().splitlines() == [
        "batch openai b1: validating, 9 requests",
        "batch openai b1: in_progress, 9 requests (succeeded 1)",
        "batch openai b1: completed, 9 requests (succeeded 9)",
    ]
