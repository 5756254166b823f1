"""A small batch with every kind of outcome, produced by real runs, for the
tests of the commands that operate on saved state (status, reset, skip, ...)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipekit.state.jsondir import JsonDirStore
from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore
from pipekit.testing import PipeResult
from pipekit.testing import PipeTester


#: research always works; draft is cached for ids ending in "-c" and fails for
#: ids containing "bad" (or when a file fail-<id> exists); review is
#: non-critical and fails for ids starting with "meh".
BATCH = """
    import json, os, time
    from pathlib import Path
    from pipekit import phase, PhaseResult

    LOG = Path("executions.log")

    def log(item_id, name):
        with LOG.open("a") as f:
            f.write(json.dumps([item_id, name]) + "\\n")

    @phase(1)
    async def research(item_id, ctx):
        log(item_id, "research")
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.01)
        if Path(f"hang-{item_id}").exists():
            time.sleep(30)
        return f"notes on {item_id}"

    def cached(item_id):
        return f"cached draft of {item_id}" if item_id.endswith("-c") else None

    @phase(2, cache=cached)
    def draft(item_id, research, ctx):
        log(item_id, "draft")
        ctx.record_cost(cost_usd=0.1)
        if "bad" in item_id or Path(f"fail-{item_id}").exists():
            raise RuntimeError(f"draft broke on {item_id}")
        size = int(os.environ.get("DRAFT_SIZE", "0"))
        return ("x" * size) if size else f"draft from {research}"

    @phase(3, critical=False)
    def review(item_id, draft):
        log(item_id, "review")
        if item_id.startswith("meh"):
            raise ValueError("review found nothing to say")
        return (draft or "").upper()
"""

ITEMS = ("a", "b-c", "bad-1", "meh")


def make_batch(tester: PipeTester, *items: str) -> PipeResult:
    """Write the pipeline and run it once over ``items`` (default: one of each outcome)."""
    tester.make_pipeline(BATCH)
    tester.make_items(*(items or ITEMS))
    result = tester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret in (0, 1), result
    return result


def executions(tester: PipeTester) -> list[tuple[str, str]]:
    """``(item, phase name)`` of every phase execution so far, in order."""
    log = tester.path / "executions.log"
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def forget_executions(tester: PipeTester) -> None:
    """Start the execution log afresh."""
    (tester.path / "executions.log").unlink(missing_ok=True)


def state_dir(tester: PipeTester) -> Path:
    """The batch's state directory (PIPEKIT_STATE_DIR/<pipeline>)."""
    return tester.path / "state" / "pipeline"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes and its mtime; lock files by
    name only (taking a lock, as a dry run does to read under it, writes who took it)."""
    return {
        str(p.relative_to(folder)): "lock" if p.parent.name == ".locks"
        else hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def saved_document(tester: PipeTester, item_id: str) -> dict[str, Any]:
    """The item's saved document, from whichever store the test runs against (``any_store``)."""
    store = open_test_store(tester)
    try:
        document = store.load(item_id)
    finally:
        store.close()
    assert document is not None, f"no state for {item_id!r}"
    return document


def open_test_store(tester: PipeTester) -> StateStore:
    """The store of the batch: ``PIPEKIT_STORE`` when a test sets it, else the state directory."""
    url = os.environ.get("PIPEKIT_STORE")
    return open_store_url(url, pipeline="pipeline") if url else JsonDirStore(state_dir(tester))


def store_snapshot(tester: PipeTester) -> dict[str, str]:
    """Every saved document of the batch, as JSON, by item id (for "nothing changed" checks)."""
    store = open_test_store(tester)
    try:
        return {item_id: json.dumps(document, sort_keys=True) for item_id, document in store.load_all()}
    finally:
        store.close()
