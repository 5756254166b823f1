"""ctx.map: 10,000 no-op sub-items in one phase, against plain asyncio doing the same
durable writes (SQLite, one transaction per batch of finished sub-items).

    python benchmarks/submap_bench.py [--n 10000] [--repeat 3]

Prints µs per sub-item for each and the ratio (pipekit / baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


PIPELINE = '''
from pipekit import phase

def noop(n):
    return n

@phase(1)
async def fan_out(item_id, ctx):
    results = await ctx.map(noop, range(N))
    return len(results)
'''


def pipekit_seconds(n: int, folder: Path) -> float:
    (folder / "bench.py").write_text(textwrap.dedent(PIPELINE.replace("N", str(n))))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "bench.py", "--item", "a", "-q", "--store", f"sqlite:{folder}/s.db"],
        cwd=folder, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return elapsed


def baseline_seconds(n: int, folder: Path, batch: int) -> float:
    script = f"""
import asyncio, json, sqlite3, threading, time
lock = threading.Lock()
started = time.perf_counter()
db = sqlite3.connect({str(folder / 'b.db')!r}, isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS r (k TEXT PRIMARY KEY, v TEXT)")
pending = []
def write(rows):
  with lock:
    db.execute("BEGIN"); db.executemany("INSERT OR REPLACE INTO r VALUES (?, ?)", rows); db.execute("COMMIT")
async def one(i, slots):
    async with slots:
        pending.append((str(i), json.dumps({{"status": "done", "result": i}})))
        if len(pending) >= {batch}:
            rows = pending[:]; pending.clear()
            await asyncio.to_thread(write, rows)
async def main():
    slots = asyncio.Semaphore(8)
    await asyncio.gather(*(one(i, slots) for i in range({n})))
    if pending: write(pending)
asyncio.run(main())
"""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    option = parser.parse_args()
    batch = max(1, min(256, option.n // 64))  # as pipekit.pipeline.submap groups them
    ours, theirs = [], []
    for _ in range(option.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            theirs.append(baseline_seconds(option.n, Path(b), batch))
            ours.append(pipekit_seconds(option.n, Path(a)))
    pk, base = statistics.median(ours), statistics.median(theirs)
    print(json.dumps({
        "sub_items": option.n,
        "pipekit_us_per_subitem": round(pk / option.n * 1e6, 1),
        "asyncio_us_per_subitem": round(base / option.n * 1e6, 1),
        "ratio": round(pk / base, 2),
        "note": "whole process each (interpreter start and imports included)",
    }))


if __name__ == "__main__":
    main()
