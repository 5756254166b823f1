"""The built-in ``progress`` plugin: plain lines in logs, a live display in a terminal."""

from __future__ import annotations

from collections.abc import Callable
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from pipekit.testing import PipeTester

from .pipelines import BOOKS
from .pipelines import CACHED_AND_FLAKY
from .pipelines import GATED


ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def test_plain_lines_off_a_terminal(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    result = pipetester.run("pipeline.py", "--item", "good", "--item", "bad")
    assert result.ret == 1, result
    result.fnmatch_lines(
        [
            "pipekit: pipeline -j 1: 2 books x 3 phases",
            "[[]1/2] good phase 1/3 research done in *s",
            "[[]1/2] good phase 2/3 draft done in *s $0.2500 (run $0.2500)",
            "[[]1/2] good phase 3/3 review done in *s $0.5000 (run $0.7500)",
            "[[]1/2] good completed (1/2 books done, $0.7500 this book)",
            "[[]2/2] bad phase 2/3 draft FAILED in *s $0.2500 (run $1.00): RuntimeError: model refused bad",
            "[[]2/2] bad failed (2/2 books done, $0.2500 this book)",
        ]
    )
    assert "second line of the error" not in result.stderr.split("summary of")[0]
    assert "\x1b" not in result.stderr
    assert "reviewing good" in result.stderr  # a handler's print goes to stderr
    assert result.stdout == ""


def test_skips_and_retries_are_lines_too(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(CACHED_AND_FLAKY)
    result = pipetester.run("pipeline.py", "--item", "a", "-v")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "[[]1/1] a phase 1/2 cached skipped (cache)",
            "[[]1/1] a phase 2/2 flaky started",
            "[[]1/1] a phase 2/2 flaky attempt 1 failed, retrying: ConnectionError: try again",
            "[[]1/1] a phase 2/2 flaky done in *s $0.0200 (run $0.0200)",
        ]
    )


def test_heartbeat_shows_a_long_phase_is_alive(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import time
        from pipekit import phase

        @phase(1)
        def slow(item_id):
            time.sleep(0.6)
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--heartbeat", "0.1")
    assert result.ret == 0, result
    result.fnmatch_lines(["pipekit: 0/1 items, phases 0/1, elapsed *, ETA --:--:--*; running: a phase 1/1 slow *s"])


def test_rich_display_when_asked_for(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    pipetester.make_pipeline(BOOKS)
    result = pipetester.run("pipeline.py", "--item", "good", "--item", "bad", "--progress", "rich")
    assert result.ret == 1, result
    assert "\x1b[" in result.stderr
    screen = plain(result.stderr)
    assert "2/2 books" in screen
    assert "1 failed" in screen
    assert "ETA 0:00:00" in screen
    assert "tokens 2,010 in / 405 out" in screen
    assert "cost $1.00" in screen
    assert result.stdout == ""


def test_progress_none_and_quiet_print_no_progress(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    silent = pipetester.run("pipeline.py", "--item", "good", "--progress", "none")
    assert "phase 1/3" not in silent.stderr
    assert "summary of pipeline" in silent.stderr
    quiet = pipetester.run("pipeline.py", "--item", "good2", "-q")
    assert "phase 1/3" not in quiet.stderr
    assert "summary" not in quiet.stderr


@pytest.mark.parametrize("jsonl", [False, True], ids=["", "jsonl"])
@pytest.mark.parametrize("mode", ["auto", "simple", "rich", "none"])
@pytest.mark.parametrize("blocked", [False, True], ids=["", "no-progress"])
def test_progress_options_combine(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, blocked: bool, mode: str, jsonl: bool
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    pipetester.make_pipeline(BOOKS)
    args = ["pipeline.py", "--item", "good", "--progress", mode]
    args += ["-p", "no:progress"] if blocked else []
    args += ["--jsonl"] if jsonl else []
    result = pipetester.run(*args)
    assert result.ret == 0, result
    if jsonl:
        events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
        assert events[0] == "run_start" and events[-1] == "run_finish"
        assert events.count("phase_complete") == 3
    else:
        assert result.stdout == ""
    shown = not blocked and mode != "none"
    assert ("good phase 1/3 research done" in result.stderr) == (shown and mode != "rich")
    assert ("\x1b[" in result.stderr) == (shown and mode == "rich")
    assert "pipekit: summary of pipeline" in plain(result.stderr)


def test_piped_run_has_no_escape_codes_and_an_empty_stdout(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    proc = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--item", "good", "-j", "8"],
        cwd=pipetester.path,
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "xterm-256color", "NO_COLOR": ""},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "\x1b" not in proc.stderr
    assert "[1/1] good phase 3/3 review done" in proc.stderr


def _run_in_terminal(
    tester: PipeTester,
    args: list[str],
    ready: re.Pattern[str],
    when_ready: Callable[[subprocess.Popen[bytes]], None],
    timeout: float = 60,
) -> tuple[int, str, str]:
    """Run pipekit on a pseudo-terminal; call ``when_ready`` once the screen matches ``ready``.

    Returns the exit code, the output seen until then and all of it.
    """
    release = tester.path / "release"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "RELEASE": str(release)}
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", *args],
        cwd=tester.path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    before = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.1)
            if readable:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not before and ready.search(plain(output.decode(errors="replace"))):
                before = output.decode(errors="replace")
                when_ready(proc)
            if proc.poll() is not None and not readable:
                break
        ret = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return ret, before, output.decode(errors="replace")


EIGHT_IN_FLIGHT = re.compile(
    "(?s)"
    + "".join(rf"(?=.*book-0{i}\s+phase 1/2 wait_for_release\s+\d+\.\ds)" for i in range(8))
    + ".*ETA"
)


@pytest.mark.slow
def test_live_display_in_a_terminal_shows_the_items_in_flight(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(GATED)
    ret, before, everything = _run_in_terminal(
        pipetester, ["run", "pipeline.py", "-j", "8"], EIGHT_IN_FLIGHT, lambda _: (pipetester.path / "release").touch()
    )
    assert before, f"the screen never showed the 8 items in flight:\n{plain(everything)}"
    assert ret == 0, plain(everything)
    assert "\x1b[" in before  # drawn, not printed line by line
    screen = plain(before)
    last_frame = screen[screen.rindex("pipeline -j 8") :]
    assert "0/12 books" in last_frame
    assert "phases 0/24" in last_frame
    assert "elapsed 0:00:0" in last_frame
    assert "ETA --:--:--" in last_frame
    assert "cost $0.0000" in last_frame
    assert "book-08" not in last_frame  # only -j 8 items are in flight
    final = plain(everything)
    assert "12/12 books" in final
    assert "ETA 0:00:00" in final
    assert "cost $1.50" in final
    assert "handler output for book-00" in final  # printed above the display, not through it
    assert "pipekit: summary of pipeline" in final
    assert re.search(r"1 wait_for_release\s+│\s+12\s+│\s+12\s+│\s+0\s+│\s+0\s+│", final), final
    assert "books: 12 selected: 12 completed, 0 failed, 0 remaining" in final
    assert everything.rindex("\x1b[?25h") > everything.rindex("12/12 books")  # cursor shown again


@pytest.mark.slow
def test_ctrl_c_under_the_live_display_leaves_a_clean_terminal(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(GATED)
    ret, before, everything = _run_in_terminal(
        pipetester,
        ["run", "pipeline.py", "-j", "8"],
        EIGHT_IN_FLIGHT,
        lambda proc: os.killpg(proc.pid, signal.SIGINT),
    )
    assert before, plain(everything)
    assert ret == 2, plain(everything)
    final = plain(everything)
    assert "interrupted: recording in-flight phases" in final
    assert "books: 12 selected: 0 completed, 0 failed, 12 remaining, 8 interrupted" in final
    assert "Traceback" not in final
    assert "ETA --:--:--" in final[final.rindex("pipeline -j 8") :]  # no promise for work left undone
    assert "failures" not in final  # interrupted phases are counted, not listed one by one
    assert everything.rindex("\x1b[?25h") > everything.rindex("pipeline -j 8")


@pytest.mark.parametrize(
    ("mode", "stderr_tty", "stdout_tty", "jsonl", "expected"),
    [
        ("auto", True, False, False, "rich"),
        ("auto", False, True, False, "simple"),
        ("auto", True, False, True, "rich"),  # events piped elsewhere
        ("auto", True, True, True, "simple"),  # events on the same terminal would tear the display
        ("rich", False, False, False, "rich"),
        ("simple", True, True, False, "simple"),
        ("none", True, True, False, "none"),
    ],
)
def test_auto_chooses_rich_only_for_a_terminal_of_its_own(
    monkeypatch: pytest.MonkeyPatch, mode: str, stderr_tty: bool, stdout_tty: bool, jsonl: bool, expected: str
) -> None:
    from pipekit.builtin.progress import choose_display

    monkeypatch.setenv("TERM", "xterm-256color")
    master, slave = os.openpty()
    with open(slave, "w") as terminal, open(os.devnull, "w") as devnull:
        stderr = terminal if stderr_tty else devnull
        stdout = terminal if stdout_tty else devnull
        assert choose_display(mode, stderr, stdout, jsonl) == expected
    os.close(master)


def test_a_resumed_run_counts_finished_items_and_shows_earlier_cost(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    pipetester.make_pipeline(BOOKS)
    pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    again = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "--item", "c", "--progress", "rich")
    assert again.ret == 0, again
    screen = plain(again.stderr)
    last_frame = screen[screen.rindex("pipeline -j 1") :]
    assert "3/3 books" in last_frame
    assert "phases 9/9" in last_frame
    assert "cost $0.7500  (+$1.50 in earlier runs)" in last_frame
