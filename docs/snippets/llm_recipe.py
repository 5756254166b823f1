"""The LLM recipe's pipeline: a named rate limit, Retry-After handling and cost caps.

tests/test_docs.py runs it with the fake model below; swap ``call_model`` for
your client (``llm``, ``openai``, ``anthropic``...).
"""

from __future__ import annotations

from typing import Any

import pipekit
from pipekit import PhaseResult
from pipekit import Retry
from pipekit import phase


ITEM_NOUN = "questions"


def items():
    return ["why is the sky blue", "why is the sea salty", "why do cats purr"]


# --8<-- [start:limits]
#: Declared once, by name: at most 1,200 requests and 400,000 tokens a minute.
LIMITS = {"model": pipekit.Limit(rpm=1200, tpm=400_000, burst=5)}
# --8<-- [end:limits]


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
@phase(1, timeout=120, retries=3, retry_backoff=2.0, limits=["model"], max_cost=0.05)
def answer(item_id: str, ctx: Any) -> PhaseResult:
    """One model call: rate-limited by pipekit, retried by pipekit, its cost recorded."""
    try:
        text, tokens_in, tokens_out = call_model(item_id)
    except RateLimited as exc:
        # Not an error: every phase using "model" pauses as the server asks; no retry used up.
        raise Retry(after=exc.retry_after) from exc
    ctx.executor = "example-model"
    return PhaseResult(
        output=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=tokens_in * PRICE[0] + tokens_out * PRICE[1],
    )


# --8<-- [end:phase]
