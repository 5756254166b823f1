"""Drivers sharing a PostgreSQL store claim their items in chunks, not one lock per item."""

from __future__ import annotations

from collections import Counter
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

from claiming_drivers import PIPELINE
from claiming_drivers import blocked_driver
from claiming_drivers import communicate
from claiming_drivers import drivers
from claiming_drivers import executions
import pytest

from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


def statement_counts(path: Path) -> list[dict[str, Any]]:
    """The counts each store of the drivers appended at its close (``PIPEKIT_COUNT_STATEMENTS``)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_three_drivers_claim_six_hundred_items_in_chunks_and_run_every_phase_once(
    pipetester: PipeTester, postgres_store_url: str, tmp_path: Path
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:03d}" for n in range(600)]
    pipetester.make_items(*ids)
    counts = tmp_path / "statements.jsonl"
    env = {"PIPEKIT_STORE": postgres_store_url, "PIPEKIT_COUNT_STATEMENTS": str(counts)}
    procs = drivers(pipetester, 3, "-j", "50", env=env)
    outs = communicate(procs)
    assert [proc.returncode for proc in procs] == [0, 0, 0], outs
    assert executions(pipetester) == Counter({(i, n): 1 for i in ids for n in (1, 2)})
    finished_by = Counter(
        json.loads(line)["item_id"] for out, _ in outs for line in out.splitlines()
        if json.loads(line)["event"] == "item_finish"
    )
    assert sorted(finished_by) == ids and set(finished_by.values()) == {1}
    per_driver = statement_counts(counts)
    assert len(per_driver) == 3, per_driver
    # No item was locked on its own, and the claims are O(items / chunk): a chunk of 50
    # (-j 50) costs one or two statements per driver that reaches it. One lock per item
    # would have been 600 statements at least.
    assert sum(d.get("lock", 0) for d in per_driver) == 0, per_driver
    claims = sum(d.get("claim", 0) for d in per_driver)
    releases = sum(d.get("release", 0) for d in per_driver)
    assert claims <= 3 * 2 * (600 // 50) + 30, per_driver  # + a few tries while waiting at the end
    # Released leases are deleted in batches by each driver's heartbeat thread; how many
    # batches depends on timing (22 were seen under load), one per item would be 600.
    assert releases <= 600 // 10, per_driver


@pytest.mark.slow
def test_claim_1_in_the_store_url_keeps_one_lease_per_item(
    pipetester: PipeTester, postgres_store_url: str, tmp_path: Path
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:02d}" for n in range(40)]
    pipetester.make_items(*ids)
    counts = tmp_path / "statements.jsonl"
    env = {"PIPEKIT_STORE": f"{postgres_store_url}&claim=1", "PIPEKIT_COUNT_STATEMENTS": str(counts)}
    procs = drivers(pipetester, 2, "-j", "8", env=env)
    outs = communicate(procs)
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert executions(pipetester) == Counter({(i, n): 1 for i in ids for n in (1, 2)})
    per_driver = statement_counts(counts)
    assert sum(d.get("claim", 0) for d in per_driver) == 0, per_driver
    assert sum(d.get("lock", 0) for d in per_driver) >= 40, per_driver


def test_a_bad_claim_size_in_the_store_url_is_a_usage_error(pipetester: PipeTester, postgres_store_url: str) -> None:
    pipetester.make_pipeline(PIPELINE)
    for bad in ("0", "lots", "-3"):
        result = subprocess.run(
            [sys.executable, "-m", "pipekit", "pipeline.py", "--item", "a",
             "--store", f"{postgres_store_url}&claim={bad}"],
            cwd=pipetester.path, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 4, result.stderr
        assert f"claim must be a whole number of items (1 or more), not {bad!r}" in result.stderr


@pytest.mark.slow
def test_the_claim_of_a_killed_driver_is_taken_over_once_its_lease_expires(
    pipetester: PipeTester, postgres_store_url: str
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:02d}" for n in range(40)]
    pipetester.make_items(*ids)
    url = f"{postgres_store_url}&lease=8"  # outlasts the second driver's start on a busy machine
    # -j 4: it claims four items at a time. Items 04-06 block three slots; 07 finishes,
    # so it claims 08-11 and 08 blocks the last slot: 09-11 stay claimed, never started.
    blocked = ["item-04", "item-05", "item-06", "item-08"]
    first = blocked_driver(pipetester, blocked, "--items", "items.txt", "-j", "4", env={"PIPEKIT_STORE": url})
    store = open_store_url(url)
    try:
        held = {row[0] for row in store._query(  # type: ignore[attr-defined]
            "SELECT item_id FROM pipekit_leases WHERE pipeline = %s", (store.pipeline,))}
    finally:
        store.close()
    claimed_unstarted = {"item-09", "item-10", "item-11"}
    done_by_first = executions(pipetester)
    # (besides those of finished items whose release waits for the next batch of releases)
    assert set(blocked) | claimed_unstarted <= held <= set(blocked) | claimed_unstarted | {
        item_id for item_id, num in done_by_first if num == 2}, held
    assert not {item_id for item_id, _ in done_by_first} & claimed_unstarted
    os.kill(first.pid, signal.SIGKILL)
    # Not reaped: a zombie's pid and start time still look alive, as a driver on another
    # machine would, so only the lease's expiry frees its claim.
    started = time.monotonic()
    second = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "4", env={"PIPEKIT_STORE": url})
    out, err = second.communicate(timeout=120)
    first.communicate(timeout=30)
    assert second.returncode == 0, err
    assert time.monotonic() - started >= 1.0  # it waited for the lease
    assert "item 'item-04' is being run by another pipekit process" in err, err
    runs = executions(pipetester)
    # The killed driver's blocked phases never finished: run again; nothing else twice.
    assert runs == Counter({(i, n): 1 for i in ids for n in (1, 2)}) + Counter({(i, 1): 1 for i in blocked}), runs
    finished = {json.loads(line)["item_id"] for line in out.splitlines() if json.loads(line)["event"] == "item_finish"}
    assert finished == set(ids) - {item_id for item_id, num in done_by_first if num == 2}


@pytest.mark.slow
@pytest.mark.parametrize("skip", [False, True])
def test_items_claimed_by_another_driver_are_waited_for_or_skipped_with_skip_busy(
    pipetester: PipeTester, postgres_store_url: str, skip: bool
) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = ["held", *(f"free-{n}" for n in range(9))]
    pipetester.make_items(*ids)
    env = {"PIPEKIT_STORE": postgres_store_url, "BLOCK_ON": "held"}
    first = blocked_driver(pipetester, ["held"], "--item", "held", env=env)
    # -j 4: the second driver claims four items at a time, 'held' among the first.
    second = pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "4", *(["--skip-busy"] * skip), env=env)
    if skip:
        out, err = second.communicate(timeout=120)
        (pipetester.path / "go").touch()
    else:
        deadline = time.monotonic() + 60
        while executions(pipetester)[("free-8", 2)] == 0:  # the free items done: now it waits for 'held'
            assert second.poll() is None and time.monotonic() < deadline, second.communicate()
            time.sleep(0.02)
        time.sleep(0.5)
        assert second.poll() is None, second.communicate()
        (pipetester.path / "go").touch()
        out, err = second.communicate(timeout=120)
    first.communicate(timeout=60)
    assert first.returncode == 0
    finished = [json.loads(line)["item_id"] for line in out.splitlines() if json.loads(line)["event"] == "item_finish"]
    assert sorted(finished) == sorted(ids[1:])
    if skip:
        assert second.returncode == 1, err
        assert "item 'held' is being run by another pipekit process; skipped" in err
        assert "--skip-busy: 1 items left unfinished to another pipekit process" in err
    else:
        assert second.returncode == 0, err
        assert "item 'held' is being run by another pipekit process (host " in err and "; waiting for it" in err
    assert executions(pipetester) == Counter({(i, n): 1 for i in ids for n in (1, 2)})


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "blocked"), [("1", ["first"]), ("2", ["first", "second"])])
def test_a_lease_release_stuck_on_the_server_does_not_stop_the_run(
    pipetester: PipeTester, postgres_store_url: str, workers: str, blocked: list[str]
) -> None:
    """-j 1 takes one lease per item; -j 2 claims two at a time. Either way the
    release of a finished item's lease is a round trip that must not stall the
    run: here the server holds it (a row lock), as a slow or busy server would."""
    import psycopg

    pipetester.make_pipeline(PIPELINE)
    ids = [*blocked, *(f"next-{n:02d}" for n in range(12))]
    pipetester.make_items(*ids)
    driver = blocked_driver(
        pipetester, blocked, "--items", "items.txt", "-j", workers, env={"PIPEKIT_STORE": postgres_store_url}
    )
    store = open_store_url(postgres_store_url)
    pipeline, conninfo = store.pipeline, store.conninfo  # type: ignore[attr-defined]
    store.close()
    with psycopg.connect(conninfo) as holding:
        # Deleting this lease row now waits for this transaction; the item's fenced
        # writes (FOR KEY SHARE) do not.
        locked = holding.execute(
            "SELECT item_id FROM pipekit_leases WHERE pipeline = %s AND item_id = %s FOR NO KEY UPDATE",
            (pipeline, blocked[0]),
        ).fetchall()
        assert locked == [(blocked[0],)]
        (pipetester.path / "go").touch()
        deadline = time.monotonic() + 30
        try:
            # The blocked items end and give up their leases; the others still run, and their
            # states are saved (a handler logs its execution a moment before its state is on disk).
            def finished() -> list[str]:
                rows = holding.execute(
                    "SELECT item_id FROM pipekit_items WHERE pipeline = %s AND next_phase IS NULL", (pipeline,)
                ).fetchall()
                return sorted(item_id for (item_id,) in rows)

            while any(executions(pipetester)[(item_id, 2)] == 0 for item_id in ids) or finished() != sorted(ids):
                assert driver.poll() is None, driver.communicate()
                assert time.monotonic() < deadline, f"the run stopped at {sorted(executions(pipetester))}, {finished()}"
                time.sleep(0.05)
        finally:
            holding.rollback()
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 0, err
        left = holding.execute("SELECT item_id FROM pipekit_leases WHERE pipeline = %s", (pipeline,)).fetchall()
        assert left == []  # the exit deleted every lease it held or had released
    assert executions(pipetester) == Counter({(i, n): 1 for i in ids for n in (1, 2)})


@pytest.mark.parametrize("take", ["claim", "try_lock"])
def test_an_item_taken_again_keeps_its_new_lease_when_its_old_release_lands(postgres_store_url: str, take: str) -> None:
    """A driver whose lease was taken over releases it (a late DELETE of its own row,
    which no longer exists), then takes the item again once it is free: the release
    must land before the new lease, never end it (another driver would run the item
    while this one does)."""
    mine, rival = open_store_url(postgres_store_url), open_store_url(postgres_store_url)
    try:
        lease = mine.claim(["a"])["a"]
        mine._query(  # type: ignore[attr-defined]  # it expired (a paused driver) ...
            "UPDATE pipekit_leases SET expires_at = now() - interval '1 second' WHERE owner = %s", (mine.owner,))  # type: ignore[attr-defined]
        theirs = rival.try_lock("a")  # ... and the rival took it over, ran it, and let it go
        assert theirs is not None
        theirs.release()
        lease.release_soon()  # the first driver gives up the lease it lost
        again = mine.claim(["a"]).get("a") if take == "claim" else mine.try_lock("a")
        assert again is not None
        mine._wake.set()  # type: ignore[attr-defined]  # whatever release is still to go goes now
        time.sleep(0.5)
        owners = rival._query(  # type: ignore[attr-defined]
            "SELECT owner FROM pipekit_leases WHERE pipeline = %s AND item_id = 'a'", (rival.pipeline,))  # type: ignore[attr-defined]
        assert owners == [(mine.owner,)]  # type: ignore[attr-defined]
        assert rival.try_lock("a") is None
        mine.save("a", {"item_id": "a"})  # still fenced and held
    finally:
        mine.close()
        rival.close()
