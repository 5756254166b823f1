"""Starting a fake batch server: the command line, and :class:`FakeServer` for tests."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType
from typing import Any
import urllib.request

from pipekit_batch.fakeserver.anthropic_api import AnthropicFake
from pipekit_batch.fakeserver.http import FakeAPI
from pipekit_batch.fakeserver.http import make_server
from pipekit_batch.fakeserver.openai_api import OpenAIFake
from pipekit_batch.fakeserver.state import FakeState


APIS: dict[str, type[FakeAPI]] = {"openai": OpenAIFake, "anthropic": AnthropicFake}


def serve(provider: str, port: int, state_dir: Path, port_file: Path | None = None) -> None:
    """Serve ``provider``'s fake on 127.0.0.1 until SIGTERM or SIGINT; write the port to ``port_file``."""
    api = APIS[provider](FakeState(state_dir))
    server = make_server(api, port)
    if port_file is not None:
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(f"{server.server_address[1]}\n", encoding="utf-8")
        partial.replace(port_file)  # whole or absent: a reader never sees half a number

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``openai|anthropic --port N --port-file F --state-dir D``."""
    parser = argparse.ArgumentParser(prog="python -m pipekit_batch.fakeserver", description=__doc__)
    parser.add_argument("provider", choices=sorted(APIS))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0, the default: any free one)")
    parser.add_argument("--port-file", type=Path, help="write the port here once the server listens")
    parser.add_argument("--state-dir", type=Path, required=True, help="where the server keeps its state")
    args = parser.parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.port_file is None:
        print(f"listening on 127.0.0.1 (state in {args.state_dir}); port: see --port-file", file=sys.stderr)
    serve(args.provider, args.port, args.state_dir, args.port_file)
    return 0


class FakeServer:
    """A fake batch server in a subprocess, and its control API.

    ``base_url`` is what the SDK's ``*_BASE_URL`` variable takes; ``env``
    holds both variables for a subprocess (with a dummy key).
    """

    def __init__(self, provider: str, state_dir: Path | str | None = None) -> None:
        if provider not in APIS:
            raise ValueError(f"no fake server for provider {provider!r}; known: {', '.join(sorted(APIS))}")
        self.provider = provider
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix=f"fake-{provider}-"))
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> FakeServer:
        """Start the process (on the port it had before, after a :meth:`stop`) and wait until it listens."""
        port_file = self.state_dir / "port"
        port_file.unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pipekit_batch.fakeserver", self.provider, "--port", str(self.port),
                   "--port-file", str(port_file), "--state-dir", str(self.state_dir)]
        self._process = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fake {self.provider} server did not start: {' '.join(command)}")
            time.sleep(0.02)
        self.port = int(port_file.read_text(encoding="utf-8"))
        return self

    def stop(self) -> None:
        """Stop the process (its state stays in ``state_dir``)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The SDK's base URL: OpenAI's includes ``/v1``, Anthropic's does not."""
        return f"{self.origin}/v1" if self.provider == "openai" else self.origin

    @property
    def env(self) -> dict[str, str]:
        """``*_BASE_URL`` pointing here and a dummy ``*_API_KEY``, for ``os.environ`` or a subprocess."""
        prefix = self.provider.upper()
        return {f"{prefix}_BASE_URL": self.base_url, f"{prefix}_API_KEY": "fake-key"}

    def advance(self, batch_id: str | None = None, outcome: str = "ended") -> list[str]:
        """End the running batches (or one); return the ids ended."""
        body = {"outcome": outcome, **({"batch_id": batch_id} if batch_id else {})}
        return list(self._call("POST", "/_fake/advance", body)["ended"])

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Set ``poison``, ``expire``, ``expire_fraction`` or ``end_after_polls``."""
        return dict(self._call("POST", "/_fake/config", settings))

    def reset(self) -> None:
        """Forget every file, batch, count and setting, as a server started on an empty folder."""
        self._call("POST", "/_fake/reset", {})

    def stats(self) -> dict[str, Any]:
        """``submitted`` per custom_id, ``calls`` per route, each batch's status, the config."""
        return dict(self._call("GET", "/_fake/stats"))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.origin + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        # No proxy: the server is on 127.0.0.1 whatever *_proxy variables say.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())
