"""API keys never leave the environment: not into the state (any store), the JSONL
events, the report, ``status --json``, nor the error a provider's refusal becomes."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
import json
import os
from pathlib import Path
import threading
from typing import Any

import pytest

from pipekit.outcomes import ExitCode
from pipekit.testing import PipeResult
from pipekit.testing import PipeTester


pytest.importorskip("pipekit_batch")
from pipekit_batch.fakeserver import FakeServer  # noqa: E402


OPENAI_KEY = "sk-proj-Qx7Lm2NvTUSECRETa9b8c7d6e5f4"
ANTHROPIC_KEY = "sk-ant-api03-ZZSECRETk3j2h1g0f9e8d7"

PIPELINE = """
from pipekit import phase
from pipekit_batch import AnthropicBatch, OpenAIBatch

BATCHES = {"openai": OpenAIBatch(price=(1.0, 4.0)), "claude": AnthropicBatch(price=(3.0, 15.0))}

@phase(1, batch="openai")
def ask(item_id):
    return [{"custom_id": f"{item_id}-q", "body": {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"about {item_id}"}]}}]

@phase(2)
def keep(item_id, ask):
    return sorted(ask)
"""


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with FakeServer("openai", tmp_path_factory.mktemp("fake-openai")) as server:
        yield server


def _keys_env(base_url: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": base_url.removesuffix("/v1"),
    }


def _leaks(text: str | bytes, where: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    # A key's tail identifies it as well as the whole: look for the part after the prefix too.
    return [f"{where} holds {key[:8]}..." for key in (OPENAI_KEY, ANTHROPIC_KEY) if key[8:].encode() in data]


def _store_contents(store_url: str | None, project: Path) -> Iterator[tuple[str, bytes]]:
    """Every byte the store keeps: its files, or for PostgreSQL the namespace's rows."""
    if store_url is None:
        roots = [project]
    elif store_url.startswith("sqlite:"):
        roots = [project, Path(store_url.removeprefix("sqlite:")).parent]
    else:
        import psycopg

        base, namespace = store_url.rsplit("pipeline=", 1)
        with psycopg.connect(base.rstrip("?&"), autocommit=True) as db:
            for table in ("pipekit_items", "pipekit_outputs", "pipekit_leases", "pipekit_checkpoints"):
                rows = db.execute(f"SELECT * FROM {table} WHERE pipeline = %s", (namespace,)).fetchall()
                yield table, repr(rows).encode()
        roots = [project]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                yield str(path), path.read_bytes()


def test_no_key_in_state_events_report_or_status(
    pipetester: PipeTester, any_store: str | None, _server: FakeServer
) -> None:
    _server.reset()
    module = pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b", "c")
    env = _keys_env(_server.base_url)
    run = ["pipeline.py", "--items", "items.txt", "-p", "no:prices"]
    first = pipetester.run_subprocess(*run, env=env)
    assert first.ret == ExitCode.WAITING, first.stderr
    _server.advance()
    second = pipetester.run_subprocess(*run, env=env)
    assert second.ret == ExitCode.OK, second.stderr
    assert sorted(second.state("b").phase_outputs[1]) == ["b-q"]
    assert [name for name, _ in second.events if name.startswith("batch_")] == ["batch_polled", "batch_completed"]
    shown = {}
    for verb in (["status", str(module), "--json"], ["report", str(module), "-o", "report.html"]):
        proc = pipetester.popen(*verb, env=env)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        shown[verb[0]] = out + err
    assert json.loads(shown["status"])["totals"]["completed"] == 3
    leaks = [
        *_leaks(first.stdout + second.stdout, "the JSONL events"),
        *_leaks(first.stderr + second.stderr, "stderr"),
        *_leaks(shown["status"], "status --json"),
        *_leaks((pipetester.path / "report.html").read_text(), "the report"),
    ]
    for where, data in _store_contents(any_store, pipetester.path):
        leaks += _leaks(data, where)
    assert leaks == []


class _Refusing(BaseHTTPRequestHandler):
    """Answers every call 401, quoting back the credentials it was sent (as some proxies do)."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sent = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
        body = json.dumps({
            "type": "error",
            "error": {"message": f"Incorrect API key provided: {sent}", "type": "authentication_error",
                      "code": "invalid_api_key"},
        }).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("provider", ["openai", "claude"])
def test_a_refused_key_is_a_clear_error_that_does_not_quote_it(
    pipetester: PipeTester, refusing_server: str, provider: str
) -> None:
    pipetester.make_pipeline(PIPELINE.replace('batch="openai"', f'batch="{provider}"').replace(
        '"body": {', '"params": {"max_tokens": 10, ' if provider == "claude" else '"body": {'))
    pipetester.make_items("a", "b")
    result: PipeResult = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.txt", "-p", "no:prices", env=_keys_env(refusing_server)
    )
    variable = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    assert result.ret == ExitCode.USAGE_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refused the credentials in {variable} (HTTP 401)" in result.stderr
    assert "Incorrect API key provided: " in result.stderr  # the provider's own words, the key cut out
    assert _leaks(result.stderr + result.stdout, "the run's output") == []
    for where, data in _store_contents(os.environ.get("PIPEKIT_STORE"), pipetester.path):
        assert _leaks(data, where) == []
    assert result.state("a").phases[1].status == "waiting"  # kept: the next run, with a good key, sends them
