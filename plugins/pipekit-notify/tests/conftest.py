from __future__ import annotations

from collections.abc import Iterator
import http.server
import json
import socket
import threading
import time
from typing import Any

import pytest

# In a repository of its own, a plugin's top-level conftest says
# ``pytest_plugins = ["pipekit.testing"]``; here the tests also run from pipekit's
# root, where pytest allows that only in the top-level conftest, so import the fixture.
from pipekit.testing import pipetester  # noqa: F401


class Webhook:
    """A local HTTP server that records the JSON Apprise posts to it (``json://`` URLs)."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[str, dict[str, Any]]]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def messages(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [body for where, body in self.received if where == path]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A JSON webhook receiver on 127.0.0.1."""
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
