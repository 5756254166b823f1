"""Crash campaign: kill ``pipekit run`` with SIGKILL at random moments, resume, check.

A pipeline of many tiny phases (async and sync, small outputs and outputs
larger than the inline limit, which are stored in files beside the state) runs
over a few items. Each run is killed after a random delay and started again
until every item is done; then a new round starts on a fresh state dir. After
every kill (and every run that finished by itself) the campaign checks:

- every ``.json`` file in the state dir parses, and every item's state loads
  (outputs in files included): no torn file;
- no completed phase executed again (the handlers append one line per
  execution to a side log opened with ``O_APPEND``);
- a phase executed again only if it was ``in_progress`` at the kill;
- every output of a completed phase is intact (compared to the value the
  handler is known to produce; handlers also check their ``previous_outputs``).

Usage::

    python benchmarks/crash_campaign.py --kills 500

The test suite runs a short campaign (``tests/test_crash_campaign.py``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any


PIPELINE = '''
import asyncio
import hashlib
import json
import os

from pipekit import phase

LOG = os.environ["CAMPAIGN_LOG"]
PHASES = int(os.environ["CAMPAIGN_PHASES"])


def expected(item_id, num):
    """What phase ``num`` of ``item_id`` returns; every third output is large (> 8 KiB)."""
    size = 12_000 if num % 3 == 0 else 40
    seed = hashlib.sha256(f"{item_id}/{num}".encode()).hexdigest()
    return (seed * (size // len(seed) + 1))[:size]


def execute(item_id, num, previous_outputs):
    for earlier, text in previous_outputs.items():
        if text != expected(item_id, earlier):
            raise AssertionError(f"output of phase {earlier} of {item_id!r} is damaged")
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps([item_id, num, os.getpid()]) + "\\n").encode())
    finally:
        os.close(fd)
    return expected(item_id, num)


def make(num):
    if num % 2:
        async def handler(item_id, previous_outputs):
            await asyncio.sleep(0)
            return execute(item_id, num, previous_outputs)
    else:
        def handler(item_id, previous_outputs):
            return execute(item_id, num, previous_outputs)
    handler.__name__ = handler.__qualname__ = f"p{num:02d}"
    return phase(num)(handler)


for _num in range(1, PHASES + 1):
    globals()[f"p{_num:02d}"] = make(_num)
'''


@dataclass
class Report:
    """What a campaign found."""

    kills: int = 0
    #: Runs that finished before their kill came.
    runs_finished: int = 0
    #: Rounds (fresh state dirs) driven to completion.
    rounds: int = 0
    #: Kills after which a temporary file of a state or output write was left behind.
    kills_inside_writes: int = 0
    #: Phases executed again because they were in flight at a kill (allowed: at-least-once).
    in_flight_reruns: int = 0
    #: ``.json`` files that did not parse, or states that did not load.
    torn_files: int = 0
    #: Executions of a phase that was already completed.
    reexecuted_completed: int = 0
    #: Re-executions of a phase that was not in progress at the kill.
    unexpected_reruns: int = 0
    #: Completed phases whose output differs from what the handler returned.
    damaged_outputs: int = 0
    #: Runs that exited with an unexpected status (not killed, not 0).
    bad_exits: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was lost, torn or paid twice."""
        return not (
            self.torn_files
            or self.reexecuted_completed
            or self.unexpected_reruns
            or self.damaged_outputs
            or self.bad_exits
        )


class Campaign:
    """Drives the runs of one campaign in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        items: int = 4,
        phases: int = 12,
        workers: int = 2,
        seed: int = 0,
        python: str = sys.executable,
    ) -> None:
        self.workdir = workdir
        self.items = [f"item {n}/{'é' if n % 2 else '..'}" for n in range(items)]
        self.phases = phases
        self.workers = workers
        self.random = random.Random(seed)
        self.python = python
        self.report = Report()
        self.window = 1.0
        (workdir / "pipeline.py").write_text(textwrap.dedent(PIPELINE).lstrip())
        (workdir / "items.jsonl").write_text(
            "".join(json.dumps({"id": i}) + "\n" for i in self.items)
        )
        self._round = 0
        self._new_round()

    # -- expected values (the same function as in the pipeline) ---------------

    def expected(self, item_id: str, num: int) -> str:
        import hashlib

        size = 12_000 if num % 3 == 0 else 40
        seed = hashlib.sha256(f"{item_id}/{num}".encode()).hexdigest()
        return (seed * (size // len(seed) + 1))[:size]

    # -- driving ------------------------------------------------------------------

    def _new_round(self) -> None:
        self._round += 1
        folder = self.workdir / f"round-{self._round}"
        folder.mkdir()
        self.state_dir = folder / "state"
        self.log = folder / "executions.log"
        self.statuses: dict[tuple[str, int], str] = {}
        self.counts: Counter[tuple[str, int]] = Counter()
        self.temp_files: set[Path] = set()

    def _start(self) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "CAMPAIGN_LOG": str(self.log),
            "CAMPAIGN_PHASES": str(self.phases),
            "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        return subprocess.Popen(
            [
                self.python, "-m", "pipekit", "run", "pipeline.py",
                "--items", "items.jsonl", "--state-dir", str(self.state_dir),
                "-j", str(self.workers), "--progress", "none", "-q",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _wait_started(self, proc: subprocess.Popen[str]) -> float:
        """Block until the run printed its state location (it is about to run)."""
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("pipekit: state:"):
                return time.monotonic()
        return time.monotonic()

    def calibrate(self) -> None:
        """Time one uninterrupted round: kill delays are drawn up to that long."""
        proc = self._start()
        started = self._wait_started(proc)
        proc.communicate(timeout=300)
        self.window = max(0.05, time.monotonic() - started)
        if proc.returncode != 0:
            self._problem(f"calibration run exited {proc.returncode}")
        self.check(killed=False)
        self._new_round()

    def step(self) -> None:
        """One run: killed after a random delay, or left to finish."""
        proc = self._start()
        self._wait_started(proc)
        try:
            # Aim inside the work that is left, so that most runs are killed.
            proc.wait(timeout=self.random.uniform(0.0, self.window * self._left()))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
        killed = proc.returncode == -signal.SIGKILL
        # The machine's speed changes under load: keep most runs killed, some not.
        self.window *= 1.05 if killed else 0.8
        if killed:
            self.report.kills += 1
        else:
            self.report.runs_finished += 1
            if proc.returncode != 0:
                self.report.bad_exits += 1
                self._problem(f"run exited {proc.returncode}: {err[-2000:]}")
        done = self.check(killed=killed)
        if done:
            self.report.rounds += 1
            self._new_round()

    def _left(self) -> float:
        total = len(self.items) * self.phases
        done = sum(1 for status in self.statuses.values() if status == "completed")
        return max(0.05, (total - done) / total)

    def run(self, kills: int, max_seconds: float | None = None) -> Report:
        """Step until ``kills`` kills happened (or ``max_seconds`` passed)."""
        started = time.monotonic()
        self.calibrate()
        while self.report.kills < kills:
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                self._problem(f"stopped after {max_seconds}s with {self.report.kills} kills")
                break
            self.step()
        self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    # -- checking -------------------------------------------------------------------

    def check(self, *, killed: bool) -> bool:
        """Check the state dir and the execution log; True when every item is done."""
        from pipekit.outcomes import StateFileError
        from pipekit.state import PipelineStateManager
        from pipekit.store import JsonDirStore

        report = self.report
        if self.state_dir.is_dir():
            for path in self.state_dir.glob("*.json"):
                try:
                    json.loads(path.read_bytes())
                except ValueError as exc:
                    report.torn_files += 1
                    self._problem(f"torn state file {path}: {exc}")
            temps = {p for p in self.state_dir.rglob(".*.tmp")}
            if killed and temps - self.temp_files:
                report.kills_inside_writes += 1
            self.temp_files = temps
        counts = self._executions()
        store = JsonDirStore(self.state_dir)
        statuses: dict[tuple[str, int], str] = {}
        done = True
        for item_id in self.items:
            manager = PipelineStateManager(item_id, store)
            try:
                loaded = manager.load_state()
            except StateFileError as exc:
                report.torn_files += 1
                self._problem(str(exc))
                done = False
                continue
            if not loaded:
                done = False
                continue
            state = manager.state
            done = done and state.is_done
            for num, phase in state.phases.items():
                statuses[(item_id, num)] = phase.status
                if phase.status == "completed" and state.phase_outputs.get(num) != self.expected(item_id, num):
                    report.damaged_outputs += 1
                    self._problem(f"output of phase {num} of {item_id!r} is damaged")
        for key in set(counts) | set(self.counts) | set(statuses):
            before, now = self.counts[key], counts[key]
            status_before = self.statuses.get(key, "pending")
            status_now = statuses.get(key, "pending")
            new = now - before
            if new > 0 and status_before == "completed":
                report.reexecuted_completed += new
                self._problem(f"completed phase {key} executed again")
            elif new > 0 and before > 0:
                if status_before == "in_progress":
                    report.in_flight_reruns += new
                else:
                    report.unexpected_reruns += new
                    self._problem(f"phase {key} ran again though it was {status_before}")
            if new > 1:
                report.unexpected_reruns += new - 1
                self._problem(f"phase {key} executed {new} times in one run")
            if status_now == "completed" and now == 0:
                self._problem(f"phase {key} completed without executing")
                report.damaged_outputs += 1
            if status_now == "pending" and now > 0:
                self._problem(f"phase {key} executed but its state says pending")
                report.unexpected_reruns += 1
        self.counts, self.statuses = counts, statuses
        return done

    def _executions(self) -> Counter[tuple[str, int]]:
        counts: Counter[tuple[str, int]] = Counter()
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                item_id, num, _pid = json.loads(line)
                counts[(item_id, num)] += 1
        return counts

    def _problem(self, text: str) -> None:
        if len(self.report.problems) < 50:
            self.report.problems.append(text)


def run_campaign(workdir: Path, kills: int, **options: Any) -> Report:
    """Run a campaign of ``kills`` kills in ``workdir`` (see ``Campaign``)."""
    max_seconds = options.pop("max_seconds", None)
    return Campaign(workdir, **options).run(kills, max_seconds=max_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs to deliver (default 500)")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--phases", type=int, default=12)
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the campaign's files here (default: a temp dir)")
    option = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pipekit-crash-") as tmp:
        workdir = Path(option.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_campaign(
            workdir,
            option.kills,
            items=option.items,
            phases=option.phases,
            workers=option.workers,
            seed=option.seed,
        )
    summary = {k: v for k, v in asdict(report).items() if k != "problems"}
    print(json.dumps(summary, indent=2))
    for problem in report.problems:
        print("problem:", problem, file=sys.stderr)
    print(
        f"{report.kills} kills survived, {report.torn_files} torn files, "
        f"{report.reexecuted_completed} re-executed completed phases, "
        f"{report.unexpected_reruns} unexpected re-runs, {report.damaged_outputs} damaged outputs "
        f"({report.kills_inside_writes} kills left a write's temp file behind; "
        f"{report.in_flight_reruns} in-flight phases re-run; {report.rounds} rounds finished)"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
