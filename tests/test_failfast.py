"""Failing fast: ``--maxfail``, ``-x``, ``--maxfail-same`` and ``@phase(max_attempts=N)``."""

from __future__ import annotations

import pytest

from pipekit.outcomes import ExitCode
from pipekit.testing import PipeTester


FAILING = """
    from pipekit import phase

    @phase(1)
    def work(item_id):
        if item_id.startswith("bad"):
            raise ValueError(f"no data for {item_id}")
        return "ok"

    @phase(2)
    def more(item_id):
        return "more"
"""


def _started(result, phase: str = "work") -> list[str]:
    return [c["item"].id for c in result.calls("pipekit_phase_start") if c["phase"].name == phase]


def test_maxfail_stops_starting_items_and_exits_1(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(FAILING)
    items = pipetester.make_items("bad1", "good1", "bad2", "good2", "bad3")
    result = pipetester.run_subprocess("pipeline.py", "--items", str(items), "--maxfail", "2", "--progress", "simple")
    assert result.ret == ExitCode.ITEMS_FAILED
    started = [e[1]["item_id"] for e in result.events if e[0] == "phase_start" and e[1]["phase"] == 1]
    assert started == ["bad1", "good1", "bad2"]
    assert "pipekit: stopped after 2 failed items (--maxfail 2)" in result.stderr
    assert "stopped by --max-cost" not in result.stderr
    assert not result.has_state("good2")
    # The next run picks up the rest.
    again = pipetester.run("pipeline.py", "--items", str(items))
    assert again.ret == ExitCode.ITEMS_FAILED
    assert _started(again) == ["bad1", "bad2", "good2", "bad3"]
    assert again.state("good2").is_done


def test_x_is_maxfail_1(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(FAILING)
    items = pipetester.make_items("good1", "bad1", "good2")
    result = pipetester.run("pipeline.py", "--items", str(items), "-x")
    assert result.ret == ExitCode.ITEMS_FAILED
    assert _started(result) == ["good1", "bad1"]
    assert "stopped after 1 failed item (--maxfail 1)" in result.stderr
    result.fnmatch_lines(["items: 3 selected: 1 completed, 1 failed, 1 remaining", "stopped after 1 failed item*"])


def test_maxfail_lets_in_flight_phases_finish_and_saves_them(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("""
        import time
        from pipekit import phase

        @phase(1)
        def work(item_id):
            if item_id == "bad":
                raise ValueError("broken")
            time.sleep(0.3)
            return "ok"

        @phase(2)
        def more(item_id):
            return "more"
    """)
    items = pipetester.make_items("slow", "bad", "never")
    result = pipetester.run("pipeline.py", "--items", str(items), "-j", "2", "-x")
    assert result.ret == ExitCode.ITEMS_FAILED
    assert result.state("slow").phases[1].status == "completed"  # in flight: finished and saved
    assert result.state("slow").phases[2].status == "pending"  # not started after the stop
    assert "never" not in _started(result)
    result.fnmatch_lines(["*1 stopped by --maxfail*"])


def test_maxfail_same_stops_on_the_same_error_in_a_row(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("""
        from pipekit import phase

        @phase(1)
        def work(item_id):
            if item_id.startswith("q"):
                raise RuntimeError(f"quota exceeded\\nrequest {item_id}")
            if item_id.startswith("bad"):
                raise ValueError(f"bad input {item_id}")
            return "ok"
    """)
    items = pipetester.make_items("q1", "ok1", "q2", "bad1", "q3", "q4", "q5", "q6")
    result = pipetester.run("pipeline.py", "--items", str(items), "--maxfail-same", "3")
    assert result.ret == ExitCode.ITEMS_FAILED
    # q1, q2 are broken up by ok1 and bad1; q3, q4, q5 are three in a row.
    assert _started(result) == ["q1", "ok1", "q2", "bad1", "q3", "q4", "q5"]
    assert (
        "pipekit: stopped: the same error on 3 items in a row (--maxfail-same 3): RuntimeError: quota exceeded"
        in result.stderr
    )


@pytest.mark.parametrize("args", [["--maxfail", "0"], ["--maxfail-same", "x"], ["--maxfail-same", "-1"]])
def test_bad_maxfail_is_a_usage_error(pipetester: PipeTester, args: list[str]) -> None:
    pipetester.make_pipeline(FAILING)
    result = pipetester.run("pipeline.py", "--item", "good", *args)
    assert result.ret == ExitCode.USAGE_ERROR
    assert args[0] in result.stderr


ALWAYS_FAILS = """
    from pipekit import phase, Fail

    @phase(1, max_attempts=MAX, retries=RETRIES)
    def call(item_id):
        raise ERROR

    @phase(2)
    def after(item_id):
        return "after"
"""


def _always_fails(maximum: int, retries: int = 0, error: str = "ValueError('poisoned')") -> str:
    return ALWAYS_FAILS.replace("MAX", str(maximum)).replace("RETRIES", str(retries)).replace("ERROR", error)


def test_max_attempts_caps_retries_and_later_runs(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(_always_fails(2, retries=5))
    first = pipetester.run("pipeline.py", "--item", "book")
    assert first.ret == ExitCode.ITEMS_FAILED
    assert first.state("book").phases[1].attempts == 2
    second = pipetester.run("pipeline.py", "--item", "book")
    assert second.ret == ExitCode.ITEMS_FAILED
    assert _started(second, "call") == []
    assert second.state("book").phases[1].attempts == 2
    second.assert_outcomes(failed=1)
    status = pipetester.run("status", "pipeline.py", "--item", "book")
    assert "gave up after 2 attempts" in status.stdout


def test_max_attempts_counts_fail_across_runs(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(_always_fails(2, error="Fail('no such book')"))
    for expected in (1, 2, 2, 2):
        result = pipetester.run("pipeline.py", "--item", "book")
        assert result.ret == ExitCode.ITEMS_FAILED
        assert result.state("book").phases[1].attempts == expected


def test_reset_makes_a_capped_phase_runnable_again(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(_always_fails(1))
    pipetester.run("pipeline.py", "--item", "book")
    assert _started(pipetester.run("pipeline.py", "--item", "book"), "call") == []
    assert pipetester.run("reset", "pipeline.py", "--item", "book").ret == 0
    again = pipetester.run("pipeline.py", "--item", "book")
    assert _started(again, "call") == ["book"]
    state = again.state("book")
    assert state.phases[1].attempts == 2  # the attempt before the reset stays in its history
    assert state.phases[1].attempts_at_reset == 1
    assert _started(pipetester.run("pipeline.py", "--item", "book"), "call") == []


def test_given_up_items_do_not_trip_maxfail(pipetester: PipeTester) -> None:
    fine = "def call(item_id):\n        if item_id == 'fine':\n            return 'ok'"
    source = _always_fails(1).replace("def call(item_id):", fine)
    pipetester.make_pipeline(source)
    pipetester.run("pipeline.py", "--item", "book")
    result = pipetester.run("pipeline.py", "--item", "book", "--item", "fine", "-x")
    assert result.ret == ExitCode.ITEMS_FAILED
    assert result.state("fine").is_done


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "'3'", "True"])
def test_invalid_max_attempts_is_a_usage_error_naming_the_phase(pipetester: PipeTester, value: str) -> None:
    pipetester.make_pipeline(_always_fails(1).replace("max_attempts=1", f"max_attempts={value}"))
    result = pipetester.run("pipeline.py", "--item", "book")
    assert result.ret == ExitCode.USAGE_ERROR
    assert "call: max_attempts must be a positive int" in result.stderr


RATE_LIMITED = """
    import pipekit
    from pipekit import phase, Retry

    LIMITS = {"api": pipekit.Limit(rpm=60000)}

    @phase(1, limits=["api"], retries=1, retry_backoff=0)
    def call(item_id, ctx):
        if ctx.attempt <= 3:
            raise Retry(after=0.01)
        if ctx.attempt == 4:
            raise ValueError("flaky")
        return "ok"
"""


def test_requested_retries_are_not_failures_and_print_nothing_per_retry(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RATE_LIMITED)
    items = pipetester.make_items("a", "b")
    result = pipetester.run("pipeline.py", "--items", str(items), "--progress", "simple")
    assert result.ret == 0, result
    assert "retry requested" not in result.stderr
    assert result.stderr.count("paused for") <= 1  # one line per limit, not one per Retry
    assert result.stderr.count("attempt 4 failed, retrying: ValueError: flaky") == 2  # a real failure still says so
    result.fnmatch_lines(["retries: 6 requested by handlers (Retry), 2 after errors"])
    verbose = pipetester.run("pipeline.py", "--item", "c", "--progress", "simple", "-v")
    assert verbose.ret == 0
    assert "failed, retrying: Retry" not in verbose.stderr
    verbose.fnmatch_lines(["*c phase 1/1 call attempt 1: retry requested (after 0.01s)"])
    quiet = pipetester.run("pipeline.py", "--item", "d", "-q", "--progress", "none")
    assert quiet.ret == 0
    assert quiet.stderr.strip().splitlines() == [line for line in quiet.stderr.strip().splitlines() if "state:" in line]
