"""A million items through the whole CLI on SQLite: the first run, then a no-op resume.

    python benchmarks/million_bench.py [--items 1000000] [--workers 64] [--folder DIR] [--resume-only | --build]

Reports each run's wall time, exit code and the driver's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN)``), beside a plain baseline: Python
holding the ids and reading every row's id and cost from the same database.
The first run is measured with ``PIPEKIT_FSYNC=0`` (a durable first run of a
million items takes too long on a virtual disk); the resume reads only.
``--build`` makes the finished store without the first run (which takes 20
minutes at a million items): a real run over 3 items, then every other
item's row copied from ``item-0``'s (its document with the id changed, the
same index columns, stale key and revision) in big transactions, and an
empty lock file per item, as a real run leaves them; then the resume is
measured. Targets (issue 22): completes, RSS <= 600 MB, resume <= 10 s.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time


PIPELINE = '''
import os
from pipekit import phase

@phase(1)
async def p1(item_id):
    return ""

@phase(2)
async def p2(item_id):
    return ""

@phase(3)
async def p3(item_id):
    return ""

def items():
    return [f"item-{n}" for n in range(int(os.environ["MILLION_ITEMS"]))]
'''

BASELINE = '''
import sqlite3, sys
ids = [f"item-{n}" for n in range(int(sys.argv[2]))]
db = sqlite3.connect(sys.argv[1])
done = {row[0] for row in db.execute("SELECT item_id FROM items WHERE next_phase IS NULL")}
left = [i for i in ids if i not in done]
'''


def measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, float]:
    """Wall seconds, exit code and peak RSS (MiB) of ``command`` in a child process
    (its CPU seconds are printed: on a shared machine the steadier figure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    code = subprocess.run(command, cwd=cwd, env=env, capture_output=True).returncode
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"  ({cpu:.2f} s CPU, load average {os.getloadavg()[0]:.2f})")
    # The largest child so far: run each measured command in its own benchmark process for an exact figure.
    return took, code, after.ru_maxrss / 1024


def build_store(folder: Path, items: int, env: dict[str, str]) -> None:
    """What a finished run over ``items`` items leaves in ``folder``, without running it."""
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--store", "sqlite:db.sqlite", "-q"]
    subprocess.run(command, cwd=folder, env={**env, "MILLION_ITEMS": "3"}, check=True, capture_output=True)
    db = sqlite3.connect(folder / "db.sqlite", isolation_level=None)
    columns = [row[1] for row in db.execute("PRAGMA table_info(items)")]
    template = dict(zip(columns, db.execute("SELECT * FROM items WHERE item_id = 'item-0'").fetchone(), strict=True))
    marker = '"item_id": "item-0"'
    assert template["state"].count(marker) == 1
    insert = f"INSERT INTO items ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    locks = folder / "db.sqlite.locks"
    for start in range(3, items, 100_000):
        rows = []
        for n in range(start, min(start + 100_000, items)):
            state = template["state"].replace(marker, f'"item_id": "item-{n}"')
            row = {**template, "item_id": f"item-{n}", "state": state}
            rows.append(tuple(row[c] for c in columns))
            (locks / f"item-{n}.lock").touch()
        db.execute("BEGIN")
        db.executemany(insert, rows)
        db.execute("COMMIT")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--resume-only", action="store_true", help="reuse the database of an earlier run")
    parser.add_argument("--build", action="store_true", help="build the finished store instead of a first run")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="million-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.py").write_text(PIPELINE)
    env = {**os.environ, "MILLION_ITEMS": str(args.items), "PIPEKIT_FSYNC": "0"}
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--store", "sqlite:db.sqlite",
               "-j", str(args.workers), "-q"]
    if args.build:
        started = time.perf_counter()
        build_store(folder, args.items, env)
        print(f"store built: {args.items:,} finished items in {time.perf_counter() - started:.1f} s")
    elif not args.resume_only:
        took, code, rss = measured(command, folder, env)
        print(f"first run: {took:.1f} s, exit {code}, peak RSS {rss:.0f} MiB, {3 * args.items / took:,.0f} phases/s")
    took, code, rss = measured(command, folder, env)
    print(f"no-op resume: {took:.2f} s, exit {code}, peak RSS (largest child so far) {rss:.0f} MiB")
    took, code, _ = measured([sys.executable, "-c", BASELINE, "db.sqlite", str(args.items)], folder, env)
    print(f"baseline (ids held, finished ids read): {took:.2f} s, exit {code}")


if __name__ == "__main__":
    main()
