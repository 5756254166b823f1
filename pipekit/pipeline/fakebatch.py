"""``FakeBatch``: an in-process batch provider for offline tests (``pipekit.testing``).

Its batches live in memory, or in a JSON file (``FakeBatch(path=...)``) so that
they survive the process: a test can kill a run with SIGKILL at any moment and
the next run finds the batches the killed one submitted, as it would at a real
provider.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import fcntl
import json
import os
from pathlib import Path
import re
import signal
from typing import Any

from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit.pipeline.batch import BatchResult
from pipekit.pipeline.batch import BatchStatus


_WIRE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class FakeBatch(BatchProvider):
    """A batch API that answers every request itself.

    Requests are ``{"custom_id": str, "body": {...}}`` (as OpenAI's); each answer
    is ``{"content": "answer to <custom_id>", "echo": body, "model": model}``
    with usage ``tokens_in = usage[0] + len(custom_id)``, ``tokens_out = usage[1]``.

    :param path: a JSON file holding the fake's batches (None: in memory).
    :param finish_after_polls: polls a batch answers "in_progress" before it ends
        (0: it has ended at its first poll).
    :param poison: wire custom_ids that come back errored, every time.
    :param expire: wire custom_ids that come back expired the first time they are sent.
    :param crash_after_submit: SIGKILL the process once, right after the first
        submission is stored (before pipekit can record its batch id).
    :param usage: the (input, output) tokens of each answer, before the custom_id's length.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        finish_after_polls: int = 0,
        poison: Iterable[str] = (),
        expire: Iterable[str] = (),
        crash_after_submit: bool = False,
        max_requests: int = 50_000,
        max_bytes: int = 200 * 1024 * 1024,
        poll_interval: float = 0.05,
        discount: float = 0.5,
        price: tuple[float, float] | None = (2.0, 8.0),
        usage: tuple[int, int] = (10, 5),
        model: str = "fake-model",
    ) -> None:
        self.path = None if path is None else Path(path)
        self.finish_after_polls = finish_after_polls
        self.poison = frozenset(poison)
        self.expire = frozenset(expire)
        self.crash_after_submit = crash_after_submit
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        self.discount = discount
        self.price = price
        self.usage = usage
        self.model = model
        self._memory: dict[str, Any] = _empty()

    # -- the fake's own state ------------------------------------------------------------

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The fake's state, locked against other processes; saved when the block ends."""
        if self.path is None:
            yield self._memory
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text()) if self.path.exists() else _empty()
                yield state
                temporary = self.path.with_name(f".{self.path.name}.tmp")
                temporary.write_text(json.dumps(state))
                os.replace(temporary, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- counters, for tests -------------------------------------------------------------

    @property
    def submitted(self) -> list[list[str]]:
        """The wire custom_ids of every batch submitted, in order."""
        with self._state() as state:
            return [[r["custom_id"] for r in b["requests"]] for b in state["batches"].values()]

    @property
    def calls(self) -> dict[str, int]:
        """How often each method was called: ``submit``, ``find``, ``poll``, ``results``, ``cancel``."""
        with self._state() as state:
            return dict(state["calls"])

    def finish_all(self) -> None:
        """End every batch at its next poll, whatever ``finish_after_polls`` says."""
        with self._state() as state:
            for batch in state["batches"].values():
                batch["finish"] = True

    # -- the provider interface ----------------------------------------------------------

    def check_request(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """``{"custom_id": str, "body": dict}`` -> (custom_id, body)."""
        custom_id, body = request.get("custom_id"), request.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            raise ValueError(f"custom_id must be a non-empty string, not {custom_id!r}")
        if not isinstance(body, dict):
            raise ValueError(f"request {custom_id!r}: body must be a dict, not {type(body).__name__}")
        return custom_id, body

    def wire_id_ok(self, custom_id: str) -> bool:
        """1 to 64 characters of ``[A-Za-z0-9_-]``, as Anthropic's rule."""
        return _WIRE_ID.fullmatch(custom_id) is not None

    def request_bytes(self, request: BatchRequest) -> int:
        """The request's JSON line."""
        return len(json.dumps({"custom_id": request.custom_id, "body": request.payload}).encode()) + 1

    def submit(self, key: str, requests: Sequence[BatchRequest]) -> str:
        """Store the batch; with ``crash_after_submit``, die once right after."""
        with self._state() as state:
            state["calls"]["submit"] = state["calls"].get("submit", 0) + 1
            batch_id = f"fakebatch-{len(state['batches']) + 1}"
            state["batches"][batch_id] = {
                "key": key,
                "requests": [{"custom_id": r.custom_id, "payload": r.payload} for r in requests],
                "polls": 0,
                "canceled": False,
            }
            crash = self.crash_after_submit and not state["crashed"]
            state["crashed"] = state["crashed"] or crash
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch_id

    def find(self, key: str, requests: Sequence[BatchRequest], known: Collection[str] = ()) -> str | None:
        """The batch stored with ``key`` (the fake has metadata), none of ``known``."""
        with self._state() as state:
            state["calls"]["find"] = state["calls"].get("find", 0) + 1
            return next((i for i, b in state["batches"].items() if b["key"] == key and i not in known), None)

    def poll(self, batch_id: str) -> BatchStatus:
        """``in_progress`` for ``finish_after_polls`` polls, then ``ended``."""
        with self._state() as state:
            state["calls"]["poll"] = state["calls"].get("poll", 0) + 1
            batch = state["batches"][batch_id]
            batch["polls"] += 1
            ended = batch["canceled"] or batch.get("finish") or batch["polls"] > self.finish_after_polls
            batch["ended"] = bool(ended)
            if not ended:
                return BatchStatus(batch_id, False, "in_progress", {"processing": len(batch["requests"])})
            counts: dict[str, int] = {}
            for outcome in self._outcomes(state, batch).values():
                counts[outcome] = counts.get(outcome, 0) + 1
            return BatchStatus(batch_id, True, "canceled" if batch["canceled"] else "ended", counts)

    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """Every request's answer (or error, expiry, cancellation)."""
        with self._state() as state:
            state["calls"]["results"] = state["calls"].get("results", 0) + 1
            batch = state["batches"][batch_id]
            outcomes = self._outcomes(state, batch)
            found = []
            for request in batch["requests"]:
                custom_id = request["custom_id"]
                outcome = outcomes[custom_id]
                if outcome == "succeeded":
                    body = {"content": f"answer to {custom_id}", "echo": request["payload"], "model": self.model}
                    found.append(
                        BatchResult(
                            custom_id, "succeeded", body,
                            tokens_in=self.usage[0] + len(custom_id), tokens_out=self.usage[1], model=self.model,
                        )
                    )
                elif outcome == "errored":
                    found.append(BatchResult(custom_id, "errored", error=f"poisoned request {custom_id}"))
                else:
                    found.append(BatchResult(custom_id, outcome))  # type: ignore[arg-type]
        return iter(found)

    def cancel(self, batch_id: str) -> None:
        """End the batch at once; what it held comes back canceled."""
        with self._state() as state:
            state["calls"]["cancel"] = state["calls"].get("cancel", 0) + 1
            state["batches"][batch_id]["canceled"] = True

    def _outcomes(self, state: dict[str, Any], batch: dict[str, Any]) -> dict[str, str]:
        """Each request's outcome, decided once per batch (expiry happens to a request once)."""
        if "outcomes" not in batch:
            outcomes = {}
            for request in batch["requests"]:
                custom_id = request["custom_id"]
                if batch["canceled"]:
                    outcomes[custom_id] = "canceled"
                elif custom_id in self.poison:
                    outcomes[custom_id] = "errored"
                elif custom_id in self.expire and custom_id not in state["expired"]:
                    state["expired"].append(custom_id)
                    outcomes[custom_id] = "expired"
                else:
                    outcomes[custom_id] = "succeeded"
            batch["outcomes"] = outcomes
        return dict(batch["outcomes"])


def _empty() -> dict[str, Any]:
    return {"batches": {}, "calls": {}, "crashed": False, "expired": []}
