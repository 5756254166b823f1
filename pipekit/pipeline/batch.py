"""What pipekit needs from a provider's batch API (CONTRACT §9 "Batch phases")."""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal


@dataclass(frozen=True)
class BatchRequest:
    """One request as it goes on the wire: ``custom_id`` already fits the provider's rules."""

    custom_id: str
    payload: dict[str, Any]  # OpenAI: the /v1/chat/completions body; Anthropic: the Messages params


@dataclass(frozen=True)
class BatchStatus:
    """What one poll of a submitted batch says."""

    batch_id: str
    ended: bool  # True once results can be fetched (completed, expired, cancelled or failed as a whole)
    provider_status: str  # the provider's own word ("in_progress", "finalizing", "ended", ...)
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. {"succeeded": 18, "errored": 1, "processing": 1}
    error: str | None = None  # why the whole batch failed (validation), if it did


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one request of an ended batch."""

    custom_id: str
    outcome: Literal["succeeded", "errored", "expired", "canceled"]
    body: Any = None  # the provider's response JSON on success (OpenAI: response.body; Anthropic: result.message)
    error: str | None = None  # the provider's error text when errored
    tokens_in: int = 0  # from the response's usage
    tokens_out: int = 0
    model: str | None = None  # the model that answered, for pricing


class BatchProvider:
    """Base class of a batch API; every method is called from a worker thread, never concurrently for one batch."""

    #: Limits of one batch.
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    #: Seconds between polls under ``--wait`` (backoff starts here).
    poll_interval: float = 60.0
    #: The fraction of the online price a batch costs (0.5 = half price).
    discount: float = 0.5
    #: Dollars per million tokens (input, output) at ONLINE prices, used when the prices plugin cannot price the model.
    price: tuple[float, float] | None = None

    def check_request(self, request: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """One request as the handler returned it -> (custom_id, payload); raise ValueError naming what is wrong."""
        raise NotImplementedError

    def wire_id_ok(self, custom_id: str) -> bool:
        """Whether the provider accepts this custom_id as it is (else pipekit maps it to a wire id)."""
        return bool(custom_id)

    def request_bytes(self, request: BatchRequest) -> int:
        """Bytes this request takes in the upload (for splitting at max_bytes)."""
        raise NotImplementedError

    def submit(self, key: str, requests: Sequence[BatchRequest]) -> str:
        """Create a batch of ``requests``; return the provider's batch id. ``key`` is deterministic for this
        submission: store it in the batch's metadata where the provider has metadata."""
        raise NotImplementedError

    def find(self, key: str, requests: Sequence[BatchRequest], known: Collection[str] = ()) -> str | None:
        """A batch submitted earlier for ``key`` (after a crash between upload and record), or None.
        Providers without metadata match what they can (request count and custom_ids) and return None when unsure.
        ``known`` holds the batch ids the state has recorded for other submissions: never the answer, and
        never a reason to be unsure (a request sent again reuses its custom_id, so an earlier batch of it
        looks like this one). pipekit still calls a ``find(key, requests)`` of two arguments."""
        raise NotImplementedError

    def poll(self, batch_id: str) -> BatchStatus:
        """What the batch ``batch_id`` says now."""
        raise NotImplementedError

    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """Every request of an ended batch, each once (unprocessed ones as expired/canceled)."""
        raise NotImplementedError

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to stop the batch ``batch_id``."""
        raise NotImplementedError
