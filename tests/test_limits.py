"""Per-phase concurrency and named rate limits, through `pipekit run`.

Timing assertions here are lower bounds the limiter guarantees (a start
never comes earlier than the limit allows), so a slow machine cannot fail them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipekit.pipeline.limits import Limit
from pipekit.testing import PipeTester


def records(tester: PipeTester, name: str = "times.log") -> list[Any]:
    log = tester.path / name
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


CONCURRENCY = '''
    import asyncio, json, time
    from pipekit import phase

    def record(item_id, name, start, end):
        with open("times.log", "a") as f:
            f.write(json.dumps([item_id, name, start, end]) + "\\n")

    @phase(1)
    async def cheap(item_id):
        start = time.monotonic()
        await asyncio.sleep(0.05)
        record(item_id, "cheap", start, time.monotonic())

    @phase(2, concurrency=1)
    async def gpu(item_id):
        start = time.monotonic()
        await asyncio.sleep(0.02)
        record(item_id, "gpu", start, time.monotonic())
'''


def overlaps(intervals: list[tuple[float, float]]) -> int:
    intervals = sorted(intervals)
    return sum(1 for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False) if start < end)


def test_concurrency_1_never_has_two_items_in_the_phase(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(CONCURRENCY)
    pipetester.make_items(*[f"item{n}" for n in range(6)])
    result = pipetester.run("pipeline.py", "--items", "items.txt", "-j", "6")
    assert result.ret == 0, result
    by_phase: dict[str, list[tuple[float, float]]] = {"cheap": [], "gpu": []}
    for _, name, start, end in records(pipetester):
        by_phase[name].append((start, end))
    assert len(by_phase["gpu"]) == 6
    assert overlaps(by_phase["gpu"]) == 0
    assert overlaps(by_phase["cheap"]) > 0  # -j 6 is in force for the other phase
    waits = [e for e in result.events if e[0] == "phase_wait"]
    assert waits and all(p["reason"] == "concurrency" and p["phase"] == 2 for _, p in waits)
    result.fnmatch_lines([f"waited: {len(waits)} x concurrency of 'gpu'"])



def test_a_sync_handler_abandoned_at_its_timeout_keeps_its_slot_until_its_thread_ends(
    pipetester: PipeTester,
) -> None:
    # The first item's thread cannot be stopped at its timeout: it runs on for
    # a while, and concurrency=1 must still mean one thread in the phase.
    pipetester.make_pipeline("""
        import json, os, time
        from pipekit import phase

        @phase(1)
        def queue(item_id):
            time.sleep(0.1 if item_id == "fast" else 0)  # the slow one takes the slot first

        @phase(2, concurrency=1, timeout=0.2, critical=False)
        def gpu(item_id):
            start = time.monotonic()
            time.sleep(1.0 if item_id == "slow" else 0.01)
            # beside the module: a thread that outlives the test must not write elsewhere
            with open(os.path.join(os.path.dirname(__file__), "times.log"), "a") as f:
                f.write(json.dumps([item_id, start, time.monotonic()]) + "\\n")
    """)
    result = pipetester.run("pipeline.py", "--item", "slow", "--item", "fast", "-j", "2")
    assert result.ret == 0, result  # not critical: the run goes on
    assert result.state("slow").phases[2].reason == "timeout"
    assert result.state("fast").phases[2].status == "completed"
    times = {item: (start, end) for item, start, end in records(pipetester)}
    assert set(times) == {"slow", "fast"}
    assert overlaps(list(times.values())) == 0

def test_a_60_per_minute_limit_spaces_starts_by_a_second(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        import json, time
        import pipekit
        from pipekit import phase

        LIMITS = {"api": pipekit.Limit(rpm=60), "other api": pipekit.Limit(rpm=60)}

        def record(name):
            with open("times.log", "a") as f:
                f.write(json.dumps([name, time.monotonic()]) + "\\n")

        @phase(1, limits=["api"])
        async def call(item_id):
            record("phase start")

        @phase(2)
        async def acquire(ctx):
            await ctx.acquire("other api")
            record("acquired")
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "--item", "c", "-j", "3")
    assert result.ret == 0, result
    for name, least in (("acquired", 0.999), ("phase start", 0.9)):
        # Between a phase's acquisition and its handler the state is saved
        # (fsynced), which takes a varying time; ctx.acquire has no such gap.
        starts = sorted(at for what, at in records(pipetester) if what == name)
        assert len(starts) == 3
        assert all(later - earlier >= least for earlier, later in zip(starts, starts[1:], strict=False)), (name, starts)
    result.fnmatch_lines(["pipekit: limit 'api' is throttling*rpm=60*"])
    waits = [p for name, p in result.events if name == "phase_wait"]
    assert "limit:api" in {p["reason"] for p in waits}


RETRY_AFTER = '''
    import asyncio, json, time
    from pathlib import Path
    import pipekit
    from pipekit import hookimpl, phase

    LIMITS = {"api": pipekit.Limit(rpm=60_000)}

    def record(*fields):
        with open("times.log", "a") as f:
            f.write(json.dumps([*fields, time.monotonic()]) + "\\n")

    @hookimpl
    def pipekit_phase_retry(item, phase):
        Path("paused").touch()  # the limit is paused before this hook is called

    @phase(1)
    async def wait_for_the_429(item_id):
        # b and c reach the limit only once a's 429 has paused it.
        for _ in range(1000):
            if item_id == "a" or Path("paused").exists():
                break
            await asyncio.sleep(0.01)

    @phase(2)
    def call(item_id, ctx):
        ctx.acquire("api")  # a sync handler: blocks its thread
        record(item_id, "call")
        if item_id == "a" and ctx.attempt == 1:
            record(item_id, "429")
            raise pipekit.Retry(after=0.5)

    @phase(3, limits=["api"])
    async def again(item_id):
        record(item_id, "again")
'''


def test_a_retry_after_pauses_the_limit_for_every_user(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RETRY_AFTER)
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "--item", "c", "-j", "3")
    assert result.ret == 0, result
    times = {(item, what): at for item, what, at in records(pipetester)}  # a's last call: its retry
    for item in "abc":
        assert times[item, "call"] - times["a", "429"] >= 0.499, times
    result.fnmatch_lines(
        [
            "pipekit: limit 'api' paused for 0.5s (Retry-After from item 'a' phase 'call')",
            "waited: *retry-after 'api'*",
        ]
    )
    waits = {(p["item_id"], p["reason"]) for name, p in result.events if name == "phase_wait"}
    assert {("b", "retry-after:api"), ("c", "retry-after:api")} <= waits
    assert result.state("a").phases[2].attempts == 2


def test_asking_for_more_tokens_than_a_minute_allows_fails_clearly(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        import pipekit
        from pipekit import phase

        LIMITS = {"openai": pipekit.Limit(rpm=500, tpm=1000)}

        @phase(1)
        async def ask(ctx):
            await ctx.acquire("openai", tokens=400)
            await ctx.acquire("openai", tokens=5000)

        @phase(2, critical=False)
        async def unknown(ctx):
            await ctx.acquire("anthropic")
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    state = result.state("a")
    assert state.phases[1].error == "ValueError: limit 'openai': 5000 tokens is more than its tpm (1,000)"
    assert state.phases[2].status == "pending"


def test_an_unknown_limit_name_is_reported_in_the_handler(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        import pipekit
        from pipekit import phase

        LIMITS = {"openai": pipekit.Limit(rpm=500)}

        @phase(1)
        def ask(ctx):
            ctx.acquire("anthropic")
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    assert result.state("a").phases[1].error == "KeyError: \"no limit named 'anthropic' in LIMITS (openai)\""


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ('@phase(1, limits=["anthropic"])', "phase 'work': no limit named 'anthropic' in LIMITS (openai)"),
        ("@phase(1, concurrency=0)", "phase 'work': concurrency must be a positive int, not 0"),
        ('@phase(1, limits={"openai": 10**9})', "phase 'work': 1,000,000,000 tokens is more than 'openai' allows"),
        ('@phase(1, max_cost="a lot")', "phase 'work': max_cost must be a number of dollars, not 'a lot'"),
    ],
)
def test_bad_declarations_are_usage_errors_before_any_item_runs(
    pipetester: PipeTester, declaration: str, message: str
) -> None:
    pipetester.make_pipeline(
        f"""
        import pipekit
        from pipekit import phase

        LIMITS = {{"openai": pipekit.Limit(rpm=500, tpm=200_000)}}

        {declaration}
        def work():
            open("ran", "w").close()
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert message in result.stderr
    assert not Path(pipetester.path / "ran").exists()


def test_a_limit_needs_a_rate() -> None:
    with pytest.raises(ValueError, match="rpm, tpm or both"):
        Limit()
    with pytest.raises(ValueError, match="rpm must be positive"):
        Limit(rpm=0)
