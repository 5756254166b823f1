"""What the progress display costs per phase.

Runs a no-op pipeline of 2,000 items x 5 phases with ``--progress none`` and
``rich`` on a pseudo-terminal (so the rich display really draws), and
``simple`` into a log file (where plain lines go in CI), a few times each, and
prints the best wall time of each mode, the extra time per phase and the
ratio to ``--progress none``::

    python benchmarks/progress_overhead.py [--items 2000] [--repeat 3] [-j 8]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import fcntl
import os
from pathlib import Path
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time


PIPELINE = '''
from pipekit import phase

ITEM_NOUN = "records"

@phase(1)
def one(item_id):
    return ""

@phase(2)
def two(item_id):
    return ""

@phase(3)
def three(item_id):
    return ""

@phase(4)
def four(item_id):
    return ""

@phase(5)
def five(item_id):
    return ""
'''
PHASES = 5


def command(folder: Path, mode: str, workers: int) -> list[str]:
    state = folder / f"state-{mode}"
    shutil.rmtree(state, ignore_errors=True)
    return [
        sys.executable, "-m", "pipekit", "run", "pipeline.py", "--items", "items.txt",
        "--state-dir", str(state), "-j", str(workers), "--progress", mode,
    ]


ENV = {**os.environ, "TERM": "xterm-256color", "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(run: Callable[[Path, str, int], float], folder: Path, mode: str, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the child's user + system) of one run."""
    cpu = children_cpu()
    wall = run(folder, mode, workers)
    return wall, children_cpu() - cpu


def run_to_log(folder: Path, mode: str, workers: int) -> float:
    """Seconds one fresh run takes with ``--progress mode``, stderr into a file."""
    with open(folder / f"{mode}.log", "w") as log:
        started = time.perf_counter()
        proc = subprocess.run(command(folder, mode, workers), cwd=folder, stdout=log, stderr=log, env=ENV)
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"--progress {mode} exited {proc.returncode}")
    return elapsed


def run_on_terminal(folder: Path, mode: str, workers: int) -> float:
    """Seconds one fresh run takes with ``--progress mode``, output drained from a pty."""
    return run_command_on_terminal(command(folder, mode, workers), folder)


def run_command_on_terminal(args: list[str], folder: Path) -> float:
    """Seconds ``args`` takes on a 120x40 pseudo-terminal whose output is drained."""
    return measure_on_terminal(args, folder)[0]


def measure_on_terminal(args: list[str], folder: Path, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall, user CPU and system CPU seconds of ``args`` on a 120x40 pseudo-terminal
    whose output is drained as a terminal would (the CPU times are the child's own)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=folder, stdin=slave, stdout=slave, stderr=slave, env={**ENV, **(env or {})}, start_new_session=True
    )
    os.close(slave)
    reaped: tuple[int, int, resource.struct_rusage] | None = None
    try:
        while reaped is None:
            readable, _, _ = select.select([master], [], [], 0.5)
            if readable:
                try:
                    if os.read(master, 1 << 16):
                        continue
                except OSError:  # EIO: the child closed the terminal
                    pass
                reaped = os.wait4(proc.pid, 0)
            else:
                reaped = os.wait4(proc.pid, os.WNOHANG)
                if reaped[0] == 0:
                    reaped = None
    finally:
        os.close(master)
    _, status, usage = reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
    return elapsed, usage.ru_utime, usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-j", "--workers", type=int, default=8)
    args = parser.parse_args()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(PIPELINE)
        (folder / "items.txt").write_text("".join(f"item-{n:05d}\n" for n in range(args.items)))
        modes = ("none", "simple", "rich")
        wall = {mode: float("inf") for mode in modes}
        cpu = {mode: float("inf") for mode in modes}
        for _ in range(args.repeat):
            for mode in modes:  # interleaved, so drift in the machine hits every mode alike
                run = run_to_log if mode == "simple" else run_on_terminal
                seconds, cpu_seconds = measured(run, folder, mode, args.workers)
                wall[mode] = min(wall[mode], seconds)
                cpu[mode] = min(cpu[mode], cpu_seconds)
    phases = args.items * PHASES
    print(f"{args.items} items x {PHASES} phases, -j {args.workers}, best of {args.repeat}")
    print("(none and rich on a pseudo-terminal, simple into a log file; CPU = the run's user + system time)")
    for mode in modes:
        print(
            f"  --progress {mode:<6} wall {wall[mode]:6.2f}s"
            f" ({(wall[mode] - wall['none']) / phases * 1e6:+6.1f} us/phase, ratio {wall[mode] / wall['none']:.3f})"
            f"  cpu {cpu[mode]:6.2f}s"
            f" ({(cpu[mode] - cpu['none']) / phases * 1e6:+6.1f} us/phase, ratio {cpu[mode] / cpu['none']:.3f})"
        )


if __name__ == "__main__":
    main()
