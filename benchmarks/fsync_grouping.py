"""Would grouping the JSON store's writes save fsyncs on this disk?

    python benchmarks/fsync_grouping.py [--dir DIR] [--files 64] [--rounds 10] [--repeat 3]

Writes ``--files`` state-sized files (2.6 KB) durably, ``--rounds`` times, four
ways, and prints the time per file written:

- ``8 threads``: what pipekit's writer does today with ``-j`` > 1 (each file
  written, fsynced, renamed, its folder fsynced, on 8 threads at once);
- ``8 threads, one dir fsync``: the same, the folder fsynced once per round;
- ``one thread, each``: the group written by one thread, file by file (write,
  fsync, rename), one folder fsync per round;
- ``one thread, all then fsync``: every file written, then each fsynced, then
  all renamed, then one folder fsync;
- ``one thread + 8 fsync threads``: as the last, the fsyncs on 8 threads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
import os
from pathlib import Path
import tempfile
import time


DATA = b"x" * 2600


def write(folder: str, n: int, dir_sync: bool) -> None:
    path = f"{folder}/f{n}.json"
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, DATA)
    os.fsync(fd)
    os.close(fd)
    os.replace(path + ".tmp", path)
    if dir_sync:
        sync_dir(folder)


def sync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def opened(folder: str, files: int) -> list[tuple[int, str]]:
    out = []
    for n in range(files):
        path = f"{folder}/f{n}.json"
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, DATA)
        out.append((fd, path))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="a folder on the disk to measure (default: a temp dir)")
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder, ThreadPoolExecutor(8) as pool:
        files = args.files

        def threads_each() -> None:
            list(pool.map(lambda n: write(folder, n, True), range(files)))

        def threads_one_dir() -> None:
            list(pool.map(lambda n: write(folder, n, False), range(files)))
            sync_dir(folder)

        def serial_each() -> None:
            for n in range(files):
                write(folder, n, False)
            sync_dir(folder)

        def all_then_fsync(fsync: Callable[[list[tuple[int, str]]], None]) -> Callable[[], None]:
            def group() -> None:
                written = opened(folder, files)
                fsync(written)
                for fd, path in written:
                    os.close(fd)
                    os.replace(path + ".tmp", path)
                sync_dir(folder)

            return group

        ways = {
            "8 threads": threads_each,
            "8 threads, one dir fsync": threads_one_dir,
            "one thread, each": serial_each,
            "one thread, all then fsync": all_then_fsync(lambda written: [os.fsync(fd) for fd, _ in written]),
            "one thread + 8 fsync threads": all_then_fsync(
                lambda written: list(pool.map(os.fsync, [fd for fd, _ in written]))
            ),
        }
        for _ in range(args.repeat):
            figures = []
            for name, way in ways.items():
                started = time.perf_counter()
                for _ in range(args.rounds):
                    way()
                figures.append(f"{name} {(time.perf_counter() - started) / args.rounds / files * 1e6:,.0f} us")
            print(" | ".join(figures) + f" | load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
