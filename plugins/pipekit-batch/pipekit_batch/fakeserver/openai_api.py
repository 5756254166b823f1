"""OpenAI's Batch API as the ``openai`` SDK calls it: files, batches, their JSONL.

A batch is ``validating`` when created, ``in_progress`` from its first
retrieval, and ends on ``POST /_fake/advance`` (or by itself after
``end_after_polls`` retrievals): ``completed``, or ``expired`` when some of
its requests were chosen to expire (those are missing from its output, as
with the real API). ``cancel`` makes it ``cancelling``, then ``cancelled``
with nothing processed. An input file that is not valid (a line that is not
JSON, no ``custom_id``, a repeated ``custom_id``, a ``url`` other than the
batch's endpoint) makes the batch ``failed`` with ``errors``, as OpenAI's
validation does.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
import json
from typing import Any

from pipekit_batch.fakeserver.http import FakeAPI
from pipekit_batch.fakeserver.http import Request
from pipekit_batch.fakeserver.http import Response
from pipekit_batch.fakeserver.state import FakeState
from pipekit_batch.fakeserver.state import fate
from pipekit_batch.fakeserver.state import now
from pipekit_batch.fakeserver.state import reply_to


RUNNING = ("validating", "in_progress", "finalizing")


class OpenAIFake(FakeAPI):
    """The fake of ``api.openai.com/v1``'s files and batches."""

    name = "openai"

    def __init__(self, state: FakeState) -> None:
        super().__init__(state)
        self.route("POST", "/v1/files", self.create_file)
        self.route("GET", "/v1/files/{file_id}", self.retrieve_file)
        self.route("GET", "/v1/files/{file_id}/content", self.file_content)
        self.route("POST", "/v1/batches", self.create_batch)
        self.route("GET", "/v1/batches", self.list_batches)
        self.route("GET", "/v1/batches/{batch_id}", self.retrieve_batch)
        self.route("POST", "/v1/batches/{batch_id}/cancel", self.cancel_batch)

    def error(self, status: int, kind: str, message: str) -> Response:
        """OpenAI's error body."""
        return Response(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    # ---- files ----

    def create_file(self, request: Request) -> Response:
        """``POST /v1/files``: a multipart form with ``purpose`` and ``file``."""
        header = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
        form = BytesParser(policy=HTTP).parsebytes(header + request.body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in form.iter_parts() if form.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or "purpose" not in fields:
            return self.error(400, "invalid_request_error", "a multipart form with 'file' and 'purpose' is required")
        filename, content = fields["file"]
        file_id = self.state.new_id("file-")
        self.state.write_file(file_id, content)
        record = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": now(),
            "filename": filename or "upload", "purpose": fields["purpose"][1].decode(), "status": "processed",
        }
        with self.state.change() as data:
            data["files"][file_id] = record
        return Response(200, record)

    def retrieve_file(self, request: Request) -> Response:
        """``GET /v1/files/{id}``."""
        with self.state.read() as data:
            record = data["files"].get(request.params["file_id"])
        return Response(200, record) if record else self._no_file(request.params["file_id"])

    def file_content(self, request: Request) -> Response:
        """``GET /v1/files/{id}/content``: the bytes."""
        content = self.state.read_file(request.params["file_id"])
        if content is None:
            return self._no_file(request.params["file_id"])
        return Response(200, content, "application/octet-stream")

    def _no_file(self, file_id: str) -> Response:
        return self.error(404, "invalid_request_error", f"No such File object: {file_id}")

    def _add_file(self, content: bytes, purpose: str, filename: str) -> str:
        file_id = self.state.new_id("file-")
        self.state.write_file(file_id, content)
        with self.state.change() as data:
            data["files"][file_id] = {
                "id": file_id, "object": "file", "bytes": len(content), "created_at": now(),
                "filename": filename, "purpose": purpose, "status": "processed",
            }
        return file_id

    # ---- batches ----

    def create_batch(self, request: Request) -> Response:
        """``POST /v1/batches``: validate the input file, count its requests as submitted."""
        body = request.json()
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(name):
                return self.error(400, "invalid_request_error", f"Missing required parameter: '{name}'.")
        content = self.state.read_file(body["input_file_id"])
        if content is None:
            return self._no_file(body["input_file_id"])
        lines, errors = _parse_input(content, body["endpoint"])
        batch_id = self.state.new_id("batch_")
        created = now()
        batch: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": created,
            "in_progress_at": None, "expires_at": created + 24 * 3600, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            "_fake": {"status": "validating", "polls": 0, "requests": lines},
        }
        if errors:
            batch.update(status="failed", failed_at=created, errors={"object": "list", "data": errors})
            batch["_fake"]["status"] = "failed"
        else:
            batch["request_counts"]["total"] = len(lines)
            counts = self.state.count_submitted([line["custom_id"] for line in lines])
            for line, count in zip(lines, counts, strict=True):
                line["submission"] = count
        with self.state.change() as data:
            data["batches"][batch_id] = batch
            data["order"].append(batch_id)
        return Response(200, _public(batch))

    def retrieve_batch(self, request: Request) -> Response:
        """``GET /v1/batches/{id}``: a retrieval moves the batch on (and may end it)."""
        batch_id = request.params["batch_id"]
        with self.state.change() as data:
            batch = data["batches"].get(batch_id)
            if batch is None:
                return self.error(404, "invalid_request_error", f"No batch found with id '{batch_id}'.")
            fake = batch["_fake"]
            fake["polls"] += 1
            limit = data["config"]["end_after_polls"]
            if batch["status"] == "validating":
                self._set(batch, "in_progress")
            elif batch["status"] == "cancelling":
                self._end(batch, "cancelled")
            elif batch["status"] == "in_progress" and limit is not None and fake["polls"] > limit:
                self._end(batch, "ended")
            return Response(200, _public(batch))

    def list_batches(self, request: Request) -> Response:
        """``GET /v1/batches?after=&limit=``: most recent first."""
        limit = min(max(int(request.query.get("limit", 20)), 1), 100)
        with self.state.read() as data:
            order = list(reversed(data["order"]))
            start = order.index(request.query["after"]) + 1 if request.query.get("after") in order else 0
            page = [_public(data["batches"][bid]) for bid in order[start:start + limit]]
        return Response(200, {
            "object": "list", "data": page, "has_more": start + limit < len(order),
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
        })

    def cancel_batch(self, request: Request) -> Response:
        """``POST /v1/batches/{id}/cancel``."""
        batch_id = request.params["batch_id"]
        with self.state.change() as data:
            batch = data["batches"].get(batch_id)
            if batch is None:
                return self.error(404, "invalid_request_error", f"No batch found with id '{batch_id}'.")
            if batch["status"] not in RUNNING:
                return self.error(409, "invalid_request_error",
                                  f"Cannot cancel a batch with status '{batch['status']}'.")
            self._set(batch, "cancelling")
            return Response(200, _public(batch))

    def advance(self, batch_id: str | None, outcome: str) -> list[str]:
        """End running batches: ``outcome`` ``"ended"`` (each request by its fate), ``"expired"`` (the
        whole batch expires with nothing processed) or ``"failed"``."""
        ended = []
        with self.state.change() as data:
            for bid in data["order"]:
                batch = data["batches"][bid]
                if (batch_id is None or bid == batch_id) and batch["status"] in RUNNING + ("cancelling",):
                    self._end(batch, "cancelled" if batch["status"] == "cancelling" else outcome)
                    ended.append(bid)
        return ended

    def _set(self, batch: dict[str, Any], status: str) -> None:
        batch["status"] = batch["_fake"]["status"] = status
        batch[f"{status}_at"] = now()

    def _end(self, batch: dict[str, Any], outcome: str) -> None:
        """Process the batch: write its output and error files, set its final status."""
        if outcome == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "batch_failed", "message": "failed by the fake"}]}
            self._set(batch, "failed")
            return
        output: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        any_expired = outcome == "expired"
        if outcome not in ("cancelled", "expired"):
            config = self.state.data["config"]
            for line in batch["_fake"]["requests"]:
                custom_id = line["custom_id"]
                answer = fate(config, custom_id, line.get("submission", 1))
                if answer == "expired":
                    any_expired = True
                elif answer == "errored":
                    failures.append(_line(custom_id, 400, {"error": {
                        "message": f"the fake server was told to fail {custom_id!r}",
                        "type": "invalid_request_error", "param": None, "code": "poisoned"}}))
                else:
                    output.append(_line(custom_id, 200, _completion(custom_id, line["body"])))
        if output:
            batch["output_file_id"] = self._add_file(_jsonl(output), "batch_output", f"{batch['id']}_output.jsonl")
        if failures:
            batch["error_file_id"] = self._add_file(_jsonl(failures), "batch_output", f"{batch['id']}_error.jsonl")
        batch["request_counts"] = {"total": batch["request_counts"]["total"], "completed": len(output),
                                   "failed": len(failures)}
        final = "cancelled" if outcome == "cancelled" else "expired" if any_expired else "completed"
        if final == "completed":
            batch["finalizing_at"] = now()
        self._set(batch, final)


def _parse_input(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input file's requests, and OpenAI-style validation errors (line numbers from 1)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                           "param": None, "line": number})
            continue
        problem = None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            problem = ("missing_required_parameter", "custom_id")
        elif line["custom_id"] in seen:
            problem = ("duplicate_custom_id", "custom_id")
        elif line.get("url") != endpoint:
            problem = ("mismatched_endpoint", "url")
        elif line.get("method") != "POST":
            problem = ("invalid_method", "method")
        elif not isinstance(line.get("body"), dict):
            problem = ("missing_required_parameter", "body")
        if problem:
            errors.append({"code": problem[0], "message": f"line {number}: invalid {problem[1]}",
                           "param": problem[1], "line": number})
            continue
        seen.add(line["custom_id"])
        lines.append({"custom_id": line["custom_id"], "body": line["body"]})
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The batch input file is empty.", "param": None, "line": None})
    return lines, errors


def _completion(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion answering with the last user message."""
    answer, tokens_in, tokens_out = reply_to(body.get("messages"))
    return {
        "id": f"chatcmpl-{custom_id}", "object": "chat.completion", "created": now(),
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
    }


def _line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": f"req_{custom_id}", "body": body}, "error": None}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if key != "_fake"}
