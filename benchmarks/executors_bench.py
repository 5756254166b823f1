"""Where phases run: speed-up of --executor processes and dask over local.

Two measurements, each the median of --repeat runs of the whole CLI:

1. CPU-bound: 200 items x 1 phase of 50 ms of pure-Python work, -j = cores.
   The baseline is the same work in a plain loop (the physical limit on one
   core); ideal speed-up is the number of cores.
2. Overhead: 200 items x 5 no-op phases, -j = cores, in microseconds per
   phase, beside the plain-Python loop that performs the same durable state
   writes.

    python benchmarks/executors_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time


CPU_PIPELINE = '''
import time
from pipekit import phase

def burn(seconds):
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n

@phase(1, timeout=None)
def work(item_id):
    return str(burn({seconds}))

def items():
    return [f"item-{{n}}" for n in range({items})]
'''

NOOP_PIPELINE = "from pipekit import phase\n" + "".join(
    f"\n@phase({n})\ndef p{n}(item_id):\n    return ''\n" for n in range(1, 6)
) + "\ndef items():\n    return [f'item-{{n}}' for n in range({items})]\n"


def run_cli(folder: Path, executor: str, workers: int) -> float:
    state = folder / f"state-{executor}"
    shutil.rmtree(state, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--executor", executor, "-j", str(workers),
         "--state-dir", str(state), "-q"],
        cwd=folder, check=True, capture_output=True,
    )
    return time.perf_counter() - started


def plain_cpu(items: int, seconds: float) -> float:
    started = time.perf_counter()
    for _ in range(items):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items = 40 if args.quick else 200
    repeat = 1 if args.quick else args.repeat
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}, {platform.system()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(textwrap.dedent(CPU_PIPELINE.format(seconds=0.05, items=items)))
        baseline = median([plain_cpu(items, 0.05) for _ in range(repeat)])
        print(f"\nCPU-bound: {items} items x 50 ms, -j {cores}; plain loop {baseline:.2f} s (ideal speed-up {cores}x)")
        print(f"{'executor':<10} {'wall s':>8} {'speed-up vs local':>18} {'vs plain loop':>14}")
        local = None
        for executor in ("local", "processes", "dask"):
            wall = median([run_cli(folder, executor, cores) for _ in range(repeat)])
            local = local or wall
            print(f"{executor:<10} {wall:8.2f} {local / wall:17.2f}x {baseline / wall:13.2f}x")

        (folder / "pipeline.py").write_text(NOOP_PIPELINE.format(items=items))
        phases = items * 5
        print(f"\nOverhead: {items} items x 5 no-op phases, -j {cores} (whole CLI, start-up included)")
        print(f"{'executor':<10} {'wall s':>8} {'us/phase':>10} {'vs local':>9}")
        local_us = None
        for executor in ("local", "processes", "dask"):
            wall = median([run_cli(folder, executor, cores) for _ in range(repeat)])
            us = wall / phases * 1e6
            local_us = local_us or us
            print(f"{executor:<10} {wall:8.2f} {us:10.0f} {us / local_us:8.2f}x")


if __name__ == "__main__":
    main()
