"""OpenAI's Batch API (``/v1/batches``) as a pipekit batch provider, on the ``openai`` SDK."""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import hashlib
import json
import time
from typing import Any
import unicodedata

from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit.pipeline.batch import BatchResult
from pipekit.pipeline.batch import BatchStatus
from pipekit_batch._common import LazyClient
from pipekit_batch._common import check_shape
from pipekit_batch._common import dumps
from pipekit_batch._common import naming_refusals
from pipekit_batch._common import require


#: The batch's status once it will not change again: results can be read.
ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
#: The metadata key that finds a batch again after a crash.
METADATA_KEY = "pipekit_key"
#: The longest custom_id sent as it is (OpenAI documents no limit; longer ones are mapped to wire ids).
MAX_ID_LENGTH = 512


class OpenAIBatch(BatchProvider):
    """OpenAI's Batch API: half the price of online calls, results within ``completion_window``.

    The handler of a ``@phase(..., batch=NAME)`` returns requests
    ``{"custom_id": ..., "body": {...}}`` (``body`` is the request body of
    ``endpoint``; ``"method": "POST"`` and ``"url": endpoint`` may be given
    and must match). The client is made on first use from ``OPENAI_API_KEY``
    (and ``OPENAI_BASE_URL``), unless ``client=`` gives one.

    :param endpoint: the API every request of the batch goes to.
    :param completion_window: the window OpenAI has to finish the batch.
    :param client: an ``openai.OpenAI`` to use instead of one made from the environment.
    :param poll_interval: seconds between polls under ``--wait``.
    :param price: dollars per million (input, output) tokens at online prices, for models
        the prices plugin cannot price.
    """

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    #: How far back :meth:`find` looks (batch files expire after 30 days), and its page size.
    lookback_seconds = 30 * 24 * 3600
    page_size = 100

    def __init__(self, endpoint: str = "/v1/chat/completions", completion_window: str = "24h", *,
                 client: Any = None, poll_interval: float = 60.0, price: tuple[float, float] | None = None) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith("/v1/"):
            raise ValueError(f"OpenAIBatch: endpoint must be an API path such as '/v1/chat/completions', "
                             f"got {endpoint!r}")
        self.endpoint = endpoint
        self.completion_window = completion_window
        self.poll_interval = float(poll_interval)
        self.price = price
        self._client: LazyClient[Any] = LazyClient(client, ("OPENAI_API_KEY",), _make_client, "OpenAIBatch")

    def __repr__(self) -> str:
        return f"OpenAIBatch(endpoint={self.endpoint!r}, completion_window={self.completion_window!r})"

    def check_request(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """``{"custom_id", "body"}`` (and optionally ``"method"``, ``"url"``) -> (custom_id, body)."""
        custom_id, body = check_shape(request, ("custom_id", "body"), ("method", "url"), "OpenAI")
        if request.get("method", "POST") != "POST":
            raise ValueError(f"request {custom_id!r}: 'method' must be 'POST', got {request['method']!r}")
        if request.get("url", self.endpoint) != self.endpoint:
            raise ValueError(f"request {custom_id!r}: 'url' {request['url']!r} is not this batch's endpoint "
                             f"{self.endpoint!r}")
        if self.endpoint == "/v1/chat/completions":
            require(custom_id, body, "body", ("model", "messages"), "/v1/chat/completions")
        return custom_id, body

    def wire_id_ok(self, custom_id: str) -> bool:
        """1 to 512 characters, none a control character."""
        return 0 < len(custom_id) <= MAX_ID_LENGTH and not any(
            unicodedata.category(ch) == "Cc" for ch in custom_id
        )

    def request_bytes(self, request: BatchRequest) -> int:
        """The request's line in the uploaded JSONL file, newline included."""
        return len(self._line(request))

    @naming_refusals
    def submit(self, key: str, requests: Sequence[BatchRequest]) -> str:
        """Upload the JSONL file, create the batch with ``metadata={"pipekit_key": key}``."""
        if not requests or len(requests) > self.max_requests:
            raise ValueError(f"an OpenAI batch holds 1 to {self.max_requests} requests, not {len(requests)}")
        content = b"".join(self._line(request) for request in requests)
        if len(content) > self.max_bytes:
            raise ValueError(f"an OpenAI batch file holds at most {self.max_bytes} bytes, not {len(content)}")
        client = self._client.get()
        upload = client.files.create(file=(f"pipekit-{_digest(key)}.jsonl", content, "application/jsonl"),
                                     purpose="batch")
        # No retry by the SDK here: a retried create after a lost answer makes a second batch of
        # the same requests. pipekit's resume looks the batch up by its key before sending again.
        batch = client.with_options(max_retries=0).batches.create(input_file_id=upload.id, endpoint=self.endpoint,
                                      completion_window=self.completion_window,
                                      metadata={METADATA_KEY: _metadata_value(key)})
        return str(batch.id)

    @naming_refusals
    def find(self, key: str, requests: Sequence[BatchRequest], known: Collection[str] = ()) -> str | None:
        """The most recent batch (of the last 30 days) whose metadata holds ``key``, none of ``known``."""
        value = _metadata_value(key)
        oldest = time.time() - self.lookback_seconds
        for batch in self._client.get().batches.list(limit=self.page_size):
            if batch.created_at < oldest:
                break
            if batch.id not in known and (batch.metadata or {}).get(METADATA_KEY) == value:
                return str(batch.id)
        return None

    @naming_refusals
    def poll(self, batch_id: str) -> BatchStatus:
        """The batch's status and counts (``succeeded``, ``errored``, and ``processing`` until it
        ends, then ``expired`` or ``canceled`` for what it left unprocessed)."""
        batch = self._client.get().batches.retrieve(batch_id)
        counts = batch.request_counts
        total, done, failed = (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
        left = max(total - done - failed, 0)
        rest = "processing" if batch.status not in ENDED else "expired" if batch.status == "expired" else "canceled"
        return BatchStatus(
            batch_id=batch.id,
            ended=batch.status in ENDED,
            provider_status=batch.status,
            counts={"succeeded": done, "errored": failed, rest: left},
            error=_batch_error(batch) if batch.status == "failed" else None,
        )

    @naming_refusals
    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """Each request of the ended batch once, from its output and error files; a request they do
        not answer is ``expired`` (the batch expired), ``canceled`` (cancelled or completed) or
        ``errored`` with the batch's error (the batch failed validation)."""
        client = self._client.get()
        batch = client.batches.retrieve(batch_id)
        if batch.status not in ENDED:
            raise RuntimeError(f"OpenAI batch {batch_id} has not ended (status {batch.status!r})")
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            for line in _jsonl(client, file_id):
                result = _result(line)
                if result.custom_id not in seen:
                    seen.add(result.custom_id)
                    yield result
        error = _batch_error(batch) if batch.status == "failed" else None
        for line in _jsonl(client, batch.input_file_id):
            custom_id = str(line.get("custom_id"))
            if custom_id in seen:
                continue
            seen.add(custom_id)
            if error is not None:
                yield BatchResult(custom_id, "errored", error=error)
            else:
                yield BatchResult(custom_id, "expired" if batch.status == "expired" else "canceled")

    @naming_refusals
    def cancel(self, batch_id: str) -> None:
        """Cancel the batch, unless it has already ended (then there is nothing to stop)."""
        client = self._client.get()
        if client.batches.retrieve(batch_id).status not in ENDED | {"cancelling"}:
            client.batches.cancel(batch_id)

    def _line(self, request: BatchRequest) -> bytes:
        line = {"custom_id": request.custom_id, "method": "POST", "url": self.endpoint, "body": request.payload}
        return (dumps(line) + "\n").encode("utf-8")


def _make_client() -> Any:
    import openai  # on first use: declaring the provider costs no import

    return openai.OpenAI()


def _metadata_value(key: str) -> str:
    # OpenAI metadata values hold at most 512 characters: a longer key goes by its digest.
    return key if len(key) <= 512 else f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _jsonl(client: Any, file_id: str | None) -> Iterator[dict[str, Any]]:
    """The JSON lines of one of the batch's files (none when it has no such file)."""
    if not file_id:
        return
    for raw in client.files.content(file_id).text.splitlines():
        if raw.strip():
            line = json.loads(raw)
            if isinstance(line, dict):
                yield line


def _result(line: dict[str, Any]) -> BatchResult:
    """One line of an output or error file."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    body = response.get("body")
    if line.get("error"):
        return BatchResult(custom_id, "errored", error=_error_text(line["error"]))
    if response.get("status_code") != 200:
        detail = body.get("error") if isinstance(body, dict) and body.get("error") else body
        return BatchResult(custom_id, "errored", error=f"HTTP {response.get('status_code')}: {_error_text(detail)}")
    usage = (body.get("usage") if isinstance(body, dict) else None) or {}
    return BatchResult(
        custom_id,
        "succeeded",
        body=body,
        # chat/completions say prompt/completion tokens; /v1/responses says input/output tokens
        tokens_in=int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0),
        tokens_out=int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0),
        model=body.get("model") if isinstance(body, dict) else None,
    )


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or dumps(error)
        return f"{error['code']}: {message}" if error.get("code") else str(message)
    return str(error)


def _batch_error(batch: Any) -> str:
    """Why a batch failed as a whole: its validation errors, one per line of the input."""
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    texts = [f"line {e.line}: " * (e.line is not None) + f"{e.code}: {e.message}" for e in errors]
    return "; ".join(texts) or "the batch failed"
