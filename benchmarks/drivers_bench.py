"""Many drivers on one PostgreSQL store: chunk claims against one lease per item.

    PIPEKIT_TEST_POSTGRES_URL=postgresql://... python benchmarks/drivers_bench.py \\
        [--items 30000] [--drivers 3] [--workers 64] [--phases 3] [--only chunks|per-item]
        [--latency-ms 0]

Starts ``--drivers`` ``pipekit run`` processes at once on one new pipeline of
the server's store, over the same items (no-op phases that append one line
each to a log), and checks that every phase of every item ran exactly once and
every driver exited 0. The lock and claim statements are counted by the stores
themselves (``PIPEKIT_COUNT_STATEMENTS``: pg_stat_statements is not loaded on
the test server). Two modes in the same run, each on a pipeline of its own:
``chunks`` (the default ``?claim=256``: a driver claims as many items as it
runs at once, ``-j``) and ``per-item`` (``?claim=1``: one lease per item, the
path before chunk claims), which is the baseline. Target (issue 22): K drivers
make O(items / N) claims, not K x items lock transactions.

``--latency-ms MS`` puts a proxy between the drivers and the server that holds
every packet back ``MS / 2`` each way, as a server farther away than the next
room would: each statement's round trip then costs ``MS`` more, and one that
runs on a driver's event loop stops its items for that long.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit
from urllib.parse import urlunsplit
import uuid


PHASE = '''
@phase({num})
def p{num}(item_id):
    log(item_id, {num})
    return ""
'''

HEADER = '''
import os
from pipekit import phase

def log(item_id, num):
    fd = os.open("executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{item_id} {num} {os.getpid()}\\n".encode())
    os.close(fd)
'''

KINDS = ("claim", "lock", "release", "renew")


def delayed(url: str, delay: float) -> str:
    """``url`` through a proxy on 127.0.0.1 holding every packet back ``delay`` seconds
    each way (its own event loop, on a daemon thread of this process)."""
    parts = urlsplit(url)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    loop = asyncio.new_event_loop()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await pending.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sending = asyncio.ensure_future(send())
        while data := await reader.read(65536):
            pending.put_nowait((loop.time() + delay, data))
        pending.put_nowait((0.0, b""))
        await sending

    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*target)
        await asyncio.gather(
            forward(client_reader, server_writer), forward(server_reader, client_writer), return_exceptions=True)

    server = loop.run_until_complete(asyncio.start_server(connection, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    threading.Thread(target=loop.run_forever, name="latency-proxy", daemon=True).start()
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def drop(base: str, pipeline: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as db:
        for table in ("pipekit_items", "pipekit_outputs", "pipekit_leases", "pipekit_checkpoints"):
            db.execute(f"DELETE FROM {table} WHERE pipeline = %s", (pipeline,))


def run_mode(base: str, folder: Path, mode: str, args: argparse.Namespace) -> dict[str, object]:
    """One run of ``args.drivers`` drivers; its wall time, checks and statement counts."""
    work = folder / mode
    work.mkdir()
    (work / "pipeline.py").write_text(HEADER + "".join(PHASE.format(num=n) for n in range(1, args.phases + 1)))
    ids = [f"item-{n}" for n in range(args.items)]
    (work / "items.txt").write_text("\n".join(ids) + "\n")
    pipeline = f"drivers_{mode.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    claim = "" if mode == "chunks" else "&claim=1"
    counts = work / "statements.jsonl"
    env = {
        **os.environ,
        "PIPEKIT_STORE": f"{base}{'&' if '?' in base else '?'}pipeline={pipeline}{claim}",
        "PIPEKIT_COUNT_STATEMENTS": str(counts),
    }
    command = [sys.executable, "-m", "pipekit", "pipeline.py", "--items", "items.txt", "-j", str(args.workers),
               "--progress", "simple"]
    try:
        started = time.perf_counter()
        procs = [
            subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=(work / f"err{n}").open("w"))
            for n in range(args.drivers)
        ]
        codes = [proc.wait() for proc in procs]
        took = time.perf_counter() - started
    finally:
        drop(base, pipeline)
    lines = [line.split() for line in (work / "executions.log").read_text().splitlines()]
    runs = Counter((item_id, num) for item_id, num, _ in lines)
    by_driver = sorted(Counter(pid for _, _, pid in lines).values(), reverse=True)
    expected = {(i, str(n)) for i in ids for n in range(1, args.phases + 1)}
    once = set(runs) == expected and set(runs.values()) == {1}
    per_driver = [json.loads(line) for line in counts.read_text().splitlines()]
    totals = {kind: sum(d.get(kind, 0) for d in per_driver) for kind in KINDS}
    return {
        "mode": mode, "seconds": took, "codes": codes, "every_phase_once": once,
        "twice": sum(1 for c in runs.values() if c > 1), "missing": len(expected - set(runs)),
        "phases_per_second": args.items * args.phases / took, **totals,
        "per_driver": [{kind: d.get(kind, 0) for kind in KINDS} for d in per_driver], "phases_by_driver": by_driver,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--drivers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--only", choices=("chunks", "per-item"))
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every round trip to the server")
    args = parser.parse_args()
    base = os.environ.get("PIPEKIT_TEST_POSTGRES_URL")
    if not base:
        sys.exit("set PIPEKIT_TEST_POSTGRES_URL to a PostgreSQL server (bash .ci/postgres.sh starts one)")
    if args.latency_ms > 0:
        base = delayed(base, args.latency_ms / 2000)
    modes = [args.only] if args.only else ["chunks", "per-item"]
    latency = f", {args.latency_ms:g} ms added to each round trip" if args.latency_ms > 0 else ""
    print(f"{args.drivers} drivers, {args.items:,} items x {args.phases} no-op phases, -j {args.workers}, PostgreSQL"
          f"{latency}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="drivers-bench-") as folder:
        results = [run_mode(base, Path(folder), mode, args) for mode in modes]
    print(f"{'mode':<9} {'wall s':>7} {'phases/s':>9} {'once':>5} {'claim':>7} {'lock':>7} {'release':>8} "
          f"{'renew':>6}  exit codes")
    for r in results:
        once = "yes" if r["every_phase_once"] else "NO"
        print(f"{r['mode']:<9} {r['seconds']:7.1f} {r['phases_per_second']:9.0f} {once:>5} "
              f"{r['claim']:7,} {r['lock']:7,} {r['release']:8,} {r['renew']:6,}  {r['codes']}")
        if not r["every_phase_once"]:
            print(f"  phases run twice: {r['twice']}, never run: {r['missing']}")
    for r in results:
        print(f"{r['mode']} per driver: {r['per_driver']}; phases run by each: {r['phases_by_driver']}")
    if len(results) == 2:
        chunked, single = (sum(r[k] for k in ("claim", "lock", "release")) for r in results)  # type: ignore[misc]
        print(f"lock/claim/release statements: {chunked:,} with chunks against {single:,} one lease per item "
              f"({single / max(chunked, 1):.0f}x fewer)")


if __name__ == "__main__":
    main()
