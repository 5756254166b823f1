"""Crash campaign: kill ``pipekit run`` with SIGKILL at random moments, resume, check.

A pipeline of many tiny phases (async and sync, small outputs and outputs
larger than the inline limit, which are stored beside the state) runs over a
few items, in a JSON state directory (``--store json``), one SQLite database
(``--store sqlite``) or a PostgreSQL database (``--store postgres``, at
``PIPEKIT_TEST_POSTGRES_URL``; each round is a new pipeline name). Every third
phase pays for its work in parts kept with ``ctx.checkpoint``, each part
recording its cost with ``ctx.record_cost`` inside the checkpoint. Each step starts ``--processes`` pipekit processes
together on the same store and items, kills one of them, chosen at random,
after a random delay, and lets the others finish; steps repeat until every
item is done, then a new round starts on a fresh store. At the kill the other
processes are frozen (SIGSTOP) and the store is checked, so that "in progress
at the kill" is exact; they are then resumed (SIGCONT), and the store is
checked again when every process has stopped. A check finds:

- torn state: a ``.json`` file that does not parse, an item whose state does
  not load through the store (outputs stored apart included), a database that
  cannot be opened or fails SQLite's integrity check;
- a completed phase executed again (the handlers append ``[item, phase, pid]``
  to a side log opened with ``O_APPEND``; a phase is completed only after its
  line is written);
- a phase executed again that was not ``in_progress`` at the kill, or executed
  twice between two checks;
- an item whose phases two live processes executed between two checks (only
  one process may run an item: its lock keeps the others out);
- a damaged output of a completed phase (compared to the value the handler is
  known to produce; handlers also check their ``previous_outputs``);
- a process that exited on its own with a status other than 0, or printed a
  traceback;
- lost cost: an item whose recorded cost is less than what its checkpointed
  parts recorded (each part once: every part's result was kept before the
  round ended, so its cost must be counted, whatever kill came after), or more
  than the parts' functions were paid for (each call appends to a side log).

Usage::

    python benchmarks/crash_campaign.py --kills 500
    python benchmarks/crash_campaign.py --store sqlite --processes 3 --items 12 -j 4 --kills 150

The test suite runs short campaigns (``tests/test_crash_campaign.py``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections import defaultdict
import contextlib
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
import json
import os
from pathlib import Path
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import TYPE_CHECKING
from typing import Any


if TYPE_CHECKING:
    from pipekit.state.store import StateStore


PIPELINE = '''
import asyncio
import hashlib
import json
import os

from pipekit import phase

LOG = os.environ["CAMPAIGN_LOG"]
PAID = os.environ["CAMPAIGN_PAID"]
PHASES = int(os.environ["CAMPAIGN_PHASES"])
PIPELINE_NAME = os.environ["CAMPAIGN_PIPELINE"]
PARTS = 3


def part_cost(num, part):
    """What part ``part`` of phase ``num`` costs (a binary fraction: sums are exact)."""
    return (num * 10 + part + 1) / 1024


def append(path, record):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\\n").encode())
    finally:
        os.close(fd)


def pay(ctx, num, part):
    append(PAID, [ctx.item_id, num, part, part_cost(num, part)])
    ctx.record_cost(tokens_in=1, cost_usd=part_cost(num, part))
    return part


def expected(item_id, num):
    """What phase ``num`` of ``item_id`` returns; every third output is large (> 8 KiB)."""
    size = 12_000 if num % 3 == 0 else 40
    seed = hashlib.sha256(f"{item_id}/{num}".encode()).hexdigest()
    return (seed * (size // len(seed) + 1))[:size]


def execute(item_id, num, previous_outputs):
    for earlier, text in previous_outputs.items():
        if text != expected(item_id, earlier):
            raise AssertionError(f"output of phase {earlier} of {item_id!r} is damaged")
    append(LOG, [item_id, num, os.getpid()])
    return expected(item_id, num)


def make(num):
    parts = PARTS if num % 3 == 1 else 0
    if num % 2:
        async def pay_async(ctx, part):
            await asyncio.sleep(0)
            return pay(ctx, num, part)

        async def handler(item_id, previous_outputs, ctx):
            await asyncio.sleep(0)
            for part in range(parts):
                await ctx.checkpoint(f"part {part}", pay_async, ctx, part)
            return execute(item_id, num, previous_outputs)
    else:
        def handler(item_id, previous_outputs, ctx):
            for part in range(parts):
                ctx.checkpoint(f"part {part}", pay, ctx, num, part)
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
    #: Steps in which every process finished before the kill came.
    runs_finished: int = 0
    #: Rounds (fresh stores) driven to completion.
    rounds: int = 0
    #: Kills after which a temporary file of a state or output write was left behind (JSON store).
    kills_inside_writes: int = 0
    #: Phases executed again because they were in flight at a kill (allowed: at-least-once).
    in_flight_reruns: int = 0
    #: ``.json`` files that did not parse, states that did not load, databases that did not open or check.
    torn_files: int = 0
    #: Executions of a phase that was already completed.
    reexecuted_completed: int = 0
    #: Re-executions of a phase that was not in progress at the kill.
    unexpected_reruns: int = 0
    #: Items whose phases two live processes executed between two checks.
    concurrent_executions: int = 0
    #: Completed phases whose output differs from what the handler returned.
    damaged_outputs: int = 0
    #: Processes that exited on their own with a status other than 0, or printed a traceback.
    bad_exits: int = 0
    #: Kills while a phase that had paid for checkpointed parts was in progress.
    kills_after_checkpoint_cost: int = 0
    #: Dollars the checkpointed parts recorded (each part once) over finished rounds.
    checkpoint_cost_usd: float = 0.0
    #: Dollars the finished rounds' states recorded.
    recorded_cost_usd: float = 0.0
    #: Items whose recorded cost was below what their parts recorded, or above what was paid.
    cost_mismatches: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was lost, torn, run twice or paid twice."""
        return not (
            self.torn_files
            or self.reexecuted_completed
            or self.unexpected_reruns
            or self.concurrent_executions
            or self.damaged_outputs
            or self.bad_exits
            or self.cost_mismatches
        )


class Campaign:
    """Drives the runs of one campaign in ``workdir``.

    :param store: ``json`` (a state directory) or ``sqlite`` (one database file).
    :param processes: pipekit processes started together on the same store and items.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        items: int = 4,
        phases: int = 12,
        workers: int = 2,
        seed: int = 0,
        store: str = "json",
        processes: int = 1,
        python: str = sys.executable,
    ) -> None:
        if store not in ("json", "sqlite", "postgres"):
            raise ValueError(f"store must be json, sqlite or postgres, not {store!r}")
        self.postgres_url = os.environ.get("PIPEKIT_TEST_POSTGRES_URL", "")
        if store == "postgres" and not self.postgres_url:
            raise ValueError("--store postgres needs PIPEKIT_TEST_POSTGRES_URL")
        self.seed = seed
        self.workdir = workdir
        self.items = [f"item {n}/{'é' if n % 2 else '..'}" for n in range(items)]
        self.phases = phases
        self.workers = workers
        self.random = random.Random(seed)
        self.store_kind = store
        self.processes = max(1, processes)
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
        self.database = folder / "state.sqlite"
        self.log = folder / "executions.log"
        self.paid = folder / "paid.log"
        self.pipeline_name = f"campaign_{os.getpid()}_{self.seed}_{self._round}"
        #: Bytes of the log the checks have read.
        self.log_read = 0
        self.statuses: dict[tuple[str, int], str] = {}
        self.counts: Counter[tuple[str, int]] = Counter()
        self.temp_files: set[Path] = set()

    @property
    def store_options(self) -> list[str]:
        if self.store_kind == "sqlite":
            return ["--store", f"sqlite:{self.database}"]
        if self.store_kind == "postgres":
            return ["--store", self.postgres_url]
        return ["--state-dir", str(self.state_dir)]

    def open_store(self) -> StateStore:
        """The round's store, as pipekit opens it."""
        from pipekit.state.open import open_store_url

        if self.store_kind == "sqlite":
            return open_store_url(f"sqlite:{self.database}")
        if self.store_kind == "postgres":
            return open_store_url(self.postgres_url, pipeline=self.pipeline_name)
        return open_store_url(f"json:{self.state_dir}")

    def _start(self) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "CAMPAIGN_LOG": str(self.log),
            "CAMPAIGN_PHASES": str(self.phases),
            "CAMPAIGN_PAID": str(self.paid),
            "CAMPAIGN_PIPELINE": self.pipeline_name,
            "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        return subprocess.Popen(
            [
                self.python, "-m", "pipekit", "run", "pipeline.py",
                "--items", "items.jsonl", *self.store_options,
                "-j", str(self.workers), "--progress", "none", "-q",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _start_all(self) -> list[tuple[subprocess.Popen[str], str]]:
        """Start the processes; returns each with the stderr it printed up to its
        state location (then it is about to run)."""
        procs = [self._start() for _ in range(self.processes)]
        return [(proc, self._wait_started(proc)) for proc in procs]

    def _wait_started(self, proc: subprocess.Popen[str]) -> str:
        """Block until the run printed its state location; returns what it printed."""
        assert proc.stderr is not None
        printed = ""
        for line in proc.stderr:
            printed += line
            if line.startswith("pipekit: state:"):
                break
        return printed

    def _check_exits(
        self, started: list[tuple[subprocess.Popen[str], str]], victim: subprocess.Popen[str] | None = None
    ) -> None:
        """Wait for every process but the killed ``victim``; count those that failed."""
        for proc, printed in started:
            _, err = proc.communicate(timeout=300)
            if proc is not victim and (proc.returncode != 0 or "Traceback" in printed + err):
                self.report.bad_exits += 1
                self._problem(f"process {proc.pid} exited {proc.returncode}: {(printed + err)[-2000:]}")

    def calibrate(self) -> None:
        """Time one uninterrupted round: kill delays are drawn up to that long."""
        started_procs = self._start_all()
        started = time.monotonic()
        for proc, _ in started_procs:
            proc.wait(timeout=300)
        self.window = max(0.05, time.monotonic() - started)
        self._check_exits(started_procs)
        self.check(killed=False)
        self._new_round()

    def step(self) -> None:
        """Start the processes; kill one after a random delay (unless all finished first)."""
        started = self._start_all()
        # Aim inside the work that is left, so that most steps end with a kill.
        deadline = time.monotonic() + self.random.uniform(0.0, self.window * self._left())
        running = [proc for proc, _ in started if not _finished_by(proc, deadline)]
        victim = None
        if running:
            victim = running[0] if len(running) == 1 else self.random.choice(running)
            others = [proc for proc in running if proc is not victim]
            # Opening a SQLite store takes its write lock, which a frozen process may hold: open it first.
            store = self.open_store() if others else None
            for proc in others:
                _freeze(proc)
            victim.send_signal(signal.SIGKILL)
            if victim.wait() == -signal.SIGKILL:
                self.report.kills += 1
            else:
                victim = None  # it had just finished by itself
            if others:
                assert store is not None
                try:
                    self.check(killed=True, frozen_store=store)
                finally:
                    store.close()
                    for proc in others:
                        proc.send_signal(signal.SIGCONT)
        if victim is None:
            self.report.runs_finished += 1
        self._check_exits(started, victim)
        # The machine's speed changes under load: keep most steps killed, some not.
        self.window *= 1.05 if victim else 0.8
        if self.check(killed=victim is not None):
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

    def check(self, *, killed: bool, frozen_store: StateStore | None = None) -> bool:
        """Check the store and the execution log; True when every item is done.

        :param frozen_store: given at a kill while the other processes are frozen
            mid-run: the store to read (opened before they froze); their temporary
            files are then no sign of the kill.
        """
        report = self.report
        if self.store_kind == "json" and self.state_dir.is_dir():
            for path in self.state_dir.glob("*.json"):
                try:
                    json.loads(path.read_bytes())
                except ValueError as exc:
                    report.torn_files += 1
                    self._problem(f"torn state file {path}: {exc}")
            if frozen_store is None:
                temps = {p for p in self.state_dir.rglob(".*.tmp")}
                if killed and temps - self.temp_files:
                    report.kills_inside_writes += 1
                self.temp_files = temps
        if self.store_kind == "sqlite" and self.database.exists():
            self._check_database()
        executions = self._new_executions()
        counts = self.counts + Counter((item_id, num) for item_id, num, _ in executions)
        statuses, done, costs = self._load_statuses(frozen_store)
        self._check_one_process_per_item(executions)
        self._check_costs(statuses, costs, killed=killed, done=done)
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
                self._problem(f"phase {key} executed {new} times between two checks")
            if status_now == "completed" and now == 0:
                self._problem(f"phase {key} completed without executing")
                report.damaged_outputs += 1
            if status_now == "pending" and now > 0:
                self._problem(f"phase {key} executed but its state says pending")
                report.unexpected_reruns += 1
        self.counts, self.statuses = counts, statuses
        return done

    def _load_statuses(
        self, store: StateStore | None
    ) -> tuple[dict[tuple[str, int], str], bool, dict[str, float]]:
        """Every item's phase statuses, loaded through the store; checks the outputs.
        Returns them, whether every item is done and each item's recorded cost."""
        from pipekit.outcomes import StateFileError
        from pipekit.outcomes import UsageError
        from pipekit.state.manager import PipelineStateManager

        report = self.report
        statuses: dict[tuple[str, int], str] = {}
        costs: dict[str, float] = {}
        try:
            opened = store or self.open_store()
        except (UsageError, sqlite3.Error) as exc:
            report.torn_files += 1
            self._problem(f"store cannot be opened: {exc}")
            return statuses, False, costs
        done = True
        try:
            for item_id in self.items:
                manager = PipelineStateManager(item_id, opened)
                try:
                    loaded = manager.load_state()
                except (StateFileError, sqlite3.Error) as exc:
                    report.torn_files += 1
                    self._problem(f"state of {item_id!r} does not load: {exc}")
                    done = False
                    continue
                if not loaded:
                    done = False
                    continue
                state = manager.state
                costs[item_id] = state.total_cost_usd
                done = done and state.is_done
                for num, phase in state.phases.items():
                    statuses[(item_id, num)] = phase.status
                    if phase.status == "completed" and state.phase_outputs.get(num) != self.expected(item_id, num):
                        report.damaged_outputs += 1
                        self._problem(f"output of phase {num} of {item_id!r} is damaged")
        finally:
            if store is None:
                opened.close()
        return statuses, done, costs

    def _check_costs(
        self, statuses: dict[tuple[str, int], str], costs: dict[str, float], *, killed: bool, done: bool
    ) -> None:
        """Recorded cost never above what was paid; at a round's end, never below
        what the kept parts recorded (each once)."""
        paid: defaultdict[str, float] = defaultdict(float)
        parts: dict[tuple[str, int, int], float] = {}
        if self.paid.exists():
            lines = self.paid.read_bytes()
            for item_id, num, part, cost in map(json.loads, lines[: lines.rfind(b"\n") + 1].decode().splitlines()):
                paid[item_id] += cost
                parts[(item_id, num, part)] = cost
        if killed and any(status == "in_progress" and (i, n, 0) in parts for (i, n), status in statuses.items()):
            self.report.kills_after_checkpoint_cost += 1
        for item_id, recorded in costs.items():
            if recorded > paid[item_id] + 1e-9:
                self.report.cost_mismatches += 1
                self._problem(f"{item_id!r} recorded ${recorded} but paid ${paid[item_id]}")
        if not done:
            return
        for item_id, recorded in costs.items():
            owed = sum(cost for (i, _, _), cost in parts.items() if i == item_id)
            self.report.checkpoint_cost_usd += owed
            self.report.recorded_cost_usd += recorded
            if recorded < owed - 1e-9:
                self.report.cost_mismatches += 1
                self._problem(f"{item_id!r} recorded ${recorded} but its kept parts recorded ${owed}")

    def _check_database(self) -> None:
        try:
            with contextlib.closing(sqlite3.connect(self.database, timeout=60)) as db:
                verdict = db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as exc:
            verdict = [(str(exc),)]
        if verdict != [("ok",)]:
            self.report.torn_files += 1
            self._problem(f"database {self.database} fails its integrity check: {verdict[:5]}")

    def _check_one_process_per_item(self, executions: list[tuple[str, int, int]]) -> None:
        """Between two checks no process died, so each item's phases ran in one process."""
        pids: defaultdict[str, set[int]] = defaultdict(set)
        for item_id, _, pid in executions:
            pids[item_id].add(pid)
        for item_id, item_pids in pids.items():
            if len(item_pids) > 1:
                self.report.concurrent_executions += 1
                runs = [(num, pid) for i, num, pid in executions if i == item_id]
                self._problem(f"item {item_id!r} run by processes {sorted(item_pids)}: (phase, pid) {runs}")

    def _new_executions(self) -> list[tuple[str, int, int]]:
        """The executions ``(item_id, phase, pid)`` logged since the last check, in order."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as log:
            log.seek(self.log_read)
            data = log.read()
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
        self.log_read += len(data)
        return [(item_id, num, pid) for item_id, num, pid in map(json.loads, data.decode().splitlines())]

    def _problem(self, text: str) -> None:
        if len(self.report.problems) < 50:
            self.report.problems.append(text)


def _finished_by(proc: subprocess.Popen[str], deadline: float) -> bool:
    """Wait for ``proc`` until ``deadline``; True if it exited."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _freeze(proc: subprocess.Popen[str]) -> None:
    """SIGSTOP ``proc`` and wait until it is stopped (or has exited; it stays unreaped)."""
    proc.send_signal(signal.SIGSTOP)
    with contextlib.suppress(ChildProcessError):  # it had just exited, and was reaped
        os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)


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
    parser.add_argument(
        "--store", choices=("json", "sqlite", "postgres"), default="json", help="state store (default json)"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="pipekit processes run together on the same store (default 1)"
    )
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
            store=option.store,
            processes=option.processes,
        )
    summary = {k: v for k, v in asdict(report).items() if k != "problems"}
    print(json.dumps(summary, indent=2))
    for problem in report.problems:
        print("problem:", problem, file=sys.stderr)
    print(
        f"{report.kills} kills survived, {report.torn_files} torn files, "
        f"{report.reexecuted_completed} re-executed completed phases, "
        f"{report.unexpected_reruns} unexpected re-runs, {report.concurrent_executions} items run by two "
        f"processes at once, {report.damaged_outputs} damaged outputs, {report.bad_exits} bad exits "
        f"({report.kills_inside_writes} kills left a write's temp file behind; "
        f"{report.in_flight_reruns} in-flight phases re-run; {report.rounds} rounds finished); "
        f"{report.kills_after_checkpoint_cost} kills after checkpoints recorded cost, "
        f"{report.cost_mismatches} cost mismatches (recorded ${report.recorded_cost_usd:.4f} "
        f"of ${report.checkpoint_cost_usd:.4f} kept in checkpoints)"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
