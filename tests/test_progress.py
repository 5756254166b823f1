"""The seed's progress classes, rendered to a string with a fake clock."""

from __future__ import annotations

import io
import os
from pathlib import Path
import re
import sys

import pytest
from rich.console import Console

from pipekit import PhaseDefinition
from pipekit import PhaseResult
from pipekit import PhaseRunner
from pipekit import PipelineStateManager
from pipekit import ProgressState
from pipekit import ProgressTracker
from pipekit import SimpleProgress
from pipekit import create_progress_tracker


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_console(width: int = 100, height: int = 30) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, color_system=None, legacy_windows=False)


def show(tracker: ProgressTracker) -> str:
    tracker.console.print(tracker.render())
    text = tracker.console.file.getvalue()  # type: ignore[attr-defined]
    tracker.console.file.truncate(0)  # type: ignore[attr-defined]
    tracker.console.file.seek(0)  # type: ignore[attr-defined]
    return text


def run_one_item(tracker: SimpleProgress | ProgressTracker, clock: FakeClock, label: str, phases: int) -> None:
    tracker.start_item(1, label)
    for num in range(1, phases + 1):
        tracker.start_phase(num, f"step{num}")
        clock.advance(2)
        tracker.complete_phase(tokens_in=100, tokens_out=10, cost_usd=0.25)
    tracker.complete_item()


def test_progress_state_has_the_seed_fields() -> None:
    state = ProgressState(total_items=10, total_phases=5)
    assert (state.current_item, state.current_item_label, state.current_phase, state.current_phase_name) == (
        0,
        "",
        0,
        "",
    )
    assert (state.completed_items, state.completed_phases) == (0, 0)
    assert (state.total_tokens_in, state.total_tokens_out, state.total_cost_usd) == (0, 0, 0.0)
    assert state.started_at is None
    assert state.item_noun == "items"
    assert state.phases_left == 50


def test_rich_tracker_shows_noun_eta_tokens_and_cost() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(10, 5, item_noun="books", console=make_console(), clock=clock, title="library")
    tracker.start()
    run_one_item(tracker, clock, "moby-dick", 5)
    # 5 phases in 10 s: 2 s a phase, 45 phases left -> 90 s.
    assert tracker.eta == pytest.approx(90.0)
    screen = show(tracker)
    assert "1/10 books" in screen
    assert "phases 5/50" in screen
    assert "elapsed 0:00:10" in screen
    assert "ETA 0:01:30" in screen
    assert "tokens 500 in / 50 out" in screen
    assert "cost $1.25" in screen
    assert "library" in screen
    tracker.stop()


def test_rich_tracker_lists_every_item_in_flight_with_its_phase_and_time() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(20, 3, item_noun="minds", console=make_console(), clock=clock)
    tracker.start()
    for index in range(1, 9):
        tracker.start_item(index, f"mind-{index}", key=index)
        tracker.start_phase(2, "draft", key=index)
        clock.advance(1)
    screen = show(tracker)
    for index in range(1, 9):
        assert re.search(rf"mind-{index}\s+phase 2/3 draft\s+{9 - index}\.0s", screen), screen
    tracker.complete_phase(cost_usd=0.5, key=3)
    tracker.complete_item(key=3)
    screen = show(tracker)
    assert "mind-3" not in screen
    assert "1/20 minds" in screen


def test_rich_tracker_crops_a_long_in_flight_list_to_the_screen() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(100, 1, console=make_console(height=12), clock=clock)
    tracker.start()
    for index in range(64):
        tracker.start_item(index + 1, f"item-{index}", key=index)
    screen = show(tracker)
    assert len(screen.splitlines()) <= 12
    assert "more in flight" in screen


def test_failures_are_counted_and_red() -> None:
    clock = FakeClock()
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="standard")
    tracker = ProgressTracker(3, 2, console=console, clock=clock)
    tracker.start_item(1, "a")
    tracker.start_phase(1, "one")
    tracker.fail_phase("boom", cost_usd=0.1)
    tracker.complete_item(status="failed")
    console.print(tracker.render())
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[1;31m" in raw or "\x1b[31m" in raw
    assert "1 failed" in ANSI.sub("", raw)


def test_skipped_and_already_finished_phases_are_not_work() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(4, 5, console=make_console(), clock=clock)
    tracker.start()
    tracker.skip_items(2)  # two items were finished by an earlier run
    tracker.start_item(3, "c")
    tracker.settle_phases(3)  # c had three phases complete already
    tracker.start_phase(4, "four")
    clock.advance(10)
    tracker.complete_phase()
    tracker.skip_phase(5, "five", "cache")
    tracker.complete_item()
    # One phase executed in 10 s; item d's 5 phases are all that is left.
    assert tracker.state.phases_left == 5
    assert tracker.eta == pytest.approx(50.0)
    assert "2/4" not in show(tracker)  # 3 items done now
    assert tracker.state.completed_items == 3


def test_eta_is_unknown_until_a_phase_ends_and_zero_when_nothing_is_left() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(1, 1, console=make_console(), clock=clock)
    tracker.start()
    tracker.start_item(1, "a")
    tracker.start_phase(1, "only")
    assert tracker.eta is None
    assert "ETA --:--:--" in show(tracker)
    clock.advance(3)
    tracker.complete_phase()
    assert tracker.eta == 0.0


def test_earlier_cost_is_shown_apart_and_show_cost_hides_money() -> None:
    tracker = ProgressTracker(1, 1, console=make_console(), clock=FakeClock())
    tracker.state.earlier_cost_usd = 4.5
    assert "(+$4.50 in earlier runs)" in show(tracker)
    simple = SimpleProgress(1, 1, stream=io.StringIO(), clock=FakeClock())
    simple.state.earlier_cost_usd = 4.5
    assert simple.overview().endswith("$0.0000 (+$4.50 in earlier runs)")
    quiet = ProgressTracker(1, 1, show_cost=False, console=make_console(), clock=FakeClock())
    assert "$" not in show(quiet)


def test_simple_progress_prints_plain_lines_with_the_facts() -> None:
    clock = FakeClock()
    out = io.StringIO()
    tracker = SimpleProgress(3, 2, item_noun="books", stream=out, clock=clock, heartbeat_seconds=0)
    tracker.start()
    run_one_item(tracker, clock, "emma", 2)
    tracker.start_item(2, "dune")
    tracker.start_phase(1, "step1")
    tracker.retry_phase("RuntimeError: flaky", 1)
    tracker.fail_phase("RuntimeError: broke", cost_usd=0.05)
    tracker.complete_item(status="failed")
    tracker.stop()
    lines = out.getvalue().splitlines()
    assert lines == [
        "pipekit: 3 books x 2 phases",
        "[1/3] emma phase 1/2 step1 done in 2.00s $0.2500 (run $0.2500)",
        "[1/3] emma phase 2/2 step2 done in 2.00s $0.2500 (run $0.5000)",
        "[1/3] emma completed (1/3 books done, $0.5000 this book)",
        "[2/3] dune phase 1/2 step1 attempt 1 failed, retrying: RuntimeError: flaky",
        "[2/3] dune phase 1/2 step1 FAILED in 0.00s $0.0500 (run $0.5500): RuntimeError: broke",
        "[2/3] dune failed (2/3 books done, $0.0500 this book)",
    ]
    assert "\x1b" not in out.getvalue()


def test_simple_progress_heartbeat_says_what_is_running_after_a_quiet_spell() -> None:
    clock = FakeClock()
    out = io.StringIO()
    tracker = SimpleProgress(4, 2, stream=out, clock=clock, heartbeat_seconds=30)
    tracker.start()
    tracker.stop()  # stops only the heartbeat's thread: this test calls heartbeat() itself
    out.truncate(0)
    out.seek(0)
    tracker.start_item(1, "a", key="a")
    tracker.start_phase(1, "slow", key="a")
    clock.advance(10)
    tracker.heartbeat()
    assert out.getvalue() == ""  # quiet for only 10 s
    clock.advance(25)
    tracker.heartbeat()
    line = out.getvalue().strip()
    assert line.startswith("pipekit: 0/4 items, phases 0/8, elapsed 0:00:35, ETA --:--:--")
    assert line.endswith("running: a phase 1/2 slow 35.0s")


def test_simple_progress_heartbeat_thread_runs_and_stops() -> None:
    out = io.StringIO()
    tracker = SimpleProgress(1, 1, stream=out, heartbeat_seconds=0.05)
    tracker.start()
    tracker.start_item(1, "a")
    tracker.start_phase(1, "wait")
    for _ in range(200):
        if "running: a phase 1/1 wait" in out.getvalue():
            break
        import time

        time.sleep(0.01)
    tracker.stop()
    assert "running: a phase 1/1 wait" in out.getvalue()
    assert tracker._thread is None


def test_factory_picks_simple_off_a_terminal_and_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(create_progress_tracker(3, 2), SimpleProgress)
    tracker = create_progress_tracker(3, 2, item_noun="books", show_cost=False, force_simple=True)
    assert isinstance(tracker, SimpleProgress)
    assert tracker.state.item_noun == "books"
    assert tracker.show_cost is False


def test_factory_picks_rich_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            monkeypatch.setenv("TERM", "xterm-256color")
            assert isinstance(create_progress_tracker(3, 2), ProgressTracker)
            monkeypatch.setenv("TERM", "dumb")
            assert isinstance(create_progress_tracker(3, 2), SimpleProgress)
            assert isinstance(create_progress_tracker(3, 2, force_simple=True), SimpleProgress)
    finally:
        os.close(master)


def test_phase_runner_drives_a_tracker(tmp_path: Path) -> None:
    def research(item_id: str) -> str:
        return "notes"

    def draft(research: str) -> PhaseResult:
        return PhaseResult("text", tokens_in=7, tokens_out=3, cost_usd=0.02)

    out = io.StringIO()
    tracker = SimpleProgress(1, 2, stream=out, heartbeat_seconds=0)
    tracker.start()
    tracker.start_item(1, "book")
    manager = PipelineStateManager("book", tmp_path)
    phases = [PhaseDefinition(1, "research", research), PhaseDefinition(2, "draft", draft)]
    assert PhaseRunner(phases, manager, progress_tracker=tracker).run() is True
    tracker.complete_item()
    tracker.stop()
    assert tracker.state.completed_phases == 2
    assert tracker.state.total_tokens_in == 7
    assert "[1/1] book phase 2/2 draft done in" in out.getvalue()
    assert "$0.0200" in out.getvalue()


def test_rich_tracker_redraws_on_a_timer_not_per_event() -> None:
    """10,000 events cost a handful of redraws (the display stays cheap at -j 64)."""
    console = Console(file=io.StringIO(), width=100, height=30, force_terminal=True)
    tracker = ProgressTracker(10_000, 1, console=console, refresh_per_second=4)
    renders = 0
    render = tracker.render

    def counting_render() -> object:
        nonlocal renders
        renders += 1
        return render()

    tracker.render = counting_render  # type: ignore[method-assign]
    tracker.start()
    for index in range(10_000):
        tracker.start_item(index + 1, f"item-{index}", key=index)
        tracker.start_phase(1, "only", key=index)
        tracker.complete_phase(cost_usd=0.001, key=index)
        tracker.complete_item(key=index)
    tracker.stop()
    assert tracker.state.completed_items == 10_000
    assert 1 <= renders < 100
    assert "10,000/10,000 items" in ANSI.sub("", console.file.getvalue())  # type: ignore[attr-defined]


def test_import_pipekit_does_not_import_rich() -> None:
    import subprocess

    code = "import sys, pipekit; print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
