"""The driver's cheap per-phase paths keep their guarantees: the timeouts behind
one loop timer (``pipekit.engine.waiting.Deadlines``) and the results of thread
calls handed back to the loop together (``pipekit.execution.base.run_in_thread``)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from typing import Any

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit.engine.waiting import deadlines
from pipekit.execution.base import run_in_thread
from pipekit.testing import PipeTester


def test_a_short_timeout_added_after_a_long_one_fires_on_time() -> None:
    fired: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        table = deadlines(loop)
        table.add(start + 600, lambda _: fired.append(("long", loop.time() - start)))
        table.add(start + 0.05, lambda _: fired.append(("short", loop.time() - start)))
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert [name for name, _ in fired] == ["short"]
    assert 0.05 <= fired[0][1] < 0.3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=12))
def test_each_deadline_fires_once_at_its_time_unless_cancelled(plan: list[tuple[int, bool]]) -> None:
    fired: dict[int, float] = {}

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        table = deadlines(loop)
        entries = []
        for index, (millis, _) in enumerate(plan):

            def record(_: None, index: int = index) -> None:
                assert index not in fired, "fired twice"
                fired[index] = loop.time()

            entries.append(table.add(start + millis / 1000, record))
        for entry, (_, cancel) in zip(entries, plan, strict=True):
            if cancel:
                entry[2] = None
        await asyncio.sleep(0.08)
        return start

    start = asyncio.run(main())
    assert set(fired) == {index for index, (_, cancel) in enumerate(plan) if not cancel}
    for index, at in fired.items():
        assert at >= start + plan[index][0] / 1000 - 0.002  # (the loop's clock resolution)


def test_cancelled_deadlines_do_not_pile_up() -> None:
    """A run's phases end long before their 600 s timeouts: their entries go, the heap stays small."""

    async def main() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        table = deadlines(loop)
        for _ in range(10_000):
            table.add(loop.time() + 600, lambda _: None)[2] = None
        woken = loop.create_future()
        table.add(loop.time() + 0.01, lambda _: woken.set_result(True))
        return len(table._heap), await asyncio.wait_for(woken, 1)

    size, woken = asyncio.run(main())
    assert size <= 256 and woken


def test_calls_ending_together_each_resolve_with_their_own_context() -> None:
    """Results that reach the loop in one hand-over still each reach their own
    future, after their own call, with the caller's context variables."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var")
    gate = threading.Event()
    exits: list[int] = []

    def call(n: int) -> tuple[int, int, str]:
        gate.wait(5)
        if n % 5 == 0:
            raise ValueError(n)
        return n, var.get(), threading.current_thread().name

    async def main() -> list[Any]:
        futures = []
        for n in range(40):
            var.set(n * 10)
            futures.append(run_in_thread(call, {"n": n}, name=f"call-{n}", on_exit=functools.partial(exits.append, n)))
        await asyncio.sleep(0.05)
        gate.set()  # all end at once: their results arrive while the loop sleeps
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(main())
    for n, result in enumerate(results):
        if n % 5 == 0:
            assert isinstance(result, ValueError) and result.args == (n,)
        else:
            assert result == (n, n * 10, f"call-{n}")
    assert sorted(exits) == list(range(40))


def test_an_on_exit_that_raises_strands_no_other_call() -> None:
    ended: list[int] = []
    gate = threading.Event()

    def on_exit(n: int) -> None:
        ended.append(n)
        if n == 0:
            raise RuntimeError("observer bug")

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)
        futures = [
            run_in_thread(gate.wait, {"timeout": 5}, name="t", on_exit=functools.partial(on_exit, n)) for n in range(8)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.wait_for(asyncio.gather(*futures), 5)

    assert asyncio.run(main()) == [True] * 8
    assert sorted(ended) == list(range(8))


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_timeouts_of_different_lengths_in_one_run(pipetester: PipeTester, kind: str) -> None:
    """Phases with long timeouts in flight do not delay a short one: it fails at its
    deadline, the others complete, and the run exits 1."""
    sleep = "await asyncio.sleep" if kind == "async def" else "time.sleep"
    pipetester.make_pipeline(
        f"""
        import asyncio, time
        from pipekit import phase

        @phase(1, timeout=600)
        {kind} slowish(item_id):
            {sleep}(0.3 if item_id == "a" else 0.01)
            return "ok"

        @phase(2, timeout=0.2)
        {kind} quick(item_id):
            {sleep}(5 if item_id == "b" else 0)
            return "ok"

        def items():
            return ["a", "b", "c"]
        """
    )
    started = time.monotonic()
    result = pipetester.run_subprocess("run", "pipeline.py", "-j", "3")
    assert time.monotonic() - started < 4.5
    assert result.ret == 1, result
    states = {item: result.state(item) for item in "abc"}
    assert (states["b"].phases[2].status, states["b"].phases[2].reason) == ("failed", "timeout")
    assert states["a"].phases[2].status == "completed"
    assert states["c"].phases[2].status == "completed"
