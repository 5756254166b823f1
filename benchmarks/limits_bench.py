"""Do rate limits, per-phase concurrency and checkpoints cost throughput?

1,000 items, ``-j 100``, one phase that awaits ``asyncio.sleep(0.1)``: the
ideal wall time is work / concurrency = 1,000 x 0.1 s / 100 = 1.0 s. Each
variant runs the whole ``pipekit run`` in a fresh state dir (median of
``--repeat`` interleaved runs, process start-up excluded); throughput is
reported as a fraction of the ideal and of the physical limit: plain asyncio
with the same semaphore, the same aiolimiter bucket, the same sleeps and the
same two durable state writes per item (``physical_limit.py``). Plain Python
without the writes is printed too.

    python benchmarks/limits_bench.py [--quick] [--state-root DIR]

State is written durably (fsync) as in real runs, so the disk under
``--state-root`` (default: a temporary directory) matters; ``--state-root
/dev/shm`` measures pipekit's own work. The last column isolates what the
limits, slots and checkpoints add to a pipekit run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from typing import Any

import physical_limit


PIPELINE = '''
import asyncio
import pipekit
from pipekit import phase

LIMITS = {{"api": pipekit.Limit(rpm=600_000, tpm=100_000_000, burst=100)}}

async def echo(value):
    return value

@phase(1, timeout=None{options})
async def call(ctx):
    {body}
    await asyncio.sleep({work})
'''

VARIANTS = {
    "no limit": ("", "pass"),
    "limits=['api'] (around the phase)": (", limits=['api']", "pass"),
    "ctx.acquire('api', tokens=500)": ("", "await ctx.acquire('api', tokens=500)"),
    "concurrency=100 + limit": (", concurrency=100, limits=['api']", "pass"),
    # async functions, as an async handler would checkpoint its API calls: their
    # durable writes then run in a thread, not on the event loop
    "2 checkpoints + limit": (
        ", limits=['api']",
        "await ctx.checkpoint('a', echo, 1); await ctx.checkpoint('b', echo, 2)",
    ),
}


def _limiter() -> Any:
    """An aiolimiter bucket like the pipeline's generous limit (600,000 a minute, bursts of 100)."""
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(100, 100 * 60 / 600_000)


async def plain_python(items: int, workers: int, work: float) -> float:
    """The same sleeps behind a semaphore and the same limiter, without pipekit."""
    slots = asyncio.Semaphore(workers)
    limiter = _limiter()

    async def one() -> None:
        async with slots:
            await limiter.acquire()
            await asyncio.sleep(work)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(items)))
    return time.perf_counter() - started


def run_pipekit(folder: Path, name: str, options: str, body: str, items: int, workers: int, work: float) -> float:
    import pipekit

    source = PIPELINE.format(options=options, body=body, work=work)
    module = folder / f"bench_{abs(hash(name))}.py"
    module.write_text(textwrap.dedent(source))
    state = Path(tempfile.mkdtemp(dir=folder))
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        result = pipekit.run(
            module, [f"item-{n}" for n in range(items)], state_dir=state, workers=workers, progress="none"
        )
    elapsed = time.perf_counter() - started
    if result.exit_status != 0 or result.items_completed != items:
        raise SystemExit(f"{name}: run failed ({result.exit_status}, {result.items_completed} completed)")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 items, -j 20, one repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--state-root", type=Path, default=None, help="where state dirs are made")
    args = parser.parse_args()
    items, workers, work, repeat = (200, 20, 0.1, 1) if args.quick else (1000, 100, 0.1, args.repeat)
    ideal = items * work / workers
    print(f"{items} items, -j {workers}, one phase of asyncio.sleep({work}); ideal {ideal:.2f}s")
    print(f"python {platform.python_version()} on {platform.system()}, {sys.platform}")
    baseline = statistics.median(asyncio.run(plain_python(items, workers, work)) for _ in range(repeat))
    print(f"{'plain Python (semaphore + aiolimiter)':40} {baseline:6.2f}s  {ideal / baseline:6.1%} of ideal")
    with tempfile.TemporaryDirectory(dir=args.state_root) as tmp:
        folder = Path(tmp)
        sys.path.insert(0, str(folder))
        limits: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for n in range(repeat):  # interleaved, so drift in the machine's load hits every variant alike
            same_writes = physical_limit.same_writes(folder / f"limit-{n}", items, 1, workers, work, _limiter())
            limits.append(asyncio.run(same_writes))
            for name, (options, body) in VARIANTS.items():
                times[name].append(run_pipekit(folder, name, options, body, items, workers, work))
        limit = statistics.median(limits)
        print(f"{'  + the same 2 durable writes per item':40} {limit:6.2f}s  {ideal / limit:6.1%} of ideal")
        unlimited = None
        for name, samples in times.items():
            elapsed = statistics.median(samples)
            unlimited = unlimited or elapsed
            print(
                f"{'pipekit, ' + name:40} {elapsed:6.2f}s  {ideal / elapsed:6.1%} of ideal  "
                f"{limit / elapsed:6.1%} of plain Python with the same writes  "
                f"{unlimited / elapsed:6.1%} of pipekit without limits"
            )


if __name__ == "__main__":
    main()
