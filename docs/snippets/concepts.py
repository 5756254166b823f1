"""The pipeline the Concepts page quotes from; tests/test_docs.py runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipekit import Fail
from pipekit import PhaseResult
from pipekit import Retry
from pipekit import phase


PIPELINE_NAME = "concepts"
ITEM_NOUN = "articles"


# --8<-- [start:items]
def items():
    """Ids, (id, metadata) pairs, or dicts with an "id" key."""
    yield "intro"
    yield ("pricing", {"words": 1200})
    yield {"id": "faq", "words": 300}


# --8<-- [end:items]


# --8<-- [start:cache]
def fetched(output_dir: Path) -> str | bool:
    """The fetch phase's work exists when its file does: skip it, reuse the text."""
    page = output_dir / "page.html"
    return page.read_text() if page.exists() else False


@phase(1, cache=fetched, timeout=30, retries=3, retry_backoff=0.01)
async def fetch(item_id: str, output_dir: Path) -> str:
    """Async handlers run on the event loop; sync ones in a thread."""
    await asyncio.sleep(0.01)
    html = f"<h1>{item_id}</h1>"
    (output_dir / "page.html").write_text(html)
    return html


# --8<-- [end:cache]


# --8<-- [start:arguments]
@phase(2)
def draft(item_id: str, metadata: dict[str, Any], fetch: str, ctx: Any) -> PhaseResult:
    """Arguments by name: the item, its metadata, an earlier phase's output, the context."""
    words = metadata.get("words", 500)
    ctx.record_cost(tokens_in=len(fetch), tokens_out=words)  # counts even if this attempt fails
    return PhaseResult(output=f"{words} words on {item_id}", cost_usd=words * 2e-6)


# --8<-- [end:arguments]


# --8<-- [start:retry]
@phase(3, critical=False, retries=2, retry_backoff=0.01)
def review(item_id: str, ctx: Any) -> str:
    """Not critical: if it still fails after its retries, the item goes on."""
    if item_id == "faq":
        raise Fail("nothing to review in a FAQ")  # fail now, no retries
    if ctx.attempt == 1:
        raise Retry(after=0.01, message="the reviewer is busy")  # try again, not counted as an error
    return "looks good"


# --8<-- [end:retry]


# --8<-- [start:previous]
@phase(4)
def publish(previous_outputs: dict[int, str], review: str | None) -> str:
    """``review`` is None when that phase failed; previous_outputs has the rest, by num."""
    return previous_outputs[2] + ("" if review is None else f" ({review})")


# --8<-- [end:previous]
