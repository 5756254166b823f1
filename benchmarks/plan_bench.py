"""How long `pipekit plan` takes over 10,000 finished items (#10).

The state of 10,000 items x 5 completed phases (with fingerprints) is written
once; phase 3's code is then edited, so that plan finds 20,000 stale cells
(phase 3, and phases 4-5 downstream of it). Measured, each the median of
--repeat runs of the whole CLI in a subprocess (interpreter start included):

- ``pipekit plan pipeline.py`` (text) and ``pipekit plan ... --json``;
- the baseline: a plain Python loop that reads and parses the same 10,000
  state files (the least any plan over this state must do), in a subprocess too.

    python benchmarks/plan_bench.py [--items N] [--repeat N]
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
import time


PIPELINE = '''
from pipekit import phase, PhaseResult

def items():
    return [f"item-{{n}}" for n in range({items})]

@phase(1)
def research(item_id):
    return f"notes on {{item_id}}"

@phase(2)
def outline(research):
    return research.upper()

@phase(3)
def draft(outline):
    return PhaseResult("draft: " + outline, cost_usd=0.002)  # VERSION

@phase(4)
def review(draft, previous_outputs):
    return draft[::-1]

@phase(5)
def publish(item_id, review):
    return f"{{item_id}} {{review}}"
'''

BASELINE = """
import json, os, sys
folder = sys.argv[1]
for entry in os.scandir(folder):
    if entry.name.endswith(".json"):
        with open(entry.path, "rb") as handle:
            json.loads(handle.read())
"""


def write_state(folder: Path, items: int) -> Path:
    """Write the pipeline and the state of ``items`` finished items; returns the state dir."""
    sys.path.insert(0, str(folder))
    (folder / "pipeline.py").write_text(PIPELINE.format(items=items))
    from pipekit.pipeline.loader import load
    from pipekit.stale.fingerprint import phase_fingerprint
    from pipekit.state.jsondir import JsonDirStore
    from pipekit.state.manager import PipelineStateManager

    pipeline = load(str(folder / "pipeline.py"))
    state_dir = folder / "state"
    store = JsonDirStore(state_dir, durable=False)
    for n in range(items):
        item_id = f"item-{n}"
        manager = PipelineStateManager(item_id, store)
        manager.create_state({}, pipeline.phases)
        manager.state.pipeline_module = pipeline.path
        outputs = manager.state.phase_outputs
        for definition in pipeline.phases:
            phase_state = manager.state.phases[definition.num]
            phase_state.fingerprint = phase_fingerprint(definition, pipeline.phases, outputs, lambda f: {})
            phase_state.status = "completed"
            phase_state.attempts = 1
            phase_state.duration_seconds = 1.5
            phase_state.cost_usd = 0.002 if definition.num == 3 else 0.0
            outputs[definition.num] = f"output {definition.num} of {item_id}"
        manager._refresh_item_status()
        manager.save_state()
    return state_dir


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    option = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        state_dir = write_state(folder, option.items)
        print(f"wrote {option.items} item states in {time.perf_counter() - started:.1f} s")
        source = (folder / "pipeline.py").read_text()
        (folder / "pipeline.py").write_text(source.replace('"draft: "', '"Draft: "'))
        plan = [sys.executable, "-m", "pipekit", "plan", "pipeline.py", "--state-dir", str(state_dir)]
        check = subprocess.run([*plan, "--json"], cwd=folder, check=True, capture_output=True, text=True)
        total = json.loads(check.stdout)["total"]
        assert total["stale_not_included"] == 3 * option.items, total
        results = {
            "baseline: read + parse every state file": [
                timed([sys.executable, "-c", BASELINE, str(state_dir)], folder) for _ in range(option.repeat)
            ],
            "pipekit plan": [timed(plan, folder) for _ in range(option.repeat)],
            "pipekit plan --json": [timed([*plan, "--json"], folder) for _ in range(option.repeat)],
        }
    baseline = statistics.median(results["baseline: read + parse every state file"])
    print(f"{option.items} items x 5 phases, {3 * option.items} stale cells; median of {option.repeat} runs")
    for label, values in results.items():
        median = statistics.median(values)
        print(f"  {label:<42} {median:6.2f} s   x{median / baseline:5.1f} baseline")


if __name__ == "__main__":
    main()
