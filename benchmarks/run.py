"""pipekit's own costs, each beside a plain-Python baseline measured in the same run.

    python benchmarks/run.py            # full sizes (several minutes)
    python benchmarks/run.py --quick    # small sizes, one repeat

Every figure is the median of repeated runs and is printed with its baseline
and the ratio to it. The baselines are the physical limit for the same work:
a plain loop performing the same durable state writes, the same sleeps, the
same file reads. See RESULTS.md for the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
from pathlib import Path
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import display_bench
import physical_limit
import status_bench


CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, os.getcwd())
args = json.loads(sys.argv[1])
started = time.perf_counter()
import pipekit
items = [f"item-{n}" for n in range(args["items"])]
result = pipekit.run("pipeline.py", items, state_dir=args["state_dir"], workers=args["workers"], progress="none")
assert result.exit_status == 0, result.exit_status
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''

RSS = r'''
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
'''


def pipeline_source(phases: int, body: str, items: int | None = None) -> str:
    source = "import asyncio\nfrom pipekit import phase\n" + "".join(
        f"\n@phase({n})\nasync def p{n}(item_id):\n    {body}\n" for n in range(1, phases + 1)
    )
    if items is not None:
        source += f"\ndef items():\n    return [f'item-{{n}}' for n in range({items})]\n"
    return source


def run_child(folder: Path, items: int, workers: int, state_dir: Path, env: dict[str, str] | None = None) -> dict:
    """Time ``pipekit.run`` alone (no interpreter start-up) in a fresh process."""
    payload = json.dumps({"items": items, "workers": workers, "state_dir": str(state_dir)})
    out = subprocess.run(
        [sys.executable, "-c", CHILD, payload],
        cwd=folder, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh(folder: Path, prefix: str) -> Path:
    """A new directory under ``folder``, never reused.

    Nothing is deleted between runs: ext4 scans past recently deleted inodes
    when it creates a file, so a run right after deleting thousands of state
    files pays for them, and the two sides of a comparison would not pay alike.
    """
    for n in itertools.count():
        path = folder / f"{prefix}-{n}"
        if not path.exists():
            return path
    raise AssertionError("unreachable")


def baseline_writes(folder: Path, items: int, phases: int, durable: bool) -> float:
    """A plain loop writing each item's state atomically as pipekit does:
    once when the first phase starts, then once per phase end (which also
    records the next phase's start)."""
    target = fresh(folder, "baseline")
    target.mkdir()
    started = time.perf_counter()
    for n in range(items):
        state = {"item_id": f"item-{n}", "phases": {str(p): {"status": "pending"} for p in range(1, phases + 1)}}
        path, tmp = target / f"item-{n}.json", target / f".item-{n}.tmp"

        def write(state: dict = state, path: Path = path, tmp: Path = tmp) -> None:
            with open(tmp, "w") as handle:
                handle.write(json.dumps(state, indent=2))
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
            if durable:
                fd = os.open(target, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)

        state["phases"]["1"]["status"] = "in_progress"
        write()
        for p in range(1, phases + 1):
            state["phases"][str(p)]["status"] = "completed"
            if p < phases:
                state["phases"][str(p + 1)]["status"] = "in_progress"
            write()
    return time.perf_counter() - started


def baseline_reread(folder: Path) -> float:
    """Read and parse every state file once: the least a resume check can do."""
    started = time.perf_counter()
    for entry in os.scandir(folder):
        if entry.name.endswith(".json"):
            with open(entry.path, "rb") as handle:
                json.loads(handle.read())
    return time.perf_counter() - started


def wall(command: list[str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def peak_rss_kb(command: list[str], cwd: Path | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", RSS, *command], cwd=cwd, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def row(label: str, value: float, baseline: float, unit: str) -> None:
    ratio = value / baseline if baseline else float("nan")
    print(f"  {label:<40} {value:>10.1f} {unit:<4} | baseline {baseline:>9.1f} {unit:<4} | {ratio:6.2f}x")


def overhead(folder: Path, items: int, repeat: int) -> None:
    phases = 5
    (folder / "pipeline.py").write_text(pipeline_source(phases, "return ''"))
    print(f"1. overhead: {items} items x {phases} no-op phases, us per phase (the run alone)")
    for durable in (True, False):
        env = {} if durable else {"PIPEKIT_FSYNC": "0"}
        bases: list[float] = []
        samples: dict[int, list[float]] = {1: [], 32: []}
        for _ in range(repeat):  # interleaved, so drift in the machine's load hits both alike
            bases.append(baseline_writes(folder, items, phases, durable))
            for workers in samples:
                samples[workers].append(run_child(folder, items, workers, fresh(folder, "state"), env)["seconds"])
        base_us = statistics.median(bases) / (items * phases) * 1e6
        for workers, times in samples.items():
            us = statistics.median(times) / (items * phases) * 1e6
            row(f"-j {workers}, {'durable (fsync)' if durable else 'no fsync (PIPEKIT_FSYNC=0)'}", us, base_us, "us")
    print()


def io_bound(folder: Path, items: int, repeat: int) -> None:
    phases, sleep, workers = 3, 0.1, 100
    (folder / "pipeline.py").write_text(pipeline_source(phases, f"await asyncio.sleep({sleep})"))
    ideal = items * phases * sleep / workers
    samples, limits = [], []
    for _ in range(repeat):  # interleaved, so drift in the machine's load hits both alike
        limits.append(asyncio.run(physical_limit.same_writes(fresh(folder, "limit"), items, phases, workers, sleep)))
        samples.append(run_child(folder, items, workers, fresh(folder, "state"))["seconds"])
    actual, limit = statistics.median(samples), statistics.median(limits)
    print(f"2. I/O-bound: {items} items x {phases} phases of sleep({sleep}), -j {workers}, durable")
    print(f"  ideal (work / concurrency) {ideal:.2f} s; plain asyncio with the same sleeps and the same"
          f" {items * (1 + phases):,} durable writes {limit:.2f} s ({ideal / limit:.0%} of ideal)")
    print(f"  pipekit {actual:.2f} s: {ideal / actual:.0%} of ideal, {limit / actual:.0%} of the plain-asyncio limit\n")


def rerun(folder: Path, items: int, repeat: int) -> None:
    (folder / "pipeline.py").write_text(pipeline_source(5, "return ''", items=items))
    state = folder / f"state-{items}"
    run_child(folder, items, 32, state, {"PIPEKIT_FSYNC": "0"})
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--state-dir", str(state), "-q"]
    seconds = statistics.median([wall(command, folder) for _ in range(repeat)])
    start = statistics.median([wall([sys.executable, "-c", "pass"]) for _ in range(repeat)])
    base = statistics.median([baseline_reread(state) for _ in range(repeat)]) + start
    print(f"3. no-op re-run of a finished run of {items:,} items (whole CLI; baseline: python start + read every file)")
    row("wall time", seconds * 1000, base * 1000, "ms")
    print()
    shutil.rmtree(state)


def startup(repeat: int) -> None:
    base = statistics.median([wall([sys.executable, "-c", "pass"]) for _ in range(repeat)])
    imp = statistics.median([wall([sys.executable, "-c", "import pipekit"]) for _ in range(repeat)])
    help_ = statistics.median([wall([sys.executable, "-m", "pipekit", "--help"]) for _ in range(repeat)])
    print("4. start-up (baseline: python -c pass)")
    row("python -c 'import pipekit'", imp * 1000, base * 1000, "ms")
    row("pipekit --help", help_ * 1000, base * 1000, "ms")
    print()


def memory(folder: Path, items: int) -> None:
    (folder / "pipeline.py").write_text(pipeline_source(5, "return ''", items=items))
    state = folder / "state-memory"
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "PIPEKIT_FSYNC": "0"}
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--state-dir", str(state), "-j", "100", "-q"]
    os.environ["PIPEKIT_FSYNC"] = "0"
    try:
        first = peak_rss_kb(command, folder)
        again = peak_rss_kb(command, folder)
    finally:
        os.environ.pop("PIPEKIT_FSYNC")
    _ = env
    base = peak_rss_kb([sys.executable, "-c", f"x = [f'item-{{n}}' for n in range({items})]"])
    print(f"5. memory: peak RSS over {items:,} items, -j 100 (baseline: python holding the list of ids)")
    row("first run", first / 1024, base / 1024, "MiB")
    row("no-op re-run", again / 1024, base / 1024, "MiB")
    print()


def wall_and_cpu(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (the process and its children) of ``command``."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    took = time.perf_counter() - started
    after = os.times()
    return took, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def status(folder: Path, items: int, repeat: int) -> None:
    """`pipekit status` over a batch written as status_bench writes it (1 % failed),
    in a JSON directory and in a SQLite store; wall and CPU time (on a busy machine
    the CPU time is the steadier figure)."""
    root = folder / "status"
    state = status_bench.write_batch(root, items)
    database = root / "state.db"
    status_bench.write_sqlite(database, items)
    status_bench.baseline(state)  # warm the page cache
    start = median_pair([wall_and_cpu([sys.executable, "-c", "pass"]) for _ in range(repeat)])
    json_reader = [sys.executable, "-c", BASELINE_JSON_DIR, str(state)]
    sqlite_reader = [sys.executable, "-c", BASELINE_SQLITE, str(database)]
    command = [sys.executable, "-m", "pipekit", "status", "pipeline.py"]
    runs: dict[str, list[tuple[float, float]]] = {}
    cases = {
        "baseline json": (json_reader, None),
        "summary": ([*command, "--state-dir", str(state)], root),
        "json": ([*command, "--state-dir", str(state), "--json"], root),
        "baseline sqlite": (sqlite_reader, None),
        "sqlite summary": ([*command, "--store", f"sqlite:{database}"], root),
        "sqlite json": ([*command, "--store", f"sqlite:{database}", "--json"], root),
    }
    for _ in range(repeat):  # interleaved, so drift in the load hits each the same way
        for name, (case, cwd) in cases.items():
            runs.setdefault(name, []).append(wall_and_cpu(case, cwd))
    figures = {name: median_pair(found) for name, found in runs.items()}
    print(f"6. status over {items:,} items (whole CLI; baseline: python start + read and parse every state)")
    print(f"   (python start alone: {start[0] * 1000:.0f} ms)")
    for label, name, base in (
        ("pipekit status MODULE", "summary", "baseline json"),
        ("pipekit status MODULE --json", "json", "baseline json"),
        ("status --store sqlite:", "sqlite summary", "baseline sqlite"),
        ("status --store sqlite: --json", "sqlite json", "baseline sqlite"),
    ):
        row(label, figures[name][0] * 1000, figures[base][0] * 1000, "ms")
        row("  CPU", figures[name][1] * 1000, figures[base][1] * 1000, "ms")
    print()
    shutil.rmtree(root)


#: The least any reader of a JSON directory must do (python start included).
BASELINE_JSON_DIR = """
import json, os, sys
for entry in os.scandir(sys.argv[1]):
    if entry.name.endswith(".json"):
        with open(entry.path, "rb") as handle:
            json.loads(handle.read())
"""

#: The same for a SQLite store: select every state and parse it.
BASELINE_SQLITE = """
import json, sqlite3, sys
for _, state in sqlite3.connect(sys.argv[1]).execute("SELECT item_id, state FROM items"):
    json.loads(state)
"""


def display(folder: Path, items: int, repeat: int) -> None:
    """The rich display on a terminal and every built-in plugin, against none of them."""
    rounds = max(repeat, 5) if repeat > 1 else 1  # paired rounds: the ratio is small beside the disk's noise
    samples = display_bench.measure(folder, items, rounds)
    print(f"7. display and plugins: {items} items x 5 no-op phases, -j 1, durable, on a pseudo-terminal, "
          f"{rounds} rounds")
    print(f"   (baseline: {' '.join(display_bench.BARE)}; CPU = the run's own user + system time)")
    display_bench.report(samples, items)
    print()


def timed(func: object, *args: object) -> float:
    started = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma list of: overhead,io,rerun,startup,memory,status,display")
    parser.add_argument("--rerun-items", help="comma list of sizes for the no-op re-run (default 10000,100000)")
    parser.add_argument("--memory-items", type=int, help="items of the memory run (default 100000)")
    parser.add_argument("--status-items", type=int, help="items of the status run (default 100000)")
    parser.add_argument("--display-items", type=int, help="items of the display run (default 2000)")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    everything = {"overhead", "io", "rerun", "startup", "memory", "status", "display"}
    only = set(args.only.split(",")) if args.only else everything
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; figures are medians of {repeat} run(s)\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "overhead" in only:
            overhead(folder, 200 if args.quick else 2000, repeat)
        if "io" in only:
            io_bound(folder, 200 if args.quick else 1000, repeat)
        if "rerun" in only:
            sizes = (1000,) if args.quick else (10_000, 100_000)
            for items in [int(n) for n in args.rerun_items.split(",")] if args.rerun_items else sizes:
                rerun(folder, items, repeat)
        if "startup" in only:
            startup(repeat)
        if "memory" in only:
            memory(folder, args.memory_items or (10_000 if args.quick else 100_000))
        if "status" in only:
            status(folder, args.status_items or (10_000 if args.quick else 100_000), repeat)
        if "display" in only:
            display(folder, args.display_items or (200 if args.quick else 2000), repeat)


if __name__ == "__main__":
    main()
