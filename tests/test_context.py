"""``ctx.record_usage``: tokens always count, the cost comes from ``pipekit_price_usage``."""

from __future__ import annotations

import threading

import pytest

from pipekit import hookimpl
from pipekit.testing import PipeTester


USAGE = '''
    from pipekit import phase

    @phase(1)
    def ask(ctx):
        ctx.record_usage(model="house-model", tokens_in=1000, tokens_out=200)
        ctx.record_usage("house-model", tokens_in=10)
        return "ok"

    @phase(2)
    async def ask_async(ctx):
        cost = ctx.record_usage(model="other", tokens_in=5, tokens_out=5)
        return f"cost={cost}"
'''


class HousePrices:
    """Prices ``house-model`` at $1 per 1,000 tokens in and $2 per 1,000 out; knows nothing else."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    @hookimpl
    def pipekit_price_usage(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        self.threads.add(threading.current_thread().name)
        if model != "house-model":
            return None
        return tokens_in / 1000 + 2 * tokens_out / 1000


def test_record_usage_is_priced_by_the_hook(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(USAGE)
    prices = HousePrices()
    result = pipetester.run("pipeline.py", "--item", "a", plugins=[prices])
    assert result.ret == 0, result
    phase1, phase2 = result.state("a").phases[1], result.state("a").phases[2]
    assert (phase1.tokens_in, phase1.tokens_out) == (1010, 200)
    assert abs(phase1.cost_usd - 1.41) < 1e-9
    assert phase1.executor == "house-model"
    # A model no plugin prices: tokens recorded, cost 0, and the handler is told so.
    assert (phase2.tokens_in, phase2.tokens_out, phase2.cost_usd) == (5, 5, 0.0)
    assert result.state("a").phase_outputs[2] == "cost=0.0"
    # The sync handler ran in a worker thread and priced from there.
    assert len(prices.threads) == 2


def test_record_usage_without_a_pricing_plugin_costs_nothing(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(USAGE)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert result.state("a").phases[1].tokens_in == 1010
    assert result.state("a").phases[1].cost_usd == 0.0
    (complete,) = [c for c in result.calls("pipekit_phase_complete") if c["phase"].num == 1]
    assert complete["result"].tokens_out == 200


@pytest.mark.slow
def test_usage_recorded_in_a_worker_process_is_priced_by_the_driver(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        USAGE
        + """
    from pipekit import hookimpl

    @hookimpl
    def pipekit_price_usage(model, tokens_in, tokens_out):
        if model == "house-model":
            return tokens_in / 1000 + 2 * tokens_out / 1000
    """
    )
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert result.ret == 0, result
    phase1 = result.state("a").phases[1]
    assert (phase1.tokens_in, phase1.tokens_out) == (1010, 200)
    assert abs(phase1.cost_usd - 1.41) < 1e-9
    assert result.state("a").phases[2].cost_usd == 0.0
