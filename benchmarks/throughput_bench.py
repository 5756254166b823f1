"""How many phase completions per second one driver records, against a plain script.

    python benchmarks/throughput_bench.py [--items 20000] [--phases 3] [--workers 64]
                                          [--repeat 3] [--stores sqlite,postgresql] [--postgres-url URL]

The whole CLI (``pipekit run pipeline.py --store URL -j 64 -q``, interpreter
start included) over no-op phases, each store beside its baseline, measured
interleaved in the same run so that the machine's load hits both alike:

- sqlite: ``sqlite3`` in WAL with ``synchronous=FULL`` keeping the same per-item
  JSON documents (one row each, the document pipekit writes), 64 items in
  flight, the 64 transitions of each tick in one transaction: the item's
  creation, its first phase's start, then each phase's completion with the
  next one's start (pipekit's writes), each durable before the item goes on;
- postgresql: the same with psycopg 3, one connection, each tick's 64 upserts
  in one transaction (``executemany``, which pipelines its statements); the
  commits pipekit's run made (``pg_stat_database`` of a database the benchmark
  creates for itself, when the server lets it) are printed per phase.

Prints phases per second for both and the ratio (the goal: within 4x, and at
least 10,000/s on SQLite and 5,000/s on PostgreSQL), with the load average,
and the CPU the whole CLI used per phase (user + system, all its threads):
on a shared machine the rate moves with the load, the CPU per phase much less.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import json
import os
from pathlib import Path
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit
import uuid


def pipeline_source(phases: int, items: int) -> str:
    source = "from pipekit import phase\n" + "".join(
        f"\n@phase({n})\ndef p{n}(item_id):\n    return ''\n" for n in range(1, phases + 1)
    )
    return source + f"\ndef items():\n    return [f'item-{{n}}' for n in range({items})]\n"


def document(item_id: str, phases: int) -> dict[str, Any]:
    """A state document shaped as pipekit writes it (same fields, same sizes)."""
    stamp = "2026-12-07T13:00:00.000000+00:00"
    return {
        "schema_version": 1,
        "item_id": item_id,
        "metadata": {},
        "status": "pending",
        "current_phase": 1,
        "started_at": stamp,
        "last_updated": stamp,
        "total_tokens_in": 0,
        "total_tokens_out": 0,
        "total_cost_usd": 0.0,
        "pipeline_module": "pipeline",
        "phases": {
            str(p): {
                "phase": p, "name": f"p{p}", "status": "pending", "executor": "", "started_at": None,
                "completed_at": None, "duration_seconds": None, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
                "output_file": None, "error": None, "attempts": 0, "reason": None, "traceback": None,
                "fingerprint": {"code": "0" * 16, "version": None, "input": None, "consumed": {}},
                "attempts_at_reset": 0,
            }
            for p in range(1, phases + 1)
        },
        "phase_outputs": {},
        "phase_output_files": {},
    }  # fmt: skip


def transitions(item_id: str, phases: int) -> list[str]:
    """The documents an item goes through, as JSON, as pipekit writes them: created,
    its first phase started, then each phase completed with the next one started."""
    state = document(item_id, phases)
    out = [json.dumps(state)]
    stamp = state["started_at"]
    state["phases"]["1"].update(status="in_progress", started_at=stamp, attempts=1)
    state["status"] = "in_progress"
    out.append(json.dumps(state))
    for p in range(1, phases + 1):
        state["phases"][str(p)].update(status="completed", completed_at=stamp, duration_seconds=0.0001)
        state["phase_outputs"][str(p)] = ""
        if p < phases:
            state["phases"][str(p + 1)].update(status="in_progress", started_at=stamp, attempts=1)
            state["current_phase"] = p + 1
        else:
            state["status"] = "completed"
        out.append(json.dumps(state))
    return out


def ticks(items: int, phases: int, workers: int) -> Any:
    """Each tick: the next transition of each of ``workers`` items in flight, as (item_id, json text)."""
    for start in range(0, items, workers):
        group = [f"item-{n}" for n in range(start, min(start + workers, items))]
        steps = [transitions(item_id, phases) for item_id in group]
        for k in range(len(steps[0])):
            yield [(item_id, s[k]) for item_id, s in zip(group, steps, strict=True)]


def baseline_sqlite(path: Path, items: int, phases: int, workers: int) -> float:
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE items (item_id TEXT PRIMARY KEY, state TEXT NOT NULL)")
    for rows in ticks(items, phases, workers):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR REPLACE INTO items (item_id, state) VALUES (?, ?)", rows)
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started


def baseline_postgres(url: str, items: int, phases: int, workers: int) -> float:
    import psycopg

    table = f"bench_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with psycopg.connect(url) as db:
        db.execute(f"CREATE TABLE {table} (item_id TEXT PRIMARY KEY, state JSONB NOT NULL)")
        db.commit()
        upsert = f"INSERT INTO {table} (item_id, state) VALUES (%s, %s::jsonb) ON CONFLICT (item_id) DO UPDATE SET state = excluded.state"  # noqa: E501
        for rows in ticks(items, phases, workers):
            with db.transaction(), db.cursor() as cursor:
                cursor.executemany(upsert, rows)
        seconds = time.perf_counter() - started
        db.execute(f"DROP TABLE {table}")
        db.commit()
    return seconds


def commits(url: str) -> int:
    """Transactions committed so far in ``url``'s database, by every session."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def own_database(url: str) -> Iterator[str]:
    """A database of the benchmark's own on ``url``'s server, dropped afterwards, so
    the commits counted are pipekit's alone (``url`` itself if it may not create one:
    then other clients of that database count too)."""
    import psycopg

    name = f"pipekit_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
    except psycopg.Error:
        yield url
        return
    parts = urlsplit(url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        time.sleep(1)  # the last sessions' statistics
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def pipekit_run(folder: Path, store: str, workers: int, python: str = sys.executable) -> tuple[float, float]:
    """Seconds of the whole CLI run, and the CPU seconds (user + system) it used."""
    command = [python, "-m", "pipekit", "run", "pipeline.py", "--store", store, "-j", str(workers), "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def report(label: str, items: int, phases: int, runs: list[tuple[float, float]], bases: list[float]) -> None:
    done = items * phases
    rate, base = done / statistics.median(r for r, _ in runs), done / statistics.median(bases)
    cpu = statistics.median(c for _, c in runs) / done * 1e6
    print(
        f"  {label:<11} pipekit {rate:>8,.0f} phases/s | baseline {base:>8,.0f} phases/s | {base / rate:5.2f}x"
        f" | driver CPU {cpu:,.0f} us/phase   (runs: {', '.join(f'{done / r:,.0f}' for r, _ in runs)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--python", default=sys.executable, help="the interpreter running pipekit (another checkout's)")
    parser.add_argument("--postgres-url", default=os.environ.get("PIPEKIT_BENCH_POSTGRES_URL"))
    args = parser.parse_args()
    stores = args.stores.split(",")
    print(
        f"{args.items:,} items x {args.phases} no-op phases, -j {args.workers}, whole CLI, median of {args.repeat};"
        f" load average before: {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(pipeline_source(args.phases, args.items))
        for kind in stores:
            runs: list[tuple[float, float]] = []
            bases: list[float] = []
            for n in range(args.repeat):  # interleaved
                if kind == "sqlite":
                    bases.append(baseline_sqlite(folder / f"base-{n}.db", args.items, args.phases, args.workers))
                    runs.append(pipekit_run(folder, f"sqlite:{folder / f'state-{n}.db'}", args.workers, args.python))
                elif kind == "postgresql":
                    if not args.postgres_url:
                        print("  postgresql: skipped (no --postgres-url / PIPEKIT_BENCH_POSTGRES_URL)")
                        break
                    with own_database(args.postgres_url) as database:
                        bases.append(baseline_postgres(database, args.items, args.phases, args.workers))
                        sep = "&" if "?" in database else "?"
                        url = f"{database}{sep}pipeline=bench_{uuid.uuid4().hex[:8]}"
                        time.sleep(1.5)  # a session's statistics reach pg_stat_database within a second
                        before = commits(database)
                        runs.append(pipekit_run(folder, url, args.workers, args.python))
                        time.sleep(1.5)
                        spent = commits(database) - before
                    per_phase = spent / (args.items * args.phases)
                    print(f"  postgresql run {n + 1}: {spent:,} commits, {per_phase:.2f} per phase")
                else:
                    raise SystemExit(f"unknown store {kind!r}")
            if runs:
                report(kind, args.items, args.phases, runs, bases)
    print(f"  load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
