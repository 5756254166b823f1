"""A run over items another pipekit process holds: it waits for them (or, with
--skip-busy, skips them and exits 1), and takes over a lease that expired."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
import json
import os
from pathlib import Path
import select
import signal
import socket
import subprocess
import time

import pytest

from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore
from pipekit.testing import PipeTester


HELD = '''
    import json, os, time
    from pathlib import Path
    from pipekit import phase

    def log(item_id, num):
        fd = os.open("executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (json.dumps([item_id, num, os.getpid()]) + "\\n").encode())
        os.close(fd)

    @phase(1)
    def one(item_id):
        log(item_id, 1)
        if item_id == "held":
            Path("held.started").touch()
            while not Path("go").exists():  # held until the test says go
                time.sleep(0.02)
        return "1"

    @phase(2)
    def two(item_id, one):
        log(item_id, 2)
        return one + "2"
'''


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[StateStore]:
    """One store of each kind, opened directly."""
    opened = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="pipeline")
    yield opened
    opened.close()


def test_every_store_names_who_holds_an_item_and_until_when(store: StateStore, store_url: str | None) -> None:
    assert store.lock_holder("a") is None  # never taken
    other = open_store_url(store_url or f"json:{store.location}", pipeline="pipeline")
    try:
        before = time.time()
        lock = other.try_lock("a")
        assert lock is not None
        held = store.lock_holder("a")
        assert held is not None
        assert (held.host, held.pid) == (socket.gethostname(), os.getpid())
        assert held.since is not None and before - 1 <= held.since <= time.time() + 1
        described = held.describe()
        assert described.startswith(f"host {socket.gethostname()}, pid {os.getpid()}, since ")
        if store_url is not None and store_url.startswith("postgresql"):
            assert held.expires_at is not None and time.time() < held.expires_at <= time.time() + 31
            assert ", lease until " in described
        else:
            assert held.expires_at is None and described.endswith("until it ends (its lock has no expiry)")
        lock.release()
        if store_url is not None and store_url.startswith("postgresql"):
            assert store.lock_holder("a") is None  # a released lease is gone
    finally:
        other.close()


def executions(tester: PipeTester) -> Counter[tuple[str, int]]:
    lines = (tester.path / "executions.log").read_text().splitlines()
    return Counter((item_id, num) for item_id, num, _ in map(json.loads, lines))


def wait_for(path: os.PathLike[str], proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def start_holder(pipetester: PipeTester) -> subprocess.Popen[str]:
    """A first run holding item 'held' (in its phase 1) until the file ``go`` exists."""
    pipetester.make_pipeline(HELD)
    pipetester.make_items("held", "free")
    first = pipetester.popen("pipeline.py", "--item", "held")
    wait_for(pipetester.path / "held.started", first)
    return first


def output_until_finished(proc: subprocess.Popen[str], item_id: str, timeout: float = 60) -> str:
    """``proc``'s stdout up to (at least) its JSONL ``item_finish`` of ``item_id``: a run
    slow to start under load gets there late, so a fixed wait would race it. Read from
    the pipe's descriptor, as ``communicate`` reads the rest, so no byte is lost between."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not any(event.get("event") == "item_finish" and event.get("item_id") == item_id
                  for event in _events(b"".join(chunks))):
        assert time.monotonic() < deadline, f"no item_finish of {item_id!r} in {timeout}s: {chunks}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, ("the run ended first", b"".join(chunks), proc.communicate())
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def _events(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def finished_events(out: str) -> list[str]:
    return [event["item_id"] for event in map(json.loads, out.splitlines()) if event["event"] == "item_finish"]


@pytest.mark.slow
@pytest.mark.usefixtures("any_store")
def test_a_second_run_waits_for_the_held_item_and_exits_0_once_it_is_finished(pipetester: PipeTester) -> None:
    first = start_holder(pipetester)
    second = pipetester.popen("pipeline.py", "--items", "items.txt")
    seen = output_until_finished(second, "free")  # it found 'held' held (first in line), then ran 'free'
    time.sleep(0.5)
    # It still waits for the held one instead of exiting.
    assert second.poll() is None, second.communicate()
    (pipetester.path / "go").touch()
    first_out, first_err = first.communicate(timeout=60)
    rest, err = second.communicate(timeout=60)
    out = seen + rest
    assert (first.returncode, second.returncode) == (0, 0), (first_err, err)
    assert f"item 'held' is being run by another pipekit process (host {socket.gethostname()}, pid {first.pid}, " in err
    assert "; waiting for it" in err
    # Every phase executed exactly once overall: the held item was finished by the
    # first run, and the second counted it completed without running anything.
    assert executions(pipetester) == Counter({(i, n): 1 for i in ("held", "free") for n in (1, 2)})
    assert finished_events(first_out) == ["held"] and finished_events(out) == ["free"]
    finish = json.loads(out.splitlines()[-1])
    assert finish["event"] == "run_finish" and finish["exit_status"] == 0
    for item_id in ("held", "free"):
        assert pipetester.run("pipeline.py", "--item", item_id).state(item_id).status == "completed"


@pytest.mark.slow
@pytest.mark.usefixtures("any_store")
def test_skip_busy_skips_the_held_item_and_exits_1_saying_how_many(pipetester: PipeTester) -> None:
    first = start_holder(pipetester)
    second = pipetester.popen("pipeline.py", "--items", "items.txt", "--skip-busy")
    out, err = second.communicate(timeout=60)
    (pipetester.path / "go").touch()
    first.communicate(timeout=60)
    assert second.returncode == 1, err
    assert "item 'held' is being run by another pipekit process; skipped" in err
    assert "--skip-busy: 1 items left unfinished to another pipekit process" in err
    assert finished_events(out) == ["free"]
    assert first.returncode == 0
    assert executions(pipetester) == Counter({(i, n): 1 for i in ("held", "free") for n in (1, 2)})


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL])
def test_an_expired_lease_on_postgresql_is_taken_over_after_expiry(
    pipetester: PipeTester, postgres_store_url: str, monkeypatch: pytest.MonkeyPatch, how: signal.Signals
) -> None:
    monkeypatch.setenv("PIPEKIT_STORE", f"{postgres_store_url}&lease=2")
    first = start_holder(pipetester)
    os.kill(first.pid, how)
    if how == signal.SIGKILL:
        first.wait()  # reaped: dead on this very machine, so taken at once (no lease to wait for)
    try:
        (pipetester.path / "go").touch()  # the taker's own phase 1 must not wait
        started = time.monotonic()
        second = pipetester.popen("pipeline.py", "--items", "items.txt")
        out, err = second.communicate(timeout=60)
    finally:
        if how == signal.SIGSTOP:
            first.kill()
        first.communicate(timeout=30)
    assert second.returncode == 0, err
    if how == signal.SIGSTOP:
        # Alive as far as anyone can tell: named with its lease's expiry, and not taken while the lease ran.
        assert f"pid {first.pid}, since " in err and ", lease until " in err, err
        assert time.monotonic() - started >= 1.0
    assert sorted(finished_events(out)) == ["free", "held"]
    # The holder started phase 1 of 'held' and never finished it: the taker ran it again.
    assert executions(pipetester) == Counter({("held", 1): 2, ("held", 2): 1, ("free", 1): 1, ("free", 2): 1})


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_a_run_waiting_for_a_held_item_stops_at_once_on_ctrl_c_or_sigterm(
    pipetester: PipeTester, how: signal.Signals
) -> None:
    first = start_holder(pipetester)
    second = pipetester.popen("pipeline.py", "--items", "items.txt")
    deadline = time.monotonic() + 60
    while not executions(pipetester)[("free", 2)]:  # the free item done: now it waits for the held one
        assert time.monotonic() < deadline and second.poll() is None, second.communicate()
        time.sleep(0.02)
    time.sleep(1.0)  # in a pause between its tries
    sent = time.monotonic()
    second.send_signal(how)
    out, err = second.communicate(timeout=30)
    assert time.monotonic() - sent < 3
    assert second.returncode == 2, err
    (pipetester.path / "go").touch()
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert executions(pipetester) == Counter({(i, n): 1 for i in ("held", "free") for n in (1, 2)})


def test_a_lock_file_names_its_latest_holder_whatever_was_written_before(tmp_path: Path) -> None:
    from dataclasses import replace

    from pipekit.state.heldby import read_lock_record
    from pipekit.state.heldby import write_lock_record
    from pipekit.state.holder import this_holder

    path = tmp_path / "a.lock"
    path.write_bytes(b"")  # written by an older pipekit: no holder named
    assert read_lock_record(path) is None
    fd = os.open(path, os.O_RDWR)
    try:
        for host in ("h" * 1000, "short", "x" * 700, "y"):  # records longer and shorter than the padding
            write_lock_record(fd, replace(this_holder(), host=host))
            held = read_lock_record(path)
            assert held is not None and (held.host, held.pid) == (host, os.getpid())
    finally:
        os.close(fd)
