"""Durable state writes off the event loop: a thread pool against batching.

    python benchmarks/writer_bench.py [--items 1000] [--writes 4] [-j 100]

``-j`` coroutines each write one item's state ``--writes`` times in order,
awaiting each write (as the runner does: an item's next change waits for its
last save). Two ways to take the writes off the event loop:

- ``pool N``: each write (temp file, fsync, rename, directory fsync) runs in a
  thread pool of N threads, as ``pipekit.state.writer.StateWriter`` does;
- ``batch``: one writer thread takes every write queued meanwhile, writes and
  fsyncs each temp file, renames them all, then fsyncs the directory once
  for the batch (group commit).

Prints each one's wall time, writes per second, and the ratio to the best.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
import os
from pathlib import Path
import queue
import shutil
import statistics
import tempfile
import threading
import time

from pipekit.state.store import write_atomically


DATA = b'{"item_id": "x", "phases": {"1": {"status": "completed"}}}\n' * 20


async def drive(items: int, writes: int, workers: int, write: object) -> float:
    slots = asyncio.Semaphore(workers)

    async def item(n: int) -> None:
        async with slots:
            for _ in range(writes):
                await write(n)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(item(n) for n in range(items)))
    return time.perf_counter() - started


def with_pool(folder: Path, items: int, writes: int, workers: int, threads: int) -> float:
    pool = ThreadPoolExecutor(threads)

    async def write(n: int) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, write_atomically, folder / f"{n}.json", DATA)

    try:
        return asyncio.run(drive(items, writes, workers, write))
    finally:
        pool.shutdown()


class Batcher:
    """One thread writing every queued state, with one directory fsync per batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.queue: queue.SimpleQueue[tuple[int, Future[None]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        self.batches = 0

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    entry = self.queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self.queue.put(None)
                    break
                batch.append(entry)
            self.batches += 1
            renames = []
            for n, _ in batch:
                path = self.folder / f"{n}.json"
                tmp = path.with_name(f".{n}.{id(batch)}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, DATA)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                renames.append((tmp, path))
            for tmp, path in renames:
                os.replace(tmp, path)
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            for _, done in batch:
                done.set_result(None)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def with_batches(folder: Path, items: int, writes: int, workers: int) -> float:
    batcher = Batcher(folder)

    async def write(n: int) -> None:
        done: Future[None] = Future()
        batcher.queue.put((n, done))
        await asyncio.wrap_future(done)

    try:
        return asyncio.run(drive(items, writes, workers, write))
    finally:
        batcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=4, help="writes per item (1 + 1 per phase of 3)")
    parser.add_argument("-j", "--workers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ways = {
        "pool 1": lambda f: with_pool(f, args.items, args.writes, args.workers, 1),
        "pool 8": lambda f: with_pool(f, args.items, args.writes, args.workers, 8),
        "pool 32": lambda f: with_pool(f, args.items, args.writes, args.workers, 32),
        "batch": lambda f: with_batches(f, args.items, args.writes, args.workers),
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for _ in range(args.repeat):
            for name, way in ways.items():  # interleaved: the machine's drift hits each alike
                folder = Path(tmp) / name.replace(" ", "-")
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                samples[name].append(way(folder))
    total = args.items * args.writes
    medians = {name: statistics.median(times) for name, times in samples.items()}
    best = min(medians.values())
    print(f"{args.items} items x {args.writes} durable writes, -j {args.workers}, median of {args.repeat}")
    for name, seconds in medians.items():
        print(f"  {name:<8} {seconds:7.2f} s  {total / seconds:8.0f} writes/s  {seconds / best:5.2f}x the best")


if __name__ == "__main__":
    main()
