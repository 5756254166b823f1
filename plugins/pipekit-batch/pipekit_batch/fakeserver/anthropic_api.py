"""Anthropic's Message Batches API as the ``anthropic`` SDK calls it.

A batch is ``in_progress`` when created (every request counted as
``processing``) and ends on ``POST /_fake/advance`` (or by itself after
``end_after_polls`` retrievals): ``ended``, each request ``succeeded``,
``errored`` (poisoned) or ``expired`` (chosen to expire). ``cancel`` makes it
``canceling``; its next retrieval ends it with every request ``canceled``.
Its ``results_url`` points back at this server, as the real one points at
Anthropic's. Requests are checked as the API checks them: a ``custom_id`` of
1-64 characters of ``[A-Za-z0-9_-]``, unique in the batch, and ``params``
with ``model``, ``max_tokens`` and ``messages`` (else a 400, no batch).
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from datetime import timezone
import json
import re
from typing import Any

from pipekit_batch.fakeserver.http import FakeAPI
from pipekit_batch.fakeserver.http import Request
from pipekit_batch.fakeserver.http import Response
from pipekit_batch.fakeserver.state import FakeState
from pipekit_batch.fakeserver.state import fate
from pipekit_batch.fakeserver.state import reply_to


CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AnthropicFake(FakeAPI):
    """The fake of ``api.anthropic.com``'s ``/v1/messages/batches``."""

    name = "anthropic"

    def __init__(self, state: FakeState) -> None:
        super().__init__(state)
        self.route("POST", "/v1/messages/batches", self.create_batch)
        self.route("GET", "/v1/messages/batches", self.list_batches)
        self.route("GET", "/v1/messages/batches/{batch_id}", self.retrieve_batch)
        self.route("GET", "/v1/messages/batches/{batch_id}/results", self.batch_results)
        self.route("POST", "/v1/messages/batches/{batch_id}/cancel", self.cancel_batch)

    def error(self, status: int, kind: str, message: str) -> Response:
        """Anthropic's error body."""
        return Response(status, {"type": "error", "error": {"type": kind, "message": message}})

    def create_batch(self, request: Request) -> Response:
        """``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}, ...]}``."""
        requests = request.json().get("requests")
        if not isinstance(requests, list) or not requests:
            return self.error(400, "invalid_request_error", "requests: a non-empty list is required")
        seen: set[str] = set()
        for index, entry in enumerate(requests):
            problem = _problem(entry, seen)
            if problem:
                return self.error(400, "invalid_request_error", f"requests.{index}.{problem}")
            seen.add(entry["custom_id"])
        batch_id = self.state.new_id("msgbatch_")
        created = datetime.now(timezone.utc)
        counts = self.state.count_submitted([entry["custom_id"] for entry in requests])
        batch: dict[str, Any] = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "ended_at": None, "created_at": _time(created), "expires_at": _time(created + timedelta(hours=24)),
            "archived_at": None, "cancel_initiated_at": None, "results_url": None,
            "_fake": {"status": "in_progress", "polls": 0, "origin": request.origin, "results": [],
                      "requests": [{"custom_id": entry["custom_id"], "params": entry["params"], "submission": count}
                                   for entry, count in zip(requests, counts, strict=True)]},
        }
        with self.state.change() as data:
            data["batches"][batch_id] = batch
            data["order"].append(batch_id)
        return Response(200, _public(batch))

    def retrieve_batch(self, request: Request) -> Response:
        """``GET /v1/messages/batches/{id}``: a retrieval may end the batch."""
        batch_id = request.params["batch_id"]
        with self.state.change() as data:
            batch = data["batches"].get(batch_id)
            if batch is None:
                return self._no_batch(batch_id)
            fake = batch["_fake"]
            fake["polls"] += 1
            limit = data["config"]["end_after_polls"]
            if batch["processing_status"] == "canceling":
                self._end(batch, "canceled")
            elif batch["processing_status"] == "in_progress" and limit is not None and fake["polls"] > limit:
                self._end(batch, "ended")
            return Response(200, _public(batch))

    def list_batches(self, request: Request) -> Response:
        """``GET /v1/messages/batches?before_id=&after_id=&limit=``: most recent first."""
        limit = min(max(int(request.query.get("limit", 20)), 1), 1000)
        with self.state.read() as data:
            order = list(reversed(data["order"]))
            if request.query.get("after_id") in order:
                start = order.index(request.query["after_id"]) + 1
                window = order[start:start + limit]
                has_more = start + limit < len(order)
            elif request.query.get("before_id") in order:
                end = order.index(request.query["before_id"])
                window = order[max(end - limit, 0):end]
                has_more = end - limit > 0
            else:
                window, has_more = order[:limit], limit < len(order)
            page = [_public(data["batches"][bid]) for bid in window]
        return Response(200, {"data": page, "has_more": has_more, "first_id": window[0] if window else None,
                              "last_id": window[-1] if window else None})

    def batch_results(self, request: Request) -> Response:
        """``GET /v1/messages/batches/{id}/results``: JSONL, one line per request."""
        batch_id = request.params["batch_id"]
        with self.state.read() as data:
            batch = data["batches"].get(batch_id)
            if batch is None:
                return self._no_batch(batch_id)
            if batch["processing_status"] != "ended":
                return self.error(400, "invalid_request_error", f"Batch {batch_id} has not ended yet.")
            lines = b"".join(json.dumps(line).encode() + b"\n" for line in batch["_fake"]["results"])
        return Response(200, lines, "application/binary")

    def cancel_batch(self, request: Request) -> Response:
        """``POST /v1/messages/batches/{id}/cancel``."""
        batch_id = request.params["batch_id"]
        with self.state.change() as data:
            batch = data["batches"].get(batch_id)
            if batch is None:
                return self._no_batch(batch_id)
            if batch["processing_status"] == "in_progress":
                batch["processing_status"] = batch["_fake"]["status"] = "canceling"
                batch["cancel_initiated_at"] = _time(datetime.now(timezone.utc))
            return Response(200, _public(batch))

    def advance(self, batch_id: str | None, outcome: str) -> list[str]:
        """End running batches: ``outcome`` ``"ended"`` (each request by its fate) or ``"expired"``
        (every request expires, as when the 24 hours run out)."""
        ended = []
        with self.state.change() as data:
            for bid in data["order"]:
                batch = data["batches"][bid]
                if (batch_id is None or bid == batch_id) and batch["processing_status"] != "ended":
                    canceling = batch["processing_status"] == "canceling"
                    self._end(batch, "canceled" if canceling else outcome)
                    ended.append(bid)
        return ended

    def _end(self, batch: dict[str, Any], outcome: str) -> None:
        config = self.state.data["config"]
        results = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for entry in batch["_fake"]["requests"]:
            custom_id = entry["custom_id"]
            kind = outcome if outcome in ("canceled", "expired") else fate(config, custom_id, entry["submission"])
            counts[kind] += 1
            result: dict[str, Any] = {"type": kind}
            if kind == "succeeded":
                result["message"] = _message(custom_id, entry["params"])
            elif kind == "errored":
                result["error"] = {"type": "error", "request_id": f"req_{custom_id}", "error": {
                    "type": "invalid_request_error", "message": f"the fake server was told to fail {custom_id!r}"}}
            results.append({"custom_id": custom_id, "result": result})
        fake = batch["_fake"]
        fake["results"] = results
        fake["status"] = batch["processing_status"] = "ended"
        batch["request_counts"] = counts
        batch["ended_at"] = _time(datetime.now(timezone.utc))
        batch["results_url"] = f"{fake['origin']}/v1/messages/batches/{batch['id']}/results"

    def _no_batch(self, batch_id: str) -> Response:
        return self.error(404, "not_found_error", f"message batch {batch_id} not found")


def _problem(entry: Any, seen: set[str]) -> str | None:
    """What is wrong with one request, as ``field: why``, or None."""
    if not isinstance(entry, dict):
        return "custom_id: Field required"
    custom_id = entry.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        return f"custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$' ({custom_id!r})"
    if custom_id in seen:
        return f"custom_id: duplicate custom_id {custom_id!r}"
    params = entry.get("params")
    if not isinstance(params, dict):
        return "params: Field required"
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"params.{name}: Field required"
    return None


def _message(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """A Message answering with the last user message."""
    answer, tokens_in, tokens_out = reply_to(params.get("messages"), params.get("system"))
    return {
        "id": f"msg_{custom_id}", "type": "message", "role": "assistant", "model": params["model"],
        "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
    }


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if key != "_fake"}
