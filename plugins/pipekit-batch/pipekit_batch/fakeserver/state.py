"""What a fake batch server remembers, in one JSON file under ``--state-dir``.

Every change is written whole (to a temporary file, then renamed) before the
HTTP answer goes out, so a server killed and started again on the same folder
knows every file, batch and submission it acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import hashlib
import json
import os
from pathlib import Path
import threading
import time
from typing import Any


#: What ``POST /_fake/config`` may set, and each setting's default.
DEFAULT_CONFIG: dict[str, Any] = {
    # custom_ids that fail with an error every time they are submitted
    "poison": [],
    # custom_ids left unprocessed (expired) the first time they are submitted
    "expire": [],
    # the fraction of custom_ids (chosen by a hash of the id) expired on their first submission
    "expire_fraction": 0.0,
    # a batch ends by itself once it has been retrieved this many times (None: only /_fake/advance ends it)
    "end_after_polls": None,
}


class FakeState:
    """The server's files, batches, configuration and counts; safe for the handler threads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files_dir = directory / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._path = directory / "state.json"
        self._lock = threading.RLock()
        self.data: dict[str, Any] = (
            json.loads(self._path.read_text(encoding="utf-8")) if self._path.exists() else _empty(1)
        )

    @contextmanager
    def change(self) -> Iterator[dict[str, Any]]:
        """Hold the lock over a read-modify-write of the state; it is saved when the block ends."""
        with self._lock:
            yield self.data
            self._save()

    @contextmanager
    def read(self) -> Iterator[dict[str, Any]]:
        """Hold the lock while reading the state."""
        with self._lock:
            yield self.data

    def new_id(self, prefix: str) -> str:
        """A fresh id, unique across restarts (the counter is in the state), shaped like the provider's."""
        with self.change() as data:
            number = data["next_id"]
            data["next_id"] = number + 1
        digest = hashlib.sha256(f"{prefix}{number}".encode()).hexdigest()[:16]
        return f"{prefix}{number:06d}{digest}"

    def count_call(self, method: str, route: str) -> None:
        """One request received on ``route`` (the path with ids replaced by ``{id}``)."""
        with self.change() as data:
            name = f"{method} {route}"
            data["calls"][name] = data["calls"].get(name, 0) + 1

    def count_submitted(self, custom_ids: list[str]) -> list[int]:
        """These requests went into a new batch: how many times each has been submitted, this one included."""
        with self.change() as data:
            for custom_id in custom_ids:
                data["submitted"][custom_id] = data["submitted"].get(custom_id, 0) + 1
            return [data["submitted"][custom_id] for custom_id in custom_ids]

    def write_file(self, file_id: str, content: bytes) -> None:
        """Keep an uploaded or generated file's bytes."""
        partial = self.files_dir / f"{file_id}.partial"
        partial.write_bytes(content)
        partial.replace(self.files_dir / file_id)

    def read_file(self, file_id: str) -> bytes | None:
        """A file's bytes, or None if there is no such file."""
        path = self.files_dir / file_id
        return path.read_bytes() if path.is_file() and file_id in self.data["files"] else None

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Merge ``settings`` into the configuration; an unknown name is a ValueError naming it."""
        unknown = sorted(set(settings) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_CONFIG)}")
        with self.change() as data:
            data["config"].update(settings)
            return dict(data["config"])

    def reset(self) -> None:
        """Forget every file, batch, count and setting (ids go on counting, so none is reused)."""
        with self.change() as data:
            fresh = _empty(data["next_id"])
            data.clear()
            data.update(fresh)
            for path in self.files_dir.iterdir():
                path.unlink()

    def _save(self) -> None:
        partial = self._path.with_name(f"state.json.{os.getpid()}.partial")
        partial.write_text(json.dumps(self.data), encoding="utf-8")
        partial.replace(self._path)


def _empty(next_id: int) -> dict[str, Any]:
    return {"next_id": next_id, "files": {}, "batches": {}, "order": [], "config": dict(DEFAULT_CONFIG),
            "submitted": {}, "calls": {}}


def fate(config: dict[str, Any], custom_id: str, submissions: int) -> str:
    """What the fake does with one request: ``"succeeded"``, ``"errored"`` or ``"expired"``.

    ``submissions`` counts this one: a request expires only on its first
    submission, so a resubmitted request goes through.
    """
    if custom_id in config["poison"]:
        return "errored"
    if submissions <= 1:
        if custom_id in config["expire"]:
            return "expired"
        fraction = float(config["expire_fraction"] or 0.0)
        if fraction > 0 and int(hashlib.sha256(custom_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction:
            return "expired"
    return "succeeded"


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def reply_to(messages: Any, system: Any = None) -> tuple[str, int, int]:
    """The fake model's answer to a conversation: the last user message, echoed.

    Tokens are words: the input counts every word of the system prompt and the
    messages, the output the words of the answer.
    """
    messages = messages if isinstance(messages, list) else []
    texts = [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    users = [text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    answer = users[-1] if users else ""
    tokens_in = len(text_of(system).split()) + sum(len(t.split()) for t in texts)
    return answer, tokens_in, len(answer.split())


def now() -> int:
    """Unix seconds."""
    return int(time.time())
