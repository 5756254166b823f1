"""Write and resume a big run in each state store.

    python benchmarks/stores_bench.py [--items 100000] [--phases 5] [--write-items 300] [--repeat 3]
                                      [--stores json,sqlite,postgresql] [--postgres-url URL]

For each store it reports:

- writes/s: state saves per second while items go through every phase through
  ``PipelineStateManager`` (1 + 2 x phases saves per item, durable settings as
  shipped: fsync for JSON, ``synchronous=FULL`` for SQLite, PostgreSQL's
  default synchronous commit), on ``--write-items`` items;
- resume: median wall time of ``--repeat`` runs of ``pipekit run`` (each in a
  fresh process, timed after its imports) over ``--items`` items that are all
  finished, with the fingerprints a real run records, i.e. the cost of finding
  that nothing is left or stale (and its CPU time, which a busy machine
  disturbs less); and the largest peak memory of those runs;
- what is left: ``store.unfinished_item_ids()`` with 1% of the items unfinished;
- disk used by the state (PostgreSQL: what the run adds to the tables, indexes and TOAST).

Plain-Python baselines put the figures in proportion: ``json.dumps`` of one
state document (the least a save costs) and ``json.loads`` of every document
from memory (the least a resume that reads each item costs).
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
from typing import Any
import uuid


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipekit.state.jsondir import JsonDirStore  # noqa: E402
from pipekit.state.manager import PipelineStateManager  # noqa: E402
from pipekit.state.open import open_store_url  # noqa: E402
from pipekit.state.store import StateStore  # noqa: E402
from pipekit.state.urls import mask_password  # noqa: E402


PIPELINE = '''
from pipekit import phase
{phases}
'''

RESUME = textwrap.dedent('''
    import json, resource, sys, time
    from pipekit.cli.main import main
    started, cpu = time.perf_counter(), time.process_time()
    code = main(sys.argv[1:])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"code": int(code), "seconds": elapsed, "cpu": cpu, "peak_bytes": peak}), file=sys.__stdout__)
''')


def write_pipeline(folder: Path, phases: int) -> Path:
    # Each phase after the first is given the one before's output, as in a real pipeline:
    # its fingerprint records that output's hash, which the stale check compares.
    body = "".join(
        f"\n@phase({n})\ndef phase_{n}(item_id{f', phase_{n - 1}' if n > 1 else ''}):\n    return item_id\n"
        for n in range(1, phases + 1)
    )
    path = folder / "bench_pipeline.py"
    path.write_text(PIPELINE.format(phases=body))
    return path


def lifecycle(store: StateStore, item_id: str, phases: list[tuple[int, str]]) -> int:
    """One item through every phase; returns the number of saves."""
    manager = PipelineStateManager(item_id, store)
    manager.create_state({"n": item_id}, phases)
    for num, _ in phases:
        manager.start_phase(num)
        manager.complete_phase(num, f"output of phase {num} for {item_id} " + "x" * 200)
    return 1 + 2 * len(phases)


def with_fingerprints(document: dict[str, Any], pipeline: Path) -> dict[str, Any]:
    """``document`` with the fingerprints a real run records (code hashes, consumed outputs)."""
    from pipekit.pipeline.loader import load
    from pipekit.stale.fingerprint import phase_fingerprint

    phases = load(str(pipeline)).phases
    outputs = {int(num): text for num, text in document["phase_outputs"].items()}
    for definition in phases:
        recorded = phase_fingerprint(definition, phases, outputs, lambda func: {})
        document["phases"][str(definition.num)]["fingerprint"] = recorded
    return document


def disk_bytes(store: StateStore) -> int:
    if isinstance(store, JsonDirStore):
        total = 0
        for folder, _, files in os.walk(store.state_dir):
            for name in files:
                total += os.stat(os.path.join(folder, name)).st_blocks * 512
        return total
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
        return sum(
            os.stat(p).st_blocks * 512 for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
        )
    rows = store._query(  # type: ignore[attr-defined]
        "SELECT pg_total_relation_size('pipekit_items') + pg_total_relation_size('pipekit_outputs')"
    )
    return int(rows[0][0] or 0)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def bench_store(
    kind: str, url: str, work: Path, pipeline: Path, items: int, write_items: int, phases: int, repeat: int = 3
) -> dict[str, Any]:
    names = [(n, f"phase_{n}") for n in range(1, phases + 1)]
    store = open_store_url(url, pipeline="bench_pipeline")
    # writes/s on a separate namespace of items
    started = time.perf_counter()
    saves = sum(lifecycle(store, f"w-{n}", names) for n in range(write_items))
    writes_per_second = saves / (time.perf_counter() - started)
    template = store.load("w-0")
    assert template is not None
    template = with_fingerprints(template, pipeline)
    # a database server holds other runs too: count what this one adds
    disk_before = 0 if kind != "postgresql" else disk_bytes(store)
    store.close()

    # the big run: every item finished (setup, not measured; JSON skips fsync here)
    setup: StateStore
    if kind == "json":
        setup = JsonDirStore(Path(url[5:]), durable=False)
    else:
        setup = open_store_url(url, pipeline="bench_pipeline")
    ids = [f"item-{n:06d}" for n in range(items)]
    setup.save_many(
        (item_id, {**template, "item_id": item_id, "metadata": {"n": item_id}}) for item_id in ids
    )
    items_file = work / f"items-{kind}.txt"
    items_file.write_text("\n".join(ids) + "\n")
    env = {**os.environ, "PIPEKIT_STORE": url, "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-c", RESUME, "run", str(pipeline), "--items", str(items_file), "-q"]
    command += ["--progress", "none"]
    resumes = []
    for _ in range(repeat):
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"resume run failed ({kind}):\n{proc.stderr[-2000:]}")
        resumes.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    resume = {
        "seconds": statistics.median(r["seconds"] for r in resumes),
        "cpu": statistics.median(r["cpu"] for r in resumes),
        "peak_bytes": max(r["peak_bytes"] for r in resumes),
    }

    # what is left: 1% of the items lose their last phase
    unfinished = template["phases"][str(phases)]
    left = {**template, "phases": {**template["phases"], str(phases): {**unfinished, "status": "pending"}}}
    setup.save_many((item_id, {**left, "item_id": item_id}) for item_id in ids[:: 100])
    setup.close()
    store = open_store_url(url, pipeline="bench_pipeline")
    started = time.perf_counter()
    found = list(store.unfinished_item_ids())
    query_seconds = time.perf_counter() - started
    assert len(found) == len(ids[::100]), (len(found), kind)
    used = disk_bytes(store) - disk_before
    store.close()
    return {
        "store": kind,
        "writes_per_second": writes_per_second,
        "resume_seconds": resume["seconds"],
        "resume_cpu_seconds": resume["cpu"],
        "resume_peak_bytes": resume["peak_bytes"],
        "left_query_seconds": query_seconds,
        "disk_bytes": used,
        "document_bytes": len(json.dumps(template)),
    }


def baselines(items: int, phases: int, work: Path) -> dict[str, float]:
    store = JsonDirStore(work / "baseline", durable=False)
    lifecycle(store, "b", [(n, f"phase_{n}") for n in range(1, phases + 1)])
    document = store.load("b")
    rounds = 20000
    started = time.perf_counter()
    for _ in range(rounds):
        json.dumps(document)
    dumps_per_second = rounds / (time.perf_counter() - started)
    raw = [json.dumps(document)] * items
    started = time.perf_counter()
    for text in raw:
        json.loads(text)
    return {"dumps_per_second": dumps_per_second, "loads_all_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--write-items", type=int, default=300)
    parser.add_argument("--stores", default="json,sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="resumes per store (the median is shown)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PIPEKIT_BENCH_POSTGRES_URL") or os.environ.get("PIPEKIT_TEST_POSTGRES_URL"),
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    option = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pipekit-bench-") as tmp:
        work = Path(tmp)
        pipeline = write_pipeline(work, option.phases)
        base = baselines(option.items, option.phases, work)
        for kind in option.stores.split(","):
            if kind == "json":
                url = f"json:{work / 'json-state'}"
            elif kind == "sqlite":
                url = f"sqlite:{work / 'state.db'}"
            elif kind == "postgresql":
                if not option.postgres_url:
                    print("postgresql: skipped (no --postgres-url / PIPEKIT_BENCH_POSTGRES_URL)", file=sys.stderr)
                    continue
                sep = "&" if "?" in option.postgres_url else "?"
                url = f"{option.postgres_url}{sep}pipeline=bench_{uuid.uuid4().hex[:8]}"
            else:
                raise SystemExit(f"unknown store {kind!r}")
            print(f"{kind}: {mask_password(url)} ...", file=sys.stderr, flush=True)
            results.append(
                bench_store(kind, url, work, pipeline, option.items, option.write_items, option.phases, option.repeat)
            )
            if kind == "postgresql":
                store = open_store_url(url)
                for table in ("pipekit_items", "pipekit_outputs", "pipekit_leases"):
                    store._query(f"DELETE FROM {table} WHERE pipeline = %s", (store.pipeline,))  # type: ignore[attr-defined]
                store.close()
    size = results[0]["document_bytes"] if results else 0
    print(f"\n{option.items} items x {option.phases} phases ({size} B a document)")
    print(f"baselines: json.dumps of a document {base['dumps_per_second']:,.0f}/s; "
          f"json.loads of every document from memory {base['loads_all_seconds']:.2f} s")
    print(f"{'store':<11} {'writes/s':>9} {'x dumps':>8} {'resume':>8} {'x loads':>8} {'left query':>11} "
          f"{'disk':>9} {'peak mem':>9}")
    json_resume = next((r for r in results if r["store"] == "json"), None)
    for r in results:
        print(
            f"{r['store']:<11} {r['writes_per_second']:>9,.0f} "
            f"{r['writes_per_second'] / base['dumps_per_second']:>8.4f} "
            f"{r['resume_seconds']:>7.2f}s {r['resume_seconds'] / base['loads_all_seconds']:>8.2f} "
            f"{r['left_query_seconds'] * 1000:>9.1f}ms {human(r['disk_bytes']):>9} {human(r['resume_peak_bytes']):>9}"
        )
    if json_resume:
        wall, cpu = json_resume["resume_seconds"], json_resume["resume_cpu_seconds"]
        for r in results:
            if r["store"] != "json":
                print(
                    f"{r['store']} resume is {wall / r['resume_seconds']:.1f}x faster than the JSON directory "
                    f"({cpu / r['resume_cpu_seconds']:.1f}x in CPU time: {r['resume_cpu_seconds']:.2f} s "
                    f"against {cpu:.2f} s)"
                )
    if option.json:
        print(json.dumps({"baselines": base, "results": results}, indent=2))


if __name__ == "__main__":
    main()
