"""AnthropicBatch through the real ``anthropic`` SDK against the fake Anthropic server."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from pipekit import UsageError
from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit_batch import AnthropicBatch
from pipekit_batch.fakeserver import FakeServer


def message(custom_id: str, text: str, model: str = "claude-haiku-4-5") -> BatchRequest:
    return BatchRequest(custom_id, {"model": model, "max_tokens": 256, "system": "Summarise.",
                                    "messages": [{"role": "user", "content": text}]})


REQUESTS = [message("book-1", "once upon a time"), message("book-2", "the end"), message("book-3", "a b c d e")]


def sdk() -> anthropic.Anthropic:
    return anthropic.Anthropic()  # from the fixture's ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY


def test_submit_sends_every_request_once(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    assert isinstance(provider, BatchProvider)
    batch_id = provider.submit("k", REQUESTS)
    batch = sdk().messages.batches.retrieve(batch_id)
    assert (batch.processing_status, batch.request_counts.processing) == ("in_progress", 3)
    assert anthropic_fake.stats()["submitted"] == {"book-1": 1, "book-2": 1, "book-3": 1}


def test_poll_and_results_map_each_outcome(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    anthropic_fake.configure(poison=["book-2"], expire=["book-3"])
    batch_id = provider.submit("k", REQUESTS + [message("book-4", "another one", model="claude-opus-4-5")])
    status = provider.poll(batch_id)
    assert (status.ended, status.provider_status) == (False, "in_progress")
    assert status.counts == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    anthropic_fake.advance()
    status = provider.poll(batch_id)
    assert (status.ended, status.provider_status, status.error) == (True, "ended", None)
    assert status.counts == {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 1}
    results = {r.custom_id: r for r in provider.results(batch_id)}  # from the batch's results_url
    one = results["book-1"]
    assert one.outcome == "succeeded"
    assert one.body["content"] == [{"type": "text", "text": "once upon a time"}]
    assert one.body["type"] == "message"
    # the fake counts words: the system prompt and the message in, the echo out
    assert (one.tokens_in, one.tokens_out, one.model) == (5, 4, "claude-haiku-4-5")
    assert results["book-4"].model == "claude-opus-4-5"
    assert (results["book-2"].outcome, results["book-2"].error) == (
        "errored", "invalid_request_error: the fake server was told to fail 'book-2'")
    assert (results["book-3"].outcome, results["book-3"].body) == ("expired", None)
    # an expired request goes through when submitted again
    again = provider.submit("k2", [REQUESTS[2]])
    anthropic_fake.advance()
    assert [(r.custom_id, r.outcome) for r in provider.results(again)] == [("book-3", "succeeded")]


def test_cancel_ends_the_batch_with_its_requests_canceled(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    batch_id = provider.submit("k", REQUESTS)
    provider.cancel(batch_id)
    status = provider.poll(batch_id)  # canceling, then ended
    assert (status.ended, status.counts["canceled"]) == (True, 3)
    assert {r.outcome for r in provider.results(batch_id)} == {"canceled"}
    provider.cancel(batch_id)  # ended: nothing to cancel
    assert anthropic_fake.stats()["calls"]["POST /v1/messages/batches/{batch_id}/cancel"] == 1


def test_find_matches_an_ended_batch_by_its_custom_ids(anthropic_fake: FakeServer) -> None:
    submitted = AnthropicBatch().submit("k", REQUESTS)
    AnthropicBatch().submit("other", [message("x-1", "a"), message("x-2", "b"), message("x-3", "c")])
    AnthropicBatch().submit("small", REQUESTS[:2])
    anthropic_fake.advance()
    # After a crash, a new process with the same requests finds the batch and submits nothing.
    resumed = AnthropicBatch()
    resumed.page_size = 1  # and pages through the list to do it
    assert resumed.find("k", REQUESTS) == submitted
    assert resumed.find("k", list(reversed(REQUESTS))) == submitted
    assert AnthropicBatch().find("k", REQUESTS + [message("book-9", "z")]) is None
    assert anthropic_fake.stats()["submitted"]["book-3"] == 1


def test_find_is_unsure_while_a_batch_of_the_same_size_runs(anthropic_fake: FakeServer) -> None:
    AnthropicBatch().submit("k", REQUESTS)
    assert AnthropicBatch().find("k", REQUESTS) is None  # running: its custom_ids cannot be read yet
    # a running batch of another size does not matter
    ended = AnthropicBatch().submit("k", REQUESTS[:1])
    anthropic_fake.advance(ended)
    assert AnthropicBatch().find("k", REQUESTS[:1]) == ended


def test_find_skips_batches_that_processed_nothing(anthropic_fake: FakeServer) -> None:
    AnthropicBatch().submit("k", REQUESTS)
    anthropic_fake.advance(outcome="expired")
    # Submitting again pays nothing twice, and the expired batch is never taken for the new one.
    assert AnthropicBatch().find("k2", REQUESTS) is None


def test_find_never_answers_with_a_batch_this_object_knows_under_another_key(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    anthropic_fake.configure(poison=["book-1"])
    first = provider.submit("k1", REQUESTS[:1])
    anthropic_fake.advance()
    assert [r.outcome for r in provider.results(first)] == ["errored"]
    # retried in a new batch with the same id: the old batch is not the new one
    assert provider.find("k2", REQUESTS[:1]) is None
    assert provider.find("k1", REQUESTS[:1]) == first
    polled = AnthropicBatch()
    polled.poll(first)
    assert polled.find("k2", REQUESTS[:1]) is None


def test_a_bad_custom_id_is_refused_by_the_api_as_by_the_rule(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    assert not provider.wire_id_ok("book 1")
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        provider.submit("k", [message("book 1", "x")])
    assert anthropic_fake.stats()["submitted"] == {}


def test_state_survives_a_restart_of_the_server(anthropic_fake: FakeServer) -> None:
    provider = AnthropicBatch()
    batch_id = provider.submit("k", REQUESTS)
    anthropic_fake.stop()
    anthropic_fake.start()
    anthropic_fake.advance()
    assert [r.outcome for r in provider.results(batch_id)] == ["succeeded"] * 3


@pytest.mark.parametrize(
    ("request_", "message_"),
    [
        ("book-1", "a dict with 'custom_id' and 'params', not str"),
        ({"custom_id": "a", "body": {}}, "has no field 'body' (it takes 'custom_id', 'params')"),
        ({"custom_id": 7, "params": {}}, "'custom_id' of a Anthropic batch request must be a non-empty string, got 7"),
        ({"custom_id": "a"}, "request 'a': 'params' must be a dict, got NoneType"),
        ({"custom_id": "a", "params": {"model": "m", "messages": []}}, "request 'a': 'params' has no 'max_tokens'"),
    ],
)
def test_check_request_names_what_is_wrong(request_: Any, message_: str) -> None:
    with pytest.raises(ValueError) as info:
        AnthropicBatch().check_request(request_)
    assert message_ in str(info.value)


def test_check_request_returns_the_id_and_params() -> None:
    params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert AnthropicBatch().check_request({"custom_id": "a", "params": params}) == ("a", params)


def test_wire_ids_are_1_to_64_characters_of_letters_digits_dash_and_underscore() -> None:
    provider = AnthropicBatch()
    assert provider.wire_id_ok("Book_1-chapter-03")
    assert provider.wire_id_ok("x" * 64)
    for bad in ("", "x" * 65, "book/1", "book.1", "é", "a b", "a\n"):
        assert not provider.wire_id_ok(bad), bad


def test_request_bytes_add_up_to_the_body_sent() -> None:
    provider = AnthropicBatch()
    body = json.dumps({"requests": [{"custom_id": r.custom_id, "params": r.payload} for r in REQUESTS]},
                      separators=(",", ":"))
    assert sum(provider.request_bytes(r) for r in REQUESTS) == len(body) - len('{"requests":[]}') + 1


def test_limits_are_anthropics() -> None:
    provider = AnthropicBatch()
    assert (provider.max_requests, provider.max_bytes, provider.discount) == (100_000, 256 * 1024 * 1024, 0.5)
    with pytest.raises(ValueError, match="1 to 100000 requests, not 0"):
        provider.submit("k", [])
    provider.max_bytes = 100
    with pytest.raises(ValueError, match="at most 100 bytes"):
        provider.submit("k", REQUESTS)


def test_a_missing_key_is_a_usage_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    provider = AnthropicBatch(poll_interval=5, price=(1.0, 5.0))  # declaring needs no key
    assert (provider.poll_interval, provider.price) == (5.0, (1.0, 5.0))
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY is not set"):
        provider.poll("msgbatch_1")


def test_a_client_given_is_used(anthropic_fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    provider = AnthropicBatch(client=anthropic.Anthropic(api_key="sk-ant-secret", base_url=anthropic_fake.base_url))
    batch_id = provider.submit("k", REQUESTS)
    assert provider.poll(batch_id).batch_id == batch_id
    assert "sk-ant-secret" not in repr(provider)


def test_find_never_answers_with_a_batch_the_state_recorded_for_another_submission(
    anthropic_fake: FakeServer,
) -> None:
    anthropic_fake.configure(poison=["book-1"])
    first = AnthropicBatch().submit("k1", REQUESTS[:1])
    anthropic_fake.advance()
    # After a kill, a new process resends book-1 (same wire id) under k2: the errored batch
    # the state recorded under k1 looks exactly like it, and is not it.
    assert AnthropicBatch().find("k2", REQUESTS[:1], known={first}) is None
    assert AnthropicBatch().find("k1", REQUESTS[:1]) == first


def test_find_is_sure_past_a_running_batch_of_the_same_size_the_state_recorded(anthropic_fake: FakeServer) -> None:
    ours = AnthropicBatch().submit("k", REQUESTS)
    anthropic_fake.advance(ours)
    running = AnthropicBatch().submit("other", [message("x-1", "a"), message("x-2", "b"), message("x-3", "c")])
    assert AnthropicBatch().find("k", REQUESTS) is None  # unsure: a newer batch of 3 still runs
    assert AnthropicBatch().find("k", REQUESTS, known={running}) == ours  # it is another record's
    assert anthropic_fake.stats()["submitted"]["book-1"] == 1
