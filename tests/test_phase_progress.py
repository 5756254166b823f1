"""``ctx.progress(done, total)``: on the plain progress lines (throttled), as a
JSONL event, and in ``status --item`` for a phase in flight."""

from __future__ import annotations

from pipekit.testing import PipeTester


LONG = '''
    import time
    from pipekit import phase

    @phase(1)
    def read(item_id, ctx):
        for page in range(1, 41):
            ctx.progress(page, 40, label="pages")
        time.sleep(SLEEP)
        return "read"
'''


def test_progress_is_a_jsonl_event_and_one_throttled_plain_line(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(LONG.replace("SLEEP", "0"))
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--progress", "simple")
    assert result.ret == 0, result
    events = [(e["done"], e["total"], e["label"]) for name, e in result.events if name == "phase_progress"]
    assert events == [(page, 40, "pages") for page in range(1, 41)]
    lines = [line for line in result.stderr.splitlines() if "pages" in line]
    assert lines == ["[1/1] a phase 1/1 read pages 1/40"]  # 40 reports in a moment: one line


IN_FLIGHT = '''
    import time
    from pipekit import phase

    @phase(1)
    def read(item_id, ctx):
        ctx.progress(1, 40, label="pages")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # in flight until the test kills the run
            time.sleep(0.05)
        return "read"
'''


def test_status_shows_the_progress_of_a_phase_in_flight(pipetester: PipeTester) -> None:
    # The phase stays at page 1 until the kill: however late the kill lands (a loaded
    # machine), the stored progress is the one reported. With 40 pages reported at
    # once, the last (always stored) could land before a late kill.
    pipetester.make_pipeline(IN_FLIGHT)
    killed = pipetester.run_subprocess("pipeline.py", "--item", "a", kill_at=("phase_progress", "a", 1))
    assert killed.ret == -9, killed
    status = pipetester.run("status", "pipeline.py", "--item", "a")
    assert "progress: pages 1/40" in status.stdout, status.stdout
