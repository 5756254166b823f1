"""pipekit-prices against genai-prices' real, bundled price data."""

from __future__ import annotations

import genai_prices
import pytest

from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase

    @phase(1)
    def summarize(item_id, ctx):
        ctx.record_usage(model="gpt-4o", tokens_in=120_000, tokens_out=30_000)
        ctx.record_usage(model="anthropic:claude-sonnet-4-5", tokens_in=50_000, tokens_out=2_000)
        return "summary"

    @phase(2, critical=False)
    async def review(ctx):
        ctx.record_usage(model="my-private-model-v7", tokens_in=400, tokens_out=100)
        ctx.record_usage(model="my-private-model-v7", tokens_in=400, tokens_out=100)
        return "reviewed"
'''


def expected(model: str, tokens_in: int, tokens_out: int, provider: str | None = None) -> float:
    usage = genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    return float(genai_prices.calc_price(usage, model, provider_id=provider).total_price)


def test_usage_is_priced_from_the_database_and_unknown_models_cost_nothing(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "-p", "prices")
    assert result.ret == 0, result
    want = expected("gpt-4o", 120_000, 30_000) + expected("claude-sonnet-4-5", 50_000, 2_000, "anthropic")
    # gpt-4o alone is $2.50 in / $10 out per million tokens: at least $0.60 here.
    assert want > 0.6
    for item in ("a", "b"):
        state = result.state(item)
        assert state.phases[1].cost_usd == pytest.approx(want)
        assert (state.phases[1].tokens_in, state.phases[1].tokens_out) == (170_000, 32_000)
        assert state.phases[1].executor == "gpt-4o"
        # Unknown: tokens kept, no cost, the phase still completed.
        assert state.phases[2].status == "completed"
        assert (state.phases[2].tokens_in, state.phases[2].cost_usd) == (800, 0.0)
    # Four calls with the unknown model over two items: one warning.
    assert result.stderr.count("no price for model 'my-private-model-v7'") == 1, result
    assert "warning" in result.stderr


def test_blocking_the_plugin_leaves_costs_at_zero(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "prices", "-p", "no:prices")
    assert result.ret == 0, result
    assert result.state("a").phases[1].tokens_in == 170_000
    assert result.state("a").phases[1].cost_usd == 0.0
    assert "no price" not in result.stderr


def test_many_handler_threads_price_concurrently(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1)
        def many(ctx):
            for _ in range(200):
                ctx.record_usage(model="gpt-4o-mini", tokens_in=1000, tokens_out=1000)
                ctx.record_usage(model="unknown-model", tokens_in=1, tokens_out=1)
    ''')
    ids = [f"i{n}" for n in range(8)]
    pipetester.make_items(*ids)
    result = pipetester.run("pipeline.py", "--items", "items.txt", "-j", "8", "-p", "prices")
    assert result.ret == 0, result
    one = expected("gpt-4o-mini", 1000, 1000)
    for item in ids:
        assert result.state(item).phases[1].cost_usd == pytest.approx(200 * one)
    assert result.stderr.count("no price for model 'unknown-model'") == 1


def test_a_pipeline_module_prices_its_own_model_first(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE + '''
    from pipekit import hookimpl

    @hookimpl
    def pipekit_price_usage(model, tokens_in, tokens_out):
        if model == "my-private-model-v7":
            return (tokens_in + tokens_out) / 1000
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "prices")
    assert result.ret == 0, result
    assert result.state("a").phases[2].cost_usd == pytest.approx(1.0)
    assert result.state("a").phases[1].cost_usd > 0.6
    assert "no price" not in result.stderr
