"""Cost recorded inside ``ctx.checkpoint`` is kept with its result and counted once.

A checkpoint's result outlives the attempt that paid for it; so must the
payment. These tests kill pipekit with SIGKILL after checkpoints recorded
cost and check what the state, the run summary and ``--max-cost`` see.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.jsondir import JsonDirStore
from pipekit.testing import PipeTester


# Each chapter costs $0.01 (100 tokens in, 10 out); the phase adds $0.001 outside
# any checkpoint. A file ``kill-after-N`` kills the process after chapter N is kept;
# ``fail-after-N`` fails the attempt there.
BOOK = '''
    import os, signal
    from pathlib import Path
    from pipekit import phase

    def summarise(ctx, number):
        with open("paid.log", "a") as f:
            f.write(f"{ctx.item_id} {number}\\n")
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.01)
        return f"summary {number}"

    def stop_after(number):
        for kind in ("kill", "fail"):
            flag = Path(f"{kind}-after-{number}")
            if flag.exists():
                flag.unlink()
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"stopped after chapter {number}")

    @phase(1, retries=RETRIES, retry_backoff=0.01)
    def book(item_id, ctx):
        parts = []
        for number in range(3):
            parts.append(ctx.checkpoint(f"chapter {number}", summarise, ctx, number))
            stop_after(number)
        ctx.record_cost(cost_usd=0.001)
        return " / ".join(parts)
'''


def paid(tester: PipeTester) -> list[str]:
    log = tester.path / "paid.log"
    return log.read_text().splitlines() if log.exists() else []


def book(tester: PipeTester, retries: int = 0) -> None:
    tester.make_pipeline(BOOK.replace("RETRIES", str(retries)))


def phase_usage(state: Any) -> tuple[int, int, float]:
    phase = state.phases[1]
    return phase.tokens_in, phase.tokens_out, round(phase.cost_usd, 6)


@pytest.mark.slow
def test_cost_kept_in_checkpoints_before_a_kill_counts_once_after_the_resume(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "kill-after-1").touch()
    killed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert killed.ret == -9, killed
    assert paid(pipetester) == ["a 0", "a 1"]

    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert resumed.ret == 0, resumed
    assert paid(pipetester) == ["a 0", "a 1", "a 2"]  # chapters 0 and 1 were not paid again
    state = resumed.state("a")
    # Everything recorded: three chapters and the phase's own $0.001.
    assert phase_usage(state) == (300, 30, 0.031)
    assert round(state.total_cost_usd, 6) == 0.031
    assert state.total_tokens_in == 300
    complete = [e for name, e in resumed.events if name == "phase_complete"]
    assert round(complete[0]["cost_usd"], 6) == 0.031
    assert "cost $0.0310 this run" in resumed.stderr


@pytest.mark.slow
def test_two_kills_in_a_row_then_a_failure_then_a_success_count_each_chapter_once(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "kill-after-0").touch()
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == -9
    # The second attempt reuses chapter 0 (its cost counted by nobody yet) and dies too.
    (pipetester.path / "kill-after-1").touch()
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == -9
    # The third fails normally: its usage, chapters 0 and 1 included, is saved.
    (pipetester.path / "fail-after-1").touch()
    failed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert failed.ret == 1, failed
    assert phase_usage(failed.state("a")) == (200, 20, 0.02)
    # The fourth reuses both (already counted) and pays for chapter 2 only.
    done = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert done.ret == 0, done
    assert paid(pipetester) == ["a 0", "a 1", "a 2"]
    assert phase_usage(done.state("a")) == (300, 30, 0.031)
    assert done.state("a").phases[1].attempts == 4


def test_a_retry_reusing_a_checkpoint_does_not_count_its_cost_again(pipetester: PipeTester) -> None:
    book(pipetester, retries=1)
    (pipetester.path / "fail-after-1").touch()
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert paid(pipetester) == ["a 0", "a 1", "a 2"]
    assert phase_usage(result.state("a")) == (300, 30, 0.031)


@pytest.mark.slow
def test_max_cost_sees_the_cost_of_checkpoints_kept_before_a_kill(pipetester: PipeTester) -> None:
    book(pipetester)
    pipetester.make_items("a", "b")
    (pipetester.path / "kill-after-1").touch()
    assert pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-j", "1").ret == -9
    # Item a's phase ends at $0.031, over the cap: b must not start.
    resumed = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-j", "1", "--max-cost", "0.025")
    assert resumed.ret != 0, resumed
    assert "stopped by --max-cost" in resumed.stderr, resumed.stderr
    assert paid(pipetester) == ["a 0", "a 1", "a 2"]
    assert round(resumed.state("a").total_cost_usd, 6) == 0.031
    assert not resumed.has_state("b")


@pytest.mark.slow
def test_a_worker_killed_after_checkpoints_recorded_cost_loses_none_of_it(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "kill-after-1").touch()
    lost = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert lost.ret == 1, lost
    assert lost.state("a").phases[1].reason == "worker_lost"
    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert resumed.ret == 0, resumed
    assert paid(pipetester) == ["a 0", "a 1", "a 2"]
    assert phase_usage(resumed.state("a")) == (300, 30, 0.031)


def context(store: JsonDirStore, attempt: int) -> PhaseContext:
    definition = PhaseDefinition(num=1, name="p", handler=lambda: None)
    return PhaseContext(
        "a", {}, definition, attempt, Path("."), checkpoints=Checkpoints(store, "a", "p")
    )


def test_concurrent_and_nested_checkpoints_each_keep_their_own_cost(tmp_path: Path) -> None:
    store = JsonDirStore(tmp_path)
    ctx = context(store, 1)

    async def call(cost: float) -> str:
        await asyncio.sleep(0.01)
        ctx.record_cost(cost_usd=cost)
        await asyncio.sleep(0.01)
        return f"{cost}"

    def outer() -> str:
        ctx.record_cost(cost_usd=0.5)
        return str(ctx.checkpoint("inner", lambda: ctx.record_cost(cost_usd=0.25) or 1))

    async def handler() -> None:
        await asyncio.gather(ctx.checkpoint("one", call, 1.0), ctx.checkpoint("two", call, 2.0))
        ctx.checkpoint("outer", outer)
        ctx.record_cost(cost_usd=8.0)  # outside any checkpoint

    asyncio.run(handler())
    assert ctx.cost_usd == 11.75
    kept = {key: value["cost_usd"] for key, value in store.load_checkpoints("a", "p").items()}
    assert kept == {"one": 1.0, "two": 2.0, "inner": 0.25, "outer": 0.75}

    # Attempt 1 died: a new attempt reusing "outer" counts it (inner included) once.
    from pipekit.pipeline.checkpoints import release_attempt

    release_attempt(store, "a", "p", 1)
    again = context(store, 2)
    assert again.checkpoint("outer", outer) == "1"
    assert again.checkpoint("outer", outer) == "1"
    assert again.cost_usd == 0.75
    third = context(store, 3)
    assert asyncio.run(third.checkpoint("two", call)) == "2.0"
    assert third.cost_usd == 2.0
    # Claimed by attempt 3 (which ended without dying): attempt 4 adds nothing.
    fourth = context(store, 4)
    asyncio.run(fourth.checkpoint("two", call))
    assert fourth.cost_usd == 0.0


def test_a_result_without_cost_is_stored_as_before_and_one_like_an_envelope_is_not_misread(tmp_path: Path) -> None:
    store = JsonDirStore(tmp_path)
    ctx = context(store, 1)
    tricky = {"pipekit.checkpoint": 1, "value": "not mine"}
    assert ctx.checkpoint("plain", lambda: [1, 2]) == [1, 2]
    assert ctx.checkpoint("tricky", lambda: tricky) == tricky
    assert store.load_checkpoints("a", "p")["plain"] == [1, 2]
    assert context(store, 2).checkpoint("tricky", lambda: None) == tricky
    record = json.loads((tmp_path / "a.checkpoints" / "p" / "plain.json").read_text())
    assert record == {"key": "plain", "value": [1, 2]}
