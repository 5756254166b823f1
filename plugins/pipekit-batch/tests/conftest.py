from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# In a repository of its own, a plugin's top-level conftest says
# ``pytest_plugins = ["pipekit.testing"]``; here the tests also run from pipekit's
# root, where pytest allows that only in the top-level conftest, so import the fixture.
from pipekit.testing import pipetester  # noqa: F401
from pipekit_batch.fakeserver import FakeServer


def _serve(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    server = FakeServer(provider, tmp_path / f"fake-{provider}").start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """The fake OpenAI server in its own process; OPENAI_BASE_URL and a dummy OPENAI_API_KEY point at it."""
    yield from _serve("openai", tmp_path, monkeypatch)


@pytest.fixture
def anthropic_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """The fake Anthropic server in its own process; ANTHROPIC_BASE_URL and a dummy key point at it."""
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    yield from _serve("anthropic", tmp_path, monkeypatch)
