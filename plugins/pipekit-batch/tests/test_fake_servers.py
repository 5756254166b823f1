"""The fake servers as a user starts them: a separate process, a port file, a state folder."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from pipekit_batch.fakeserver import FakeServer


HI = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}


def call(url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_the_command_line_serves_on_the_port_it_writes_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "pipekit_batch.fakeserver", "anthropic", "--port", "0",
                                "--port-file", str(port_file), "--state-dir", str(tmp_path / "state")])
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        port = int(port_file.read_text())
        client = anthropic.Anthropic(api_key="fake", base_url=f"http://127.0.0.1:{port}")
        batch = client.messages.batches.create(requests=[HI])
        assert (tmp_path / "state" / "state.json").exists()
        assert [b.id for b in client.messages.batches.list()] == [batch.id]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_an_unknown_provider_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pipekit_batch.fakeserver", "gemini", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: 'gemini'" in done.stderr
    with pytest.raises(ValueError, match="no fake server for provider 'gemini'"):
        FakeServer("gemini")


def test_a_request_without_a_key_is_refused_in_the_providers_format(openai_fake: FakeServer) -> None:
    status, body = call(f"{openai_fake.base_url}/batches")
    assert status == 401
    assert body == {"error": {"message": "no API key in the request", "type": "authentication_error",
                              "param": None, "code": None}}
    with pytest.raises(openai.NotFoundError, match="No batch found with id 'batch_nope'"):
        openai.OpenAI().batches.retrieve("batch_nope")


def test_an_unknown_setting_is_refused_naming_it(anthropic_fake: FakeServer) -> None:
    status, body = call(f"{anthropic_fake.origin}/_fake/config", {"poisson": ["a"]})
    assert status == 400
    assert "unknown setting(s) poisson" in str(body)


def test_batches_end_by_themselves_after_the_polls_configured(anthropic_fake: FakeServer) -> None:
    anthropic_fake.configure(end_after_polls=2)
    client = anthropic.Anthropic()
    batch = client.messages.batches.create(requests=[HI])
    statuses = [client.messages.batches.retrieve(batch.id).processing_status for _ in range(3)]
    assert statuses == ["in_progress", "in_progress", "ended"]
    assert anthropic_fake.stats()["batches"] == {batch.id: "ended"}


def test_expire_fraction_picks_the_same_requests_every_time() -> None:
    from pipekit_batch.fakeserver.state import DEFAULT_CONFIG
    from pipekit_batch.fakeserver.state import fate

    config = {**DEFAULT_CONFIG, "expire_fraction": 0.3}
    first = [fate(config, f"id-{n}", 1) for n in range(1000)]
    assert first == [fate(config, f"id-{n}", 1) for n in range(1000)]
    assert 250 < first.count("expired") < 350
    assert {fate(config, f"id-{n}", 2) for n in range(1000)} == {"succeeded"}
