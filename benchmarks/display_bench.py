"""What the rich display and the built-in plugins add to a durable ``-j 1`` run.

Each round runs the same no-op pipeline (N items x 5 phases, fresh state) twice
through the whole CLI on a 120x40 pseudo-terminal whose output is drained, as a
user at a terminal gets it:

- baseline: ``--progress none -p no:jsonl -p no:summary`` (no display, no plugin
  output);
- display: ``--progress rich`` with every built-in plugin.

The order alternates from round to round, so drift in a shared machine's load
hits both alike. Printed per phase: the median wall time, CPU time (user +
system) and user CPU time of each, and the median of the rounds' own ratios
(with their spread), which is the steadier figure when the disk is busy: system
time includes the kernel's fsync work, which follows the load of the disk, while
user time is pipekit's own Python::

    python benchmarks/display_bench.py [--items 2000] [--repeat 5] [--no-fsync]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import statistics
import sys
import tempfile

from progress_overhead import measure_on_terminal


PHASES = 5
BARE = ("--progress", "none", "-p", "no:jsonl", "-p", "no:summary")
DISPLAY = ("--progress", "rich")


@dataclass
class Sample:
    """One run: seconds of wall, user CPU and system CPU."""

    wall: float
    user: float
    system: float

    @property
    def cpu(self) -> float:
        return self.user + self.system


def pipeline_source() -> str:
    return "from pipekit import phase\n" + "".join(
        f"\n@phase({n})\ndef p{n}(item_id):\n    return ''\n" for n in range(1, PHASES + 1)
    )


def run_once(folder: Path, extra: tuple[str, ...], env: dict[str, str]) -> Sample:
    state = folder / "state-display"
    shutil.rmtree(state, ignore_errors=True)
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--items", "items.txt",
               "--state-dir", str(state), "-j", "1", *extra]
    wall, user, system = measure_on_terminal(command, folder, env)
    shutil.rmtree(state, ignore_errors=True)
    return Sample(wall, user, system)


def measure(folder: Path, items: int, repeat: int, fsync: bool = True) -> dict[str, list[Sample]]:
    """``repeat`` rounds of a baseline run and a display run, in alternating order."""
    (folder / "pipeline.py").write_text(pipeline_source())
    (folder / "items.txt").write_text("".join(f"item-{n}\n" for n in range(items)))
    env = {} if fsync else {"PIPEKIT_FSYNC": "0"}
    samples: dict[str, list[Sample]] = {"bare": [], "rich": []}
    for round_ in range(repeat):
        order = (("bare", BARE), ("rich", DISPLAY))
        for mode, extra in order if round_ % 2 == 0 else order[::-1]:
            samples[mode].append(run_once(folder, extra, env))
    return samples


def report(samples: dict[str, list[Sample]], items: int, indent: str = "  ") -> None:
    """Medians per phase, each with its baseline, then the rounds' own ratios."""
    phases = items * PHASES
    bare, rich = samples["bare"], samples["rich"]
    for what in ("wall", "cpu", "user"):
        label = {"wall": "wall", "cpu": "CPU (user + system)", "user": "user CPU"}[what]
        base = statistics.median(getattr(s, what) for s in bare) / phases * 1e6
        shown = statistics.median(getattr(s, what) for s in rich) / phases * 1e6
        ratios = sorted(getattr(r, what) / getattr(b, what) for r, b in zip(rich, bare, strict=True))
        print(
            f"{indent}{label + ' per phase':<28} {shown:>8.1f} us | baseline {base:>8.1f} us | "
            f"{shown / base:5.2f}x; rounds' ratios: median {statistics.median(ratios):.2f}x "
            f"({ratios[0]:.2f}-{ratios[-1]:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (each: one baseline run, one display run)")
    parser.add_argument("--no-fsync", action="store_true", help="PIPEKIT_FSYNC=0: the CPU cost without the disk")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        samples = measure(Path(tmp), args.items, args.repeat, fsync=not args.no_fsync)
    print(f"{args.items} items x {PHASES} no-op phases, -j 1, {'no fsync' if args.no_fsync else 'durable'}, "
          f"on a 120x40 pseudo-terminal, {args.repeat} rounds, {os.cpu_count()} cores")
    print(f"(baseline: {' '.join(BARE)}; display: {' '.join(DISPLAY)} and every built-in plugin)")
    report(samples, args.items)


if __name__ == "__main__":
    main()
