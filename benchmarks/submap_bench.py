"""ctx.map: 10,000 no-op sub-items in one phase, against plain asyncio doing the same
durable writes: one write per batch of finished sub-items, in the store's own way
(SQLite and PostgreSQL: one transaction; a JSON folder: one file written and fsynced).

    python benchmarks/submap_bench.py [--n 10000] [--repeat 3] [--store sqlite|json|postgresql]

``--store postgresql`` needs ``PIPEKIT_TEST_POSTGRES_URL``. Prints µs per sub-item
for each and the ratio (pipekit / baseline).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid


PIPELINE = '''
from pipekit import phase

def noop(n):
    return n

@phase(1)
async def fan_out(item_id, ctx):
    results = await ctx.map(noop, range(N))
    return len(results)
'''


def store_url(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:{folder}/s.db"
    if kind == "json":
        return f"json:{folder}/state"
    base = os.environ["PIPEKIT_TEST_POSTGRES_URL"]
    return f"{base}{'&' if '?' in base else '?'}pipeline=bench_{uuid.uuid4().hex[:12]}"


def pipekit_seconds(n: int, folder: Path, kind: str) -> float:
    (folder / "bench.py").write_text(textwrap.dedent(PIPELINE.replace("N", str(n))))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "bench.py", "--item", "a", "-q", "--store", store_url(kind, folder)],
        cwd=folder, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return elapsed


#: Per store, the baseline's setup and its ``write(rows)`` of one batch.
WRITERS = {
    "sqlite": """
import sqlite3
db = sqlite3.connect(FOLDER + "/b.db", isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS r (k TEXT PRIMARY KEY, v TEXT)")
def write(rows):
  with lock:
    db.execute("BEGIN"); db.executemany("INSERT OR REPLACE INTO r VALUES (?, ?)", rows); db.execute("COMMIT")
""",
    "json": """
import os, itertools
counter = itertools.count()
def write(rows):
  with lock:
    path = os.path.join(FOLDER, f"batch-{next(counter)}.json")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, json.dumps(dict(rows)).encode()); os.fsync(fd); os.close(fd)
    os.replace(path + ".tmp", path)
    d = os.open(FOLDER, os.O_RDONLY); os.fsync(d); os.close(d)
""",
    "postgresql": """
import os, psycopg
db = psycopg.connect(os.environ["PIPEKIT_TEST_POSTGRES_URL"], autocommit=True)
db.execute("CREATE TEMP TABLE r (k TEXT PRIMARY KEY, v JSONB)")
def write(rows):
  with lock:
    with db.transaction():
      db.cursor().executemany("INSERT INTO r VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v", rows)
""",
}


def baseline_seconds(n: int, folder: Path, batch: int, kind: str) -> float:
    script = f"""
import asyncio, json, threading, time
lock = threading.Lock()
FOLDER = {str(folder)!r}
{WRITERS[kind]}
pending = []
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
    parser.add_argument("--store", choices=sorted(WRITERS), default="sqlite")
    option = parser.parse_args()
    batch = max(1, min(256, option.n // 64))  # as pipekit.pipeline.submap groups them
    ours, theirs = [], []
    for _ in range(option.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            theirs.append(baseline_seconds(option.n, Path(b), batch, option.store))
            ours.append(pipekit_seconds(option.n, Path(a), option.store))
    pk, base = statistics.median(ours), statistics.median(theirs)
    print(json.dumps({
        "store": option.store,
        "sub_items": option.n,
        "pipekit_us_per_subitem": round(pk / option.n * 1e6, 1),
        "asyncio_us_per_subitem": round(base / option.n * 1e6, 1),
        "ratio": round(pk / base, 2),
        "note": "whole process each (interpreter start and imports included)",
    }))


if __name__ == "__main__":
    main()
