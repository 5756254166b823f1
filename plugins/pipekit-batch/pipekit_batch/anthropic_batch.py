"""Anthropic's Message Batches API as a pipekit batch provider, on the ``anthropic`` SDK.

Anthropic's batches carry no metadata, so a batch submitted just before a
crash cannot be looked up by its key: :meth:`AnthropicBatch.find` matches
recent batches by their request count and, once they have ended, by the
custom_ids of their results, and says "not found" when it cannot be sure.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from datetime import timezone
import re
import threading
from typing import Any

from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit.pipeline.batch import BatchResult
from pipekit.pipeline.batch import BatchStatus
from pipekit_batch._common import LazyClient
from pipekit_batch._common import check_shape
from pipekit_batch._common import dumps
from pipekit_batch._common import naming_refusals
from pipekit_batch._common import require


#: The custom_ids Anthropic accepts.
WIRE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What a Messages request must name.
REQUIRED_PARAMS = ("model", "max_tokens", "messages")


class AnthropicBatch(BatchProvider):
    """Anthropic's Message Batches: half the price of online calls, most batches end within an hour.

    The handler of a ``@phase(..., batch=NAME)`` returns requests
    ``{"custom_id": ..., "params": {...}}`` (``params`` are the Messages API's:
    ``model``, ``max_tokens``, ``messages``, ...). The client is made on first
    use from ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``, and
    ``ANTHROPIC_BASE_URL``), unless ``client=`` gives one.

    :param client: an ``anthropic.Anthropic`` to use instead of one made from the environment.
    :param poll_interval: seconds between polls under ``--wait``.
    :param price: dollars per million (input, output) tokens at online prices, for models
        the prices plugin cannot price.
    """

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024
    #: How far back :meth:`find` looks (results stay available for 29 days), and its page size.
    lookback_seconds = 29 * 24 * 3600
    page_size = 100

    def __init__(self, *, client: Any = None, poll_interval: float = 60.0,
                 price: tuple[float, float] | None = None) -> None:
        self.poll_interval = float(poll_interval)
        self.price = price
        self._client: LazyClient[Any] = LazyClient(
            client, ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), _make_client, "AnthropicBatch"
        )
        # Batches this object submitted, found, polled or read: never the answer to another key's find().
        self._claimed: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "AnthropicBatch()"

    def check_request(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """``{"custom_id", "params"}`` -> (custom_id, params); params name model, max_tokens, messages."""
        custom_id, params = check_shape(request, ("custom_id", "params"), (), "Anthropic")
        require(custom_id, params, "params", REQUIRED_PARAMS, "the Messages API")
        return custom_id, params

    def wire_id_ok(self, custom_id: str) -> bool:
        """1 to 64 characters of ``[A-Za-z0-9_-]``, Anthropic's rule."""
        return WIRE_ID.fullmatch(custom_id) is not None

    def request_bytes(self, request: BatchRequest) -> int:
        """The request's part of the JSON body sent, its separating comma included."""
        return len(dumps({"custom_id": request.custom_id, "params": request.payload}).encode("utf-8")) + 1

    @naming_refusals
    def submit(self, key: str, requests: Sequence[BatchRequest]) -> str:
        """Create the batch (Anthropic keeps no metadata: ``key`` is only remembered in this process)."""
        if not requests or len(requests) > self.max_requests:
            raise ValueError(f"an Anthropic batch holds 1 to {self.max_requests} requests, not {len(requests)}")
        size = sum(self.request_bytes(request) for request in requests) + len('{"requests":[]}')
        if size > self.max_bytes:
            raise ValueError(f"an Anthropic batch holds at most {self.max_bytes} bytes, not {size}")
        # No retry by the SDK: a retried create after a lost answer makes a second batch.
        batch = self._client.get().with_options(max_retries=0).messages.batches.create(
            requests=[{"custom_id": request.custom_id, "params": request.payload} for request in requests]
        )
        self._claim(batch.id, key)
        return str(batch.id)

    @naming_refusals
    def find(self, key: str, requests: Sequence[BatchRequest], known: Collection[str] = ()) -> str | None:
        """A recent ended batch whose results hold exactly these custom_ids, or None.

        None also when it cannot be sure: a batch of the same size still running
        (its custom_ids are not readable until it ends) or the only matches are
        batches that processed nothing (all expired or canceled: submitting
        again pays nothing twice). Batches this object already knows under
        another key or from a poll, and the ``known`` ones (recorded by the
        state for other submissions), are never an answer and never make it
        unsure.
        """
        wanted = {request.custom_id for request in requests}
        oldest = datetime.now(timezone.utc).timestamp() - self.lookback_seconds
        client = self._client.get()
        for batch in client.messages.batches.list(limit=self.page_size):
            if batch.created_at.timestamp() < oldest:
                break
            counts = batch.request_counts
            size = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if size != len(wanted) or batch.id in known or not self._unclaimed(batch.id, key):
                continue
            if batch.processing_status != "ended":
                return None  # same size, still running: cannot tell whether it is ours
            if counts.succeeded + counts.errored == 0:
                continue  # processed nothing: resubmitting costs nothing twice
            ids = {line.custom_id for line in client.messages.batches.results(batch.id)}
            if ids == wanted:
                self._claim(batch.id, key)
                return str(batch.id)
        return None

    @naming_refusals
    def poll(self, batch_id: str) -> BatchStatus:
        """``processing_status`` and ``request_counts`` (processing, succeeded, errored, canceled, expired)."""
        self._claim(batch_id, None)
        batch = self._client.get().messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        return BatchStatus(
            batch_id=batch.id,
            ended=batch.processing_status == "ended",
            provider_status=batch.processing_status,
            counts={"processing": counts.processing, "succeeded": counts.succeeded, "errored": counts.errored,
                    "canceled": counts.canceled, "expired": counts.expired},
        )

    @naming_refusals
    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """Each request of the ended batch once, as its result line says."""
        self._claim(batch_id, None)
        seen: set[str] = set()
        for line in self._client.get().messages.batches.results(batch_id):
            if line.custom_id in seen:
                continue
            seen.add(line.custom_id)
            yield _result(line.custom_id, line.result)

    @naming_refusals
    def cancel(self, batch_id: str) -> None:
        """Ask Anthropic to cancel the batch, unless it has already ended."""
        client = self._client.get()
        if client.messages.batches.retrieve(batch_id).processing_status == "in_progress":
            client.messages.batches.cancel(batch_id)

    def _claim(self, batch_id: str, key: str | None) -> None:
        with self._lock:
            self._claimed.setdefault(batch_id, key)

    def _unclaimed(self, batch_id: str, key: str) -> bool:
        with self._lock:
            return batch_id not in self._claimed or self._claimed[batch_id] == key


def _make_client() -> Any:
    import anthropic  # on first use: declaring the provider costs no import

    return anthropic.Anthropic()


def _result(custom_id: str, result: Any) -> BatchResult:
    if result.type == "succeeded":
        message = result.message
        return BatchResult(
            custom_id,
            "succeeded",
            body=message.to_dict(mode="json"),
            tokens_in=int(message.usage.input_tokens or 0),
            tokens_out=int(message.usage.output_tokens or 0),
            model=str(message.model),
        )
    if result.type == "errored":
        error = result.error.error
        return BatchResult(custom_id, "errored", error=f"{error.type}: {error.message}")
    return BatchResult(custom_id, "expired" if result.type == "expired" else "canceled")
