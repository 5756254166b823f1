"""How long `pipekit status` takes to read a big batch, against plain Python.

    python benchmarks/status_bench.py [--items 100000] [--dir DIR] [--keep] [--sqlite]

Writes N state files (5 phases each, 1 % with a failure and its traceback) of a
pipeline module beside them, then times, on a warm page cache:

- baseline: ``os.scandir`` + read + ``json.loads`` of every file, nothing else
  (the least any reader of N JSON files must do);
- ``pipekit status MODULE`` (the summary a person sees for a big batch);
- ``pipekit status MODULE --json`` (every item, every phase, on stdout);
- both again read by this process alone (no worker processes).

With ``--sqlite`` the same documents also go into a SQLite store, timed against
its own baseline (``SELECT`` every state + ``json.loads``).

Figures are printed as seconds (wall, then CPU of this process and its
children: on a busy machine the CPU time is the steadier figure) and as a
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from pathlib import Path
import shutil
import sqlite3
import sys
import tempfile
import time


PIPELINE = """
from pipekit import phase

@phase(1)
def research(item_id): return "r"

@phase(2)
def outline(research): return "o"

@phase(3)
def draft(outline): return "d"

@phase(4, critical=False)
def review(draft): return "v"

@phase(5)
def publish(draft): return "p"
"""

NAMES = ("research", "outline", "draft", "review", "publish")


def document(item_id: str, failed: bool) -> dict[str, object]:
    """A state document as a finished (or failed) run leaves it."""
    phases = {}
    for num, name in enumerate(NAMES, 1):
        broken = failed and num == 3
        status = "failed" if broken else ("pending" if failed and num > 3 else "completed")
        phases[str(num)] = {
            "phase": num,
            "name": name,
            "status": status,
            "executor": "",
            "started_at": "2026-01-01T00:00:00.000+00:00",
            "completed_at": "2026-01-01T00:00:01.500+00:00",
            "duration_seconds": 1.5,
            "tokens_in": 1200,
            "tokens_out": 300,
            "cost_usd": 0.0042,
            "output_file": None,
            "error": "RuntimeError: the model refused" if broken else None,
            "attempts": 1,
            "reason": "error" if broken else None,
            "traceback": ("Traceback (most recent call last):\n" + '  File "pipeline.py", line 9\n' * 8)
            if broken
            else None,
        }
    return {
        "schema_version": 1,
        "item_id": item_id,
        "metadata": {"title": f"Book {item_id}", "pages": 320},
        "status": "failed" if failed else "completed",
        "current_phase": 3 if failed else 5,
        "started_at": "2026-01-01T00:00:00.000+00:00",
        "last_updated": "2026-01-01T00:00:08.000+00:00",
        "phases": phases,
        "phase_outputs": {
            str(n): f"output of phase {n} for {item_id} " * 20 for n in range(1, 6) if not failed or n < 3
        },
        "phase_output_files": {},
        "total_tokens_in": 6000,
        "total_tokens_out": 1500,
        "total_cost_usd": 0.021,
        "pipeline_module": "pipeline.py",
    }


def write_batch(root: Path, count: int) -> Path:
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.py").write_text(PIPELINE)
    for i in range(count):
        item_id = f"book-{i}"
        text = json.dumps(document(item_id, failed=i % 100 == 7), indent=2)
        (state / f"{item_id}.json").write_text(text + "\n")
    return state


def baseline(state: Path) -> int:
    count = 0
    for entry in os.scandir(state):
        if entry.name.endswith(".json"):
            with open(entry.path, "rb") as handle:
                json.loads(handle.read())
            count += 1
    return count


def write_sqlite(path: Path, count: int) -> None:
    """The same documents as ``write_batch``, in a SQLite store."""
    from pipekit.state.sqlite import SqliteStore

    store = SqliteStore(path, synchronous="OFF")
    try:
        store.save_many((f"book-{i}", document(f"book-{i}", failed=i % 100 == 7)) for i in range(count))
    finally:
        store.close()


def baseline_sqlite(path: Path) -> int:
    """The least any reader of N documents in SQLite must do: select and parse each."""
    count = 0
    db = sqlite3.connect(path)
    try:
        for _, state in db.execute("SELECT item_id, state FROM items"):
            json.loads(state)
            count += 1
    finally:
        db.close()
    return count


def pipekit_status(root: Path, *extra: str, store: str | None = None, one_process: bool = False) -> int:
    from pipekit.cli import statusrows
    from pipekit.cli.main import main

    where = ["--store", store] if store else ["--state-dir", str(root / "state")]
    out = io.StringIO()
    saved = statusrows.PARALLEL_FILES
    if one_process:
        statusrows.PARALLEL_FILES = sys.maxsize
    try:
        with contextlib.redirect_stdout(out):
            code = main(["status", str(root / "pipeline.py"), *where, *extra])
    finally:
        statusrows.PARALLEL_FILES = saved
    assert code == 0, code
    return len(out.getvalue())


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (status's worker processes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def best_of(runs: int, func: object, *args: object, **kwargs: object) -> tuple[float, float]:
    """The shortest (wall, CPU) seconds of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), cpu_seconds()
        func(*args, **kwargs)  # type: ignore[operator]
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return min(walls), min(cpus)


def report(label: str, figure: tuple[float, float], base: tuple[float, float]) -> None:
    wall, cpu = figure
    print(f"{label:<46}{wall:7.2f}s {wall / base[0]:5.2f}x   cpu {cpu:6.2f}s {cpu / base[1]:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dir", help="where to write the batch (default: a new temporary folder)")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--keep", action="store_true", help="keep the batch afterwards")
    parser.add_argument("--sqlite", action="store_true", help="time a SQLite store of the same documents too")
    option = parser.parse_args()
    root = Path(option.dir or tempfile.mkdtemp(prefix="pipekit-status-bench-"))
    start = time.perf_counter()
    state = root / "state"
    if not (state.is_dir() and len(os.listdir(state)) == option.items):
        write_batch(root, option.items)
    print(f"{option.items} state files in {state} ({time.perf_counter() - start:.1f}s to write)")
    sys.path.insert(0, str(root))
    try:
        baseline(state)  # warm the page cache
        pipekit_status(root)  # and the imports
        base = best_of(option.runs, baseline, state)
        report("baseline: scandir + read + json.loads", base, base)
        report("pipekit status MODULE (summary)", best_of(option.runs, pipekit_status, root), base)
        report("pipekit status MODULE --json", best_of(option.runs, pipekit_status, root, "--json"), base)
        alone = best_of(option.runs, pipekit_status, root, one_process=True)
        report("  the summary, one process", alone, base)
        alone = best_of(option.runs, pipekit_status, root, "--json", one_process=True)
        report("  --json, one process", alone, base)
        if option.sqlite:
            database = root / "state.db"
            if not database.exists():
                write_sqlite(database, option.items)
            url = f"sqlite:{database}"
            base = best_of(option.runs, baseline_sqlite, database)
            report("baseline: SELECT every state + json.loads", base, base)
            report("pipekit status MODULE --store sqlite:", best_of(option.runs, pipekit_status, root, store=url), base)
            full = best_of(option.runs, pipekit_status, root, "--json", store=url)
            report("pipekit status MODULE --store sqlite: --json", full, base)
    finally:
        if not option.keep and not option.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
