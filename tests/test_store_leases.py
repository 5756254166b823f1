"""Leases that fence writes, and holders named so that a live one is never taken for dead."""

from __future__ import annotations

from dataclasses import replace
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from pipekit.state.holder import Holder
from pipekit.state.holder import LeaseLostError
from pipekit.state.holder import holder_is_gone
from pipekit.state.holder import process_start_time
from pipekit.state.holder import this_holder
from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


PIPELINE = '''
    import json, os, time
    from pipekit import phase

    def log(item_id, name):
        with open("executions.log", "a") as f:
            f.write(json.dumps([os.getpid(), item_id, name]) + "\\n")

    @phase(1)
    def research(item_id):
        log(item_id, "research")
        if os.environ.get("PAUSE_IN_RESEARCH"):
            open("in-research", "w").close()
            time.sleep(1.5)  # the test stops this process here
        return f"notes by {os.getpid()}"

    @phase(2)
    def draft(item_id, research):
        log(item_id, "draft")
        return research.upper()
'''


def executions(path: Path) -> list[list[Any]]:
    log = path / "executions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", ["1", "2"])  # -j 1 takes each item's lease; -j 2 claims them in chunks
def test_a_driver_paused_past_its_lease_does_not_overwrite_the_driver_that_took_over(
    pipetester: PipeTester, postgres_store_url: str, workers: str
) -> None:
    pipetester.make_pipeline(PIPELINE)
    url = f"{postgres_store_url}&lease=1"
    command = [sys.executable, "-m", "pipekit", "pipeline.py", "--item", "a", "--store", url, "-j", workers]
    paused = subprocess.Popen(
        command, cwd=pipetester.path, env={**os.environ, "PAUSE_IN_RESEARCH": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(pipetester.path / "in-research")
        paused.send_signal(signal.SIGSTOP)  # a laptop lid closed mid-phase
        time.sleep(2.5)  # its lease (1 s) expires
        rival = subprocess.run(command, cwd=pipetester.path, capture_output=True, text=True, timeout=120)
        assert rival.returncode == 0, rival.stderr
    finally:
        paused.send_signal(signal.SIGCONT)
    _, stderr = paused.communicate(timeout=120)
    runs = executions(pipetester.path)
    first, second = paused.pid, runs[-1][0]
    # the resumed driver finished its phase, could not save it, and ran nothing more
    assert runs == [[first, "a", "research"], [second, "a", "research"], [second, "a", "draft"]], runs
    assert "lease on item 'a' expired and another driver took it over" in stderr, stderr
    assert paused.returncode == 0, stderr
    store = open_store_url(postgres_store_url)
    try:
        document = store.load("a")
    finally:
        store.close()
    assert document is not None
    assert document["phase_outputs"] == {"1": f"notes by {second}", "2": f"NOTES BY {second}"}


def test_every_write_for_a_lost_lease_is_refused_and_writes_nothing(postgres_store_url: str) -> None:
    base = f"{postgres_store_url}&lease=0.5"
    mine, rival = open_store_url(base), open_store_url(base)
    try:
        lease = mine.try_lock("a")
        assert lease is not None
        mine.save("a", {"item_id": "a", "mine": True})
        mine._stop.set()  # type: ignore[attr-defined]  # stop renewing, as a paused process does
        time.sleep(1)
        taken = rival.try_lock("a")
        assert taken is not None
        rival.save("a", {"item_id": "a", "rival": True})
        rival.save_checkpoint("a", "p", "k", 1)
        for write in (
            lambda: mine.save("a", {"item_id": "a", "mine": "again"}),
            lambda: mine.save_many([("a", {"item_id": "a", "mine": "batched"})]),
            lambda: mine.save_checkpoint("a", "p", "k", 2),
            lambda: mine.drop_checkpoints("a", "p"),
            lambda: mine.save_group([("a", {"item_id": "a", "mine": "grouped"})], [("a", "p")]),
        ):
            with pytest.raises(LeaseLostError) as caught:
                write()
            assert caught.value.item_ids == ["a"]
        assert rival.load("a") == {"item_id": "a", "rival": True}
        assert rival.load_checkpoints("a", "p") == {"k": 1}
        # a batch writes the items still held and names the lost one
        assert mine.try_lock("b") is not None
        with pytest.raises(LeaseLostError) as caught:
            mine.save_many([("a", {"item_id": "a"}), ("b", {"item_id": "b", "mine": True})])
        assert caught.value.item_ids == ["a"]
        assert rival.load("b") == {"item_id": "b", "mine": True}
        # a group commit likewise, and the checkpoints it ends go only for the items it wrote
        mine.save_checkpoint("b", "p", "k", 3)
        with pytest.raises(LeaseLostError) as caught:
            mine.save_group([("a", {"item_id": "a"}), ("b", {"item_id": "b", "group": True})], [("a", "p"), ("b", "p")])
        assert caught.value.item_ids == ["a"]
        assert rival.load("b") == {"item_id": "b", "group": True}
        assert rival.load_checkpoints("b", "p") == {}
        assert rival.load_checkpoints("a", "p") == {"k": 1}
        # an item this store never leased (migrate, reset of a free item) is written as before
        mine.save("c", {"item_id": "c"})
        assert rival.load("c") == {"item_id": "c"}
        lease.release()  # does not free the rival's lease
        assert open_store_url(base).try_lock("a") is None
    finally:
        mine.close()
        rival.close()


@pytest.mark.parametrize("release", ["release", "release_soon", "claimed"])
def test_a_write_after_this_driver_released_the_lease_is_refused(
    store_url: str | None, tmp_path: Path, release: str
) -> None:
    # A writer thread's save queued behind the release, or a thread the run abandoned,
    # lands after the lock is gone and another driver holds the item. (Two store
    # objects are two drivers: flocks are per open file, even in one process.)
    url = f"{store_url}&lease=3" if store_url and store_url.startswith("postgresql") else store_url
    url = url or f"json:{tmp_path / 'state'}"  # (a claimed item's released lease goes at the next renewal)
    mine, rival = open_store_url(url, pipeline="p"), open_store_url(url, pipeline="p")
    try:
        lease = mine.claim(["a"])["a"] if release == "claimed" else mine.try_lock("a")
        assert lease is not None
        mine.save("a", {"item_id": "a", "by": "mine"})
        mine.save_checkpoint("a", "p", "k", "mine")
        mine.write_output("a", 1, "x" * 10)
        lease.release() if release == "release" else lease.release_soon()
        deadline = time.monotonic() + 10
        while (taken := rival.try_lock("a")) is None:  # once the released row is deleted
            assert time.monotonic() < deadline, "the released lease was never deleted"
            time.sleep(0.02)
        rival.save("a", {"item_id": "a", "by": "rival"})
        rival.save_checkpoint("a", "p", "k", "rival")
        ref = rival.write_output("a", 1, "x" * 10)
        for write in (
            lambda: mine.save("a", {"item_id": "a", "by": "mine, late"}),
            lambda: mine.save_many([("a", {"item_id": "a", "by": "mine, batched"})]),
            lambda: mine.save_group([("a", {"item_id": "a", "by": "mine, grouped"})], [("a", "p")]),
            lambda: mine.save_checkpoint("a", "p", "k", "mine, late"),
            lambda: mine.save_checkpoints("a", "p", {"k": "mine, many"}),
            lambda: mine.drop_checkpoints("a", "p"),
            lambda: mine.delete_output("a", ref),
        ):
            with pytest.raises(LeaseLostError) as caught:
                write()
            assert caught.value.item_ids == ["a"]
        assert rival.load("a") == {"item_id": "a", "by": "rival"}
        assert rival.load_checkpoints("a", "p") == {"k": "rival"}
        assert rival.read_output("a", ref) == "x" * 10
        taken.release()
        # leased again, the item is this driver's to write once more
        again = mine.try_lock("a")
        assert again is not None
        mine.save("a", {"item_id": "a", "by": "mine, again"})
        assert rival.load("a") == {"item_id": "a", "by": "mine, again"}
        again.release()
    finally:
        mine.close()
        rival.close()


# -- who holds a lease ---------------------------------------------------------------------------


def insert_lease(store: Any, item_id: str, holder: Holder | None, expires_in: str = "1 hour") -> None:
    store._query(
        """INSERT INTO pipekit_leases (pipeline, item_id, owner, host, pid, holder, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s, now() + %s::interval)""",
        (store.pipeline, item_id, f"other:{item_id}", store.holder.host, holder.pid if holder else 1,
         holder.to_json() if holder else None, expires_in),
    )


def test_a_live_holder_in_another_pid_namespace_is_not_taken_before_expiry(postgres_store_url: str) -> None:
    store = open_store_url(postgres_store_url)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = this_holder()
        assert me.boot_id and me.pid_namespace and me.start_time, "this test needs /proc"
        alive = replace(me, pid=sleeper.pid, start_time=process_start_time(sleeper.pid))
        # same host, a pid alive here, but the holder lives in another namespace or boot:
        # kill(pid, 0) here says nothing about it, so only expiry frees the item
        insert_lease(store, "container", replace(alive, pid=999_999, pid_namespace="pid:[1]"))
        insert_lease(store, "other-boot", replace(alive, pid=999_999, boot_id="0000-other-boot"))
        insert_lease(store, "older-driver", None)  # wrote no identity
        insert_lease(store, "alive", alive)
        for item_id in ("container", "other-boot", "older-driver", "alive"):
            assert store.try_lock(item_id) is None, item_id
        # same namespace and boot, and the pid is free or reused: the holder died, take it at once
        sleeper.kill()
        sleeper.wait()
        insert_lease(store, "dead", alive)
        insert_lease(store, "reused-pid", replace(me, start_time=(me.start_time or 0) - 1))
        for item_id in ("dead", "reused-pid"):
            assert store.try_lock(item_id) is not None, item_id
        stored = store._query(  # type: ignore[attr-defined]
            "SELECT holder FROM pipekit_leases WHERE pipeline = %s AND item_id = 'dead'", (store.pipeline,)
        )
        assert Holder.from_json(stored[0][0]) == me
    finally:
        sleeper.kill()
        sleeper.wait()
        store.close()


def test_a_holder_is_gone_only_when_proc_proves_it(tmp_path: Path) -> None:
    me = this_holder()
    dead = replace(me, pid=999_999_999)
    assert holder_is_gone(dead, me)
    assert not holder_is_gone(me, me)
    assert not holder_is_gone(replace(dead, host="elsewhere"), me)
    assert not holder_is_gone(replace(dead, start_time=None), me)
    assert not holder_is_gone(dead, replace(me, pid_namespace=None))  # no /proc here: wait for expiry
    assert not holder_is_gone(None, me)
    assert Holder.from_json("not json") is None and Holder.from_json(None) is None
    assert Holder.from_json(me.to_json()) == me
    odd = tmp_path / "proc" / "42"
    odd.mkdir(parents=True)
    (odd / "stat").write_text("42 (a) b (c) S " + " ".join(["0"] * 18) + " 777 0 0\n")
    assert process_start_time(42, str(tmp_path / "proc")) == 777


# -- a write after the release ---------------------------------------------------------------------

ABANDONED = '''
    import os, time
    from pathlib import Path
    from pipekit import phase

    def wait(name):
        while not Path(name).exists():
            time.sleep(0.02)

    @phase(1, timeout=0.5)
    def research(item_id, ctx):
        if os.environ.get("LATE") and item_id == "a":
            wait("a-may-go-on")  # long past the timeout: the run abandoned this thread
            try:
                ctx.checkpoint("notes", lambda: f"late notes by {os.getpid()}")
            finally:
                Path("a-late-write-tried").touch()
        return ctx.checkpoint("notes", lambda: f"notes by {os.getpid()}")

    @phase(2, timeout=None)
    def draft(item_id, research):
        if os.environ.get("LATE"):
            wait("b-may-end")  # keeps the first run alive while its abandoned thread goes on
        return research.upper()
'''


def test_a_thread_abandoned_by_a_timeout_cannot_write_after_the_item_was_released(
    pipetester: PipeTester, store_url: str | None
) -> None:
    pipetester.make_pipeline(ABANDONED)
    store_args = ["--store", store_url] if store_url else []
    command = [sys.executable, "-m", "pipekit", "run", "pipeline.py", *store_args]
    first = subprocess.Popen(
        [*command, "--item", "a", "--item", "b", "-j", "2"], cwd=pipetester.path,
        env={**os.environ, "LATE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    store = open_store_url(store_url or f"json:{pipetester.path / 'state' / 'pipeline'}", pipeline="pipeline")
    try:
        deadline = time.monotonic() + 60
        while (saved := store.load("a")) is None or saved["phases"]["1"]["status"] != "failed":
            assert time.monotonic() < deadline and first.poll() is None, "phase 1 of 'a' never timed out"
            time.sleep(0.05)
        # the first run gave 'a' up (its critical phase timed out); another run finishes it
        second = subprocess.run([*command, "--item", "a"], cwd=pipetester.path, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        (pipetester.path / "a-may-go-on").touch()
        wait_for(pipetester.path / "a-late-write-tried")
        (pipetester.path / "b-may-end").touch()
        _, stderr = first.communicate(timeout=60)
        assert first.returncode == 1, stderr  # its own attempt at 'a' failed (timed out)
        # the abandoned thread's checkpoint never landed: the completed phase keeps none,
        # and a rerun of the phase computes its notes again instead of reusing the stale ones
        assert store.load_checkpoints("a", "research") == {}
        again = subprocess.run(
            [*command, "--item", "a", "--from-phase", "1"], cwd=pipetester.path, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        outputs = store.load("a")["phase_outputs"]  # type: ignore[index]
        assert outputs["1"].startswith("notes by "), outputs
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
        store.close()
