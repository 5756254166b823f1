"""The physical limit of an I/O-bound run, for the benchmarks to compare against.

Plain asyncio doing exactly the work of an I/O-bound pipekit run and nothing
else: the same sleeps, behind the same concurrency (and the same rate limiter,
if given), and the same durable state writes on the same path — the item's
state written before its first phase starts, then once at the end of each
phase (recording the next phase's start), each write waited for before the
item goes on, on 8 threads as pipekit's writer does.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import time
from typing import Any

from pipekit.state.store import write_atomically


def _document(item_id: str, phases: int) -> dict[str, Any]:
    """A state document about the size of pipekit's."""
    return {
        "item_id": item_id,
        "status": "pending",
        "started_at": "2026-11-29T00:00:00.000+00:00",
        "phases": {
            str(p): {
                "phase": p,
                "name": f"p{p}",
                "status": "pending",
                "started_at": None,
                "completed_at": None,
                "duration_seconds": None,
                "attempts": 0,
                "fingerprint": {"code": "0" * 16, "version": None, "input": None, "consumed": {}},
            }
            for p in range(1, phases + 1)
        },
        "phase_outputs": {},
    }


async def same_writes(
    folder: Path, items: int, phases: int, workers: int, work: float, limiter: Any = None
) -> float:
    """Seconds for ``items`` items of ``phases`` phases that each sleep ``work``
    seconds, ``workers`` items at a time, writing each item's state durably as
    pipekit does. ``limiter``: an ``aiolimiter.AsyncLimiter`` acquired before each phase."""
    folder.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(workers)
    threads = ThreadPoolExecutor(8)

    async def save(path: Path, document: dict[str, Any]) -> None:
        data = json.dumps(document, indent=2).encode()
        await loop.run_in_executor(threads, write_atomically, path, data)

    async def item(n: int) -> None:
        async with slots:
            path = folder / f"item-{n}.json"
            document = _document(f"item-{n}", phases)
            document["phases"]["1"]["status"] = "in_progress"
            await save(path, document)
            for p in range(1, phases + 1):
                if limiter is not None:
                    await limiter.acquire()
                await asyncio.sleep(work)
                document["phases"][str(p)]["status"] = "completed"
                if p < phases:
                    document["phases"][str(p + 1)]["status"] = "in_progress"
                await save(path, document)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(item(n) for n in range(items)))
    finally:
        threads.shutdown()
    return time.perf_counter() - started
