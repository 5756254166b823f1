"""A minimal pipekit pipeline: no network, a few seconds end to end.

Run it with ``pipekit run pipeline.py --items items.txt`` (or ``python -m pipekit``).
It shows an async and a sync phase, a cache check, a non-critical phase and
cost reporting.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipekit import PhaseResult
from pipekit import phase


PIPELINE_NAME = "hello"
ITEM_NOUN = "greetings"

#: Pretend price of the "model" behind the draft phase, in dollars per 1,000 tokens.
PRICE_PER_1K_TOKENS = 0.002


def research_is_cached(output_dir: Path) -> str | bool:
    """The research phase's work exists when its notes file does."""
    notes = output_dir / "research.md"
    return notes.read_text() if notes.exists() else False


@phase(1, cache=research_is_cached, timeout=30)
async def research(item_id: str, ctx) -> str:  # type: ignore[no-untyped-def]
    """Gather notes about the item (here: a short async pause, then a file)."""
    await asyncio.sleep(0.05)
    notes = f"# Notes on {item_id}\n\n{item_id} is a fine thing to greet.\n"
    (ctx.output_dir / "research.md").write_text(notes)
    return notes


@phase(2, timeout=30)
def draft(item_id: str, research: str, ctx) -> PhaseResult:  # type: ignore[no-untyped-def]
    """Write a greeting from the notes (a sync phase: it runs in a thread)."""
    text = f"Hello, {item_id}! ({len(research.split())} words of research)"
    tokens_in, tokens_out = len(research.split()) * 3, len(text.split()) * 3
    ctx.executor = "template-model"
    return PhaseResult(
        output=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=(tokens_in + tokens_out) / 1000 * PRICE_PER_1K_TOKENS,
    )


@phase(3, critical=False, timeout=30)
def review(item_id: str, draft: str) -> str:
    """A second opinion that may fail without stopping the item."""
    if "fail" in item_id:
        raise ValueError(f"the reviewer does not like {item_id!r}")
    return f"LGTM: {draft}"


@phase(4)
def publish(item_id: str, previous_outputs: dict[int, str], output_dir: Path) -> str:
    """Write the greeting where people can read it."""
    path = output_dir / "greeting.txt"
    path.write_text(previous_outputs[2] + "\n")
    return str(path)
