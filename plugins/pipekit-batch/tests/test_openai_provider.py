"""OpenAIBatch through the real ``openai`` SDK against the fake OpenAI server."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from pipekit import UsageError
from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit_batch import OpenAIBatch
from pipekit_batch.fakeserver import FakeServer


def chat(custom_id: str, text: str, model: str = "gpt-4o-mini") -> BatchRequest:
    return BatchRequest(custom_id, {"model": model, "messages": [
        {"role": "system", "content": "Summarise."}, {"role": "user", "content": text}]})


REQUESTS = [chat("book-1", "once upon a time"), chat("book-2", "the end"), chat("book-3", "a b c d e")]


def sdk() -> openai.OpenAI:
    return openai.OpenAI()  # from the fixture's OPENAI_BASE_URL and OPENAI_API_KEY


def test_submit_uploads_one_jsonl_line_per_request_and_keys_the_batch(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    assert isinstance(provider, BatchProvider)
    batch_id = provider.submit("run-7/phase-2/0", REQUESTS)
    batch = sdk().batches.retrieve(batch_id)
    assert batch.metadata == {"pipekit_key": "run-7/phase-2/0"}
    assert (batch.endpoint, batch.completion_window) == ("/v1/chat/completions", "24h")
    upload = sdk().files.retrieve(batch.input_file_id)
    assert upload.purpose == "batch"
    lines = [json.loads(line) for line in sdk().files.content(batch.input_file_id).text.splitlines()]
    assert lines == [{"custom_id": r.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": r.payload}
                     for r in REQUESTS]
    # request_bytes is what each request takes in that file
    assert sum(provider.request_bytes(r) for r in REQUESTS) == upload.bytes
    assert openai_fake.stats()["submitted"] == {"book-1": 1, "book-2": 1, "book-3": 1}


def test_poll_maps_statuses_and_counts(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", REQUESTS)
    status = provider.poll(batch_id)  # validating -> in_progress
    assert (status.batch_id, status.ended, status.provider_status) == (batch_id, False, "in_progress")
    assert status.counts == {"succeeded": 0, "errored": 0, "processing": 3}
    openai_fake.configure(poison=["book-2"])
    openai_fake.advance()
    status = provider.poll(batch_id)
    assert (status.ended, status.provider_status, status.error) == (True, "completed", None)
    assert status.counts == {"succeeded": 2, "errored": 1, "canceled": 0}


def test_results_carry_bodies_usage_model_and_errors(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    openai_fake.configure(poison=["book-2"])
    batch_id = provider.submit("k", REQUESTS + [chat("book-4", "other model here", model="gpt-4o")])
    openai_fake.advance()
    results = {r.custom_id: r for r in provider.results(batch_id)}
    assert sorted(results) == ["book-1", "book-2", "book-3", "book-4"]
    one = results["book-1"]
    assert one.outcome == "succeeded"
    assert one.body["choices"][0]["message"]["content"] == "once upon a time"
    # the fake counts words: "Summarise." + "once upon a time" in, the echo out
    assert (one.tokens_in, one.tokens_out, one.model) == (5, 4, "gpt-4o-mini")
    usage = one.body["usage"]
    assert (one.tokens_in, one.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert results["book-4"].model == "gpt-4o"
    bad = results["book-2"]
    assert (bad.outcome, bad.body, bad.tokens_in) == ("errored", None, 0)
    assert bad.error == "HTTP 400: poisoned: the fake server was told to fail 'book-2'"


def test_requests_left_by_an_expired_batch_are_expired_and_go_through_when_resubmitted(
    openai_fake: FakeServer,
) -> None:
    provider = OpenAIBatch()
    openai_fake.configure(expire=["book-3"])
    first = provider.submit("k1", REQUESTS)
    openai_fake.advance()
    assert provider.poll(first).provider_status == "expired"
    assert provider.poll(first).counts == {"succeeded": 2, "errored": 0, "expired": 1}
    outcomes = {r.custom_id: r.outcome for r in provider.results(first)}
    assert outcomes == {"book-1": "succeeded", "book-2": "succeeded", "book-3": "expired"}
    again = provider.submit("k2", [REQUESTS[2]])
    openai_fake.advance()
    assert [(r.custom_id, r.outcome) for r in provider.results(again)] == [("book-3", "succeeded")]
    assert openai_fake.stats()["submitted"] == {"book-1": 1, "book-2": 1, "book-3": 2}


def test_a_batch_that_expires_whole_leaves_every_request_expired(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", REQUESTS)
    openai_fake.advance(outcome="expired")
    assert provider.poll(batch_id).ended
    assert [(r.custom_id, r.outcome) for r in provider.results(batch_id)] == [
        ("book-1", "expired"), ("book-2", "expired"), ("book-3", "expired")]


def test_cancel_ends_the_batch_with_its_requests_canceled(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", REQUESTS)
    provider.cancel(batch_id)
    assert sdk().batches.retrieve(batch_id).status == "cancelled"  # cancelling, then cancelled
    status = provider.poll(batch_id)
    assert (status.ended, status.provider_status) == (True, "cancelled")
    assert {r.outcome for r in provider.results(batch_id)} == {"canceled"}
    provider.cancel(batch_id)  # ended already: nothing to do, no error
    assert openai_fake.stats()["calls"]["POST /v1/batches/{batch_id}/cancel"] == 1


def test_a_batch_failing_validation_says_why_and_errors_its_requests(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", [REQUESTS[0], REQUESTS[0]])
    status = provider.poll(batch_id)
    assert (status.ended, status.provider_status) == (True, "failed")
    assert status.error == "line 2: duplicate_custom_id: line 2: invalid custom_id"
    assert [(r.custom_id, r.outcome, r.error) for r in provider.results(batch_id)] == [
        ("book-1", "errored", status.error)]


def test_results_of_a_running_batch_is_an_error(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", REQUESTS)
    with pytest.raises(RuntimeError, match="has not ended"):
        list(provider.results(batch_id))


def test_find_pages_through_the_batches_for_the_key(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    provider.page_size = 2
    ids = [provider.submit(f"key-{n}", REQUESTS) for n in range(5)]
    calls = openai_fake.stats()["calls"].get("GET /v1/batches", 0)
    # A new process (after a crash) finds the batch from its key alone.
    assert OpenAIBatch().find("key-3", REQUESTS) == ids[3]
    fresh = OpenAIBatch()
    fresh.page_size = 2
    assert fresh.find("key-0", REQUESTS) == ids[0]  # the oldest: on the third page
    assert fresh.find("key-9", REQUESTS) is None
    assert openai_fake.stats()["calls"]["GET /v1/batches"] - calls == 1 + 3 + 3


def test_state_survives_a_restart_of_the_server(openai_fake: FakeServer) -> None:
    provider = OpenAIBatch()
    batch_id = provider.submit("k", REQUESTS)
    openai_fake.stop()
    openai_fake.start()
    assert provider.find("k", REQUESTS) == batch_id
    openai_fake.advance()
    assert [r.outcome for r in provider.results(batch_id)] == ["succeeded"] * 3
    assert openai_fake.stats()["submitted"] == {"book-1": 1, "book-2": 1, "book-3": 1}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (["custom_id", "body"], "a dict with 'custom_id' and 'body', not list"),
        ({"body": {}}, "'custom_id' of a OpenAI batch request must be a non-empty string, got None"),
        ({"custom_id": "", "body": {}}, "non-empty string, got ''"),
        ({"custom_id": "a"}, "request 'a': 'body' must be a dict, got NoneType"),
        ({"custom_id": "a", "params": {}}, "has no field 'params'"),
        ({"custom_id": "a", "body": {"model": "m", "messages": []}, "url": "/v1/embeddings"},
         "'url' '/v1/embeddings' is not this batch's endpoint '/v1/chat/completions'"),
        ({"custom_id": "a", "body": {"model": "m", "messages": []}, "method": "GET"}, "'method' must be 'POST'"),
        ({"custom_id": "a", "body": {"messages": []}}, "request 'a': 'body' has no 'model'"),
        ({"custom_id": "a", "body": {"model": "m", "messages": [object()]}}, "request 'a': 'body' is not JSON"),
    ],
)
def test_check_request_names_what_is_wrong(request_: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        OpenAIBatch().check_request(request_)
    assert message in str(info.value)


def test_check_request_returns_the_id_and_body() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = {"custom_id": "a", "body": body, "method": "POST", "url": "/v1/chat/completions"}
    assert OpenAIBatch().check_request(request) == ("a", body)
    embeddings = OpenAIBatch(endpoint="/v1/embeddings")
    assert embeddings.check_request({"custom_id": "e", "body": {"input": "x"}}) == ("e", {"input": "x"})


def test_wire_ids_are_up_to_512_characters_without_control_characters() -> None:
    provider = OpenAIBatch()
    assert provider.wire_id_ok("book-1/chapter 3: the wolf")
    assert provider.wire_id_ok("é" * 512)
    assert not provider.wire_id_ok("")
    assert not provider.wire_id_ok("x" * 513)
    assert not provider.wire_id_ok("line\nbreak")
    assert not provider.wire_id_ok("nul\x00")


def test_limits_are_openais() -> None:
    provider = OpenAIBatch()
    assert (provider.max_requests, provider.max_bytes, provider.discount) == (50_000, 200 * 1024 * 1024, 0.5)
    with pytest.raises(ValueError, match="1 to 50000 requests, not 50001"):
        provider.submit("k", [chat(f"r{n}", "x") for n in range(50_001)])
    provider.max_bytes = 100
    with pytest.raises(ValueError, match="at most 100 bytes"):
        provider.submit("k", REQUESTS)


def test_a_missing_key_is_a_usage_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = OpenAIBatch(poll_interval=5, price=(0.15, 0.6))  # declaring needs no key
    assert (provider.poll_interval, provider.price) == (5.0, (0.15, 0.6))
    with pytest.raises(UsageError, match="OPENAI_API_KEY is not set"):
        provider.poll("batch_1")


def test_a_client_given_is_used_and_the_key_is_never_shown(
    openai_fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    client = openai.OpenAI(api_key="sk-secret-123", base_url=openai_fake.base_url)
    provider = OpenAIBatch(client=client)
    batch_id = provider.submit("k", REQUESTS)
    assert provider.poll(batch_id).batch_id == batch_id
    assert "sk-secret" not in repr(provider) and "sk-secret" not in repr(vars(provider))
    assert "sk-secret" not in json.dumps(openai_fake.stats())


def test_an_endpoint_that_is_not_an_api_path_is_refused() -> None:
    with pytest.raises(ValueError, match="endpoint must be an API path"):
        OpenAIBatch(endpoint="chat")
