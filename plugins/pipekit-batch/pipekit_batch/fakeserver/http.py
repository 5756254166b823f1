"""The HTTP side of a fake batch server: requests in, routes, JSON out (stdlib only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
import json
import re
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from pipekit_batch.fakeserver.state import FakeState


@dataclass
class Request:
    """One HTTP request as a route sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: ``http://host:port`` as the client reached the server (for URLs it should follow).
    origin: str
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON (an empty body is ``{}``)."""
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    """What a route answers."""

    status: int
    body: Any
    content_type: str = "application/json"

    def encode(self) -> bytes:
        """The body's bytes: ``bytes`` as they are, anything else as JSON."""
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


Route = Callable[[Request], Response]


class FakeAPI:
    """One provider's API: its routes, how it says "error", and how its batches end."""

    #: The provider's name on the command line.
    name = ""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.routes: list[tuple[str, re.Pattern[str], str, Route]] = []

    def route(self, method: str, template: str, handler: Route) -> None:
        """Serve ``method template`` (``{name}`` matches one path segment) with ``handler``."""
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
        self.routes.append((method, pattern, template, handler))

    def error(self, status: int, kind: str, message: str) -> Response:
        """An error in the provider's own format."""
        raise NotImplementedError

    def authorised(self, request: Request) -> bool:
        """Whether the request carries a key (any key: the fake checks only that one was sent)."""
        return bool(request.headers.get("authorization") or request.headers.get("x-api-key"))

    def advance(self, batch_id: str | None, outcome: str) -> list[str]:
        """End every batch still running (or only ``batch_id``); return the ids ended."""
        raise NotImplementedError

    def dispatch(self, request: Request) -> Response:
        """Route ``request``: the control API, then the provider's routes, else 404."""
        if request.path.startswith("/_fake/"):
            return self._control(request)
        for method, pattern, template, handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                self.state.count_call(method, template)
                if not self.authorised(request):
                    return self.error(401, "authentication_error", "no API key in the request")
                request.params = match.groupdict()
                return handler(request)
        return self.error(404, "not_found_error", f"no route {request.method} {request.path}")

    def _control(self, request: Request) -> Response:
        try:
            if (request.method, request.path) == ("GET", "/_fake/stats"):
                with self.state.read() as data:
                    stats = {key: data[key] for key in ("submitted", "calls", "config")}
                    stats["batches"] = {bid: data["batches"][bid]["_fake"]["status"] for bid in data["order"]}
                return Response(200, stats)
            if (request.method, request.path) == ("POST", "/_fake/config"):
                return Response(200, self.state.configure(request.json()))
            if (request.method, request.path) == ("POST", "/_fake/reset"):
                self.state.reset()
                return Response(200, {})
            if (request.method, request.path) == ("POST", "/_fake/advance"):
                body = request.json()
                return Response(200, {"ended": self.advance(body.get("batch_id"), body.get("outcome", "ended"))})
        except (ValueError, KeyError) as exc:
            return Response(400, {"error": str(exc)})
        return Response(404, {"error": f"no control route {request.method} {request.path}"})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with a Content-Length on every answer: the SDKs keep connections alive.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, delayed ACKs cost 40 ms a request.
    disable_nagle_algorithm = True
    api: FakeAPI

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=url.path,
            query={key: values[-1] for key, values in parse_qs(url.query).items()},
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            origin=f"http://{self.headers.get('Host') or '127.0.0.1'}",
        )
        try:
            response = self.api.dispatch(request)
        except Exception as exc:  # a bug of the fake: answer 500 and say what, as a server would
            response = self.api.error(500, "api_error", f"fake server error: {type(exc).__name__}: {exc}")
        payload = response.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the stats route counts every request."""


def make_server(api: FakeAPI, port: int) -> ThreadingHTTPServer:
    """A server for ``api`` on 127.0.0.1 (``port`` 0: any free port)."""
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server
