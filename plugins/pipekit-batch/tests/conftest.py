from __future__ import annotations

from collections.abc import Iterator
import gc
import warnings

import pytest

# In a repository of its own, a plugin's top-level conftest says
# ``pytest_plugins = ["pipekit.testing"]``; here the tests also run from pipekit's
# root, where pytest allows that only in the top-level conftest, so import the fixture.
from pipekit.testing import pipetester  # noqa: F401
from pipekit_batch.fakeserver import FakeServer


@pytest.fixture(autouse=True)
def _sdk_clients_collected_here() -> Iterator[None]:
    """The SDK clients a test makes (its own, and those its providers make for it, as
    a run's are) are dropped with their keep-alive sockets open, as in a run that
    ends; collected whenever the garbage collector comes round, their sockets'
    ResourceWarning would fail whichever later test was running then. Collect them
    at the end of the test that made them."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="module")
def _openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with FakeServer("openai", tmp_path_factory.mktemp("fake-openai")) as server:
        yield server


@pytest.fixture(scope="module")
def _anthropic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with FakeServer("anthropic", tmp_path_factory.mktemp("fake-anthropic")) as server:
        yield server


def _fresh(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    # One process per test module (starting one takes a third of a second), emptied for each test.
    server.reset()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture
def openai_fake(_openai_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """The fake OpenAI server in its own process, empty; OPENAI_BASE_URL and a dummy OPENAI_API_KEY point at it."""
    return _fresh(_openai_server, monkeypatch)


@pytest.fixture
def anthropic_fake(_anthropic_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """The fake Anthropic server in its own process, empty; ANTHROPIC_BASE_URL and a dummy key point at it."""
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return _fresh(_anthropic_server, monkeypatch)
