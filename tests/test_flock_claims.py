"""The flock stores (SQLite, JSON) claim a run's items in chunks, off the event loop.

A lock file's create can wait behind another write's fsync; taken on the event
loop's thread it stopped every item in flight. The chunk's lock files are now
taken in one call on the writer's threads, and every promise of the locks still
holds: two drivers never run one item at once, a killed driver's flocks die
with it, ``pipekit status`` names who runs an item.
"""

from __future__ import annotations

from collections import Counter
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from claiming_drivers import PIPELINE
from claiming_drivers import communicate
from claiming_drivers import drivers
from claiming_drivers import executions
import pytest

from pipekit.testing import PipeTester


#: A lock file whose create, or a state read, waits (as behind another write's fsync) until
#: another item's phase has run: on the event loop's thread, no phase could run meanwhile.
SLOW_LOCK_PIPELINE = '''
    import asyncio, os, threading, time
    from pathlib import Path
    from pipekit import phase
    from pipekit.state.jsondir import JsonDirStore
    from pipekit.state.sqlite import SqliteStore

    def wait_for_the_witness():
        Path("slow-started").touch()
        deadline = time.monotonic() + 3
        while not Path("witness-ran").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        Path("slow-saw").write_text("yes" if Path("witness-ran").exists() else "no")

    whole_run_read = threading.local()

    def slowed(real):
        def call(self, item_id):
            if item_id == "slow" and not getattr(whole_run_read, "on", False):
                wait_for_the_witness()
            return real(self, item_id)
        return call

    def slowed_many(real):
        def call(self, item_ids):
            item_ids = list(item_ids)
            if item_ids == ["slow"]:
                wait_for_the_witness()
                return real(self, item_ids)
            whole_run_read.on = True  # the start-of-run read of every item is not slowed
            try:
                return list(real(self, item_ids))
            finally:
                whole_run_read.on = False
        return call

    for store_class in (JsonDirStore, SqliteStore):
        if os.environ["SLOW_AT"] == "lock":
            store_class.try_lock = slowed(store_class.try_lock)
        else:
            store_class.load = slowed(store_class.load)
            store_class.load_many = slowed_many(store_class.load_many)

    @phase(1)
    async def one(item_id):
        if item_id == "witness":
            deadline = time.monotonic() + 10
            while not Path("slow-started").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            Path("witness-ran").touch()
        return "1"

    @phase(2)
    def two(item_id, one):
        return one + "2"
'''


def wait_for(paths: list[Path], proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)


@pytest.mark.slow
def test_two_drivers_on_one_sqlite_store_run_every_phase_of_two_hundred_items_once(
    pipetester: PipeTester, tmp_path: Path
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:03d}" for n in range(200)]
    pipetester.make_items(*ids)
    env = {"PIPEKIT_STORE": f"sqlite:{tmp_path / 'state.db'}"}
    procs = drivers(pipetester, 2, "-j", "8", env=env)
    outs = communicate(procs)
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert executions(pipetester) == Counter({(i, n): 1 for i in ids for n in (1, 2)})
    finished_by = Counter(
        json.loads(line)["item_id"] for out, _ in outs for line in out.splitlines()
        if json.loads(line)["event"] == "item_finish"
    )
    assert sorted(finished_by) == ids and set(finished_by.values()) == {1}


@pytest.mark.parametrize("store", ["sqlite", "json"])
@pytest.mark.parametrize("slow_at", ["lock", "read"])
def test_an_item_runs_its_phase_while_another_items_lock_or_state_is_slow_to_come(
    pipetester: PipeTester, tmp_path: Path, store: str, slow_at: str
) -> None:
    pipetester.make_pipeline(SLOW_LOCK_PIPELINE)
    # -j 2: witness and quick are claimed first; quick finishes, so slow's lock is taken
    # (and its state read) while witness waits in its (async) phase for that to start.
    pipetester.make_items("witness", "quick", "slow")
    url = f"sqlite:{tmp_path / 'state.db'}" if store == "sqlite" else f"json:{tmp_path / 'state'}"
    env = {"PIPEKIT_STORE": url, "SLOW_AT": slow_at}
    proc = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "2", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (pipetester.path / "slow-saw").read_text() == "yes"
    finished = {json.loads(line)["item_id"] for line in out.splitlines() if json.loads(line)["event"] == "item_finish"}
    assert finished == {"witness", "quick", "slow"}
    rerun = subprocess.run(
        [sys.executable, "-m", "pipekit", "pipeline.py", "--items", "items.txt", "--jsonl"],
        cwd=pipetester.path, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )
    assert rerun.returncode == 0 and '"phase_start"' not in rerun.stdout, rerun.stderr


@pytest.mark.slow
def test_a_killed_drivers_claimed_items_are_free_at_once_and_status_names_who_runs_one(
    pipetester: PipeTester, tmp_path: Path
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:02d}" for n in range(40)]
    pipetester.make_items(*ids)
    env = {"PIPEKIT_STORE": f"sqlite:{tmp_path / 'state.db'}"}
    # -j 4: items 04-06 block three slots; 07 finishes, so the driver claims 08-11 and 08
    # blocks the last slot: 09-11 stay claimed (their lock files held), never started.
    blocked = ["item-04", "item-05", "item-06", "item-08"]
    block = {**env, "BLOCK_ON": ",".join(blocked)}
    first = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "4", env=block)
    wait_for([pipetester.path / f"blocked-{item_id}" for item_id in blocked], first)
    status = subprocess.run(
        [sys.executable, "-m", "pipekit", "status", "pipeline.py", "--item", "item-04"],
        cwd=pipetester.path, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )
    assert status.returncode == 0, status.stderr
    assert f"running: host {os.uname().nodename}, pid {first.pid}," in status.stdout, status.stdout
    probe = subprocess.run(
        [sys.executable, "-m", "pipekit", "pipeline.py", "--items", "items.txt", "-j", "4", "--skip-busy", "--jsonl"],
        cwd=pipetester.path, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )
    # The claimed, unstarted items are held too: a second run skips them with the blocked ones.
    assert probe.returncode == 1, probe.stderr
    for item_id in [*blocked, "item-09", "item-10", "item-11"]:
        assert f"item {item_id!r} is being run by another pipekit process; skipped" in probe.stderr, probe.stderr
    done_before_kill = executions(pipetester)
    assert not {item_id for item_id, _ in done_before_kill} & {"item-09", "item-10", "item-11"}
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    second = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "4", env=env)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "being run by another pipekit process" not in err, err  # the flocks died with the driver
    # The killed driver's blocked phases never finished: run again; nothing else twice.
    runs = executions(pipetester)
    assert runs == Counter({(i, n): 1 for i in ids for n in (1, 2)}) + Counter({(i, 1): 1 for i in blocked}), runs


#: Items "a" and "b" wait in their phase (holding both slots at -j 2) until item "e"'s lock is taken.
CLAIM_AHEAD_PIPELINE = '''
    import asyncio, time
    from pathlib import Path
    from pipekit import phase
    from pipekit.state.sqlite import SqliteStore

    real_try_lock = SqliteStore.try_lock

    def try_lock(self, item_id):
        if item_id == "e":
            Path("e-lock-started").touch()
        return real_try_lock(self, item_id)

    SqliteStore.try_lock = try_lock

    @phase(1)
    async def one(item_id):
        if item_id in ("a", "b"):
            deadline = time.monotonic() + 3
            while not Path("e-lock-started").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            Path(f"{item_id}-saw").write_text("yes" if Path("e-lock-started").exists() else "no")
        return "1"
'''


def test_the_next_chunk_is_claimed_while_the_last_ones_items_wait_for_a_slot(
    pipetester: PipeTester, tmp_path: Path
) -> None:
    pipetester.make_pipeline(CLAIM_AHEAD_PIPELINE)
    # -j 2, chunks of two: a and b hold both slots until e's lock is taken. c and d wait
    # for a slot, claimed; e and f are claimed meanwhile, not once c and d have started:
    # a slot that frees up never waits for a claim.
    pipetester.make_items("a", "b", "c", "d", "e", "f")
    env = {"PIPEKIT_STORE": f"sqlite:{tmp_path / 'state.db'}"}
    proc = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "2", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [(pipetester.path / f"{item_id}-saw").read_text() for item_id in "ab"] == ["yes", "yes"]
    finished = [json.loads(line)["item_id"] for line in out.splitlines() if json.loads(line)["event"] == "item_finish"]
    assert sorted(finished) == ["a", "b", "c", "d", "e", "f"]
