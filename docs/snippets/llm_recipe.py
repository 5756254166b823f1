"""The LLM recipe's pipeline: a rate-limited model adapter and Retry-After handling.

tests/test_docs.py runs it with the fake model below; swap ``call_model`` for
your client (``llm``, ``openai``, ``anthropic``...).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pipekit import PhaseResult
from pipekit import Retry
from pipekit import phase


ITEM_NOUN = "questions"


def items():
    return ["why is the sky blue", "why is the sea salty", "why do cats purr"]


# --8<-- [start:limiter]
class RateLimiter:
    """At most ``per_second`` calls a second across all threads of this process."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.lock = threading.Lock()
        self.next_slot = 0.0

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        time.sleep(max(0.0, slot - now))


LIMIT = RateLimiter(per_second=20)
# --8<-- [end:limiter]


class RateLimited(Exception):
    """What a client raises on HTTP 429; ``retry_after`` from the response header."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


_REFUSED_ONCE: set[str] = set()


def call_model(prompt: str) -> tuple[str, int, int]:
    """A stand-in for a hosted model: refuses each prompt once with a 429."""
    if prompt not in _REFUSED_ONCE:
        _REFUSED_ONCE.add(prompt)
        raise RateLimited(retry_after=0.01)
    return f"An answer to {prompt!r}.", len(prompt) // 4 + 20, 12


#: Dollars per token (input, output) of the model.
PRICE = (0.15e-6, 0.60e-6)


# --8<-- [start:phase]
@phase(1, timeout=120, retries=3, retry_backoff=2.0)
def answer(item_id: str, ctx: Any) -> PhaseResult:
    """One model call: rate-limited here, retried by pipekit, its cost recorded."""
    LIMIT.wait()
    try:
        text, tokens_in, tokens_out = call_model(item_id)
    except RateLimited as exc:
        # Not an error: wait as the server asks, without using up a retry.
        raise Retry(after=exc.retry_after) from exc
    ctx.executor = "example-model"
    return PhaseResult(
        output=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=tokens_in * PRICE[0] + tokens_out * PRICE[1],
    )


# --8<-- [end:phase]
