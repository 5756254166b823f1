"""A batch phase end to end through the CLI, the official SDK and the fake HTTP API of
each provider: ``--wait`` in one run, a run that waits and the next that collects,
poisoned and expired requests, and the prices plugin pricing the answers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipekit.testing import PipeResult
from pipekit.testing import PipeTester
from pipekit_batch.fakeserver import FakeServer


PIPELINE = """
from pipekit import phase
from pipekit_batch import AnthropicBatch
from pipekit_batch import OpenAIBatch

PROVIDER = "{provider}"
# Prices far above any model's: the tests tell them from the prices plugin's.
BATCHES = {{"openai": OpenAIBatch(price=(100.0, 400.0)), "anthropic": AnthropicBatch(price=(100.0, 400.0))}}
MODEL = "gpt-4o-mini" if PROVIDER == "openai" else "claude-sonnet-4-5"

def items():
    return [f"b{{n:02d}}" for n in range(20)]

@phase(1, batch=PROVIDER, retries=1)
def ask(item_id):
    field = "body" if PROVIDER == "openai" else "params"
    # "title" is every item's id: not unique within the batch, so pipekit maps it to a wire id.
    return [{{"custom_id": custom_id, field: {{"model": MODEL, "max_tokens": 30,
             "messages": [{{"role": "user", "content": f"{{custom_id}} of {{item_id}} please"}}]}}}}
            for custom_id in (f"{{item_id}}-summary", "title")]

@phase(2)
def keep(item_id, ask):
    with open("kept.log", "a") as log:
        log.write(item_id + "\\n")
    return sorted(ask)
"""

IDS = [f"b{n:02d}" for n in range(20)]
PROVIDERS = ["openai", "anthropic"]


def _pipeline(tester: PipeTester, provider: str) -> Path:
    return tester.make_pipeline(PIPELINE.format(provider=provider))


def _run(tester: PipeTester, module: Path, *args: str) -> PipeResult:
    return tester.run_subprocess(str(module), "--progress", "simple", *args)


def _usage(provider: str) -> tuple[str, str]:
    return ("prompt_tokens", "completion_tokens") if provider == "openai" else ("input_tokens", "output_tokens")


def _assert_completed_with_the_answers_usage(result: PipeResult, provider: str, item_id: str) -> dict[str, Any]:
    state = result.state(item_id)
    assert [state.phases[n].status for n in (1, 2)] == ["completed", "completed"], item_id
    answers: dict[str, Any] = state.phase_outputs[1]
    assert sorted(answers) == [f"{item_id}-summary", "title"]  # keyed by the handler's own ids
    tokens_in, tokens_out = _usage(provider)
    assert state.phases[1].tokens_in == sum(a["usage"][tokens_in] for a in answers.values())
    assert state.phases[1].tokens_out == sum(a["usage"][tokens_out] for a in answers.values())
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_wait_sends_one_batch_collects_it_and_goes_on_in_one_run(
    provider: str, pipetester: PipeTester, request: pytest.FixtureRequest
) -> None:
    fake: FakeServer = request.getfixturevalue(f"{provider}_fake")
    fake.configure(end_after_polls=2)
    module = _pipeline(pipetester, provider)

    result = _run(pipetester, module, "-p", "no:prices", "--wait", "--poll-interval", "0.05")

    assert result.ret == 0, result
    stats = fake.stats()
    assert len(stats["batches"]) == 1
    assert len(stats["submitted"]) == 40 and set(stats["submitted"].values()) == {1}  # each request once
    assert "sent 40 requests in batch " in result.stderr and ": in_progress, 40 requests (" in result.stderr
    for item_id in IDS:
        answers = _assert_completed_with_the_answers_usage(result, provider, item_id)
        assert f"title of {item_id} please" in str(answers["title"])  # the item's own answer, mapped back
    assert Counter((pipetester.path / "kept.log").read_text().split()) == Counter(IDS)


@pytest.mark.slow
def test_openai_twenty_items_wait_then_the_next_run_collects(openai_fake: FakeServer, pipetester: PipeTester) -> None:
    module = _pipeline(pipetester, "openai")
    first = _run(pipetester, module, "-p", "no:prices")
    assert first.ret == 6, first
    assert "waiting for 40 requests in 1 batch at 'openai'" in first.stderr
    assert len(openai_fake.stats()["submitted"]) == 40
    status = pipetester.run_subprocess("status", str(module))
    assert status.ret == 0, status
    assert "b00   ⧗ ·" in status.stdout and "0 pending, 20 waiting;" in status.stdout
    assert "batches:\n  openai  batch_" in status.stdout and "  submitted  40 requests  age " in status.stdout

    openai_fake.advance()
    second = _run(pipetester, module, "-p", "no:prices")
    assert second.ret == 0, second
    assert set(openai_fake.stats()["submitted"].values()) == {1}  # nothing sent again
    for item_id in IDS:
        _assert_completed_with_the_answers_usage(second, "openai", item_id)


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_poisoned_request_fails_only_its_item_and_an_expired_one_is_sent_again(
    provider: str, pipetester: PipeTester, request: pytest.FixtureRequest
) -> None:
    fake: FakeServer = request.getfixturevalue(f"{provider}_fake")
    fake.configure(end_after_polls=0, poison=["b03-summary"], expire=["b07-summary"])
    module = _pipeline(pipetester, provider)

    result = _run(pipetester, module, "-p", "no:prices", "--wait", "--poll-interval", "0.05")

    assert result.ret == 1, result
    failed = result.state("b03").phases[1]
    assert failed.status == "failed" and failed.attempts == 1  # the handler ran once
    assert "batch request 'b03-summary' failed: " in (failed.error or "")
    assert "the fake server was told to fail 'b03-summary'" in (failed.error or "")  # the provider's text
    assert result.state("b03").phases[2].status == "pending"
    submitted = fake.stats()["submitted"]
    assert submitted.pop("b03-summary") == 2  # retries=1: sent again once, then it fails the item
    assert submitted.pop("b07-summary") == 2  # expired, sent again in a new batch
    assert set(submitted.values()) == {1}
    for item_id in IDS:
        if item_id != "b03":
            _assert_completed_with_the_answers_usage(result, provider, item_id)


@pytest.mark.slow
def test_the_prices_plugin_prices_the_answers_at_half_the_online_price(
    openai_fake: FakeServer, pipetester: PipeTester
) -> None:
    import genai_prices

    openai_fake.configure(end_after_polls=0)
    module = _pipeline(pipetester, "openai")
    result = _run(pipetester, module, "-p", "prices", "--wait", "--poll-interval", "0.05")
    assert result.ret == 0, result
    total = 0.0
    for item_id in IDS:
        answers = _assert_completed_with_the_answers_usage(result, "openai", item_id)
        online = 0.0
        for answer in answers.values():
            usage = genai_prices.Usage(
                input_tokens=answer["usage"]["prompt_tokens"], output_tokens=answer["usage"]["completion_tokens"]
            )
            online += float(genai_prices.calc_price(usage, answer["model"]).total_price)
        assert online > 0
        assert result.state(item_id).phases[1].cost_usd == pytest.approx(online * 0.5)  # not the price= given
        total += online * 0.5
    assert f"batches: 40 requests, cost ${total:.4f} (saved ${total:.4f} against online prices)" in result.stderr
