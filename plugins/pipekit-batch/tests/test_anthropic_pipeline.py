"""A batch phase through AnthropicBatch, the anthropic SDK and the fake Anthropic API, end to end through the CLI."""

from __future__ import annotations

import pytest

from pipekit.testing import PipeTester
from pipekit_batch.fakeserver import FakeServer


PIPELINE = """
from pipekit import phase
from pipekit_batch import AnthropicBatch

BATCHES = {"claude": AnthropicBatch(price=(3.0, 15.0))}

def items():
    return [f"b{n:02d}" for n in range(20)]

@phase(1, batch="claude")
def ask(item_id):
    # "{item_id}.summary" does not fit Anthropic's [A-Za-z0-9_-]: pipekit maps it to a wire id.
    return [
        {"custom_id": f"{item_id}{sep}{part}", "params": {
            "model": "claude-sonnet-4-5", "max_tokens": 50,
            "messages": [{"role": "user", "content": f"{part} of {item_id}"}]}}
        for part, sep in (("summary", "."), ("title", "-"))
    ]

@phase(2)
def keep(item_id, ask):
    return sorted(ask)
"""


@pytest.mark.slow
def test_twenty_items_wait_in_one_batch_then_complete_keyed_by_their_own_ids(
    anthropic_fake: FakeServer, pipetester: PipeTester
) -> None:
    module = pipetester.make_pipeline(PIPELINE)
    first = pipetester.run_subprocess(str(module), "-p", "no:prices")
    assert first.ret == 6, first
    stats = anthropic_fake.stats()
    assert len(stats["batches"]) == 1 and len(stats["submitted"]) == 40
    assert set(stats["submitted"].values()) == {1}
    status = pipetester.run_subprocess("status", str(module))
    assert "waiting" in status.stdout and "claude" in status.stdout, status

    anthropic_fake.advance()
    second = pipetester.run_subprocess(str(module), "-p", "no:prices")
    assert second.ret == 0, second
    assert set(anthropic_fake.stats()["submitted"].values()) == {1}  # nothing sent again
    for n in range(20):
        state = second.state(f"b{n:02d}")
        answers = state.phase_outputs[1]
        assert sorted(answers) == [f"b{n:02d}-title", f"b{n:02d}.summary"]  # the handler's ids
        assert state.phase_outputs[2] == sorted(answers)
        phase = state.phases[1]
        assert phase.tokens_in == sum(a["usage"]["input_tokens"] for a in answers.values())
        assert phase.tokens_out == sum(a["usage"]["output_tokens"] for a in answers.values())
        assert phase.cost_usd == pytest.approx((phase.tokens_in * 3.0 + phase.tokens_out * 15.0) / 1e6 * 0.5)


@pytest.mark.slow
def test_a_poisoned_request_fails_only_its_item(anthropic_fake: FakeServer, pipetester: PipeTester) -> None:
    module = pipetester.make_pipeline(PIPELINE)
    anthropic_fake.configure(poison=["b03-title"])
    assert pipetester.run_subprocess(str(module), "-p", "no:prices").ret == 6
    anthropic_fake.advance()
    second = pipetester.run_subprocess(str(module), "-p", "no:prices")
    assert second.ret == 1, second
    failed = second.state("b03").phases[1]
    assert failed.status == "failed" and failed.error
    assert all(second.state(f"b{n:02d}").is_done for n in range(20) if n != 3)
