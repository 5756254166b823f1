"""Bytes the driver reads and writes resuming a run whose earlier outputs are large.

Each item's phase 1 returns a 1 MB str; phase 2 fails on the first run (a
flag file), so the second run resumes every item at phase 2, whose handler
takes the megabyte. The driver process counts its own I/O from
``/proc/self/io`` (``rchar``: bytes read by any call, files and pipes alike;
``wchar``: written) from when the executor is made (its modules imported,
no state read yet) to when the last item finished. Linux adds a child's
I/O to its parent's once the child is reaped, so this is measured while the
executor's worker processes still run; the last columns, taken at
``pipekit_run_finish`` after they were reaped, add theirs (and so count a
worker reading its inputs from the store).

The baseline is plain Python reading the same output files once, in a
process of its own, counted the same way: what one pass over the stored
outputs costs, i.e. what a driver that read each of them once would pay.

    python benchmarks/outputs_io_bench.py [--items 8] [--executors local,processes,dask]

Linux only (``/proc/self/io``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import textwrap


PIPELINE = '''
import json
import os
from pathlib import Path
from pipekit import hookimpl, phase

FLAG = Path(__file__).parent / "fail-phase-2"

def io():
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])

@phase(1)
def text(item_id):
    return item_id + "x" * {size}

@phase(2)
def size(text):
    if FLAG.exists():
        raise RuntimeError("not yet")
    return len(text)

def items():
    return [f"item-{{n}}" for n in range({items})]

AT_START = []
LAST = []

@hookimpl(wrapper=True)
def pipekit_make_executor(config, pipeline, name):
    executor = yield
    AT_START.append(io())  # its modules imported, no state read yet
    return executor

@hookimpl
def pipekit_item_finish(item):
    LAST[:] = [io()]

@hookimpl
def pipekit_run_finish(run, exitstatus):
    (read, written), (start_read, start_written) = LAST[0], AT_START[0]
    reaped_read, reaped_written = io()  # Linux adds each reaped child's I/O to its parent's
    Path(os.environ["DRIVER_IO_FILE"]).write_text(json.dumps(
        [read - start_read, written - start_written, reaped_read - start_read, reaped_written - start_written]
    ))
'''

BASELINE = '''
import json, sys
from pathlib import Path

def rchar():
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"])

files = sorted(Path(sys.argv[1]).glob("*.outputs/*"))
before = rchar()
for path in files:
    with open(path, "rb") as f:
        f.read()
print(json.dumps([len(files), rchar() - before]))
'''


def run_cli(folder: Path, executor: str, workers: int) -> tuple[int, list[int]]:
    io_file = folder / "driver-io.json"
    io_file.unlink(missing_ok=True)
    env = {**os.environ, "DRIVER_IO_FILE": str(io_file), "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--executor", executor, "-j", str(workers),
         "--state-dir", str(folder / "state"), "--progress", "none", "-q"],
        cwd=folder, env=env, capture_output=True, text=True,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"pipekit exited {done.returncode}:\n{done.stderr}")
    return done.returncode, json.loads(io_file.read_text())


def plain_read(state: Path) -> tuple[int, int]:
    files, read = json.loads(subprocess.check_output([sys.executable, "-c", BASELINE, str(state)], text=True))
    return files, read


def measure(executor: str, items: int, size: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(textwrap.dedent(PIPELINE.format(size=size, items=items)))
        (folder / "fail-phase-2").touch()
        first, _ = run_cli(folder, executor, workers)
        assert first == 1, "the first run must fail phase 2"
        (folder / "fail-phase-2").unlink()
        resumed, (read, written, all_read, all_written) = run_cli(folder, executor, workers)
        assert resumed == 0, "the resumed run must finish"
        files, baseline = plain_read(folder / "state")
        print(f"{executor:<10} {read:>13,} {written:>13,} {baseline:>13,} {read / baseline:>10.3f}x"
              f" {all_read:>15,} {all_written:>15,}   ({files} files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--size", type=int, default=1_000_000, help="characters of each phase-1 output")
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--executors", default="local,processes,dask")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"resuming {args.items} items at phase 2 after a {args.size:,}-character phase 1, -j {args.workers}")
    print(f"{'executor':<10} {'driver read':>13} {'driver wrote':>13} {'plain read':>13} {'read/plain':>11}"
          f" {'+workers read':>15} {'+workers wrote':>15}")
    for executor in args.executors.split(","):
        if executor == "dask":
            try:
                import distributed  # noqa: F401
            except ImportError:
                print("dask       (not installed)")
                continue
        measure(executor, args.items, args.size, args.workers)


if __name__ == "__main__":
    main()
